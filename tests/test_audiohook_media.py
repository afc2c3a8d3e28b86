"""Tests for mediaproxy.platforms.audiohook_media: de-interleaving and the stream timeline."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.platforms.audiohook_media import ChannelSplitter, StreamTimeline


def _interleave(channels: list[bytes], sample_bytes: int) -> bytes:
    out = bytearray()
    count = len(channels[0]) // sample_bytes
    for i in range(count):
        for ch in channels:
            out += ch[i * sample_bytes:(i + 1) * sample_bytes]
    return bytes(out)


class ChannelSplitterTests(SynchronousTestCase):
    def _feed(self, splitter: ChannelSplitter, chunks: list[bytes]) -> tuple[int, list[bytes]]:
        total = 0
        joined = [b""] * splitter.channels
        for chunk in chunks:
            frames, parts = splitter.split(chunk)
            total += frames
            self.assertEqual(len(parts), splitter.channels)
            for k, part in enumerate(parts):
                self.assertEqual(len(part), frames * splitter.sample_bytes)
                joined[k] += part
        return total, joined

    def _every_split(self, channels: int, sample_bytes: int) -> None:
        # Distinct byte values per channel, so a swapped or shifted byte cannot go unnoticed.
        frames = 7
        per_channel = [bytes((16 * (k + 1) + i) % 256 for i in range(frames * sample_bytes))
                       for k in range(channels)]
        stream = _interleave(per_channel, sample_bytes)
        for i in range(len(stream) + 1):
            for j in range(i, len(stream) + 1):
                splitter = ChannelSplitter(channels, sample_bytes)
                total, joined = self._feed(splitter, [stream[:i], stream[i:j], stream[j:]])
                self.assertEqual((total, joined), (frames, per_channel), f"split at {i}, {j}")
                self.assertEqual(splitter.pending_bytes, 0)

    def test_every_split_pcmu_stereo(self) -> None:
        """Every pair of split points of a stereo µ-law stream yields the same channels."""
        self._every_split(2, 1)

    def test_every_split_l16_stereo(self) -> None:
        self._every_split(2, 2)

    def test_every_split_mono(self) -> None:
        self._every_split(1, 1)
        self._every_split(1, 2)

    def test_channel_order_is_interleaving_order(self) -> None:
        """Channel 0 is the first byte of each sample frame: never hard-coded to a party."""
        frames, (first, second) = ChannelSplitter(2, 1).split(b"\x01\x02\x03\x04")
        self.assertEqual((frames, first, second), (2, b"\x01\x03", b"\x02\x04"))

    def test_zero_byte_frame(self) -> None:
        self.assertEqual(ChannelSplitter(2, 1).split(b""), (0, [b"", b""]))

    def test_partial_frame_is_carried(self) -> None:
        splitter = ChannelSplitter(2, 1)
        self.assertEqual(splitter.split(b"\x01\x02\x03"), (1, [b"\x01", b"\x02"]))
        self.assertEqual(splitter.pending_bytes, 1)
        self.assertEqual(splitter.split(b"\x04"), (1, [b"\x03", b"\x04"]))
        self.assertEqual(splitter.pending_bytes, 0)

    def test_bad_shape_refused(self) -> None:
        self.assertRaises(ValueError, ChannelSplitter, 0, 1)


class StreamTimelineTests(SynchronousTestCase):
    def test_samples_and_skipped_spans(self) -> None:
        """18 frames of 200 ms plus 1.4 s discarded is 5 s (the reference client's close.position)."""
        timeline = StreamTimeline(8000)
        for _ in range(18):
            timeline.add_samples(1600)
        timeline.add_skipped(1_400_000)
        self.assertEqual(timeline.position_us, 5_000_000)

    def test_rate(self) -> None:
        timeline = StreamTimeline(16000)
        timeline.add_samples(8)
        self.assertEqual(timeline.position_us, 500)
