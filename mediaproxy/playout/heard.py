"""Waiting for the caller to have heard a point of the bot's audio: what a bot's ``mark`` needs.

A waiter is registered with a *target*: the call's stream position (milliseconds of audio, see
:mod:`mediaproxy.playout.position`) at the end of the audio written so far, sent or queued (the
playout leaves out the partial packet at the end of a response still open: it cannot be sent
before more audio or the response's end, and waiting for it would hold a mark back). It
fires True once the played position reaches the target, or once everything sent has been played
with nothing left queued (audio the playout dropped on overflow is never sent, so a target beyond
it would never be reached otherwise). A barge-in (the playout's ``clear``) fires False for every
waiter whose target the caller had not reached yet: that audio was flushed unheard. The playout
calls :meth:`HeardWaiters.check` after every service pass that sent audio
and after a mark echo, and :meth:`HeardWaiters.flushed` at a clear; between those, while sent
audio is still playing, a single timer is armed for when the earliest target (or the end of what
was sent) will have played at real time. Waiters fire in the order they were registered (their
targets never decrease). Times are reactor seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred

_EPSILON_MS = 0.01
"""Float noise of reactor times, far below a sample."""


class HeardWaiters:
    """The waiters of one call's playout. ``reactor`` gives ``seconds`` and ``callLater``;
    ``played_ms(now)`` is the played position, ``sent_ms()`` the sent one, and ``queued()``
    says whether audio is waiting to be sent."""

    def __init__(self, reactor: Any, played_ms: Callable[[float], float], sent_ms: Callable[[], float],
                 queued: Callable[[], bool]) -> None:
        self._reactor = reactor
        self._played_ms = played_ms
        self._sent_ms = sent_ms
        self._queued = queued
        self._waiters: deque[tuple[float, Deferred[bool]]] = deque()
        self._timer: Any = None

    def __len__(self) -> int:
        """Waiters still waiting."""
        return len(self._waiters)

    def add(self, target_ms: float) -> Deferred[bool]:
        """A Deferred firing once the caller has heard up to ``target_ms`` (see the module
        docstring); cancelling it forgets it."""

        def forget(d: Deferred[bool]) -> None:
            self._waiters = deque(w for w in self._waiters if w[1] is not d)

        d: Deferred[bool] = Deferred(forget)
        self._waiters.append((target_ms, d))
        self.check()
        return d

    def check(self) -> None:
        """Fire the waiters whose target has been heard; arm the timer for the next one."""
        waiters = self._waiters
        if not waiters:
            self._cancel_timer()
            return
        now = self._reactor.seconds()
        played, sent = self._played_ms(now), self._sent_ms()
        all_played = played >= sent - _EPSILON_MS
        drained = all_played and not self._queued()
        while waiters and (drained or waiters[0][0] <= played + _EPSILON_MS):
            waiters.popleft()[1].callback(True)
        self._cancel_timer()
        if waiters and not all_played:
            # At real time the played position gets there this much later. Once everything
            # sent has played no timer is needed: the next packet sent calls check again.
            delay_ms = max(min(waiters[0][0], sent) - played, 1.0)
            self._timer = self._reactor.callLater(delay_ms / 1000.0, self._due)

    def flushed(self, heard_ms: float) -> None:
        """A barge-in flushed everything after ``heard_ms``: waiters up to it fire True, the
        rest False."""
        self._cancel_timer()
        waiters, self._waiters = self._waiters, deque()
        for target, d in waiters:
            d.callback(target <= heard_ms + _EPSILON_MS)

    def stop(self) -> None:
        """The call ended: every waiter fails with ``CancelledError``; no timer is left."""
        self._cancel_timer()
        waiters, self._waiters = self._waiters, deque()
        for _, d in waiters:
            d.errback(CancelledError("playout stopped"))

    def _due(self) -> None:
        self._timer = None
        self.check()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
