"""Collecting the caller's key presses into one entry (a PIN, an account number, a menu choice).

Platforms report DTMF one key at a time; a model given one turn per key answers each of them.
The collector gathers keys until the terminator (``#``, not passed on), until ``max_digits``, or
until ``timeout_ms`` passes after the last key, then hands the whole entry on once.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

DTMF_KEYS = frozenset("0123456789*#ABCD")


class DigitCollector:
    """Gathers keys into entries for ``deliver`` (called with the digits, never empty).

    ``reactor`` times the inter-digit timeout (``task.Clock`` in tests).
    """

    def __init__(self, reactor: IReactorTime, deliver: Callable[[str], None], *, timeout_ms: int = 3000,
                 terminator: str = "#", max_digits: int = 16) -> None:
        self._reactor = reactor
        self._deliver = deliver
        self._timeout_s = timeout_ms / 1000.0
        self._terminator = terminator
        self._max_digits = max_digits
        self._digits: list[str] = []
        self._timer: IDelayedCall | None = None

    @property
    def pending(self) -> str:
        """The keys gathered so far."""
        return "".join(self._digits)

    def feed(self, keys: str) -> None:
        """The caller pressed ``keys`` (one or more; anything but a DTMF key is ignored)."""
        for key in keys:
            if key not in DTMF_KEYS:
                continue
            if self._terminator and key == self._terminator:
                self.flush()
                continue
            self._digits.append(key)
            if len(self._digits) >= self._max_digits:
                self.flush()
        if self._digits:
            self._arm()

    def flush(self) -> None:
        """Hand on what was gathered (nothing if nothing was)."""
        self._cancel()
        if self._digits:
            digits, self._digits = "".join(self._digits), []
            self._deliver(digits)

    def stop(self) -> None:
        """The call ended: forget the keys, leave no timer behind."""
        self._cancel()
        self._digits = []

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout_s)
        else:
            self._timer = self._reactor.callLater(self._timeout_s, self.flush)

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
