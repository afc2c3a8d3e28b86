"""`FrameCarry`: cuts a byte stream that arrives in chunks of any size into whole frames.

A "frame" is any fixed number of bytes: one 16-bit sample (2), one sample frame of interleaved
channels, or one 20 ms analysis frame. The bytes after the last whole frame of a chunk are
carried and completed by the next chunk, so the frames of a stream do not depend on how it was
chunked.
"""

from __future__ import annotations

__all__ = ["FrameCarry"]


class FrameCarry:
    """Carries the partial frame at the end of each chunk into the next one.

    ``frame_bytes`` is the frame size in bytes. The common case, no carry and a chunk of whole
    frames, costs one length check and returns the caller's object: nothing is copied.
    """

    __slots__ = ("frame_bytes", "_carry")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes < 1:
            raise ValueError("frame_bytes must be >= 1")
        self.frame_bytes = frame_bytes
        self._carry = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes of the partial frame held for the next chunk (always < ``frame_bytes``)."""
        return len(self._carry)

    def whole(self, data: bytes) -> bytes | memoryview:
        """The whole frames of (carry + ``data``) as one contiguous buffer; keeps the rest.

        Returns ``data`` itself when nothing is carried and it is whole frames, else a view or
        a new ``bytes`` (empty when not even one frame is complete)."""
        carry = self._carry
        if carry:
            data = carry + data
        size = self.frame_bytes
        usable = len(data) - len(data) % size
        if usable == len(data):
            if carry:
                self._carry = b""
            return data
        self._carry = bytes(data[usable:])
        return memoryview(data)[:usable]

    def frames(self, data: bytes) -> list[bytes]:
        """The whole frames of (carry + ``data``), one ``bytes`` each; keeps the rest."""
        size = self.frame_bytes
        carry = self._carry
        if not carry and len(data) == size:
            return [data]  # the per-frame path: one frame in, the same object out
        if carry:
            data = carry + data
        usable = len(data) - len(data) % size
        self._carry = data[usable:]
        return [data[i : i + size] for i in range(0, usable, size)]

    def reset(self) -> None:
        """Drops the partial frame: a new stream starts."""
        self._carry = b""
