"""Waiting for the caller to have heard everything sent: what a farewell before hanging up needs.

A waiter of :meth:`PlayedOutWaiters.add` fires once nothing is queued, every response written
has been finished (or cut by a barge-in), and the played position has reached all that was sent.
On a platform with marks that is the echo of the mark after the last packet (the platform says
so; if it never echoes, the waiter never fires: the caller bounds the wait with a timeout);
without marks, the clock (the spurt's start plus its duration), for which one timer is armed.

The playout calls :meth:`PlayedOutWaiters.check` whenever that may have become true (a finish,
a clear, a mark echo, a service pass that drained the queue) and
:meth:`PlayedOutWaiters.sent_more` when it sent more audio (a timer armed for the old end is
early then). Unlike :mod:`mediaproxy.playout.heard`, which waits for a point in the audio, this
waits for the end of all of it. Times are reactor seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from mediaproxy.playout.position import PlayedPosition
from mediaproxy.playout.queue import PacketQueue


class PlayedOutWaiters:
    """The played-out waiters of one call's playout. ``reactor`` gives ``seconds`` and
    ``callLater``; ``queue`` and ``played`` are the playout's own (read, never changed), and
    ``stopped()`` says the playout has stopped (nothing fires from then on)."""

    def __init__(self, reactor: Any, queue: PacketQueue, played: PlayedPosition,
                 stopped: Callable[[], bool]) -> None:
        self._reactor = reactor
        self._queue = queue
        self._played = played
        self._stopped = stopped
        self._waiters: list[Deferred[None]] = []
        self._timer: IDelayedCall | None = None

    def __bool__(self) -> bool:
        """Some waiter is still waiting."""
        return bool(self._waiters)

    def add(self) -> Deferred[None]:
        """A Deferred firing once everything sent has been heard (at once when that already
        holds); cancelling it is allowed."""

        def forget(d: Deferred[None]) -> None:
            if d in self._waiters:
                self._waiters.remove(d)
            if not self._waiters:
                self._cancel_timer()

        d: Deferred[None] = Deferred(forget)
        self._waiters.append(d)
        self.check()
        return d

    def check(self) -> None:
        """Fire the waiters if everything was heard; otherwise, on the clock path, arm one timer
        for when it will have been."""
        if not self._waiters or self._stopped():
            return
        queue = self._queue
        if queue.queued_bytes or queue.has_open_response():
            return  # write/finish/clear call back here
        played = self._played
        now = self._reactor.seconds()
        remaining_ms = played.sent_ms - played.played_ms(now)
        if played.has_marks and played.in_spurt:
            if not played.echoed_all():
                return  # mark_echoed calls back here
        elif remaining_ms > 0.01:  # float noise of reactor times, far below a sample
            if self._timer is None:
                self._timer = self._reactor.callLater(remaining_ms / 1000.0, self._due)
            return
        self._cancel_timer()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def sent_more(self) -> None:
        """More audio went out: a timer armed for the old end is early now."""
        self._cancel_timer()

    def stop(self) -> None:
        """The call ended: every waiter is cancelled (``CancelledError``); no timer is left."""
        self._cancel_timer()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.cancel()

    def _due(self) -> None:
        self._timer = None
        self.check()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
