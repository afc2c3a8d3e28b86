"""The playout's bound on queued bot audio: what of a write fits under ``max_buffer_ms``.

The playout never pauses the backend (its socket carries the caller's ``speech_started``, and
barge-in with it), so the queue is bounded by dropping instead. Audio that would take the queue
beyond the bound is dropped, the newest first, and with it the rest of that response: every
response played is then an exact prefix of what the backend sent, and the played position, hence
the truncation a barge-in sends, stays exact. The drops are counted in whole frames (the
remainder carried) in ``frames_dropped_total{direction="out",reason="overflow"}``.

Sizes are in bytes of the platform format.
"""

from __future__ import annotations

from typing import Any

from mediaproxy.audio.format import AudioFormat


class OverflowGuard:
    """The bound of one playout: ``max_bytes`` queued at most; ``dropped`` counts whole frames of
    ``frame_bytes`` (a Prometheus counter child)."""

    def __init__(self, audio_format: AudioFormat, max_bytes: int, frame_bytes: int, dropped: Any) -> None:
        self._sample_bytes = audio_format.frame_bytes
        self._max_bytes = max_bytes
        self._frame_bytes = frame_bytes
        self._dropped = dropped
        # The response whose audio overflowed: the rest of it is dropped.
        self._overflowing: str | None = None
        self._dropped_bytes = 0

    def fits(self, response_id: str, size: int, queued_bytes: int) -> bool:
        """``size`` bytes of ``response_id`` can be queued whole behind ``queued_bytes``."""
        return response_id != self._overflowing and size <= self._max_bytes - queued_bytes

    def keep(self, response_id: str, data: bytes, queued_bytes: int) -> bytes:
        """The part of ``data`` that fits under the bound (whole samples), none once the
        response has overflowed; the rest is counted as dropped."""
        if response_id == self._overflowing:
            keep = 0
        else:
            room = max(0, self._max_bytes - queued_bytes)
            keep = room - room % self._sample_bytes
            self._overflowing = response_id
        dropped = self._dropped_bytes + len(data) - keep
        # Counted in whole frames, the remainder carried, so the counter never sees fractions.
        frames, self._dropped_bytes = divmod(dropped, self._frame_bytes)
        if frames:
            self._dropped.inc(frames)
        return data[:keep]

    def cleared(self) -> None:
        """A barge-in emptied the queue: the next audio of any response may be queued again."""
        self._overflowing = None
