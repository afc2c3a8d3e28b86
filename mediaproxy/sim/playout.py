"""`Playout`: what a platform's player does with the bot audio it is sent (sans IO).

Every platform the simulator plays buffers what it receives and plays it in order at real time:
a message's audio starts when the previous one has finished (or at once, when nothing is
queued). Messages may carry any amount of audio; only its duration matters (``bytes_per_ms`` of
the platform's format). A *mark* (Twilio's ``mark``, and the cousins') is reported when playback
reaches it (at once when nothing is queued before it); a *clear* (Twilio ``clear``, AudioHook
``barge_in``, AudioCodes ``playStream.stop`` after barge-in) drops what is queued and reports
every pending mark at once.

With ``keep_audio`` the received audio is kept with its play time, so :meth:`segments` gives what
the caller heard, and where in time (the recording). Time comes from the injected clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Playout"]

_EPSILON_S = 1e-6  # a mark due "now" is not left for a later timer by float rounding


class Playout:
    """One call's player. ``on_mark(name)`` is called for every mark, at the clock time it is
    due. ``bytes_per_ms`` is the platform format's size of 1 ms of audio (8 for µ-law 8 kHz),
    ``sample_bytes`` of one sample frame (a cut never splits a sample)."""

    def __init__(self, clock: IReactorTime, on_mark: Callable[[str], None], keep_audio: bool = False,
                 bytes_per_ms: int = 8, sample_bytes: int = 1) -> None:
        self._clock = clock
        self._sample_bytes = sample_bytes
        self._on_mark = on_mark
        self._bytes_per_ms = bytes_per_ms
        self._play_end = 0.0
        self._marks: deque[tuple[float, str]] = deque()
        self._timer: IDelayedCall | None = None
        self._segments: list[tuple[float, bytearray]] | None = [] if keep_audio else None
        #: Milliseconds of audio received, and thrown away unplayed by ``clear``.
        self.received_ms = 0.0
        self.cleared_ms = 0.0
        #: Times audio arrived after the buffer had run dry (a gap, or the start of a reply).
        self.underruns = 0

    @property
    def bytes_per_ms(self) -> int:
        return self._bytes_per_ms

    @property
    def queued_ms(self) -> float:
        """Milliseconds of audio received and not played yet."""
        return max(0.0, self._play_end - self._clock.seconds()) * 1000.0

    @property
    def position_ms(self) -> float:
        """How far playback has gone through everything received (cleared audio included)."""
        return self.received_ms - self.queued_ms

    @property
    def played_ms(self) -> float:
        """Milliseconds of audio the caller has heard."""
        return self.position_ms - self.cleared_ms

    def media(self, payload: bytes) -> None:
        """Queues one message's audio (bytes in the platform's format)."""
        start = self._queue(len(payload))
        if self._segments is not None and payload:
            last = self._segments[-1] if self._segments else None
            if last is not None and abs(last[0] + len(last[1]) / (self._bytes_per_ms * 1000.0) - start) < _EPSILON_S:
                last[1].extend(payload)  # plays right after the previous one: one segment
            else:
                self._segments.append((start, bytearray(payload)))

    def queue_bytes(self, nbytes: int) -> None:
        """Queues ``nbytes`` of audio without keeping it (a call that is not recorded)."""
        self._queue(nbytes)

    def _queue(self, nbytes: int) -> float:
        now = self._clock.seconds()
        if self._play_end < now:
            if self.received_ms:
                self.underruns += 1
            self._play_end = now
        start = self._play_end
        self._play_end += nbytes / (self._bytes_per_ms * 1000.0)
        self.received_ms += nbytes / self._bytes_per_ms
        return start

    def mark(self, name: str) -> None:
        """A mark: reported when the audio queued before it has played."""
        now = self._clock.seconds()
        if self._play_end <= now + _EPSILON_S and not self._marks:
            self._on_mark(name)  # nothing queued before it: already "played"
            return
        self._marks.append((self._play_end, name))
        if self._timer is None:
            self._timer = self._clock.callLater(max(0.0, self._play_end - now), self._due)

    def clear(self) -> None:
        """The queue is dropped and every pending mark reported at once."""
        now = self._clock.seconds()
        self.cleared_ms += self.queued_ms
        if self._segments is not None:
            self._truncate(now)
        self._play_end = min(self._play_end, now)
        self._cancel()
        while self._marks:
            self._on_mark(self._marks.popleft()[1])

    def segments(self) -> list[tuple[float, bytes]]:
        """``(play start time, audio)`` of everything played so far, in order (needs
        ``keep_audio``); audio still queued is left out."""
        if self._segments is None:
            raise RuntimeError("Playout(keep_audio=False) keeps no audio")
        now = self._clock.seconds()
        out = []
        for start, data in self._segments:
            if start >= now:
                break
            keep = min(len(data), self._bytes_at(now - start))
            out.append((start, bytes(data[:keep])))
        return out

    def heard(self) -> bytes:
        """The audio the caller has heard so far, in order (needs ``keep_audio``)."""
        return b"".join(data for _, data in self.segments())

    def stop(self) -> None:
        """The stream ended: no more marks."""
        self._cancel()
        self._marks.clear()

    def _bytes_at(self, seconds: float) -> int:
        n = round(seconds * 1000.0 * self._bytes_per_ms)
        return n - n % self._sample_bytes

    def _truncate(self, now: float) -> None:
        assert self._segments is not None
        while self._segments and self._segments[-1][0] >= now:
            self._segments.pop()
        if self._segments:
            start, data = self._segments[-1]
            del data[self._bytes_at(now - start):]

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _due(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        while self._marks and self._marks[0][0] <= now + _EPSILON_S:
            self._on_mark(self._marks.popleft()[1])
        if self._marks:
            self._timer = self._clock.callLater(max(0.0, self._marks[0][0] - now), self._due)
