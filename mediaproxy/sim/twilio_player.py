"""`TwilioPlayer`: what Twilio's player does with the media a stream sends it (sans IO).

Twilio buffers whatever it is sent and plays it in order at real time (8 kHz µ-law, 8 bytes per
ms); a ``mark`` is echoed when playback reaches it (at once when nothing is queued before it);
``clear`` empties the buffer and echoes every pending mark at once. The simulator and the tests'
scripted Twilio clients share this model; they send the echoes it reports.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["TwilioPlayer"]

BYTES_PER_MS = 8
_EPSILON_S = 1e-6  # a mark due "now" is not left for a later timer by float rounding


class TwilioPlayer:
    """One stream's player. ``on_mark(name)`` is called for every echo, at the reactor time it
    is due. With ``keep_audio`` the received audio is kept, for :meth:`heard`."""

    def __init__(self, clock: IReactorTime, on_mark: Callable[[str], None], keep_audio: bool = False) -> None:
        self._clock = clock
        self._on_mark = on_mark
        self._play_end = 0.0
        self._marks: deque[tuple[float, str]] = deque()
        self._timer: IDelayedCall | None = None
        self._kept: bytearray | None = bytearray() if keep_audio else None
        #: Milliseconds of audio received, and thrown away unplayed by ``clear``.
        self.received_ms = 0.0
        self.cleared_ms = 0.0
        #: Times audio arrived after the buffer had run dry (the caller heard a gap).
        self.underruns = 0

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
        """Queues one ``media`` payload (µ-law bytes)."""
        if self._kept is not None:
            self._kept += payload
        self.queue_bytes(len(payload))

    def queue_bytes(self, nbytes: int) -> None:
        """Queues ``nbytes`` of audio without keeping it (the simulator does not decode)."""
        now = self._clock.seconds()
        if self._play_end < now:
            if self.received_ms:
                self.underruns += 1
            self._play_end = now
        self._play_end += nbytes / (BYTES_PER_MS * 1000.0)
        self.received_ms += nbytes / BYTES_PER_MS

    def mark(self, name: str) -> None:
        """A ``mark``: echoed when the audio queued before it has played."""
        now = self._clock.seconds()
        if self._play_end <= now + _EPSILON_S and not self._marks:
            self._on_mark(name)  # nothing queued before it: already "played"
            return
        self._marks.append((self._play_end, name))
        if self._timer is None:
            self._timer = self._clock.callLater(max(0.0, self._play_end - now), self._due)

    def clear(self) -> None:
        """A ``clear``: the queue is dropped and every pending mark echoed at once."""
        queued = self.queued_ms
        self.cleared_ms += queued
        if self._kept is not None and queued:
            del self._kept[len(self._kept) - round(queued * BYTES_PER_MS):]
        self._play_end = min(self._play_end, self._clock.seconds())
        self._cancel()
        while self._marks:
            self._on_mark(self._marks.popleft()[1])

    def heard(self) -> bytes:
        """The audio the caller has heard so far, in order (needs ``keep_audio``)."""
        if self._kept is None:
            raise RuntimeError("TwilioPlayer(keep_audio=False) keeps no audio")
        return bytes(self._kept[: len(self._kept) - round(self.queued_ms * BYTES_PER_MS)])

    def stop(self) -> None:
        """The stream ended: no more echoes."""
        self._cancel()
        self._marks.clear()

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
