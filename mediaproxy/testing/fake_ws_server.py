"""What the fake WebSocket services (Deepgram, ElevenLabs, Gemini, the bot) share, for tests:
:class:`FakeServerConnection`, one client connection that records its end and can be cut or sent
JSON to, and :class:`FakeWebSocketServer`, the listening on ``127.0.0.1``, the connections made
and the violations found, and stopping (which waits until every connection has closed).

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeWebSocketServer.when`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed

from mediaproxy.testing.waiting import ConditionWaiting

__all__ = ["FakeServerConnection", "FakeWebSocketServer"]

C = TypeVar("C", bound="FakeServerConnection")


class FakeServerConnection(WebSocketServerProtocol):
    """One client connection to a fake service (``factory.server`` is the service)."""

    factory: Any
    closed = False

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.connection_ended()
        self.factory.server.poke()

    def connection_ended(self) -> None:
        """The connection closed: forget what was under way (each fake says what)."""

    def drop(self) -> None:
        """Cut the TCP connection without a closing handshake (a mid-call network failure)."""
        transport: Any = self.transport
        transport.abortConnection()

    def send(self, message: Mapping[str, Any]) -> None:
        """``message`` as a JSON text frame (nothing once closed)."""
        if not self.closed:
            self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)


class FakeWebSocketServer(ConditionWaiting, Generic[C]):
    """A fake service's listening side, on ``reactor`` (listening and time). ``connections`` are
    the ``C`` connections made, in order; ``handshakes`` their upgrade headers (where the fake
    records them); ``violations`` the problems found with what the client sent."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.connections: list[C] = []
        self.handshakes: list[dict[str, str]] = []
        self.violations: list[str] = []
        self._ports: list[Any] = []

    def listen_on(self, factory: Any, port: int = 0) -> int:
        """Serve ``factory`` on 127.0.0.1 (``port`` 0: any free one); return the port."""
        listening = self.reactor.listenTCP(port, factory, interface="127.0.0.1")
        self._ports.append(listening)
        port_number: int = listening.getHost().port
        return port_number

    def websocket_factory(self, factory_class: type[WebSocketServerFactory]) -> Any:
        """A ``factory_class`` serving this fake (its connections find it as ``factory.server``)."""
        factory: Any = factory_class("ws://127.0.0.1", reactor=self.reactor)
        factory.server = self
        return factory

    def connection(self, index: int = -1) -> C:
        return self.connections[index]

    def stop(self) -> Deferred[Any]:
        """Stop listening and wait until every connection has closed."""
        ports, self._ports = self._ports, []
        stopped = [maybeDeferred(port.stopListening) for port in ports] or [succeed(None)]
        closing = [*stopped, self.when(lambda: all(c.closed for c in self.connections))]
        return DeferredList(closing, fireOnOneErrback=True)
