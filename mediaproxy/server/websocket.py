"""The thin Autobahn glue shared by every platform: frames in and out of a :class:`PlatformPort`.

``PlatformServerProtocol`` authenticates the upgrade with its platform type's ``check_upgrade``
and asks the call registry for admission; once open, it hands every frame to its port, which
feeds the sans-IO session and the call. It knows nothing of any platform or of the call's life.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from mediaproxy import wsframe
from mediaproxy.calls import CallRegistry, Endpoint
from mediaproxy.platforms.base import UpgradeRefused, UpgradeRequest
from mediaproxy.server.port import PlatformPort

log = Logger()

AUTH_FAILURE_DELAY_S = 0.5
"""How long a refused upgrade waits before its answer: every refusal takes the same, long time,
so timing tells a prober nothing and guessing is slow (the AudioHook reference verifier's
policy, applied to every platform)."""


class ListenerLimits(Protocol):
    """What the glue reads of ``[proxy]`` (``config.ProxySettings``; the server layer does not
    import the config): sizes in bytes, times in seconds."""

    @property
    def public_url(self) -> str: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_frame_bytes(self) -> int: ...
    @property
    def open_handshake_timeout_seconds(self) -> float: ...
    @property
    def close_handshake_timeout_seconds(self) -> float: ...
    @property
    def auto_ping_interval_seconds(self) -> float: ...
    @property
    def auto_ping_timeout_seconds(self) -> float: ...


def _deny(refused: UpgradeRefused) -> None:
    raise ConnectionDeny(refused.code, refused.reason)


class PlatformServerProtocol(WebSocketServerProtocol):
    """One platform connection (Autobahn calls the camelCase methods)."""

    factory: PlatformServerFactory

    if not TYPE_CHECKING:
        # The common frames skip Autobahn's per-message overhead (mediaproxy/wsframe.py).
        dataReceived = wsframe.data_received
        _dataReceived = wsframe.lean_data_received
        sendMessage = wsframe.lean_send_message

    def __init__(self) -> None:
        super().__init__()
        self.port: PlatformPort | None = None
        self._upgrade: UpgradeRequest | None = None

    # --- Autobahn callbacks -------------------------------------------------------------------

    # Autobahn's annotation omits it, but onConnect may return a Deferred (a delayed refusal).
    def onConnect(self, request: ConnectionRequest) -> Deferred[None] | str | None:  # type: ignore[override]
        factory = self.factory
        endpoint = factory.endpoint
        if factory.registry.draining:
            factory.registry.count_refused(endpoint.name)
            raise ConnectionDeny(503, "draining: not accepting new calls")
        upgrade = UpgradeRequest(
            target=self.http_request_uri,
            # The Host header as sent: Autobahn's request.host drops the port, but signatures
            # (AudioHook @authority) cover it whenever it is not the scheme's default.
            host=request.headers.get("host", request.host).strip(),
            headers=dict(request.headers),
            public_url=factory.public_url,
        )
        try:
            endpoint.platform.check_upgrade(upgrade, endpoint.options, factory.reactor.seconds())
        except UpgradeRefused as refused:
            factory.registry.context.metrics.protocol_errors_total.labels(endpoint.name, "auth").inc()
            log.info("{platform}: upgrade refused: {code} {reason}", platform=endpoint.name,
                     code=refused.code, reason=refused.reason)
            return deferLater(factory.reactor, AUTH_FAILURE_DELAY_S, _deny, refused)
        self._upgrade = upgrade
        refusal = factory.registry.refusal()
        if refusal is not None and not endpoint.platform.refuses_in_band:
            factory.registry.count_refused(endpoint.name)
            raise ConnectionDeny(503, refusal)
        # The platform's WebSocket subprotocol, when the client offers it (jambonz requires it).
        return next((p for p in request.protocols if p in endpoint.platform.subprotocols), None)

    def onOpen(self) -> None:
        factory = self.factory
        endpoint = factory.endpoint
        session = endpoint.platform.new_session(endpoint.options, endpoint.backend.format_preference)
        if self._upgrade is not None:
            session.bind_upgrade(self._upgrade)
        port = PlatformPort(session, self, factory.reactor)
        self.port = port
        port.call = factory.registry.connect(port, endpoint)
        port.flush()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.port is not None:
            self.port.received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        port = self.port
        if port is not None:
            port.lost()
            self.factory.registry.disconnect(port)

    # --- Wire (used by the port) -------------------------------------------------------------------

    def send_frame(self, message: str | bytes) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if type(message) is str:
            self.sendMessage(message.encode("utf-8"), False)
        else:
            self.sendMessage(message, True)

    def close_socket(self, code: int = 1000) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            # sendClose refuses the protocol's own codes (1007 for a text frame that is not
            # UTF-8); the frame method under it takes any.
            self.sendCloseFrame(code=code)
        elif self.transport is not None and self.state not in (
            WebSocketServerProtocol.STATE_CLOSED, WebSocketServerProtocol.STATE_CLOSING
        ):
            # A close handshake already under way (we may get here twice for one goodbye) is
            # left to finish; Autobahn's closeHandshakeTimeout bounds it. Aborting it would
            # turn a clean close into 1006 at the peer.
            self.dropConnection(abort=True)

    def drop_socket(self) -> None:
        self.dropConnection(abort=True)

    def register_producer(self, producer: IPushProducer) -> None:
        # twisted.web's HTTPChannel stays registered on the transport after the WebSocket
        # takeover; the playout replaces it.
        self.unregister_producer()
        if self.transport is not None:
            IConsumer(self.transport).registerProducer(producer, True)

    def unregister_producer(self) -> None:
        transport = self.transport
        if transport is not None and getattr(transport, "producer", None) is not None:
            IConsumer(transport).unregisterProducer()


class PlatformServerFactory(WebSocketServerFactory):
    """The Autobahn factory of one configured platform endpoint; its limits (message and frame
    size, handshake timeouts, keep-alive pings) come from ``[proxy]``."""

    protocol = PlatformServerProtocol  # type: ignore[assignment]  # Autobahn's factories take a protocol class

    def __init__(self, endpoint: Endpoint, registry: CallRegistry, settings: ListenerLimits) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.registry = registry
        self.reactor = registry.context.reactor
        self.public_url = settings.public_url
        self.setProtocolOptions(**protocol_options(settings))


def protocol_options(settings: ListenerLimits) -> dict[str, object]:
    """Autobahn's ``setProtocolOptions`` for a platform listener, from ``[proxy]``."""
    ping_s = settings.auto_ping_interval_seconds
    return {
        "maxMessagePayloadSize": settings.max_message_bytes,
        "maxFramePayloadSize": settings.max_frame_bytes,
        # Autobahn's timer starts once twisted.web has read the whole upgrade request (the
        # Site's own timeout bounds the wait for it): it bounds our answer, so it must outlast
        # the delayed refusal.
        "openHandshakeTimeout": max(settings.open_handshake_timeout_seconds, AUTH_FAILURE_DELAY_S + 0.5),
        "closeHandshakeTimeout": settings.close_handshake_timeout_seconds,
        "autoPingInterval": ping_s,
        # A pong that never comes drops the connection; 0 means "as long as the interval".
        "autoPingTimeout": (settings.auto_ping_timeout_seconds or ping_s) if ping_s else 0,
        # Checked once, by the decode in the port, instead of twice.
        "utf8validateIncoming": False,
        # A peer that breaks the WebSocket rules (a message over the size bound above all) gets
        # a close frame with the reason (1009 "too big") rather than a bare TCP reset; the
        # closing handshake timeout still bounds the wait for its answer.
        "failByDrop": False,
    }
