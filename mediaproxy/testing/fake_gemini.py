"""A local stand-in for the Gemini Live API (``BidiGenerateContent`` over WebSocket), for tests.

:class:`FakeGeminiServer` listens on ``127.0.0.1`` (Autobahn). Per connection it: checks the
``key`` query parameter (a wrong key: the socket opens and is closed with 1007 "API key not
valid", as the service does); requires ``setup`` as the first message and validates every client
message against :data:`CLIENT_SCHEMA`; answers ``setupComplete`` (resuming the conversation when
``setup.sessionResumption.handle`` is one it issued) and a ``sessionResumptionUpdate``; runs an
energy VAD (:class:`~mediaproxy.audio.vad.EnergyDetector`) over the caller's 16 kHz PCM; at the
end of each caller turn sends an ``inputTranscription``, then answers with 24 kHz PCM in
irregular chunks, one per reactor turn (far faster than real time) with ``outputTranscription``
text, then ``generationComplete``, ``turnComplete``, ``usageMetadata`` and a new resumption handle.
A caller turn that starts while an answer is streaming stops it with ``interrupted`` (then
``turnComplete``). On request it calls a function (``toolCall``; the ``toolResponse`` must name
the call, then the answer follows), announces the end of the connection (``goAway`` and a handle;
the connection closes ``go_away_close_s`` later unless the client closed it first), stops
answering (``stall_turns``; ``audioStreamEnd`` is recorded as a nudge and answers the turn), or
drops. Everything received is recorded; problems go to ``server.violations``.

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeGeminiServer.when`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from mediaproxy.audio.format import L16_16K
from mediaproxy.audio.vad import EnergyDetector
from mediaproxy.testing.fake_ws_server import FakeServerConnection, FakeWebSocketServer

__all__ = ["CLIENT_SCHEMA", "FakeGeminiConnection", "FakeGeminiServer", "LOUD_FRAME_16K", "check_message", "tone_24k"]

#: 20 ms of loud 16 kHz PCM (a full-scale-ish square wave): speech to the fake's VAD.
LOUD_FRAME_16K = np.array([12000, -12000] * 160, dtype="<i2").tobytes()

# --- the schema --------------------------------------------------------------------------------
# Written from Google's reference of the Live API WebSocket messages
# (https://ai.google.dev/api/live: BidiGenerateContentSetup, BidiGenerateContentRealtimeInput,
# BidiGenerateContentClientContent, BidiGenerateContentToolResponse, SessionResumptionConfig,
# ContextWindowCompressionConfig, AudioTranscriptionConfig) and the google-genai SDK's live
# converters (google/genai/_live_converters.py: the camelCase wire placement, e.g. the
# transcription configs are siblings of generationConfig, not inside it). A schema is a type, a
# tuple of allowed literal values, a regular expression (compiled), a dict of allowed keys
# (``"!key"``: required), or a one-element list (an array of that schema). ``ANY``: anything.

ANY = object()
_CONTENT = {"role": ("user", "model"), "parts": [{"text": str}]}
_DURATION = re.compile(r"^\d+(\.\d+)?s$")
SETUP_SCHEMA: dict[str, Any] = {
    "!model": re.compile(r"^models/[A-Za-z0-9._-]+$"),
    "generationConfig": {
        "candidateCount": int, "maxOutputTokens": int, "temperature": float, "topP": float, "topK": int,
        "presencePenalty": float, "frequencyPenalty": float,
        "responseModalities": [("AUDIO", "TEXT")],
        "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"!voiceName": str}}, "languageCode": str},
        "mediaResolution": str,
    },
    "systemInstruction": _CONTENT,
    "tools": [{"functionDeclarations": [{"!name": re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$"),
                                         "description": str, "parameters": dict}]}],
    "realtimeInputConfig": dict,
    "sessionResumption": {"handle": str, "transparent": bool},
    "contextWindowCompression": {"slidingWindow": {"targetTokens": int}, "triggerTokens": int},
    "inputAudioTranscription": {},
    "outputAudioTranscription": {},
    "proactivity": dict,
    "enableAffectiveDialog": bool,
}
CLIENT_SCHEMA: dict[str, Any] = {
    "setup": SETUP_SCHEMA,
    "clientContent": {"turns": [_CONTENT], "turnComplete": bool},
    "realtimeInput": {
        "audio": {"!data": str, "!mimeType": re.compile(r"^audio/pcm;rate=16000$")},
        "text": str, "audioStreamEnd": (True,), "activityStart": {}, "activityEnd": {},
    },
    "toolResponse": {"!functionResponses": [{"!id": str, "!name": str, "!response": dict}]},
}
"""What a client message may hold: exactly one of these keys."""


def check_message(message: Any) -> list[str]:
    """What is wrong with one client message (empty: valid)."""
    if not isinstance(message, dict) or len(message) != 1:
        got = list(message) if isinstance(message, dict) else message
        return [f"a client message has exactly one field, got {got!r}"]
    return _check(message, CLIENT_SCHEMA, "")


def _check(value: Any, schema: Any, path: str) -> list[str]:
    if schema is ANY:
        return []
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path or '/'}: expected an object"]
        problems: list[str] = []
        allowed = {k.lstrip("!"): v for k, v in schema.items()}
        for key in schema:
            if key.startswith("!") and key[1:] not in value:
                problems.append(f"{path}.{key[1:]}: required")
        for key, item in value.items():
            if key not in allowed:
                problems.append(f"{path}.{key}: unknown field")
            else:
                problems += _check(item, allowed[key], f"{path}.{key}")
        return problems
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected an array"]
        return [p for i, item in enumerate(value) for p in _check(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, tuple):
        return [] if value in schema else [f"{path}: {value!r} not one of {schema}"]
    if isinstance(schema, re.Pattern):
        return [] if isinstance(value, str) and schema.match(value) else [f"{path}: {value!r} does not match"]
    if schema is float:
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else [f"{path}: expected a number"]
    return [] if isinstance(value, schema) and not (schema is int and isinstance(value, bool)) else [
        f"{path}: expected {schema.__name__}"]


def tone_24k(ms: int, seed: int = 0) -> bytes:
    """``ms`` of recognisable 24 kHz 16-bit PCM (a 600 Hz-ish square wave whose level depends on
    ``seed``), the fake's answer audio."""
    level = 4000 + 500 * (seed % 8)
    period = 40
    samples = np.where((np.arange(ms * 24) // (period // 2)) % 2 == 0, level, -level).astype("<i2")
    return samples.tobytes()


# --- the server --------------------------------------------------------------------------------


class FakeGeminiConnection(FakeServerConnection):
    """One client connection to the fake service."""

    factory: FakeGeminiFactory

    def onConnect(self, request: Any) -> None:
        self.params = {k: v[0] for k, v in request.params.items()}

    def onOpen(self) -> None:
        server = self.factory.server
        self.index = len(server.connections)
        self.received: list[dict[str, Any]] = []
        self.setup: dict[str, Any] | None = None
        self.resumed_from: str | None = None
        self.input_audio = bytearray()
        self.turns = 0
        self.answer: dict[str, Any] | None = None
        self.tool_calls: dict[str, str] = {}
        self.tool_responses: list[dict[str, Any]] = []
        self.nudges = 0
        self.texts: list[str] = []
        self.go_away_sent = False
        self._detector = EnergyDetector(L16_16K, server.vad_threshold_dbfs, 1, server.silence_ms)
        server.connections.append(self)
        if self.params.get("key") != server.api_key:
            server.refused += 1
            self.sendCloseFrame(1007, b"API key not valid. Please pass a valid API key.", isReply=False)
        server.poke()

    def connection_ended(self) -> None:
        leftover = getattr(self, "closeHandshakeTimeoutCall", None)
        if leftover is not None:
            leftover.cancel()
            self.closeHandshakeTimeoutCall = None
        self.answer = None
        for call in getattr(self, "_timers", ()):
            if call.active():
                call.cancel()

    # --- client messages -----------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        server = self.factory.server
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return  # closing (a refused key): nothing more is answered
        try:
            message = json.loads(payload)
        except ValueError:
            server.violations.append(f"not JSON: {payload[:80]!r}")
            return
        problems = check_message(message)
        if problems:
            server.violations.append(f"connection {self.index}: {problems}")
            return
        self.received.append(message)
        kind = next(iter(message))
        if self.setup is None and kind != "setup":
            server.violations.append(f"connection {self.index}: {kind} before setup")
            self.sendCloseFrame(1007, b"Request contains an invalid argument.", isReply=False)
            return
        getattr(self, "on_" + kind)(message[kind])
        server.poke()

    def on_setup(self, setup: dict[str, Any]) -> None:
        server = self.factory.server
        if self.setup is not None:
            server.violations.append(f"connection {self.index}: a second setup")
            return
        self.setup = setup
        handle = (setup.get("sessionResumption") or {}).get("handle")
        if handle is not None:
            if handle not in server.handles:
                self.sendCloseFrame(1007, b"Session resumption handle is invalid.", isReply=False)
                return
            self.resumed_from = handle
        self.send({"setupComplete": {}})
        self.send_handle()

    def on_realtimeInput(self, data: dict[str, Any]) -> None:
        if "audio" in data:
            pcm = base64.b64decode(data["audio"]["data"], validate=True)
            if self.factory.server.record_audio:
                self.input_audio += pcm
            for transition in self._detector.feed(pcm):
                if transition.started:
                    self._caller_started()
                else:
                    self._caller_stopped()
        if "text" in data:
            self.texts.append(data["text"])
        if data.get("audioStreamEnd"):
            self.nudges += 1
            if self.factory.server.stalled_turn:
                self.factory.server.stalled_turn = False
                self.respond()

    def on_clientContent(self, content: dict[str, Any]) -> None:
        if content.get("turnComplete"):
            self.respond()

    def on_toolResponse(self, response: dict[str, Any]) -> None:
        server = self.factory.server
        for fr in response["functionResponses"]:
            self.tool_responses.append(fr)
            if self.tool_calls.pop(fr["id"], None) != fr["name"]:
                server.violations.append(f"toolResponse for unknown call {fr['id']!r} ({fr['name']!r})")
                continue
            self.respond()

    # --- turns ---------------------------------------------------------------------------------

    def _caller_started(self) -> None:
        self.turns += 1
        if self.answer is not None:
            self.answer = None
            self.factory.server.interruptions += 1
            self.send({"serverContent": {"interrupted": True}})
            self.send({"serverContent": {"turnComplete": True}})

    def _caller_stopped(self) -> None:
        server = self.factory.server
        self.send({"serverContent": {"inputTranscription": {"text": f"caller turn {self.turns}"}}})
        if server.next_function_call is not None:
            name, args = server.next_function_call
            server.next_function_call = None
            call_id = f"fc_{self.index}_{self.turns}"
            self.tool_calls[call_id] = name
            self.send({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})
            return
        if server.stall_turns > 0:
            server.stall_turns -= 1
            server.stalled_turn = True
            return
        self.respond()

    def respond(self) -> None:
        """Answer now: ``server.answer_ms`` of 24 kHz audio, streamed one chunk per reactor turn."""
        server = self.factory.server
        if self.answer is not None:
            return
        server.answers += 1
        n = server.answers
        self.answer = {"audio": tone_24k(server.answer_ms, n), "sent": 0, "chunk": 0, "n": n}
        self.factory.reactor.callLater(0, self._stream, self.answer)

    def _stream(self, answer: dict[str, Any]) -> None:
        if answer is not self.answer or self.closed:
            return
        server = self.factory.server
        audio = answer["audio"]
        hold = server.hold_after_ms
        if hold is not None and not answer.get("released") and answer["sent"] >= hold * 48:
            answer["held"] = True
            server.poke()
            return
        if answer["sent"] >= len(audio):
            self.answer = None
            self.send({"serverContent": {"generationComplete": True}})
            self.send({"serverContent": {"turnComplete": True},
                       "usageMetadata": {"promptTokenCount": 20, "responseTokenCount": 40, "totalTokenCount": 60,
                                         "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 20}],
                                         "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 40}]}})
            self.send_handle()
            server.poke()
            return
        sizes = server.chunk_sizes
        size = sizes[answer["chunk"] % len(sizes)]
        chunk = audio[answer["sent"]: answer["sent"] + size]
        answer["sent"] += len(chunk)
        content: dict[str, Any] = {"modelTurn": {"parts": [
            {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(chunk).decode("ascii")}}]}}
        if answer["chunk"] % 4 == 0:
            content["outputTranscription"] = {"text": f"word{answer['chunk'] // 4} "}
        answer["chunk"] += 1
        self.send({"serverContent": content})
        server.audio_chunks_sent += 1
        self.factory.reactor.callLater(0, self._stream, answer)

    # --- scripted events -----------------------------------------------------------------------

    def continue_answer(self) -> None:
        """Let an answer held at ``server.hold_after_ms`` run to its end."""
        if self.answer is not None and self.answer.pop("held", False):
            self.answer["released"] = True
            self.factory.reactor.callLater(0, self._stream, self.answer)

    def send_handle(self) -> None:
        server = self.factory.server
        handle = f"handle_{self.index}_{len(server.handles)}"
        server.handles.append(handle)
        self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    def go_away(self, close_after_s: float | None = None) -> None:
        """Announce the end of the connection (a fresh handle first); close it later."""
        self.send_handle()
        delay = self.factory.server.go_away_close_s if close_after_s is None else close_after_s
        self.send({"goAway": {"timeLeft": f"{delay:g}s"}})
        self.go_away_sent = True
        self.__dict__.setdefault("_timers", []).append(
            self.factory.reactor.callLater(delay, self._close_for_good))

    def _close_for_good(self) -> None:
        if not self.closed:
            self.sendCloseFrame(1000, b"", isReply=False)

    def send(self, message: Mapping[str, Any]) -> None:
        if self.closed or self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if self.factory.server.record_sent:
            self.factory.server.sent.append((self.index, message))
        self.sendMessage(json.dumps(message, separators=(",", ":")).encode("utf-8"), isBinary=False)


class FakeGeminiFactory(WebSocketServerFactory):
    protocol = FakeGeminiConnection  # type: ignore[assignment]
    server: FakeGeminiServer


class FakeGeminiServer(FakeWebSocketServer[FakeGeminiConnection]):
    """The fake service. ``reactor``: listening and time; ``api_key``: the key accepted.

    Knobs: ``answer_ms`` (audio per answer), ``chunk_sizes`` (bytes per ``inlineData``, cycled),
    ``silence_ms`` and ``vad_threshold_dbfs`` (its VAD), ``hold_after_ms`` (each answer stops after
this much audio, still under way, until ``connection.continue_answer()``), ``next_function_call`` (``(name, args)``:
    the next caller turn is answered with that call), ``stall_turns`` (caller turns left
    unanswered until a nudge), ``go_away_close_s`` (how long after ``goAway`` the connection
    closes). Records: ``connections``, ``handles`` issued, ``violations``, counts of answers,
    interruptions and refused keys; ``sent`` with ``record_sent``.
    """

    def __init__(self, reactor: Any, api_key: str = "test-key") -> None:
        super().__init__(reactor)
        self.api_key = api_key
        self.answer_ms = 1000
        self.chunk_sizes: Sequence[int] = (960, 4800, 1440, 9600, 480, 2400)
        self.silence_ms = 200
        self.vad_threshold_dbfs = -30.0
        self.next_function_call: tuple[str, Mapping[str, Any]] | None = None
        self.stall_turns = 0
        self.stalled_turn = False
        self.go_away_close_s = 2.0
        self.hold_after_ms: int | None = None
        self.record_audio = True
        self.record_sent = False
        self.handles: list[str] = []
        self.sent: list[tuple[int, Mapping[str, Any]]] = []
        self.answers = 0
        self.interruptions = 0
        self.refused = 0
        self.audio_chunks_sent = 0

    def listen(self, port: int = 0) -> str:
        """Start listening on 127.0.0.1; return the ws:// URL to configure (without ``?key=``)."""
        factory = self.websocket_factory(FakeGeminiFactory)
        factory.setProtocolOptions(maxMessagePayloadSize=16 * 1024 * 1024)
        return (f"ws://127.0.0.1:{self.listen_on(factory, port)}/ws/"
                "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent")
