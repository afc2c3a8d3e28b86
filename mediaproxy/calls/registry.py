"""CallRegistry: every call of the process, from admission to drain.

It admits platform connections against ``max_calls`` (refusing while draining), creates the
:class:`~mediaproxy.calls.bridge.CallBridge` of each connection, holds a call whose socket
dropped for its platform's resume grace (AudioCodes ``session.resume``), hands a held call to the
connection that resumes it — or takes it from a connection that still looks open (a half-open
TCP connection shows nothing until a write times out, minutes later) — and drains: when asked to
stop it refuses new calls, lets live ones finish for the drain time, then ends each one its
platform's way. The service asks it; it never reaches into the registry.

It also ends calls whose platform has gone quiet: every open connection counts the messages it
receives (:attr:`PlatformLeg.messages_received`); one timer for the whole process, armed only
while a connection is open, compares the counts every tenth of ``idle_timeout_s``. A connection
whose count has not moved for ``idle_timeout_s`` gets its platform's goodbye with outcome
``timeout`` and is closed (nothing is rescheduled per message).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from mediaproxy.calls.bridge import CallBridge
from mediaproxy.calls.context import CallContext, Endpoint
from mediaproxy.calls.leg import PlatformLeg
from mediaproxy.outcome import Outcome


@dataclass
class _HeldCall:
    """A call whose platform socket dropped but which the platform may resume."""

    bridge: CallBridge
    expiry: IDelayedCall


class CallRegistry:
    """The process's calls. ``max_calls`` bounds open platform connections (a connection that
    has not started its call yet counts: it holds a socket and will)."""

    def __init__(self, context: CallContext, max_calls: int, idle_timeout_s: float = 0.0) -> None:
        self.context = context
        self.max_calls = max_calls
        self.idle_timeout_s = idle_timeout_s
        self.draining = False
        self._connections: dict[PlatformLeg, CallBridge] = {}
        # Per open connection: its message count at the last idle pass and since when (reactor
        # seconds) it has had that count. A connection already timed out is dropped from it.
        self._activity: dict[PlatformLeg, tuple[int, float]] = {}
        self._idle_timer: IDelayedCall | None = None
        self._held: dict[tuple[str, str], _HeldCall] = {}
        self._idle_waiters: list[Deferred[None]] = []
        self._drain_timer: IDelayedCall | None = None

    # --- admission ---------------------------------------------------------------------------------

    def refusal(self) -> str | None:
        """Why a new connection would be refused now (None: it is welcome)."""
        if self.draining:
            return "draining: not accepting new calls"
        if len(self._connections) >= self.max_calls:
            return f"at capacity ({self.max_calls} calls)"
        return None

    def count_refused(self, platform: str) -> None:
        """Count a new call refused on ``platform`` for the reason :meth:`refusal` gives."""
        reason = "draining" if self.draining else "capacity"
        self.context.metrics.calls_refused_total.labels(platform, reason).inc()

    def connect(self, leg: PlatformLeg, endpoint: Endpoint) -> CallBridge:
        """A platform connection opened on ``endpoint``: its call (not started yet). Over
        capacity (only platforms that refuse in-band get this far), the session is told to
        refuse, in its own protocol."""
        full = len(self._connections) >= self.max_calls
        bridge = CallBridge(endpoint, self.context, leg, self)
        self._connections[leg] = bridge
        self._watch(leg)
        if full:
            self.count_refused(endpoint.name)
            leg.session.refuse(f"no capacity ({self.max_calls} calls)")
            leg.flush()
        return bridge

    def disconnect(self, leg: PlatformLeg) -> None:
        """``leg``'s socket is gone; its call ends unless its platform may resume it."""
        bridge = self._connections.pop(leg, None)
        self._activity.pop(leg, None)
        if not self._activity:
            self._stop_idle_timer()
        if bridge is not None and bridge.leg is leg:
            bridge.connection_lost()
        self._check_idle()

    def connected_calls(self) -> list[CallBridge]:
        """The call of each open platform connection (started or not)."""
        return list(self._connections.values())

    def held_calls(self) -> dict[tuple[str, str], CallBridge]:
        """Calls held for resume, by (platform, call id)."""
        return {key: held.bridge for key, held in self._held.items()}

    # --- resume ----------------------------------------------------------------------------------

    def hold(self, bridge: CallBridge) -> None:
        """Keep ``bridge``'s call for its platform's resume grace period."""
        endpoint = bridge.endpoint
        grace = endpoint.platform.resume_grace_s
        grace_s = grace(endpoint.options) if grace is not None else 0.0
        key = (endpoint.name, bridge.call_id)

        def expire() -> None:
            self._held.pop(key, None)
            self.context.metrics.call_resumes_total.labels(endpoint.name, "expired").inc()
            bridge.end(Outcome.DISCONNECTED, "not resumed within the grace period")
            self._check_idle()

        self._held[key] = _HeldCall(bridge, self.context.reactor.callLater(grace_s, expire))
        bridge.log.info("{platform}: call {call_id} held {grace}s for resume", grace=grace_s)

    def resume(self, call_id: str, leg: PlatformLeg) -> None:
        """``leg`` asks to continue the call ``call_id`` of its endpoint: move the call onto it,
        or tell the session to refuse."""
        current = self._connections.get(leg)
        if current is None:
            return
        endpoint = current.endpoint
        held = self._held.pop((endpoint.name, call_id), None)
        if held is not None and held.expiry.active():
            held.expiry.cancel()
        bridge = held.bridge if held is not None else self._take_over(endpoint, call_id, leg)
        if bridge is None:
            leg.session.resume_rejected()
            leg.flush()
            return
        self._connections[leg] = bridge
        bridge.adopt(leg)
        self.context.metrics.call_resumes_total.labels(endpoint.name, "resumed").inc()

    def _take_over(self, endpoint: Endpoint, call_id: str, leg: PlatformLeg) -> CallBridge | None:
        for other, bridge in list(self._connections.items()):
            if (other is not leg and bridge.endpoint is endpoint and bridge.started and not bridge.ended
                    and bridge.call_id == call_id and bridge.leg is other and other.session.survives_disconnect):
                del self._connections[other]
                self._activity.pop(other, None)
                other.give_up()
                return bridge
        return None

    def ended(self, bridge: CallBridge) -> None:
        """``bridge``'s call has ended (the bridge tells us)."""
        key = (bridge.endpoint.name, bridge.call_id)
        held = self._held.get(key)
        if held is not None and held.bridge is bridge:
            del self._held[key]
            if held.expiry.active():
                held.expiry.cancel()
            self._check_idle()

    # --- idle connections ----------------------------------------------------------------------

    def _watch(self, leg: PlatformLeg) -> None:
        """Start watching ``leg`` for silence (and arm the one idle timer if it is not)."""
        if self.idle_timeout_s <= 0:
            return
        reactor = self.context.reactor
        self._activity[leg] = (leg.messages_received, reactor.seconds())
        if self._idle_timer is None:
            self._idle_timer = reactor.callLater(self.idle_timeout_s / 10, self._idle_pass)

    def _idle_pass(self) -> None:
        """The periodic check: end the calls whose platform sent nothing for the idle timeout.
        Costs one comparison per open connection every tenth of the timeout; the timer stops
        when no connection is watched (an idle process arms nothing)."""
        self._idle_timer = None
        reactor = self.context.reactor
        now = reactor.seconds()
        quiet: list[PlatformLeg] = []
        for leg, (seen, since) in self._activity.items():
            count = leg.messages_received
            if count != seen:
                self._activity[leg] = (count, now)
            elif now - since >= self.idle_timeout_s:
                quiet.append(leg)
        for leg in quiet:
            del self._activity[leg]
            self._time_out(leg)
        if self._activity:
            self._idle_timer = reactor.callLater(self.idle_timeout_s / 10, self._idle_pass)

    def _time_out(self, leg: PlatformLeg) -> None:
        bridge = self._connections.get(leg)
        if bridge is None:
            return
        reason = f"no message from the platform for {self.idle_timeout_s:g} s"
        bridge.log.info("{platform}: call {call_id} idle: {reason}", reason=reason)
        if bridge.leg is leg and bridge.started and not bridge.ended:
            # The platform's own goodbye first (AudioHook disconnect, AudioCodes hangup), then
            # the close: a platform that is merely slow still learns why the call ended.
            leg.session.hangup(Outcome.TIMEOUT, reason)
            bridge.end(Outcome.TIMEOUT, reason)
        leg.close()

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    # --- drain -----------------------------------------------------------------------------------

    def drain(self, seconds: float) -> Deferred[None]:
        """Refuse new calls from now on, let live ones go on for ``seconds``, then end every call
        its platform's way. Fires once no connection is open and no call is held."""
        self.draining = True
        self.context.metrics.draining.set(1)
        done = self.when_idle()
        if not done.called and self._drain_timer is None:
            self._drain_timer = self.context.reactor.callLater(seconds, self.end_all)
        return done

    def end_all(self, reason: str = "proxy shutting down") -> None:
        """End every call now: each open connection says its platform's goodbye and closes; each
        held call ends."""
        self._drain_timer = None
        for bridge in list(self._connections.values()):
            bridge.drain(reason)
        for held in list(self._held.values()):
            held.bridge.end(Outcome.DRAINED, reason)

    def when_idle(self) -> Deferred[None]:
        """Fires when no connection is open and no call is held."""
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def _check_idle(self) -> None:
        if not self._activity:
            self._stop_idle_timer()
        if self._connections or self._held:
            return
        if self._drain_timer is not None:
            if self._drain_timer.active():
                self._drain_timer.cancel()
            self._drain_timer = None
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)
