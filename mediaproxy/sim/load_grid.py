"""The load generator's only timer: one grid for every call's sends and mark echoes (sans IO).

A tick every ``slot_ms`` (1 ms); each call owns one of the 20 ms frame's slots, so its frames go
out at ``origin + k * slot_ms`` for its slot's ``k``. A tick sends the due frames of its slot's
calls (every slot that came due since the last tick, after a stall) and wakes the calls whose
next mark echo is due (one heap for all calls). Every send's lateness against its ideal time goes
into a histogram of :data:`LATE_BIN_S` bins: the generator's own health.
"""

from __future__ import annotations

import heapq
import math
from array import array
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

if TYPE_CHECKING:
    from mediaproxy.sim.load_calls import LoadCall

LATE_BIN_S = 1e-5
"""Width of a send-lateness histogram bin (10 µs); the last bin holds everything >= 100 ms."""
LATE_BINS = 10000
_EPSILON_S = 1e-6


class SendGrid:
    """One timer for every call (see the module docstring). ``origin`` is the grid's time zero."""

    def __init__(self, clock: IReactorTime, slot_ms: int = 1) -> None:
        if 20 % slot_ms:
            raise ValueError("slot_ms must divide 20")
        self.clock = clock
        self.slot_s = slot_ms / 1000.0
        self.slots: list[list[LoadCall]] = [[] for _ in range(20 // slot_ms)]
        self.origin = clock.seconds()
        self._done_tick = -1
        self._marks: list[tuple[float, int, LoadCall]] = []
        self._mark_seq = 0
        self._call: IDelayedCall | None = None
        self.next_at = float("inf")
        """When the next tick is due (infinity while nothing is armed)."""
        self.late_hist = array("I", bytes(4 * (LATE_BINS + 1)))
        self.late_max_s = 0.0
        self.sends = 0
        self.ticks = 0

    # --- membership ---------------------------------------------------------------------------

    def join(self, call: LoadCall, earliest: float) -> float:
        """Put ``call`` on the first slot at or after ``earliest``; returns its frame 0 time."""
        tick = max(self._done_tick + 1, math.ceil((earliest - self.origin) / self.slot_s - 1e-9))
        self.slots[tick % len(self.slots)].append(call)
        if self._call is None:
            self._arm()
        return self.origin + tick * self.slot_s

    def leave(self, call: LoadCall) -> None:
        for slot in self.slots:
            if call in slot:
                slot.remove(call)
                return

    def mark_due(self, at: float, call: LoadCall) -> None:
        """Wake ``call`` (:meth:`LoadCall.release_marks`) at ``at``."""
        self._mark_seq += 1
        heapq.heappush(self._marks, (at, self._mark_seq, call))

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    # --- the tick ----------------------------------------------------------------------------

    def record_late(self, late_s: float) -> None:
        """One send, ``late_s`` after its ideal time."""
        self.sends += 1
        if late_s > self.late_max_s:
            self.late_max_s = late_s
        b = int(late_s / LATE_BIN_S) if late_s > 0 else 0
        self.late_hist[b if b < LATE_BINS else LATE_BINS] += 1

    def _arm(self) -> None:
        at = self.next_at = self.origin + (self._done_tick + 1) * self.slot_s
        self._call = self.clock.callLater(max(0.0, at - self.clock.seconds()), self._tick)

    def poll(self, now: float) -> None:
        """Run an overdue tick now. Called before each received message is handled, so a burst
        of arrivals (the proxy sends every call's frame on one tick) does not delay the sends."""
        if now >= self.next_at and self._call is not None:
            self._call.cancel()
            self._tick()

    def _tick(self) -> None:
        self._call = None
        self.next_at = float("inf")
        self.ticks += 1
        clock = self.clock
        now = clock.seconds()
        last = math.floor((now - self.origin) / self.slot_s + 1e-6)
        slots = self.slots
        nslots = len(slots)
        # Every slot that came due since the last tick (all of them after a stall).
        first = self._done_tick + 1
        for tick in range(first, last + 1) if last - first < nslots else range(last - nslots + 1, last + 1):
            members = slots[tick % nslots]
            if members:
                for call in tuple(members):
                    call.send_due(clock.seconds())
        self._done_tick = max(self._done_tick, last)
        marks = self._marks
        while marks and marks[0][0] <= now + _EPSILON_S:
            heapq.heappop(marks)[2].release_marks(now)
        if any(slots) or marks:
            self._arm()
