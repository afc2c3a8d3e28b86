"""The thin Autobahn glue shared by every platform: socket in, sans-IO session, bridge out.

``PlatformServerProtocol`` authenticates the upgrade through the platform module's
``check_upgrade``, feeds every frame to the platform's sans-IO session, hands the events to the
call's :class:`~mediaproxy.bridge.CallBridge`, and sends whatever the session queued. A
:class:`~mediaproxy.platforms.base.ProtocolViolation` is counted and ends this connection only.
The HTTP side (which path is which platform, plain GETs) is :mod:`mediaproxy.platforms.routing`.
"""

from __future__ import annotations

from types import ModuleType

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from mediaproxy.backends.base import Backend
from mediaproxy.bridge import DISCONNECTED, DRAINED, PROTOCOL_ERROR, CallBridge
from mediaproxy.calls import CallContext, HeldCall
from mediaproxy.config import PlatformSettings
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    PlatformError,
    PlatformEvent,
    PlatformSession,
    ProtocolViolation,
    ResumeRequested,
    UpgradeRefused,
    UpgradeRequest,
)

log = Logger()

AUTH_FAILURE_DELAY_S = 0.5
"""How long a refused upgrade waits before its answer."""
CLOSE_HANDSHAKE_TIMEOUT_S = 10.0
"""How long we wait for a platform to finish its close transaction before closing ourselves."""
MAX_MESSAGE_BYTES = 1024 * 1024


def _deny(refused: UpgradeRefused) -> None:
    raise ConnectionDeny(refused.code, refused.reason)


class PlatformServerProtocol(WebSocketServerProtocol):
    """One platform connection (Autobahn calls the camelCase methods)."""

    factory: PlatformServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.session: PlatformSession | None = None
        self.bridge: CallBridge | None = None
        self._upgrade: UpgradeRequest | None = None
        self._closing = False
        self._close_timer: IDelayedCall | None = None
        self._registered = False

    # --- Autobahn callbacks -------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's Twisted dataReceived only adds a debug log whose arguments it formats on
        # every read, even with debug off: a few µs per media frame, thousands of times a
        # second. Go straight to the framing code.
        self._dataReceived(data)

    def onConnect(self, request: ConnectionRequest) -> Deferred[None] | None:
        factory = self.factory
        registry = factory.context.registry
        if registry.draining:
            raise ConnectionDeny(503, "draining: not accepting new calls")
        upgrade = UpgradeRequest(
            target=self.http_request_uri,
            # The Host header as sent: Autobahn's request.host drops the port, but signatures
            # (AudioHook @authority) cover it whenever it is not the scheme's default.
            host=request.headers.get("host", request.host).strip(),
            headers=dict(request.headers),
            public_url=factory.context.public_url,
        )
        try:
            factory.module.check_upgrade(upgrade, factory.settings, factory.context.reactor.seconds())
        except UpgradeRefused as refused:
            factory.context.metrics.protocol_errors_total.labels(factory.settings.name, "auth").inc()
            log.info("{platform}: upgrade refused: {code} {reason}", platform=factory.settings.name,
                     code=refused.code, reason=refused.reason)
            # Every refusal takes the same, long time: timing tells a prober nothing, and
            # guessing is slow (the AudioHook reference verifier's policy, applied to all).
            return deferLater(factory.context.reactor, AUTH_FAILURE_DELAY_S, _deny, refused)
        self._upgrade = upgrade
        if registry.at_capacity() and not getattr(factory.module, "REFUSES_IN_BAND", False):
            raise ConnectionDeny(503, f"at capacity ({registry.max_calls} calls)")
        return None

    def onOpen(self) -> None:
        factory = self.factory
        registry = factory.context.registry
        session = factory.module.new_session(factory.settings, factory.backend)
        if self._upgrade is not None:
            session.bind_upgrade(self._upgrade)
        self.session = session
        if registry.at_capacity():
            # Only platforms that answer capacity in-band get this far (see onConnect).
            session.refuse(f"no capacity ({registry.max_calls} calls)")
        registry.add(self)
        self._registered = True
        self.flush()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        if isBinary:
            events = session.receive_binary(payload)
        else:
            try:
                # Autobahn's own UTF-8 check is off (utf8validateIncoming): this decode is it.
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                self._violation(ProtocolViolation("bad_utf8", "text frame is not UTF-8"))
                return
            events = session.receive_text(text)
        if events:
            self._dispatch(events)
        self.flush()
        if self._closing and not session.awaits_close:
            self._close_now()
        elif session.finished and not session.awaits_close:
            self._close_now()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._cancel_close_timer()
        if self._registered:
            self._registered = False
            self.factory.context.registry.remove(self)
        bridge, session = self.bridge, self.session
        if bridge is None or bridge.ended or session is None:
            return
        if session.survives_disconnect:
            session.connection_lost()
            self._hold(bridge, session)
        else:
            bridge.end(DISCONNECTED, f"socket closed (code {code})")

    # --- events ---------------------------------------------------------------------------------

    def _dispatch(self, events: list[PlatformEvent]) -> None:
        for event in events:
            kind = type(event)
            if kind is CallerAudio:
                if self.bridge is not None:
                    self.bridge.caller_audio(event.data, event.channel)  # type: ignore[union-attr]
            elif kind is CallStarted:
                self._start_call(event)  # type: ignore[arg-type]
            elif kind is ProtocolViolation:
                self._violation(event)  # type: ignore[arg-type]
            elif kind is ResumeRequested:
                self._resume(event.call_id)  # type: ignore[union-attr]
            elif kind is PlatformError:
                platform = self.factory.settings.name
                self.factory.context.metrics.platform_errors_total.labels(platform, event.code).inc()  # type: ignore[union-attr]
                log.info("{platform} reported error {code}: {message}", platform=platform,
                         code=event.code, message=event.message)  # type: ignore[union-attr]
            elif kind is CallEnded:
                if self.bridge is not None:
                    self.bridge.platform_event(event)
                # The platform said goodbye; close once our reply (if any) is out.
                self.hang_up()
            elif self.bridge is not None:
                self.bridge.platform_event(event)
            if self._closing and self.bridge is None:
                break

    def _start_call(self, event: CallStarted) -> None:
        if self.bridge is not None or self.session is None:
            return
        context = self.factory.context
        self.bridge = CallBridge(
            platform=self.factory.settings.name,
            session=self.session,
            leg=self,
            backend=self.factory.backend,
            clock=context.clock,
            playout_settings=context.playout,
            metrics=context.metrics,
            reactor=context.reactor,
        )
        self.bridge.start(event)

    def _violation(self, event: ProtocolViolation) -> None:
        platform = self.factory.settings.name
        self.factory.context.metrics.protocol_errors_total.labels(platform, event.kind).inc()
        log.info("{platform}: protocol error {kind}: {detail}", platform=platform, kind=event.kind,
                 detail=event.detail, call_id=self.bridge.call_id if self.bridge else "")
        if self.bridge is not None:
            self.bridge.end(PROTOCOL_ERROR, event.kind)
        self.hang_up()

    def _hold(self, bridge: CallBridge, session: PlatformSession) -> None:
        context = self.factory.context
        platform = self.factory.settings.name
        grace_s = float(self.factory.settings.options.get("resume_seconds", 30))
        if bridge.playout is not None:
            bridge.playout.pauseProducing()

        def expire() -> None:
            context.registry.release_held(platform, bridge.call_id)
            context.metrics.call_resumes_total.labels(platform, "expired").inc()
            bridge.end(DISCONNECTED, "not resumed within the grace period")

        expiry = context.reactor.callLater(grace_s, expire)  # type: ignore[attr-defined]
        context.registry.hold(platform, bridge.call_id, HeldCall(bridge, expiry))
        log.info("{platform}: call {call_id} held {grace}s for resume", platform=platform,
                 call_id=bridge.call_id, grace=grace_s)

    def _resume(self, call_id: str) -> None:
        context = self.factory.context
        platform = self.factory.settings.name
        held = context.registry.take_held(platform, call_id)
        if held is not None and held.expiry.active():
            held.expiry.cancel()
        bridge = held.bridge if held is not None else self._take_over(call_id)
        if bridge is None or self.session is None:
            if self.session is not None:
                self.session.resume_rejected()
            return
        # The old session keeps the call's protocol state; it moves onto this connection.
        self.session = bridge.session
        self.bridge = bridge
        bridge.leg = self
        self.session.resumed()
        if bridge.playout is not None:
            self.register_producer(bridge.playout)
            bridge.playout.resumeProducing()
        context.metrics.call_resumes_total.labels(platform, "resumed").inc()

    def _take_over(self, call_id: str) -> CallBridge | None:
        """The platform resumed a call whose old socket we still think is open (a half-open
        TCP connection shows nothing until a write times out, minutes later): take the call
        from that connection, which is dropped. None if no connection of ours has it."""
        for connection in list(self.factory.context.registry.connections):
            bridge, session = connection.bridge, connection.session
            if (connection is not self and connection.factory is self.factory and bridge is not None
                    and not bridge.ended and bridge.call_id == call_id
                    and session is not None and session.survives_disconnect):
                connection.give_up_call()
                return bridge
        return None

    def give_up_call(self) -> None:
        """Another connection took this one's call: forget it and drop the socket, without the
        lost connection ending the call or its playout."""
        session, self.session, self.bridge = self.session, None, None
        if session is not None:
            session.connection_lost()
        transport = self.transport
        if transport is not None and getattr(transport, "producer", None) is not None:
            # The playout moves with the call; this transport's connectionLost must not
            # stopProducing it after the new connection has resumed it.
            transport.unregisterProducer()
        self._closing = True
        self.dropConnection(abort=True)

    # --- PlatformLeg (used by the bridge) ---------------------------------------------------------

    def flush(self) -> None:
        session = self.session
        if session is None:
            return
        output = session.take_output()
        if not output or self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        for message in output:
            if type(message) is str:
                self.sendMessage(message.encode("utf-8"), False)
            else:
                self.sendMessage(message, True)  # type: ignore[arg-type]

    def hang_up(self) -> None:
        """Close once the session's close handshake (if any) is done."""
        self.flush()
        if self._closing:
            return
        self._closing = True
        if self.session is not None and self.session.awaits_close:
            reactor = self.factory.context.reactor
            self._close_timer = reactor.callLater(CLOSE_HANDSHAKE_TIMEOUT_S, self._close_now)  # type: ignore[attr-defined]
        else:
            self._close_now()

    def register_producer(self, producer: IPushProducer) -> None:
        transport = self.transport
        if transport is None:
            return
        # twisted.web's HTTPChannel stays registered on the transport after the WebSocket
        # takeover; the playout replaces it.
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(producer, True)

    def drain(self) -> None:
        """Shutdown: end this connection's call and say goodbye."""
        if self.bridge is not None and not self.bridge.ended and self.session is not None:
            self.session.hangup("proxy shutting down", None)
            self.bridge.end(DRAINED, "proxy shutting down")
        self.hang_up()

    def _close_now(self) -> None:
        self._cancel_close_timer()
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendClose(code=1000)
        elif self.transport is not None and self.state not in (
            WebSocketServerProtocol.STATE_CLOSED, WebSocketServerProtocol.STATE_CLOSING
        ):
            # A close handshake already under way (we may get here twice for one goodbye) is
            # left to finish; Autobahn's closeHandshakeTimeout bounds it. Aborting it would
            # turn a clean close into 1006 at the peer.
            self.dropConnection(abort=True)

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None


class PlatformServerFactory(WebSocketServerFactory):
    """The Autobahn factory of one configured platform endpoint."""

    protocol = PlatformServerProtocol

    def __init__(self, settings: PlatformSettings, module: ModuleType, backend: Backend, context: CallContext) -> None:
        super().__init__()
        self.settings = settings
        self.module = module
        self.backend = backend
        self.context = context
        self.setProtocolOptions(
            maxMessagePayloadSize=MAX_MESSAGE_BYTES,
            maxFramePayloadSize=MAX_MESSAGE_BYTES,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            # Checked once, by the decode in onMessage, instead of twice.
            utf8validateIncoming=False,
        )
