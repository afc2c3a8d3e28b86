"""FrameCarry: whole frames out of chunks of any size, the rest carried."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from mediaproxy.audio.chunks import FrameCarry

STREAM = bytes(range(256)) * 3


class FrameCarryTests(TestCase):
    def test_whole_frames_pass_through_uncopied(self) -> None:
        carry = FrameCarry(4)
        data = STREAM[:16]
        self.assertIs(carry.whole(data), data)
        [frame] = carry.frames(STREAM[:4])
        self.assertEqual(frame, STREAM[:4])
        self.assertEqual(carry.pending_bytes, 0)

    def test_partial_frame_is_completed_by_the_next_chunk(self) -> None:
        carry = FrameCarry(2)
        self.assertEqual(bytes(carry.whole(b"\x01\x02\x03")), b"\x01\x02")
        self.assertEqual(carry.pending_bytes, 1)
        self.assertEqual(bytes(carry.whole(b"")), b"")
        self.assertEqual(bytes(carry.whole(b"\x04")), b"\x03\x04")
        self.assertEqual(carry.pending_bytes, 0)

    def test_any_split_gives_the_same_frames(self) -> None:
        for size in (1, 2, 3, 160):
            expected = [STREAM[i : i + size] for i in range(0, len(STREAM) - size + 1, size)]
            for step in (1, 2, 5, 7, 159, 160, 161, 500):
                frames, whole = FrameCarry(size), FrameCarry(size)
                got: list[bytes] = []
                joined = bytearray()
                for i in range(0, len(STREAM), step):
                    got += frames.frames(STREAM[i : i + step])
                    joined += whole.whole(STREAM[i : i + step])
                self.assertEqual(got, expected, (size, step))
                self.assertEqual(bytes(joined), b"".join(expected), (size, step))
                self.assertEqual(frames.pending_bytes, len(STREAM) % size)

    def test_reset_drops_the_partial_frame(self) -> None:
        carry = FrameCarry(4)
        self.assertEqual(carry.frames(b"abcdef"), [b"abcd"])
        carry.reset()
        self.assertEqual(carry.pending_bytes, 0)
        self.assertEqual(carry.frames(b"wxyz"), [b"wxyz"])

    def test_frame_size_must_be_positive(self) -> None:
        self.assertRaises(ValueError, FrameCarry, 0)
