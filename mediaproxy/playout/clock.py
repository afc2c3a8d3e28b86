"""One clock that paces every call's playout.

Measured on the development machine: one timer per stream reaches p99 8 ms off schedule at 500
streams, one shared clock serving every playout due in a tick holds p99 2.2 ms; and a timer
re-armed relative to "now" drifts ~4 % slow. So this clock ticks on an absolute grid,
``start + k * frame``, computes ``k`` from the reactor's time at every tick (ticks the reactor
missed are not replayed one by one; each playout sends everything that came due, within its lead
bound), and runs only while some playout is active, so an idle process arms no timer at all.

With ``phases`` > 1 the frame is cut into that many sub-ticks and each playout is served on one of
them for its whole life (:meth:`PlayoutClock.assign_phase`, round robin). One tick serving every
call at once made the last call of a tick wait for all the others: at 400 echo calls on one core
(48 % busy) outbound lateness p99 reached 5.5 ms from that queueing alone. Spread over four
phases, each tick serves a quarter of the calls.
"""

from __future__ import annotations

import math
from itertools import count
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from mediaproxy.metrics import Metrics


class Paced(Protocol):
    """Something the clock serves at each tick (a :class:`~mediaproxy.playout.Playout`)."""

    phase: int
    """The sub-tick it is served on (from :meth:`PlayoutClock.assign_phase`; 0 with one phase)."""

    def tick(self, now: float, grid: float) -> None:
        """Send what is due at reactor time ``now``; ``grid`` is the tick's scheduled time."""


class PlayoutClock:
    """A shared pacing clock ticking every ``frame_ms / phases`` on an absolute schedule.

    ``reactor`` is any ``IReactorTime`` (``task.Clock`` in tests). Playouts :meth:`add`
    themselves while they have audio to pace and :meth:`discard` themselves when idle; each is
    served once per frame, on its own phase.
    """

    def __init__(self, reactor: IReactorTime, frame_ms: int, metrics: Metrics | None = None,
                 phases: int = 1) -> None:
        if phases < 1 or frame_ms % phases:
            raise ValueError(f"phases must divide frame_ms ({frame_ms}): {phases}")
        self.reactor = reactor
        self.frame_ms = frame_ms
        self.phases = phases
        self._frame_s = frame_ms / 1000.0
        self._sub_s = self._frame_s / phases
        # One insertion-ordered set per phase.
        self._active: list[dict[Paced, None]] = [{} for _ in range(phases)]
        self._size = 0
        self._next_phase = count()
        self._start = 0.0
        self._k = 0  # sub-ticks since start
        self._call: IDelayedCall | None = None
        self._late = metrics.clock_tick_late_seconds if metrics is not None else None

    @staticmethod
    def phases_for(frame_ms: int, sub_tick_ms: int = 5) -> int:
        """The most phases of at least ``sub_tick_ms`` that divide ``frame_ms`` (20 ms: 4)."""
        return next(p for p in range(max(1, frame_ms // sub_tick_ms), 0, -1) if frame_ms % p == 0)

    @property
    def running(self) -> bool:
        return self._call is not None

    def seconds(self) -> float:
        """The reactor's current time, in seconds."""
        return self.reactor.seconds()

    def assign_phase(self) -> int:
        """The phase a new playout is served on: round robin, so calls spread evenly."""
        return next(self._next_phase) % self.phases

    def grid_time(self, now: float, phase: int = 0) -> float:
        """The latest tick time of ``phase`` at or before ``now`` (``now`` itself when the clock
        is idle, because the grid then restarts at the next :meth:`add`)."""
        if self._call is None or now < self._start:
            return now
        offset = self._start + phase * self._sub_s  # may be after ``now``: floor goes one back
        return offset + math.floor((now - offset) / self._frame_s + 1e-9) * self._frame_s

    def add(self, paced: Paced) -> None:
        """Serve ``paced`` at every tick of its phase from now on (idempotent)."""
        bucket = self._active[paced.phase]
        if paced in bucket:
            return
        bucket[paced] = None
        self._size += 1
        if self._call is not None and self.phases > 1:
            # The timer may be armed for a later phase: this one's sub-tick may come first.
            j = self._k + 1 + (paced.phase - self._k - 1) % self.phases
            if self._start + j * self._sub_s < self._call.getTime() - 1e-9:
                self._call.cancel()
                self._arm(self.reactor.seconds())
        elif self._call is None:
            # A fresh grid on which ``paced``'s phase ticks now (it anchored on "now"): its next
            # tick is one frame from here, as with a single phase.
            now = self.reactor.seconds()
            self._start = now - paced.phase * self._sub_s
            self._k = paced.phase
            self._arm(now)

    def discard(self, paced: Paced) -> None:
        """Stop serving ``paced`` (idempotent). The timer stops with the last playout."""
        if self._active[paced.phase].pop(paced, 0) is None:
            self._size -= 1
        if not self._size and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def stop(self) -> None:
        """Stop ticking and forget every playout (service shutdown)."""
        for bucket in self._active:
            bucket.clear()
        self._size = 0
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def __len__(self) -> int:
        return self._size

    def _next_busy(self, k: int) -> int:
        """The first sub-tick after ``k`` whose phase has playouts (at most one frame on)."""
        for step in range(1, self.phases + 1):
            if self._active[(k + step) % self.phases]:
                return k + step
        return k + self.phases

    def _arm(self, now: float) -> None:
        k = self._next_busy(self._k)
        delay = self._start + k * self._sub_s - now
        # Never further out than one frame, whatever the arithmetic says.
        self._call = self.reactor.callLater(min(max(delay, 0.0), self._frame_s), self._tick)

    def _tick(self) -> None:
        self._call = None
        now = self.reactor.seconds()
        due = self._start + self._next_busy(self._k) * self._sub_s
        if now < due - self._frame_s:
            # The clock stepped backwards: start a fresh grid here rather than wait it out.
            self._start, k, first = now, 0, 0
        else:
            # Ticks the reactor missed are folded into this one: every phase that came due
            # since is served (each playout sends all that came due, within its lead bound).
            k = max(self._k + 1, math.floor((now - self._start) / self._sub_s + 1e-9))
            first = max(self._k + 1, k - self.phases + 1)
            if self._late is not None:
                self._late.observe(max(0.0, now - due))
        self._k = k
        for j in range(first, k + 1):
            bucket = self._active[j % self.phases]
            if bucket:
                grid = self._start + j * self._sub_s
                for paced in list(bucket):
                    paced.tick(now, grid)
        if self._size and self._call is None:
            self._arm(now)
