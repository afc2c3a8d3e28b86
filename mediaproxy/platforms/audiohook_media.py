"""AudioHook caller media: splitting interleaved binary frames into channels, and the timeline.

Binary frames carry raw samples with no header, interleaved by sample frame in the order of the
selected ``channels`` array (``[ch0 s0][ch1 s0][ch0 s1]...``). Frames may have any size,
including zero; should one ever end inside a sample frame, the rest is carried to the next, so
every way of cutting a stream yields the same per-channel bytes.

The stream position (what Genesys reports as ``position``) counts every sample received plus
every span the client reported as skipped (``discarded``, ``resumed.discarded``). Transcript
offsets are taken from it.
"""

from __future__ import annotations

from mediaproxy.audio.channels import deinterleave
from mediaproxy.audio.chunks import FrameCarry


class ChannelSplitter:
    """De-interleaves a stream of ``channels`` channels of ``sample_bytes``-byte samples."""

    def __init__(self, channels: int, sample_bytes: int) -> None:
        if channels < 1 or sample_bytes < 1:
            raise ValueError("channels and sample_bytes must be >= 1")
        self.channels = channels
        self.sample_bytes = sample_bytes
        self.frame_bytes = channels * sample_bytes
        self._carry = FrameCarry(self.frame_bytes)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete sample frame held back for the next call."""
        return self._carry.pending_bytes

    def split(self, data: bytes) -> tuple[int, list[bytes]]:
        """Feed one binary frame; return (whole sample frames consumed, one ``bytes`` per
        channel in interleaving order). Channels are empty when no whole sample frame is ready."""
        whole = self._carry.whole(data)
        return len(whole) // self.frame_bytes, deinterleave(whole, self.channels, self.sample_bytes)


class StreamTimeline:
    """The client's stream position: samples received plus skipped spans, in microseconds."""

    def __init__(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self.samples = 0
        self.skipped_us = 0

    def add_samples(self, count: int) -> None:
        """``count`` sample frames arrived."""
        self.samples += count

    def add_skipped(self, us: int) -> None:
        """The client skipped ``us`` microseconds (discarded audio or a pause)."""
        self.skipped_us += us

    @property
    def position_us(self) -> int:
        """The current position in microseconds."""
        return self.samples * 1_000_000 // self.rate_hz + self.skipped_us
