"""A local stand-in for the Deepgram Voice Agent service, for tests.

:class:`FakeDeepgramServer` listens on ``127.0.0.1`` (Autobahn). Per connection it: checks
``Authorization: Token <key>`` (HTTP 401 otherwise); sends ``Welcome``; requires ``Settings`` as
the first client message (anything else first is answered with the vendor's
``NON_SETTINGS_MESSAGE_BEFORE_SETTINGS`` error) and validates it against :data:`SETTINGS_SCHEMA`
(unknown keys and wrong types are violations, answered with ``INVALID_SETTINGS``), then sends
``SettingsApplied``; runs an energy VAD (:class:`~mediaproxy.audio.vad.EnergyDetector`) over the
caller's binary audio, 20 ms at a time whatever the frame sizes, sending ``UserStartedSpeaking``
on speech and, at the end of each caller turn, ``ConversationText`` (user), ``AgentThinking``
and an answer: ``ConversationText`` (assistant), ``AgentStartedSpeaking``, binary audio in
irregular chunks one per reactor turn (far faster than real time), then ``AgentAudioDone``. A
caller speaking over an answer cuts it (``late_chunks`` more chunks still go out, as if in
flight; no ``AgentAudioDone``, as the service stops by itself). It can issue a
``FunctionCallRequest`` instead of (or after) an answer and checks the ``FunctionCallResponse``
against it; answers ``InjectUserMessage`` like a caller turn; counts ``KeepAlive``; can send
``Error``/``Warning``/anything, drop the TCP connection, or refuse the credentials. What each
connection received is recorded on it; problems with what the client sent are collected in
``server.violations``.

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeDeepgramServer.when`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny

from mediaproxy.audio.format import ALAW_8K, MULAW_8K, AudioFormat
from mediaproxy.audio.vad import EnergyDetector
from mediaproxy.testing.fake_audio import TEST_VAD, pattern
from mediaproxy.testing.fake_ws_server import FakeWebSocketServer, StreamedAnswers

__all__ = ["SETTINGS_SCHEMA", "FakeDeepgramConnection", "FakeDeepgramServer", "check_settings"]

# --- the Settings schema ---------------------------------------------------------------------------
# Written from Deepgram's Voice Agent docs (developers.deepgram.com: "Configure the Voice Agent",
# "Settings", "Media Inputs & Outputs", "Function Call Request"): the V1 shape, where the LLM's
# instructions are agent.think.prompt (the older "instructions" key is gone), providers are
# objects with a "type", client functions are agent.think.functions[{name, description,
# parameters}], and audio.output takes a container ("none" for raw frames). A schema node is a
# Python type, a tuple of allowed literal values, a list holding the schema of its items, or a
# dict of the allowed keys (a key ending in "!" is required).

_ENCODINGS = ("linear16", "linear32", "mulaw", "alaw", "flac", "opus", "ogg-opus", "speex", "amr-nb", "amr-wb", "g729")
_PROVIDER: dict[str, Any] = {
    "type!": str, "model": str, "keyterms": [str], "smart_format": bool, "temperature": (float, int),
    "voice": str, "language": str, "language_code": str, "version": str, "engine": str, "voice_id": str,
    "model_id": str,
}
_ENDPOINT: dict[str, Any] = {"url!": str, "headers": dict}
SETTINGS_SCHEMA: dict[str, Any] = {
    "type!": ("Settings",),
    "tags": [str],
    "experimental": bool,
    "mip_opt_out": bool,
    "flags": {"history": bool},
    "audio": {
        "input": {"encoding!": _ENCODINGS, "sample_rate!": int},
        "output": {"encoding": _ENCODINGS, "sample_rate": int, "bitrate": int, "container": ("none", "wav")},
    },
    "agent!": {
        "language": str,
        "context": {"messages": [dict]},
        "listen": {"provider!": _PROVIDER},
        "think": {
            "provider!": _PROVIDER,
            "endpoint": _ENDPOINT,
            "functions": [{"name!": str, "description": str, "parameters": dict, "endpoint": _ENDPOINT}],
            "prompt": str,
            "context_length": (int, str),
        },
        "speak": {"provider!": _PROVIDER, "endpoint": _ENDPOINT},
        "greeting": str,
    },
}


def check_settings(value: Any, schema: Any = None, path: str = "Settings") -> list[str]:
    """The ways ``value`` departs from ``schema`` (:data:`SETTINGS_SCHEMA` by default)."""
    schema = SETTINGS_SCHEMA if schema is None else schema
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path} is not an object"]
        fields = {key.rstrip("!"): sub for key, sub in schema.items()}
        problems = [f"{path}.{key[:-1]} is missing" for key in schema if key.endswith("!") and key[:-1] not in value]
        for key, item in value.items():
            if key not in fields:
                problems.append(f"{path}.{key} is not a Settings key")
            else:
                problems += check_settings(item, fields[key], f"{path}.{key}")
        return problems
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path} is not an array"]
        return [p for n, item in enumerate(value) for p in check_settings(item, schema[0], f"{path}[{n}]")]
    if isinstance(schema, tuple):
        if all(isinstance(s, type) for s in schema):
            ok = isinstance(value, schema) and not isinstance(value, bool)
            return [] if ok else [f"{path} has the wrong type"]
        return [] if value in schema else [f"{path} is {value!r}, not one of {list(schema)}"]
    if schema is int and isinstance(value, bool):
        return [f"{path} has the wrong type"]
    return [] if isinstance(value, schema) else [f"{path} has the wrong type"]


def wire_format(audio: Mapping[str, Any]) -> AudioFormat | None:
    """The format an ``audio.input``/``audio.output`` object names, if the fake speaks it."""
    encoding, rate = audio.get("encoding", "linear16"), audio.get("sample_rate", 16000)
    if encoding == "mulaw" and rate == 8000:
        return MULAW_8K
    if encoding == "alaw" and rate == 8000:
        return ALAW_8K
    if encoding == "linear16" and isinstance(rate, int) and rate % 1000 == 0:
        return AudioFormat("l16", rate)
    return None


# --- the server -------------------------------------------------------------------------------------


class FakeDeepgramConnection(StreamedAnswers):
    """One client connection to the fake service."""

    factory: FakeDeepgramFactory

    def onConnect(self, request: Any) -> None:
        server = self.factory.server
        self.headers = dict(request.headers)
        server.handshakes.append(self.headers)
        if server.reject_auth or self.headers.get("authorization") != f"Token {server.api_key}":
            raise ConnectionDeny(401, "Unauthorized")

    def onOpen(self) -> None:
        server = self.factory.server
        self.index = len(server.connections)
        self.received: list[dict[str, Any]] = []
        self.settings: dict[str, Any] | None = None
        self.input_audio = bytearray()
        self.audio_frames = 0
        self.keepalives = 0
        self.turns: list[bytes] = []
        """The audio of every answer started on this connection, in order."""
        self.turn: dict[str, Any] | None = None
        self.function_calls: dict[str, str] = {}
        self.function_responses: list[dict[str, Any]] = []
        self.errors_sent: list[str] = []
        self.detector: EnergyDetector | None = None
        self.closed = False
        server.connections.append(self)
        self.send({"type": "Welcome", "request_id": f"req-{self.index}"})
        server.poke()

    # --- client messages ---------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        server = self.factory.server
        if isBinary:
            self.on_audio(payload)
        else:
            try:
                message = json.loads(payload)
            except ValueError:
                server.violations.append("client sent a text frame that is not JSON")
                self.send_error("UNPARSABLE_CLIENT_MESSAGE", "not JSON")
                return
            self.received.append(message)
            kind = message.get("type")
            if self.settings is None and kind != "Settings":
                server.violations.append(f"client sent {kind!r} before Settings")
                self.send_error("NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "Settings must come first")
            else:
                handler = getattr(self, f"on_{kind}", None)
                if handler is None:
                    server.violations.append(f"client sent unknown message type {kind!r}")
                    self.send_error("UNPARSABLE_CLIENT_MESSAGE", f"unknown type {kind!r}")
                else:
                    handler(message)
        server.poke()

    def on_Settings(self, message: dict[str, Any]) -> None:
        server = self.factory.server
        if self.settings is not None:
            server.violations.append("client sent Settings twice")
            self.send_error("SETTINGS_ALREADY_APPLIED", "Settings already applied")
            return
        problems = check_settings(message)
        audio = message.get("audio", {})
        fmt_in = wire_format(audio.get("input", {}))
        fmt_out = wire_format(audio.get("output", {}))
        if fmt_in is None or fmt_out is None:
            problems.append("the fake speaks only mulaw/alaw 8 kHz and linear16")
        if problems:
            server.violations.extend(problems)
            self.send_error("INVALID_SETTINGS", "; ".join(problems)[:300])
            return
        assert fmt_in is not None and fmt_out is not None
        self.settings = message
        self.input_format, self.output_format = fmt_in, fmt_out
        self.detector = EnergyDetector(fmt_in, threshold_dbfs=TEST_VAD.threshold_dbfs, onset_frames=1,
                                       silence_ms=server.silence_ms)
        self.send({"type": "SettingsApplied"})
        greeting = message["agent"].get("greeting")
        if greeting:
            self.answer(greeting)

    def on_KeepAlive(self, message: dict[str, Any]) -> None:
        self.keepalives += 1

    def on_InjectUserMessage(self, message: dict[str, Any]) -> None:
        content = message.get("content")
        if not isinstance(content, str):
            self.factory.server.violations.append("InjectUserMessage without content")
            return
        self.send({"type": "ConversationText", "role": "user", "content": content})
        self.end_of_user_turn()

    def on_InjectAgentMessage(self, message: dict[str, Any]) -> None:
        if not isinstance(message.get("message"), str):
            self.factory.server.violations.append("InjectAgentMessage without message")
            return
        self.answer(message["message"])

    def on_FunctionCallResponse(self, message: dict[str, Any]) -> None:
        server = self.factory.server
        call_id, name = message.get("id"), message.get("name")
        if call_id not in self.function_calls or self.function_calls[call_id] != name:
            server.violations.append(f"FunctionCallResponse for an unknown call {call_id!r}/{name!r}")
            return
        if not isinstance(message.get("content"), str):
            server.violations.append("FunctionCallResponse content is not a string")
            return
        self.function_responses.append(message)
        if server.speak_after_function_response:
            self.answer("Done.")

    def on_audio(self, data: bytes) -> None:
        server = self.factory.server
        if self.settings is None or self.detector is None:
            server.violations.append("client sent audio before Settings")
            return
        self.input_audio += data
        self.audio_frames += 1
        for transition in self.detector.feed(data):
            if transition.started:
                self.send({"type": "UserStartedSpeaking"})
                self.cut()
            else:
                self.send({"type": "ConversationText", "role": "user",
                           "content": f"caller turn {len(self.turns) + 1}"})
                self.end_of_user_turn()

    # --- the agent -----------------------------------------------------------------------------

    def end_of_user_turn(self) -> None:
        server = self.factory.server
        self.send({"type": "AgentThinking", "content": ""})
        call, server.next_function_call = server.next_function_call, None
        if call is None:
            self.answer(f"answer {len(self.turns) + 1}")
        elif server.speak_before_function_call:
            self.answer("Goodbye.", then_call=call)
        else:
            self.call_function(*call)

    def answer(self, text: str, then_call: tuple[str, str] | None = None) -> None:
        """Start an agent turn: its text, then its audio (``server.turn_audio``) in chunks."""
        server = self.factory.server
        self.cut()
        audio = server.turn_audio(self.index, len(self.turns) + 1, self.output_format.bytes_per_ms)
        self.turns.append(audio)
        self.send({"type": "ConversationText", "role": "assistant", "content": text})
        self.send({"type": "AgentStartedSpeaking", "total_latency": 0.1, "tts_latency": 0.05, "ttt_latency": 0.05})
        self.stream_turn(audio, then_call)

    def send_chunk(self, turn: dict[str, Any], chunk: bytes) -> None:
        self.sendMessage(chunk, isBinary=True)

    def turn_delivered(self, turn: dict[str, Any]) -> None:
        self.send({"type": "AgentAudioDone"})
        if turn["then_call"] is not None:
            self.call_function(*turn["then_call"])

    def cut(self) -> None:
        """The caller talks over the answer in progress: ``late_chunks`` more of it go out (in
        flight), then it stops without ``AgentAudioDone``."""
        self.cut_turn()

    def call_function(self, name: str, arguments: str) -> str:
        """Send a ``FunctionCallRequest`` for the client-side function ``name``; returns its id."""
        known = [f.get("name") for f in self.settings["agent"]["think"].get("functions", [])] if self.settings else []
        if name not in known:
            self.factory.server.violations.append(f"function {name!r} was not offered in Settings")
        call_id = f"fc_{self.index}_{len(self.function_calls) + 1}"
        self.function_calls[call_id] = name
        self.send({"type": "FunctionCallRequest",
                   "functions": [{"id": call_id, "name": name, "arguments": arguments, "client_side": True}]})
        return call_id

    # --- faults and sending --------------------------------------------------------------------

    def send_error(self, code: str, description: str, *, warning: bool = False) -> None:
        self.errors_sent.append(code)
        self.send({"type": "Warning" if warning else "Error", "code": code, "description": description})


class FakeDeepgramFactory(WebSocketServerFactory):
    protocol = FakeDeepgramConnection  # type: ignore[assignment]
    server: FakeDeepgramServer


class FakeDeepgramServer(FakeWebSocketServer[FakeDeepgramConnection]):
    """The fake service. ``reactor``: listening and time; ``api_key``: the key accepted.

    Knobs: ``reject_auth`` (refuse every upgrade with 401); ``turn_audio(conn, n,
    bytes_per_ms)``: the audio of answer ``n`` on connection ``conn`` (default 1 s of
    :func:`~mediaproxy.testing.fake_audio.pattern` seeded ``conn * 10 + n``);
    ``chunk_sizes`` cycled through, in bytes; ``pause_after_ms``: hold each answer after this
    much audio until ``connection.continue_turn()``; ``late_chunks``: chunks of a cut answer
    still sent after ``UserStartedSpeaking``; ``silence_ms``: the silence that ends a caller
    turn; ``next_function_call``: ``(name, arguments)`` the next caller turn calls instead of
    answering (after a goodbye with ``speak_before_function_call``);
    ``speak_after_function_response``: answer each ``FunctionCallResponse`` with a turn.
    """

    def __init__(self, reactor: Any, api_key: str = "test-key") -> None:
        super().__init__(reactor)
        self.api_key = api_key
        self.reject_auth = False
        self.turn_audio: Callable[[int, int, int], bytes] = lambda conn, n, bpm: pattern(1000 * bpm, conn * 10 + n)
        self.chunk_sizes: Sequence[int] = (160, 334, 96, 802, 40, 1200, 8, 512)
        self.pause_after_ms: int | None = None
        self.late_chunks = 0
        self.silence_ms = 200
        self.next_function_call: tuple[str, str] | None = None
        self.speak_before_function_call = False
        self.speak_after_function_response = True

    def listen(self, port: int = 0) -> str:
        """Start listening on 127.0.0.1 (``port`` 0: any free one); return the ws:// URL."""
        return f"ws://127.0.0.1:{self.listen_on(self.websocket_factory(FakeDeepgramFactory), port)}/v1/agent/converse"
