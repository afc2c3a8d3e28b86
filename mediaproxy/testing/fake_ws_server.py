"""What the fake WebSocket services (Deepgram, ElevenLabs, Gemini, the bot) share, for tests:
:class:`FakeServerConnection`, one client connection that records its end and can be cut or sent
JSON to; :class:`StreamedAnswers`, such a connection's agent answers streamed in irregular chunks
(held, cut, continued on cue); and :class:`FakeWebSocketServer`, the listening on ``127.0.0.1``,
the connections made and the violations found, and stopping (which waits until every connection
has closed).

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeWebSocketServer.when`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed

from mediaproxy.audio.format import AudioFormat
from mediaproxy.testing.waiting import ConditionWaiting

__all__ = ["FakeServerConnection", "FakeWebSocketServer", "StreamedAnswers"]

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


class StreamedAnswers(FakeServerConnection):
    """A fake agent's answers, one at a time (``turn``), their audio in ``output_format`` sent one
    chunk per reactor turn (``server.chunk_sizes`` cycled, whole samples, far faster than real
    time). ``server.pause_after_ms`` holds each answer there until :meth:`continue_turn`;
    ``server.late_chunks`` chunks of a cut answer still go out (in flight). Each fake says how a
    chunk goes out (:meth:`send_chunk`) and what ends an answer (:meth:`turn_delivered`,
    :meth:`late_turn_ended`)."""

    turn: dict[str, Any] | None = None
    output_format: AudioFormat

    def stream_turn(self, audio: bytes, then_call: Any, **details: Any) -> None:
        """Start streaming ``audio`` as the answer; ``then_call`` is what follows it (the fake's
        tool call, if any), ``details`` what the fake keeps with it."""
        self.turn = {"audio": audio, "sent": 0, "chunks": 0, "late": None, "then_call": then_call,
                     "paused": False, **details}
        self.factory.server.reactor.callLater(0, self._stream, self.turn)

    def _stream(self, turn: dict[str, Any]) -> None:
        server = self.factory.server
        if turn is not self.turn or self.closed or turn["paused"]:
            return
        audio, sent = turn["audio"], turn["sent"]
        end = len(audio)
        if turn["late"] is None and not turn.get("released") and server.pause_after_ms is not None:
            end = min(end, server.pause_after_ms * self.output_format.bytes_per_ms)
            if sent >= end:
                turn["paused"] = True
                server.poke()
                return
        size = server.chunk_sizes[turn["chunks"] % len(server.chunk_sizes)]
        size = max(size - size % self.output_format.sample_bytes, self.output_format.sample_bytes)
        chunk = audio[sent: min(sent + size, end)]
        turn["sent"] += len(chunk)
        turn["chunks"] += 1
        self.send_chunk(turn, chunk)
        if turn["late"] is not None:
            turn["late"] -= 1
            if turn["late"] <= 0 or turn["sent"] >= len(audio):
                self.turn = None
                self.late_turn_ended(turn)
                server.poke()
                return
        elif turn["sent"] >= len(audio):
            self.turn = None
            self.turn_delivered(turn)
            server.poke()
            return
        server.reactor.callLater(0, self._stream, turn)

    def connection_ended(self) -> None:
        self.turn = None

    def send_chunk(self, turn: dict[str, Any], chunk: bytes) -> None:
        """Send one ``chunk`` of ``turn``'s audio."""
        raise NotImplementedError

    def turn_delivered(self, turn: dict[str, Any]) -> None:
        """All of ``turn``'s audio went out (it is no longer :attr:`turn`)."""

    def late_turn_ended(self, turn: dict[str, Any]) -> None:
        """The last chunk of the cut ``turn`` went out."""

    def continue_turn(self) -> None:
        """Let an answer held by ``pause_after_ms`` deliver the rest of its audio."""
        turn = self.turn
        if turn is not None and turn["paused"]:
            turn["paused"] = False
            turn["released"] = True
            self.factory.server.reactor.callLater(0, self._stream, turn)

    def cut_turn(self) -> None:
        """The caller talks over the answer in progress: nothing follows it, ``late_chunks`` more
        of it still go out, then it stops."""
        turn = self.turn
        if turn is None:
            return
        server = self.factory.server
        turn["then_call"] = None
        if server.late_chunks <= 0:
            self.turn = None
            return
        turn["late"] = server.late_chunks
        was_paused, turn["paused"] = turn["paused"], False
        if was_paused:
            server.reactor.callLater(0, self._stream, turn)


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
