"""The Gemini session's stall watchdog: notices a model that stops answering the caller.

The Live API sometimes leaves a turn unanswered (its VAD holds the caller's audio, or the model
stalls). :class:`StallWatchdog` is armed by what the caller says and disarmed by anything the
model produces; the session (:mod:`mediaproxy.backends.gemini_session`) nudges the service first
(``audioStreamEnd``), then replaces the connection. Sans-IO but for the injected timer.
"""

from __future__ import annotations

from collections.abc import Callable

from mediaproxy.backends.reconnect import Timer, Timers


class StallWatchdog:
    """Notices a model that stops answering: armed when the caller spoke, disarmed when the model
    produces anything. ``seconds`` after the caller's last sign with nothing from the model it
    calls ``on_nudge``; as long again after that, ``on_stall`` (then it waits for the caller
    again). One timer at most; a sign while armed only moves the deadline (no timer per message).
    ``seconds`` 0 turns it off. Times come from ``reactor`` (seconds)."""

    def __init__(self, reactor: Timers, seconds: float, on_nudge: Callable[[], None],
                 on_stall: Callable[[], None]) -> None:
        self._reactor = reactor
        self._seconds = seconds
        self._on_nudge = on_nudge
        self._on_stall = on_stall
        self._timer: Timer | None = None
        self._deadline = 0.0
        self._nudged = False

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def caller_spoke(self) -> None:
        """The caller said something the model should answer (or interrupted it)."""
        if not self._seconds:
            return
        self._nudged = False
        self._deadline = self._reactor.seconds() + self._seconds
        if self._timer is None:
            self._timer = self._reactor.callLater(self._seconds, self._fire)

    def model_spoke(self) -> None:
        """The model produced something: it is not stuck."""
        self.stop()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._nudged = False

    def _fire(self) -> None:
        self._timer = None
        left = self._deadline - self._reactor.seconds()
        if left > 1e-6:
            self._timer = self._reactor.callLater(left, self._fire)
            return
        if not self._nudged:
            self._nudged = True
            self._deadline = self._reactor.seconds() + self._seconds
            self._timer = self._reactor.callLater(self._seconds, self._fire)
            self._on_nudge()
            return
        self._nudged = False
        self._on_stall()
