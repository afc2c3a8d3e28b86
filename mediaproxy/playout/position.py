"""Where the caller is in the bot audio sent so far: the played-position estimate.

Positions are milliseconds of audio on the call's outbound stream since the call began: the
*sent* position grows with every packet sent. Times are reactor seconds.

While the platform plays a *spurt* (back-to-back audio without a gap), the caller's position is
estimated from the platform's last mark echo, plus the time elapsed since it arrived; without an
echo in this spurt (or on a platform without marks), from the spurt's start position plus the
time elapsed since it started. Either way it is capped at what was sent: the platform cannot
play what it has not received. Between spurts the platform has played everything it was sent.

Marks are named ``"<generation>:<position>"``. A barge-in starts a new generation, so the echoes
the platform sends for marks it flushed are refused, as are names we did not send and positions
beyond what was sent.
"""

from __future__ import annotations


class PlayedPosition:
    """The sent and played positions of one call's bot audio, and its marks.

    ``sent_ms`` is advanced by the pacer for every packet it sends (read and written directly
    on the hot path). ``has_marks`` says whether the platform echoes marks; ``mark_interval_ms``
    is how much audio at most goes out between two marks while audio keeps flowing.
    """

    def __init__(self, has_marks: bool, mark_interval_ms: float) -> None:
        self._has_marks = has_marks
        self._mark_interval_ms = mark_interval_ms
        self.sent_ms = 0.0
        """Milliseconds of audio sent since the call began (monotonic)."""
        self.spurt_started_at = 0.0
        """Reactor time the current (or last) spurt started to play."""
        self._in_spurt = False
        self._spurt_pos_ms = 0.0
        self._generation = 0
        self._mark_pos_ms: float | None = None
        self._mark_time = 0.0
        self._last_mark_pos_ms = 0.0

    @property
    def has_marks(self) -> bool:
        """The platform echoes marks."""
        return self._has_marks

    @property
    def in_spurt(self) -> bool:
        """The platform is (as far as we know) still playing the current spurt."""
        return self._in_spurt

    def echoed_all(self) -> bool:
        """The platform echoed a mark at (or after) everything sent in this spurt."""
        return self._mark_pos_ms is not None and self._mark_pos_ms >= self.sent_ms - 1e-6

    @property
    def generation(self) -> int:
        """The mark generation; bumped by every :meth:`cut`."""
        return self._generation

    def start_spurt(self, now: float) -> None:
        """The platform starts playing a new spurt at reactor time ``now``, from what was sent."""
        self._in_spurt = True
        self._spurt_pos_ms = self.sent_ms
        self.spurt_started_at = now
        self._mark_pos_ms = None

    def end_spurt(self) -> None:
        """The platform ran dry: it has played everything it was sent."""
        self._in_spurt = False

    def cut(self) -> None:
        """Barge-in: the platform flushed what it had not played. A new mark generation starts,
        so the echoes of the flushed marks are refused."""
        self._generation += 1
        self._in_spurt = False
        self._mark_pos_ms = None

    def next_mark(self, drained: bool) -> str | None:
        """The name of the mark to send after a packet went out, or None: one every
        ``mark_interval_ms`` of audio, and one when the queue has ``drained`` (so the end of
        the audio is echoed too). Always None for a platform without marks."""
        if not self._has_marks:
            return None
        if not drained and self.sent_ms - self._last_mark_pos_ms < self._mark_interval_ms:
            return None
        self._last_mark_pos_ms = self.sent_ms
        return f"{self._generation}:{self.sent_ms:g}"

    def mark_echoed(self, name: str, now: float) -> bool:
        """The platform played up to (or flushed) the mark ``name`` at reactor time ``now``.
        Returns False, ignoring it, for a mark of another generation (flushed by a barge-in),
        a name we did not send, a position beyond what was sent, or outside a spurt."""
        gen_text, _, pos_text = name.partition(":")
        try:
            generation, pos_ms = int(gen_text), float(pos_text)
        except ValueError:
            return False
        if generation != self._generation or not self._in_spurt or pos_ms > self.sent_ms:
            return False
        # Only an echo from this spurt, later than the last one, moves the estimate.
        if pos_ms >= self._spurt_pos_ms and (self._mark_pos_ms is None or pos_ms > self._mark_pos_ms):
            self._mark_pos_ms = pos_ms
            self._mark_time = now
        return True

    def played_ms(self, now: float) -> float:
        """The caller's position at reactor time ``now``, in milliseconds of sent audio."""
        if not self._in_spurt:
            return self.sent_ms
        if self._mark_pos_ms is not None:
            estimate = self._mark_pos_ms + (now - self._mark_time) * 1000.0
        else:
            estimate = self._spurt_pos_ms + (now - self.spurt_started_at) * 1000.0
        return min(self.sent_ms, estimate)
