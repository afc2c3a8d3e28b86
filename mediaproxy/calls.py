"""The process-wide call context: admission (max_calls, draining) and calls held for resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from mediaproxy.config import PlayoutSettings
from mediaproxy.metrics import Metrics
from mediaproxy.playout import PlayoutClock

if TYPE_CHECKING:
    from mediaproxy.bridge import CallBridge


@dataclass
class HeldCall:
    """A call whose platform socket dropped but which the platform may resume."""

    bridge: CallBridge
    expiry: IDelayedCall


@dataclass
class CallRegistry:
    """Counts platform connections against ``max_calls``, refuses new ones while draining,
    and holds resumable calls for their grace period."""

    max_calls: int
    connections: set[Any] = field(default_factory=set)
    draining: bool = False
    held: dict[tuple[str, str], HeldCall] = field(default_factory=dict)
    _idle_waiters: list[Deferred[None]] = field(default_factory=list)

    def at_capacity(self) -> bool:
        return len(self.connections) >= self.max_calls

    def add(self, connection: Any) -> None:
        self.connections.add(connection)

    def remove(self, connection: Any) -> None:
        self.connections.discard(connection)
        self._check_idle()

    def hold(self, platform: str, call_id: str, held: HeldCall) -> None:
        self.held[(platform, call_id)] = held

    def take_held(self, platform: str, call_id: str) -> HeldCall | None:
        held = self.held.pop((platform, call_id), None)
        self._check_idle()
        return held

    def release_held(self, platform: str, call_id: str) -> None:
        self.held.pop((platform, call_id), None)
        self._check_idle()

    def when_idle(self) -> Deferred[None]:
        """Fires when no connection is open and no call is held."""
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def _check_idle(self) -> None:
        if not self.connections and not self.held:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)


@dataclass(frozen=True)
class CallContext:
    """What every platform connection shares: the reactor, the pacing clock, metrics, settings
    and the registry. Built once by the service (the composition root)."""

    reactor: IReactorTime
    clock: PlayoutClock
    metrics: Metrics
    playout: PlayoutSettings
    public_url: str
    registry: CallRegistry
