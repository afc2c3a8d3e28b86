"""A local bot speaking the proxy's bot protocol (docs/protocols/websocket-backend.md), for tests.

:class:`FakeBotServer` listens on ``127.0.0.1`` (Autobahn). Per connection it checks
``Authorization: Bearer <key>`` (HTTP 401 otherwise; ``api_key=None`` accepts a connection
without the header and refuses one with it), requires ``start`` as the first message (checked
against the protocol: version, fields and their types), then records everything the proxy sends:
caller audio, ``dtmf``, ``speech_started``/``speech_stopped``, ``mark`` answers, ``action_result``,
``error`` and ``stop``. With ``echo`` set it sends every caller audio frame straight back. A test
scripts the rest on cue through the connection: :meth:`FakeBotConnection.speak` (audio in chunks,
one per reactor turn, far faster than real time, optionally followed by a mark), ``mark``,
``clear``, ``hangup``, ``transfer``, ``transcript``, raw text, or a dropped TCP connection.
Problems with what the proxy sent are collected in ``server.violations``.

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeBotServer.when`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny

from mediaproxy.testing.fake_ws_server import FakeServerConnection, FakeWebSocketServer

__all__ = ["START_FIELDS", "FakeBotConnection", "FakeBotServer"]

START_FIELDS: dict[str, type] = {
    "type": str, "version": int, "call_id": str, "platform": str, "audio_format": str, "context": dict,
    "resumed": bool,
}
"""Every field of ``start`` and its JSON type (version 1)."""
_AUDIO_FORMATS = ("pcmu/8000", "pcma/8000", "l16/8000", "l16/16000", "l16/24000")
_PROXY_MESSAGES = frozenset({"dtmf", "speech_started", "speech_stopped", "mark", "action_result", "error", "stop"})


class FakeBotConnection(FakeServerConnection):
    """One proxy connection to the fake bot."""

    factory: FakeBotFactory

    def onConnect(self, request: Any) -> None:
        server = self.factory.server
        self.headers = dict(request.headers)
        server.handshakes.append(self.headers)
        expected = None if server.api_key is None else f"Bearer {server.api_key}"
        if self.headers.get("authorization") != expected:
            raise ConnectionDeny(401, "Unauthorized")

    def onOpen(self) -> None:
        server = self.factory.server
        self.index = len(server.connections)
        self.start: dict[str, Any] | None = None
        self.received: list[dict[str, Any]] = []
        """Every text message after ``start``, in order."""
        self.caller_audio = bytearray()
        self.audio_frames = 0
        self.closed = False
        server.connections.append(self)
        server.poke()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The received messages of type ``kind``."""
        return [m for m in self.received if m.get("type") == kind]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        server = self.factory.server
        if isBinary:
            if self.start is None:
                server.violations.append("audio before start")
            self.caller_audio += payload
            self.audio_frames += 1
            if server.echo:
                self.sendMessage(payload, isBinary=True)
        else:
            self.on_text(payload)
        server.poke()

    def on_text(self, payload: bytes) -> None:
        server = self.factory.server
        try:
            message = json.loads(payload)
        except ValueError:
            server.violations.append("a text frame that is not JSON")
            return
        if not isinstance(message, dict):
            server.violations.append("a text frame that is not an object")
            return
        kind = message.get("type")
        if self.start is None:
            if kind != "start":
                server.violations.append(f"{kind!r} before start")
                return
            problems = [f"start.{k} is missing or not {t.__name__}" for k, t in START_FIELDS.items()
                        if not isinstance(message.get(k), t) or (t is int and isinstance(message.get(k), bool))]
            problems += [f"start.{k} is not a field" for k in message if k not in START_FIELDS]
            if message.get("version") != 1 or message.get("audio_format") not in _AUDIO_FORMATS:
                problems.append("start: not version 1 or an unknown audio_format")
            server.violations.extend(problems)
            self.start = message
            return
        if kind == "start":
            server.violations.append("start sent twice")
        elif kind not in _PROXY_MESSAGES:
            server.violations.append(f"unknown message type {kind!r}")
        self.received.append(message)

    # --- the bot's side, on cue ------------------------------------------------------------------

    def speak(self, audio: bytes, mark: str | None = None, chunk_sizes: Sequence[int] | None = None) -> None:
        """Send ``audio`` in ``chunk_sizes`` chunks (cycled; the server's by default), one per
        reactor turn, then the ``mark`` named (if any)."""
        sizes = list(chunk_sizes or self.factory.server.chunk_sizes)
        self.factory.server.reactor.callLater(0, self._stream, audio, 0, 0, sizes, mark)

    def _stream(self, audio: bytes, sent: int, n: int, sizes: list[int], mark: str | None) -> None:
        if self.closed:
            return
        if sent < len(audio):
            chunk = audio[sent: sent + sizes[n % len(sizes)]]
            self.sendMessage(chunk, isBinary=True)
            self.factory.server.reactor.callLater(0, self._stream, audio, sent + len(chunk), n + 1, sizes, mark)
            return
        if mark is not None:
            self.mark(mark)
        self.factory.server.poke()

    def mark(self, name: str) -> None:
        self.send({"type": "mark", "name": name})

    def clear(self) -> None:
        self.send({"type": "clear"})

    def hangup(self, reason: str = "done") -> None:
        self.send({"type": "hangup", "reason": reason})

    def transfer(self, target: str, summary: str = "") -> None:
        self.send({"type": "transfer", "target": target, "summary": summary})

    def transcript(self, role: str, text: str) -> None:
        self.send({"type": "transcript", "role": role, "text": text})

    def send_text(self, text: str) -> None:
        if not self.closed:
            self.sendMessage(text.encode("utf-8"), isBinary=False)


class FakeBotFactory(WebSocketServerFactory):
    protocol = FakeBotConnection  # type: ignore[assignment]
    server: FakeBotServer


class FakeBotServer(FakeWebSocketServer[FakeBotConnection]):
    """The fake bot. ``reactor``: listening and time; ``api_key``: the Bearer token accepted
    (None: only a connection without one). Knobs: ``echo`` (send caller audio straight back),
    ``chunk_sizes`` for :meth:`FakeBotConnection.speak`, in bytes."""

    def __init__(self, reactor: Any, api_key: str | None = "test-key") -> None:
        super().__init__(reactor)
        self.api_key = api_key
        self.echo = False
        self.chunk_sizes: Sequence[int] = (640, 1281, 97, 2000, 322)

    def listen(self, port: int = 0) -> str:
        """Start listening on 127.0.0.1 (``port`` 0: any free one); return the ws:// URL."""
        return f"ws://127.0.0.1:{self.listen_on(self.websocket_factory(FakeBotFactory), port)}/bot"
