"""`ConditionWaiting`: wait for a condition, not for time."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred

__all__ = ["ConditionWaiting"]


class ConditionWaiting:
    """Deferreds that fire when a condition becomes true, for loopback tests that must wait on
    events rather than on time. The owner calls :meth:`poke` after anything that may change the
    answer (a message received, an event recorded)."""

    def when(self, condition: Callable[[], bool]) -> Deferred[None]:
        """A Deferred that fires once ``condition()`` is true."""
        d: Deferred[None] = Deferred()
        if condition():
            d.callback(None)
        else:
            self.__dict__.setdefault("_condition_waiters", []).append((condition, d))
        return d

    def poke(self) -> None:
        """Fire the Deferreds whose condition now holds."""
        waiting = self.__dict__.get("_condition_waiters")
        if not waiting:
            return
        self._condition_waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []
        for condition, d in waiting:
            if condition():
                d.callback(None)
            else:
                self._condition_waiters.append((condition, d))
