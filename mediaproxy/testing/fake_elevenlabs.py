"""A local stand-in for ElevenLabs Agents (Conversational AI), for tests.

:class:`FakeElevenLabsServer` listens on ``127.0.0.1`` twice: an HTTP API answering
``GET /v1/convai/conversation/get-signed-url?agent_id=`` (``xi-api-key`` checked: 401 otherwise;
an unknown agent 404) with a one-use signed WebSocket URL, and the conversation WebSocket
(Autobahn). A private agent's WebSocket takes only a signed URL it issued, once (403 otherwise);
a public one takes ``?agent_id=``. Per connection it requires ``conversation_initiation_client_data``
as the first message and checks it against :data:`INITIATION_SCHEMA` (an override the agent does
not allow closes the connection with 1008, as the service does), then sends
``conversation_initiation_metadata`` with the agent's formats. It runs an energy VAD
(:class:`~mediaproxy.audio.vad.EnergyDetector`) over the caller's ``user_audio_chunk`` audio, 20 ms
at a time: at the end of each caller turn it sends ``user_transcript``, ``agent_response`` and the
answer's ``audio`` chunks (irregular sizes, one per reactor turn, far faster than real time), all
under one fresh ``event_id``. A caller speaking over an answer gets ``interruption{event_id}``,
then ``late_chunks`` more chunks of the cut answer (stale: the client must drop them), then
``agent_response_correction``. It can send ``ping`` (the ``pong`` must echo its ``event_id``), a
``client_tool_call`` instead of (or after) an answer and checks the ``client_tool_result``,
answers ``user_message`` like a caller turn, records ``contextual_update``, can send anything,
end the conversation (close 1000), or drop the TCP connection. Problems with what the client sent
are collected in ``server.violations``.

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeElevenLabsServer.when`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from mediaproxy.audio.format import AudioFormat
from mediaproxy.audio.vad import EnergyDetector
from mediaproxy.testing.fake_realtime import TEST_VAD, pattern
from mediaproxy.testing.fake_ws_server import FakeWebSocketServer, StreamedAnswers

__all__ = ["INITIATION_SCHEMA", "FakeElevenLabsConnection", "FakeElevenLabsServer", "check_initiation"]

# Written from the vendor's WebSocket API reference ("Client to server events",
# conversation_initiation_client_data): a schema node is a Python type, a tuple of types, or a
# dict of the allowed keys (a key ending in "!" is required).
_SCALAR = (str, int, float, bool)
INITIATION_SCHEMA: dict[str, Any] = {
    "type!": str,
    "conversation_config_override": {
        "agent": {"prompt": {"prompt": str}, "first_message": str, "language": str},
        "tts": {"voice_id": str},
        "conversation": {"text_only": bool},
    },
    "custom_llm_extra_body": dict,
    "dynamic_variables": {"*": _SCALAR},
    "user_id": str,
    "source_info": dict,
}


def check_initiation(value: Any, schema: Any = None, path: str = "initiation") -> list[str]:
    """The ways ``value`` departs from ``schema`` (:data:`INITIATION_SCHEMA` by default)."""
    schema = INITIATION_SCHEMA if schema is None else schema
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path} is not an object"]
        if "*" in schema:
            return [p for k, v in value.items() for p in check_initiation(v, schema["*"], f"{path}.{k}")]
        fields = {key.rstrip("!"): sub for key, sub in schema.items()}
        problems = [f"{path}.{key[:-1]} is missing" for key in schema if key.endswith("!") and key[:-1] not in value]
        for key, item in value.items():
            if key not in fields:
                problems.append(f"{path}.{key} is not a known key")
            else:
                problems += check_initiation(item, fields[key], f"{path}.{key}")
        return problems
    return [] if isinstance(value, schema) else [f"{path} has the wrong type"]


def _paths(override: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in override.items():
        if isinstance(value, Mapping):
            found += _paths(value, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}")
    return found


class FakeElevenLabsConnection(StreamedAnswers):
    """One conversation with the fake service."""

    factory: FakeElevenLabsFactory

    def onConnect(self, request: Any) -> None:
        server = self.factory.server
        query = {k: v[0] for k, v in request.params.items()}  # Autobahn parsed the query string
        server.handshakes.append(query)
        if query.get("agent_id") != server.agent_id:
            raise ConnectionDeny(404, "Agent not found")
        if server.private:
            signature = query.get("conversation_signature")
            if signature not in server.signatures:
                raise ConnectionDeny(403, "Invalid or expired signature")
            server.signatures.discard(signature)

    def onOpen(self) -> None:
        server = self.factory.server
        self.index = len(server.connections)
        self.received: list[dict[str, Any]] = []
        self.initiation: dict[str, Any] | None = None
        self.input_audio = bytearray()
        self.chunks = 0
        self.event_ids = 0
        self.turns: list[bytes] = []
        """The audio of every answer started on this connection, in order."""
        self.turn: dict[str, Any] | None = None
        self.pings: dict[int, bool] = {}
        """Ping event id -> answered."""
        self.tool_calls: dict[str, str] = {}
        self.tool_results: list[dict[str, Any]] = []
        self.contextual_updates: list[str] = []
        self.detector: EnergyDetector | None = None
        self.closed = False
        server.connections.append(self)
        server.poke()

    # --- client messages ---------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        server = self.factory.server
        try:
            message = json.loads(payload)
        except ValueError:
            message = None
        if isBinary or not isinstance(message, dict):
            server.violations.append("client sent a frame that is not a JSON object")
            return
        kind = "user_audio_chunk" if "user_audio_chunk" in message else message.get("type")
        if kind != "user_audio_chunk":
            self.received.append(message)
        if self.initiation is None and kind != "conversation_initiation_client_data":
            server.violations.append(f"client sent {kind!r} before conversation_initiation_client_data")
        else:
            handler = getattr(self, f"on_{kind}", None)
            if handler is None:
                server.violations.append(f"client sent unknown message type {kind!r}")
            else:
                handler(message)
        server.poke()

    def on_conversation_initiation_client_data(self, message: dict[str, Any]) -> None:
        server = self.factory.server
        if self.initiation is not None:
            server.violations.append("client sent conversation_initiation_client_data twice")
            return
        problems = check_initiation(message)
        if problems:
            server.violations.extend(problems)
        override = message.get("conversation_config_override", {})
        refused = [p for p in _paths(override) if p not in server.allowed_overrides]
        if refused:
            # 1008 (policy violation), which Autobahn's public sendClose does not let a server send.
            reason = f"Override for field '{refused[0]}' is not allowed by config."
            self.sendCloseFrame(1008, reason.encode(), isReply=False)
            return
        self.initiation = message
        self.input_format = _format(server.input_format)
        self.output_format = _format(server.output_format)
        self.detector = EnergyDetector(self.input_format, threshold_dbfs=TEST_VAD.threshold_dbfs, onset_frames=1,
                                       silence_ms=server.silence_ms)
        self.send({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
            "conversation_id": f"conv_{self.index}", "agent_output_audio_format": server.output_format,
            "user_input_audio_format": server.input_format}})
        first = override.get("agent", {}).get("first_message", server.first_message)
        if first:
            self.answer(first)

    def on_user_audio_chunk(self, message: dict[str, Any]) -> None:
        server = self.factory.server
        try:
            data = base64.b64decode(message["user_audio_chunk"], validate=True)
        except (ValueError, TypeError):
            server.violations.append("user_audio_chunk is not base64")
            return
        assert self.detector is not None
        self.input_audio += data
        self.chunks += 1
        for transition in self.detector.feed(data):
            if transition.started:
                self.interrupt()
            else:
                self.send({"type": "user_transcript", "user_transcription_event": {
                    "user_transcript": f"caller turn {len(self.turns) + 1}", "event_id": self.next_event_id()}})
                self.end_of_user_turn()

    def on_pong(self, message: dict[str, Any]) -> None:
        event_id = message.get("event_id")
        if event_id not in self.pings or self.pings[event_id]:
            self.factory.server.violations.append(f"pong for no outstanding ping: {event_id!r}")
            return
        self.pings[event_id] = True

    def on_user_message(self, message: dict[str, Any]) -> None:
        if not isinstance(message.get("text"), str):
            self.factory.server.violations.append("user_message without text")
            return
        self.end_of_user_turn()

    def on_contextual_update(self, message: dict[str, Any]) -> None:
        if not isinstance(message.get("text"), str):
            self.factory.server.violations.append("contextual_update without text")
            return
        self.contextual_updates.append(message["text"])

    def on_user_activity(self, message: dict[str, Any]) -> None:
        pass

    def on_client_tool_result(self, message: dict[str, Any]) -> None:
        server = self.factory.server
        if message.get("tool_call_id") not in self.tool_calls:
            server.violations.append(f"client_tool_result for an unknown call {message.get('tool_call_id')!r}")
            return
        if not isinstance(message.get("result"), str) or not isinstance(message.get("is_error"), bool):
            server.violations.append("client_tool_result without a string result and a boolean is_error")
            return
        self.tool_results.append(message)
        if server.speak_after_tool_result:
            self.answer("Done.")

    # --- the agent -----------------------------------------------------------------------------

    def next_event_id(self) -> int:
        self.event_ids += 1
        return self.event_ids

    def end_of_user_turn(self) -> None:
        server = self.factory.server
        call, server.next_tool_call = server.next_tool_call, None
        if call is None:
            self.answer(f"answer {len(self.turns) + 1}")
        elif server.speak_before_tool_call:
            self.answer("Goodbye.", then_call=call)
        else:
            self.call_tool(*call)

    def answer(self, text: str, then_call: tuple[str, Mapping[str, Any]] | None = None) -> None:
        """Start an answer: ``agent_response``, then its audio (``server.turn_audio``) in chunks."""
        server = self.factory.server
        self.turn = None
        audio = server.turn_audio(self.index, len(self.turns) + 1, self.output_format.bytes_per_ms)
        self.turns.append(audio)
        event_id = self.next_event_id()
        self.send({"type": "agent_response", "agent_response_event": {"agent_response": text, "event_id": event_id}})
        self.stream_turn(audio, then_call, event_id=event_id, text=text)

    def send_chunk(self, turn: dict[str, Any], chunk: bytes) -> None:
        self.send({"type": "audio", "audio_event": {"audio_base_64": base64.b64encode(chunk).decode(),
                                                    "event_id": turn["event_id"]}})

    def late_turn_ended(self, turn: dict[str, Any]) -> None:
        self.send({"type": "agent_response_correction", "agent_response_correction_event": {
            "original_agent_response": turn["text"], "corrected_agent_response": turn["text"][:3] + "..."}})

    def turn_delivered(self, turn: dict[str, Any]) -> None:
        if turn["then_call"] is not None:
            self.call_tool(*turn["then_call"])

    def interrupt(self) -> None:
        """The caller talks over the answer in progress: ``interruption`` with its event id, then
        ``late_chunks`` more of it (stale, in flight), then the correction."""
        if self.turn is not None:
            self.send({"type": "interruption", "interruption_event": {"event_id": self.turn["event_id"]}})
        self.cut_turn()

    def call_tool(self, name: str, parameters: Mapping[str, Any]) -> str:
        """Send a ``client_tool_call`` for ``name``; returns its id."""
        call_id = f"tc_{self.index}_{len(self.tool_calls) + 1}"
        self.tool_calls[call_id] = name
        self.send({"type": "client_tool_call", "client_tool_call": {
            "tool_name": name, "tool_call_id": call_id, "parameters": dict(parameters),
            "event_id": self.next_event_id()}})
        return call_id

    def ping(self, ping_ms: int | None = 40) -> int:
        """Send a ``ping``; returns its event id (answered when ``pings[id]`` is True)."""
        event_id = self.next_event_id()
        self.pings[event_id] = False
        self.send({"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": ping_ms}})
        return event_id

    # --- faults and sending --------------------------------------------------------------------

    def end_conversation(self) -> None:
        """The agent ends the conversation (its end-call tool, its maximum duration): close 1000."""
        self.sendClose(1000)



class FakeElevenLabsFactory(WebSocketServerFactory):
    protocol = FakeElevenLabsConnection  # type: ignore[assignment]
    server: FakeElevenLabsServer


class _SignedUrlApi(Resource):
    isLeaf = True

    def __init__(self, server: FakeElevenLabsServer) -> None:
        super().__init__()
        self.fake = server

    def render_GET(self, request: Request) -> bytes:
        server = self.fake
        key = request.getHeader("xi-api-key")
        agent = (request.args.get(b"agent_id") or [b""])[0].decode("utf-8", "replace")
        server.http_requests.append((request.path.decode("latin-1"), agent, key))
        server.poke()
        request.setHeader(b"content-type", b"application/json")
        if request.path != b"/v1/convai/conversation/get-signed-url":
            request.setResponseCode(404)
            return b'{"detail": "Not Found"}'
        if key != server.api_key:
            request.setResponseCode(401)
            return b'{"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}'
        if agent != server.agent_id:
            request.setResponseCode(404)
            return b'{"detail": {"status": "agent_not_found"}}'
        signature = f"sig-{len(server.http_requests)}"
        server.signatures.add(signature)
        signed = f"{server.ws_url}?agent_id={agent}&conversation_signature={signature}"
        return json.dumps({"signed_url": signed}).encode()


class FakeElevenLabsServer(FakeWebSocketServer[FakeElevenLabsConnection]):
    """The fake service. ``reactor``: listening and time; ``agent_id``: the agent it knows;
    ``api_key``: the key its HTTP API accepts; ``private``: the WebSocket takes signed URLs only.

    Knobs: ``input_format``/``output_format`` (vendor names, announced in the metadata);
    ``allowed_overrides`` (override paths the agent allows, e.g. ``agent.first_message``);
    ``first_message`` (the agent's greeting, empty: none); ``turn_audio(conn, n, bytes_per_ms)``
    (default 1 s of :func:`~mediaproxy.testing.fake_realtime.pattern` seeded ``conn * 10 + n``);
    ``chunk_sizes`` cycled through, bytes; ``pause_after_ms`` (hold each answer there until
    ``connection.continue_turn()``); ``late_chunks`` (stale chunks after an interruption);
    ``silence_ms``; ``next_tool_call`` ``(name, parameters)`` the next caller turn calls (after a
    goodbye with ``speak_before_tool_call``); ``speak_after_tool_result``.
    """

    def __init__(self, reactor: Any, *, agent_id: str = "agent_test", api_key: str = "test-key",
                 private: bool = True) -> None:
        super().__init__(reactor)
        self.agent_id = agent_id
        self.api_key = api_key
        self.private = private
        self.input_format = "ulaw_8000"
        self.output_format = "ulaw_8000"
        self.allowed_overrides: set[str] = set()
        self.first_message = ""
        self.turn_audio: Callable[[int, int, int], bytes] = lambda conn, n, bpm: pattern(1000 * bpm, conn * 10 + n)
        self.chunk_sizes: Sequence[int] = (160, 334, 96, 802, 40, 1200, 8, 512)
        self.pause_after_ms: int | None = None
        self.late_chunks = 0
        self.silence_ms = 200
        self.next_tool_call: tuple[str, Mapping[str, Any]] | None = None
        self.speak_before_tool_call = False
        self.speak_after_tool_result = True
        self.http_requests: list[tuple[str, str, str | None]] = []
        """(path, agent_id, xi-api-key) of every signed-URL request."""
        self.signatures: set[str] = set()
        self.ws_url = ""
        self.api_url = ""

    def listen(self) -> tuple[str, str]:
        """Start listening on 127.0.0.1 (free ports); return the WebSocket and HTTP API URLs."""
        ws = self.listen_on(self.websocket_factory(FakeElevenLabsFactory))
        site = Site(_SignedUrlApi(self))
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]  # no access log of test URLs
        http = self.listen_on(site)
        self.ws_url = f"ws://127.0.0.1:{ws}/v1/convai/conversation"
        self.api_url = f"http://127.0.0.1:{http}"
        return self.ws_url, self.api_url


def _format(name: str) -> AudioFormat:
    kind, rate = name.split("_")
    return AudioFormat({"pcm": "l16", "ulaw": "pcmu", "alaw": "pcma"}[kind], int(rate))  # type: ignore[arg-type]
