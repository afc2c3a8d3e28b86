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


class BackendTimeline:
    """Maps a channel's backend timeline onto the stream timeline.

    The backend hears a channel's audio from the first sample the session delivered as
    ``CallerAudio`` while the stream was not paused (the bridge forwards all of it then), so its
    times (transcript ``start_ms``/``end_ms``) are milliseconds of *forwarded* audio. The stream
    timeline also counts paused and discarded spans and audio the bridge held back. A breakpoint
    is recorded whenever the two stop advancing together (a skipped span, audio not forwarded):
    ``(forwarded samples, stream µs of the next forwarded sample)``; between breakpoints both
    advance one for one. Every channel of a session is delivered sample for sample together, so
    one mapping serves them all. Only the last ``max_breakpoints`` are kept: transcripts are about
    recent audio.
    """

    def __init__(self, rate_hz: int, max_breakpoints: int = 64) -> None:
        self.rate_hz = rate_hz
        self.forwarded = 0
        self._max = max_breakpoints
        self._breaks: list[tuple[int, int]] = []
        self._dirty = True  # the next forwarded sample starts a new breakpoint

    def skipped(self) -> None:
        """The stream moved on without forwarding (a skipped span, or audio not forwarded)."""
        self._dirty = True

    def forward(self, count: int, stream_us: int) -> None:
        """``count`` sample frames were forwarded, the first at stream position ``stream_us``."""
        if self._dirty:
            self._dirty = False
            breaks = self._breaks
            if breaks and breaks[-1][0] == self.forwarded:
                breaks[-1] = (self.forwarded, stream_us)
            else:
                breaks.append((self.forwarded, stream_us))
                if len(breaks) > self._max:
                    del breaks[0]
        self.forwarded += count

    def stream_us(self, backend_ms: int, end: bool = False) -> int | None:
        """The stream position (µs) of backend time ``backend_ms``; ``end``: the time ends a span,
        so a time exactly at a breakpoint stays before the jump. None before any audio."""
        breaks = self._breaks
        if not breaks:
            return None
        samples = max(0, backend_ms) * self.rate_hz // 1000
        chosen = breaks[0]
        for point in reversed(breaks):
            if point[0] < samples or (point[0] == samples and not end) or point is breaks[0]:
                chosen = point
                break
        forwarded_at, stream_at = chosen
        return stream_at + (samples - forwarded_at) * 1_000_000 // self.rate_hz
