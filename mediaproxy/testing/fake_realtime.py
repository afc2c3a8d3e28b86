"""A local stand-in for the OpenAI Realtime service (GA protocol), for tests and benchmarks.

:class:`FakeRealtimeServer` listens on ``127.0.0.1`` (Autobahn). Per connection it: checks
``Authorization: Bearer``; sends ``session.created`` with the service defaults (24 kHz PCM) and
answers ``session.update`` with the merged effective session; runs an energy VAD
(:class:`~mediaproxy.audio.vad.EnergyDetector`) over the appended caller audio, 20 ms at a time
whatever the append sizes (speech_started / speech_stopped, a response at the end of a turn when
``create_response``); streams responses in irregular delta sizes, either one delta per reactor
turn (far faster than real time) or, with ``speed``, at that multiple of real time from one
shared 10 ms timer; applies the real service's truncate rules (error when ``audio_end_ms``
exceeds the item's audio, or the item is not assistant audio); cancels (by VAD with
``interrupt_response``, or ``response.cancel``); and can be told to drop, expire or refuse
credentials. Counts of what it saw are kept in ``server.stats``.

With ``validate`` (the default, for tests) every client event is validated with the ``openai``
package's GA pydantic models (a discriminated union, unknown keys rejected by walking
``model_extra``), and every event the fake sends is validated against the GA server models, so
both sides are held to the real protocol; violations are collected in ``server.violations``.
``openai`` and ``pydantic`` are imported only then: a benchmark runs the fake without them, and
with ``record=False`` it keeps no per-event history, so that it costs little.

Run it alone (its own process, so that its CPU is not the proxy's)::

    python -m mediaproxy.testing.fake_realtime --port 9123 --speed 10 --stats out.json

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeRealtimeServer.when` and
:meth:`~mediaproxy.testing.recording_listener.RecordingListener.when`, which fire as soon as a condition holds.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.task import LoopingCall

from mediaproxy.audio.format import ALAW_8K, L16_24K, MULAW_8K, AudioFormat
from mediaproxy.audio.vad import EnergyDetector, Transition
from mediaproxy.testing.flavor_schema import check_session
from mediaproxy.testing.realtime_schema import adapters, check_event
from mediaproxy.testing.waiting import ConditionWaiting

__all__ = [
    "BENCH_VAD", "TEST_VAD", "FakeRealtimeConnection", "FakeRealtimeServer", "Stats", "VadSettings", "main",
    "pattern", "reply_audio",
]

# --- audio helpers -----------------------------------------------------------------------------

FORMATS: Mapping[str, AudioFormat] = {"audio/pcmu": MULAW_8K, "audio/pcma": ALAW_8K, "audio/pcm": L16_24K}
FORMAT_BYTES_PER_MS = {name: fmt.bytes_per_ms for name, fmt in FORMATS.items()}
LOUD_FRAME = {  # 20 ms of a full-scale square wave
    "audio/pcmu": bytes([0x00, 0x80] * 80),
    "audio/pcma": bytes([0xAA, 0x2A] * 80),
    "audio/pcm": np.array([12000, -12000] * 240, dtype="<i2").tobytes(),
}


def pattern(nbytes: int, seed: int) -> bytes:
    """Recognisable, non-silent bot audio: every byte differs from its neighbours, so a byte
    lost, duplicated or reordered anywhere shows up in a comparison."""
    return bytes((seed * 37 + i * 7 + (i >> 8)) % 251 for i in range(nbytes))


@functools.lru_cache(maxsize=256)
def reply_audio(ms: int, bytes_per_ms: int = 8) -> bytes:
    """``ms`` of recognisable, non-silent G.711: a 400 Hz-ish square wave of mid-level codes."""
    frame = bytes([0x20] * 10 + [0xA0] * 10) * 8
    nbytes = ms * bytes_per_ms
    return (frame * (nbytes // len(frame) + 1))[:nbytes]


class VadSettings:
    """The fake's notion of speech: RMS above ``threshold_dbfs`` for ``onset_frames`` frames
    of 20 ms. The end of a turn is the session's ``silence_duration_ms``."""

    __slots__ = ("threshold_dbfs", "onset_frames")

    def __init__(self, threshold_dbfs: float, onset_frames: int) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.onset_frames = onset_frames


#: For tests: any frame at RMS above 1000 (about -30 dBFS) is speech at once, as the service
#: reacts to clearly loud audio.
TEST_VAD = VadSettings(20 * math.log10(1000 / 32768), 1)
#: For benchmarks: the echo parrot's detector (-40 dBFS, two frames of onset), so that the
#: simulator's accounting of replies holds unchanged against either backend.
BENCH_VAD = VadSettings(-40.0, 2)

TICK_S = 0.010
"""The shared delivery timer's period with ``speed``, in seconds."""

_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'

# --- the server --------------------------------------------------------------------------------

DEFAULT_SESSION: Mapping[str, Any] = {
    "type": "realtime",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "Default instructions.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 200,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    },
}


#: Each flavor's default session in its own shape, as ``session.created`` reports it.
VOICELIVE_DEFAULT_SESSION: Mapping[str, Any] = {
    "model": "gpt-realtime",
    "modalities": ["text", "audio"],
    "voice": {"type": "openai", "name": "alloy"},
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_sampling_rate": 24000,
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 400, "silence_duration_ms": 500},
}
XAI_DEFAULT_SESSION: Mapping[str, Any] = {
    "voice": "eve",
    "turn_detection": {"type": "server_vad"},
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}}},
}

#: Where each flavor's fake listens (the path of its real endpoint).
FLAVOR_PATHS: Mapping[str, str] = {"openai": "/v1/realtime", "xai": "/v1/realtime", "azure": "/openai/v1/realtime",
                                   "voicelive": "/voice-live/realtime"}
#: GA server event names → Voice Live's (which keeps the older names for audio and text).
VOICELIVE_NAMES: Mapping[str, str] = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
_VOICELIVE_FORMATS: Mapping[str, dict[str, Any]] = {
    "g711_ulaw": {"type": "audio/pcmu"}, "g711_alaw": {"type": "audio/pcma"},
    "pcm16": {"type": "audio/pcm", "rate": 24000},
}


def _refusal(flavor: str, headers: Mapping[str, str], params: Mapping[str, Any], path: str,
             api_key: str, entra_token: str | None) -> tuple[int, str] | None:
    """Why the real service of ``flavor`` would refuse this upgrade (HTTP status, reason), or
    ``None``: its credential header, its path and its query string."""
    bearer = headers.get("authorization")
    if flavor in ("openai", "xai"):
        if bearer != f"Bearer {api_key}":
            return 401, "Unauthorized"
    elif not (headers.get("api-key") == api_key or entra_token is not None and bearer == f"Bearer {entra_token}"):
        return 401, "Unauthorized"
    if flavor == "xai" and (path != "/v1/realtime" or "model" not in params):
        return 404, "Not Found"
    if flavor == "azure":
        ga = path == "/openai/v1/realtime" and "model" in params and "api-version" not in params
        dated = path == "/openai/realtime" and "api-version" in params and "deployment" in params
        if not (ga or dated):
            return 404, "Resource not found"
    if flavor == "voicelive" and (path != "/voice-live/realtime" or "api-version" not in params
                                  or "model" not in params):
        return 400, "Bad Request"
    return None


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key not in ("format", "turn_detection"):
            _merge(base[key], value)
        else:
            base[key] = json.loads(json.dumps(value))
    return base


class Stats:
    """What the fake saw (all counts), written as JSON by the command line at exit."""

    def __init__(self) -> None:
        self.connections = 0
        self.refused = 0
        self.appends = 0
        self.speech_started = 0
        self.responses = 0
        self.responses_cancelled_by_vad = 0
        self.cancels_received = 0
        self.truncates_ok = 0
        self.truncate_errors = 0
        self.truncate_ms: list[int] = []
        #: Connections cut on purpose (SIGUSR1 on the command line): time, connection index and
        #: the session's instructions (which carry the call's parameters when the proxy passes them).
        self.drops: list[dict[str, Any]] = []


class FakeRealtimeConnection(WebSocketServerProtocol):
    """One client connection to the fake service."""

    factory: FakeRealtimeFactory
    response: dict[str, Any] | None = None
    closed = False

    def onConnect(self, request: Any) -> None:
        server = self.factory.server
        self.headers = dict(request.headers)
        self.params = dict(request.params)
        self.path = str(request.path)
        if server.record:
            server.handshakes.append(self.headers)
        if any(k.lower() == "openai-beta" for k in self.headers):
            server.violations.append("client sent the retired OpenAI-Beta header")
        refusal = (401, "Unauthorized") if server.reject_auth else _refusal(
            server.flavor, self.headers, self.params, self.path, server.api_key, server.entra_token)
        if refusal is not None:
            server.stats.refused += 1
            raise ConnectionDeny(*refusal)

    def connectionMade(self) -> None:
        super().connectionMade()
        # As the real service would: no Nagle delay between the deltas of a burst (Autobahn's
        # own attempt to set this fails silently; see reconnect.DialedWebSocketProtocol).
        transport: Any = self.transport
        transport.setTcpNoDelay(True)

    def onOpen(self) -> None:
        server = self.factory.server
        self.index = len(server.connections)
        self.session: dict[str, Any] = json.loads(json.dumps(DEFAULT_SESSION))
        #: The session in the flavor's own shape (voicelive, xai), as the client configured it;
        #: ``self.session`` is the GA view of it that the fake runs on.
        self.flavor_session: dict[str, Any] = json.loads(json.dumps(
            {"voicelive": VOICELIVE_DEFAULT_SESSION, "xai": XAI_DEFAULT_SESSION}.get(server.flavor, {})))
        if server.flavor == "xai":
            # xAI documents no interrupt_response: its VAD reports speech, the client cancels.
            self.session["audio"]["input"]["turn_detection"]["interrupt_response"] = False
        self.received: list[dict[str, Any]] = []
        self.input_audio = bytearray()
        self.input_bytes = 0
        self.user_items = 0
        self.assistant_audio_ms: dict[str, int] = {}
        self.truncations: list[tuple[str, int]] = []
        self.items_created: list[dict[str, Any]] = []
        self.errors_sent: list[str] = []
        self.response: dict[str, Any] | None = None
        self.responses = 0
        self.closed = False
        self.held_update: dict[str, Any] | None = None
        self.function_calls: dict[str, str] = {}
        """call_id → function name of every call made on this connection."""
        self._detector: EnergyDetector | None = None
        self._detector_key: tuple[str, int] | None = None
        self._events = 0
        server.connections.append(self)
        server.stats.connections += 1
        if server.flavor == "xai":
            self.send({"type": "conversation.created",
                       "conversation": {"id": f"conv_{self.index}", "object": "realtime.conversation"}})
        else:
            self.send({"type": "session.created", "session": self.flavor_session or self.session})
        if server.error_after_created is not None:
            self.send_error(server.error_after_created["code"], server.error_after_created["message"])
        server.poke()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        leftover = getattr(self, "closeHandshakeTimeoutCall", None)
        if leftover is not None:  # the client aborted instead of answering our close
            leftover.cancel()
            self.closeHandshakeTimeoutCall = None
        self.closed = True
        if self.response is not None:
            self.response["stopped"] = True
        self.factory.server.streaming.pop(self, None)
        self.factory.server.poke()

    # --- client events -------------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        server = self.factory.server
        if server.fast_appends and payload.startswith(_APPEND_PREFIX):
            # The benchmark's hot path (every 20 ms per call): no JSON parse of the proxy's appends.
            end = payload.index(b'"', len(_APPEND_PREFIX))
            self.append_audio(base64.b64decode(payload[len(_APPEND_PREFIX): end]))
            return
        try:
            event = json.loads(payload)
        except ValueError:
            server.violations.append(f"not JSON: {payload[:80]!r}")
            return
        problems: list[str] = []
        if server.validate:
            if server.flavor in ("voicelive", "xai") and event.get("type") == "session.update":
                problems = check_session(server.flavor, event.get("session"))
            else:
                problems = check_event(adapters()[0], event)
        if problems:
            server.violations.append(f"{event.get('type')}: {problems}")
        if not event.get("event_id"):
            server.violations.append(f"{event.get('type')} without event_id")
        if server.record:
            self.received.append(event)
        handler = getattr(self, "on_" + str(event.get("type")).replace(".", "_"), None)
        if handler is not None and not problems:
            handler(event)
        server.poke()

    def on_session_update(self, event: dict[str, Any]) -> None:
        if self.factory.server.hold_session_updated:
            self.held_update = event
            return
        self.apply_update(event)

    def apply_update(self, event: dict[str, Any]) -> None:
        flavor = self.factory.server.flavor
        if flavor == "voicelive":
            self._apply_voicelive(event["session"])
        elif flavor == "xai":
            self._apply_xai(event["session"])
        else:
            _merge(self.session, event["session"])
        effective = json.loads(json.dumps(self.flavor_session or self.session))
        forced = self.factory.server.force_output_format
        if forced is not None:
            if flavor == "voicelive":
                effective["output_audio_format"] = forced["type"]
            else:
                effective["audio"]["output"]["format"] = dict(forced)
        self.send({"type": "session.updated", "session": effective})

    def _apply_voicelive(self, update: Mapping[str, Any]) -> None:
        """A Voice Live (flat) update: kept as sent, and its formats, turn detection and tools
        mapped onto the GA view the fake runs on."""
        _merge(self.flavor_session, update)
        flat, audio = self.flavor_session, self.session["audio"]
        audio["input"]["format"] = dict(_VOICELIVE_FORMATS[flat["input_audio_format"]])
        audio["output"]["format"] = dict(_VOICELIVE_FORMATS[flat["output_audio_format"]])
        if "turn_detection" in update:
            detection = dict(update["turn_detection"] or {})
            detection.setdefault("interrupt_response", True)  # the documented default
            audio["input"]["turn_detection"] = detection
        if "tools" in update:
            self.session["tools"] = update["tools"]

    def _apply_xai(self, update: Mapping[str, Any]) -> None:
        """An xAI update: formats under ``audio``, turn detection and tools at the top level."""
        _merge(self.flavor_session, update)
        for direction in ("input", "output"):
            fmt = ((update.get("audio") or {}).get(direction) or {}).get("format")
            if fmt is not None:
                self.session["audio"][direction]["format"] = dict(fmt)
        if "turn_detection" in update:
            self.session["audio"]["input"]["turn_detection"] = {**update["turn_detection"], "interrupt_response": False}
        if "tools" in update:
            self.session["tools"] = update["tools"]

    def release_session_updated(self) -> None:
        """Answer the ``session.update`` held by ``hold_session_updated``."""
        event, self.held_update = self.held_update, None
        if event is not None:
            self.apply_update(event)

    @property
    def input_format(self) -> str:
        return str(self.session["audio"]["input"]["format"]["type"])

    @property
    def output_format(self) -> str:
        return str(self.session["audio"]["output"]["format"]["type"])

    @property
    def turn_detection(self) -> dict[str, Any]:
        return self.session["audio"]["input"].get("turn_detection") or {}

    @property
    def input_ms(self) -> float:
        """Milliseconds of caller audio appended so far."""
        return self.input_bytes / FORMAT_BYTES_PER_MS[self.input_format]

    def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        self.append_audio(base64.b64decode(event["audio"], validate=True))

    def append_audio(self, data: bytes) -> None:
        """Caller audio: kept (``record``) and run through the VAD, which judges the audio 20 ms
        at a time whatever the appends (a big append of audio held while the session was not
        ready is judged as the service would)."""
        self.factory.server.stats.appends += 1
        if self.factory.server.record:
            self.input_audio += data
        self.input_bytes += len(data)
        detection = self.turn_detection
        key = (self.input_format, int(detection.get("silence_duration_ms", 500)))
        detector = self._detector
        if key != self._detector_key or detector is None:
            vad = self.factory.server.vad
            detector = self._detector = EnergyDetector(FORMATS[key[0]], vad.threshold_dbfs, vad.onset_frames, key[1])
            self._detector_key = key
        for transition in detector.feed(data):
            if transition.started:
                self._speech_started(transition, detection)
            else:
                self._speech_stopped(transition, detection)

    def _speech_started(self, transition: Transition, detection: Mapping[str, Any]) -> None:
        server = self.factory.server
        server.stats.speech_started += 1
        self.user_items += 1
        start = max(0, transition.start_ms - int(detection.get("prefix_padding_ms", 300)))
        self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": start,
                   "item_id": f"user_{self.user_items}"})
        if self.response is not None and detection.get("interrupt_response"):
            for _ in range(server.late_deltas):
                self._deliver_chunk()
            server.stats.responses_cancelled_by_vad += 1
            self.finish_response("cancelled", "turn_detected")

    def _speech_stopped(self, transition: Transition, detection: Mapping[str, Any]) -> None:
        item_id = f"user_{self.user_items}"
        self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": transition.end_ms,
                   "item_id": item_id})
        self.send({"type": "input_audio_buffer.committed", "item_id": item_id})
        if detection.get("create_response", True):
            self.start_response(transition.turn_frames * transition.frame_ms)

    def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = dict(event["item"])
        item.setdefault("id", f"client_item_{len(self.items_created)}")
        self.items_created.append(item)
        if item.get("type") == "function_call_output" and item.get("call_id") not in self.function_calls:
            self.send_error("invalid_value", f"No function call with call_id {item.get('call_id')}",
                            event.get("event_id"))
            return
        self.send({"type": "conversation.item.added", "item": item})

    def on_response_create(self, event: dict[str, Any]) -> None:
        self.start_response()

    def on_response_cancel(self, event: dict[str, Any]) -> None:
        self.factory.server.stats.cancels_received += 1
        if self.response is None:
            self.send_error("response_cancel_not_active", "Cancellation failed: no active response found",
                            event.get("event_id"))
            return
        self.finish_response("cancelled", "client_cancelled")

    def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        stats = self.factory.server.stats
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        if item_id not in self.assistant_audio_ms:
            stats.truncate_errors += 1
            self.send_error("invalid_value", "Only model output audio messages can be truncated", event.get("event_id"))
            return
        audio_ms = self.assistant_audio_ms[item_id]
        if not isinstance(end_ms, int) or end_ms > audio_ms or end_ms < 0:
            stats.truncate_errors += 1
            self.send_error("invalid_value", f"Audio content of {audio_ms}ms is already shorter than {end_ms}ms",
                            event.get("event_id"))
            return
        stats.truncates_ok += 1
        stats.truncate_ms.append(end_ms)
        self.truncations.append((item_id, end_ms))
        self.send({"type": "conversation.item.truncated", "item_id": item_id,
                   "content_index": event.get("content_index", 0), "audio_end_ms": end_ms})

    # --- responses -----------------------------------------------------------------------------

    def start_response(self, turn_ms: int | None = None) -> None:
        """A response: to a caller turn of ``turn_ms`` (VAD), else to ``response.create``. With
        ``server.fail_responses`` queued, it fails with the first code instead; with
        ``server.next_function_call`` set, a caller turn's response calls that function."""
        server = self.factory.server
        if self.response is not None:
            self.send_error("conversation_already_has_active_response", "Conversation already has an active response")
            return
        if server.fail_responses:
            self.fail_response(server.fail_responses.pop(0))
            return
        then_call: tuple[str, str] | None = None
        if turn_ms is not None and server.next_function_call is not None:
            name, arguments = server.next_function_call
            server.next_function_call = None
            if not server.speak_before_function_call:
                self.call_function(name, arguments)
                return
            then_call = (name, arguments)
        self.responses += 1
        server.stats.responses += 1
        n = self.responses
        response_id, item_id = f"resp_{self.index}_{n}", f"item_{self.index}_{n}"
        bpm = FORMAT_BYTES_PER_MS[self.output_format]
        if turn_ms is not None and server.turn_audio is not None:
            audio = server.turn_audio(turn_ms, bpm)
        else:
            audio = server.response_audio(self.index, n, bpm)
        self.response = {"id": response_id, "item_id": item_id, "audio": audio, "sent": 0, "chunk": 0,
                         "stopped": False, "then_call": then_call, "n": n}
        self.assistant_audio_ms[item_id] = 0
        self.send({"type": "response.created",
                   "response": {"id": response_id, "object": "realtime.response", "status": "in_progress",
                                "output": []}})
        self.send({"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 1000, "remaining": 999 - n, "reset_seconds": 0.06},
            {"name": "tokens", "limit": 50000, "remaining": 40000 - n, "reset_seconds": 1.5}]})
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        self.send({"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item})
        self.send({"type": "response.content_part.added", "response_id": response_id, "item_id": item_id,
                   "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
        self._resume_stream()

    def _resume_stream(self) -> None:
        server = self.factory.server
        if server.speed is None:
            self.factory.reactor.callLater(0, self._stream, self.response)
        else:
            server.streaming[self] = None

    def _paused_here(self, response: dict[str, Any]) -> bool:
        """True (and the response marked paused) once it reached ``pause_after_ms``."""
        server = self.factory.server
        pause_ms = server.pause_after_ms
        if pause_ms is None or response["sent"] < pause_ms * FORMAT_BYTES_PER_MS[self.output_format]:
            return False
        response["paused"] = True
        server.streaming.pop(self, None)
        server.poke()
        return True

    def _stream(self, response: dict[str, Any]) -> None:
        """Deliver one irregular chunk per reactor turn (much faster than real time), so that
        client events can interleave with a response in progress."""
        if response is not self.response or response["stopped"] or self._paused_here(response):
            return
        if response["sent"] >= len(response["audio"]):
            self.finish_response("completed", None)
            return
        self._deliver_chunk()
        self.factory.reactor.callLater(0, self._stream, response)

    def tick(self, budget: int) -> None:
        """With ``speed``: send the next ``budget`` bytes of the response (the shared timer)."""
        response = self.response
        if response is None:
            self.factory.server.streaming.pop(self, None)
            return
        audio = response["audio"]
        while budget > 0 and response["sent"] < len(audio):
            if self._paused_here(response):
                return
            budget -= self._deliver_chunk(budget)
        if response["sent"] >= len(audio):
            self.finish_response("completed", None)

    def _deliver_chunk(self, limit: int | None = None) -> int:
        """Sends the next delta (at most ``limit`` bytes); returns its size."""
        response = self.response
        if response is None or response["sent"] >= len(response["audio"]):
            return 0
        sizes = self.factory.server.chunk_sizes
        size = sizes[response["chunk"] % len(sizes)]
        if limit is not None:
            size = min(size, limit)
        response["chunk"] += 1
        chunk = response["audio"][response["sent"]: response["sent"] + size]
        response["sent"] += len(chunk)
        self.assistant_audio_ms[response["item_id"]] = response["sent"] // FORMAT_BYTES_PER_MS[self.output_format]
        self.send({"type": "response.output_audio.delta", "response_id": response["id"],
                   "item_id": response["item_id"], "output_index": 0, "content_index": 0,
                   "delta": base64.b64encode(chunk).decode("ascii")})
        return len(chunk)

    def continue_response(self) -> None:
        """Resume a response held at ``pause_after_ms`` (it then runs to the end)."""
        if self.response is not None and self.response.pop("paused", False):
            self.factory.server.pause_after_ms = None
            self._resume_stream()

    def finish_response(self, status: str, reason: str | None) -> None:
        response, self.response = self.response, None
        if response is None:
            return
        self.factory.server.streaming.pop(self, None)
        response["stopped"] = True
        rid, iid = response["id"], response["item_id"]
        item_status = "completed" if status == "completed" else "incomplete"
        base = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        self.send({"type": "response.output_audio.done", **base})
        self.send({"type": "response.output_audio_transcript.done", **base, "transcript": f"bot says {rid}"})
        item = {"id": iid, "type": "message", "role": "assistant", "status": item_status,
                "content": [{"type": "output_audio", "transcript": f"bot says {rid}"}]}
        self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": item})
        output: list[dict[str, Any]] = [item]
        then_call = response.get("then_call")
        if then_call is not None and status == "completed":  # a cut response never makes its call
            name, arguments = then_call
            output.append(self._function_call_item(rid, 1, name, arguments, response["n"]))
        done: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": status, "output": output,
                                "usage": {"total_tokens": 60, "input_tokens": 20, "output_tokens": 40,
                                          "input_token_details": {"audio_tokens": 15, "text_tokens": 5,
                                                                  "cached_tokens": 0},
                                          "output_token_details": {"audio_tokens": 30, "text_tokens": 10}}}
        if reason is not None:
            done["status_details"] = {"type": status, "reason": reason}
        self.send({"type": "response.done", "response": done})
        self.factory.server.poke()

    # --- scripted responses --------------------------------------------------------------------

    def fail_response(self, code: str, message: str | None = None) -> None:
        """A response that fails at once (``response.done`` ``failed``, the cause in
        ``status_details.error``), as the service does on a rate limit or quota error."""
        self.responses += 1
        self.factory.server.stats.responses += 1
        rid = f"resp_{self.index}_{self.responses}"
        self.send({"type": "response.created", "response": {"id": rid, "object": "realtime.response",
                                                             "status": "in_progress", "output": []}})
        kind = {"server_error": "server_error", "rate_limit_exceeded": "rate_limit_error",
                "insufficient_quota": "insufficient_quota", "invalid_api_key": "authentication_error"}
        error = {"type": kind.get(code, "invalid_request_error"), "code": code, "message": message or f"{code}"}
        self.send({"type": "response.done", "response": {
            "id": rid, "object": "realtime.response", "status": "failed", "output": [],
            "status_details": {"type": "failed", "error": error}}})
        self.factory.server.poke()

    def call_function(self, name: str, arguments: str) -> str:
        """A response whose only output is a call of the function ``name`` (which must be in
        the session's tools) with ``arguments`` (JSON text); returns its ``call_id``."""
        self.responses += 1
        self.factory.server.stats.responses += 1
        n = self.responses
        rid = f"resp_{self.index}_{n}"
        self.send({"type": "response.created", "response": {"id": rid, "object": "realtime.response",
                                                             "status": "in_progress", "output": []}})
        done = self._function_call_item(rid, 0, name, arguments, n)
        self.send({"type": "response.done", "response": {"id": rid, "object": "realtime.response",
                                                         "status": "completed", "output": [done]}})
        self.factory.server.poke()
        return str(done["call_id"])

    def _function_call_item(self, rid: str, output_index: int, name: str, arguments: str, n: int) -> dict[str, Any]:
        """Stream the function call item at ``output_index`` of response ``rid`` (added, the
        arguments, done); returns the finished item, for ``response.done``."""
        tools = [t.get("name") for t in self.session.get("tools") or ()]
        if name not in tools:
            self.factory.server.violations.append(f"function {name!r} called but not offered ({tools})")
        iid, call_id = f"fc_{self.index}_{n}", f"call_{self.index}_{n}"
        self.function_calls[call_id] = name
        item = {"id": iid, "type": "function_call", "status": "in_progress", "name": name, "call_id": call_id,
                "arguments": ""}
        self.send({"type": "response.output_item.added", "response_id": rid, "output_index": output_index,
                   "item": item})
        self.send({"type": "response.function_call_arguments.delta", "response_id": rid, "item_id": iid,
                   "output_index": output_index, "call_id": call_id, "delta": arguments})
        self.send({"type": "response.function_call_arguments.done", "response_id": rid, "item_id": iid,
                   "output_index": output_index, "call_id": call_id, "name": name, "arguments": arguments})
        done = {**item, "status": "completed", "arguments": arguments}
        self.send({"type": "response.output_item.done", "response_id": rid, "output_index": output_index,
                   "item": done})
        return done

    # --- scripted faults -----------------------------------------------------------------------

    def drop(self) -> None:
        """Cut the TCP connection without a closing handshake (a mid-call network failure)."""
        transport: Any = self.transport
        transport.abortConnection()

    def expire(self) -> None:
        """End the session the way the service does at 60 minutes."""
        self.send_error("session_expired", "Your session hit the maximum duration of 60 minutes.")
        # 1001 "going away" is the service's code; Autobahn's sendClose only allows 1000/3000+.
        self.sendCloseFrame(1001, b"Your session hit the maximum duration of 60 minutes.", isReply=False)

    # --- sending -------------------------------------------------------------------------------

    def send_error(self, code: str, message: str, event_id: str | None = None) -> None:
        self.errors_sent.append(code)
        error: dict[str, Any] = {"type": "invalid_request_error", "code": code, "message": message}
        if event_id is not None:
            error["event_id"] = event_id
        self.send({"type": "error", "error": error})

    def send(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        self._events += 1
        event = {"event_id": f"event_{self.index}_{self._events}", **event}
        server = self.factory.server
        flavored = server.flavor in ("voicelive", "xai") and event["type"] in (
            "session.created", "session.updated", "conversation.created")
        if server.validate and not flavored:  # the flavors' own session shapes are not the GA models'
            problems = check_event(adapters()[1], event)
            if problems:
                server.violations.append(f"fake server sent bad {event['type']}: {problems}")
        if server.flavor == "voicelive":
            event["type"] = VOICELIVE_NAMES.get(event["type"], event["type"])
        self.sendMessage(json.dumps(event, separators=(",", ":")).encode("utf-8"),
                         isBinary=False)


class FakeRealtimeFactory(WebSocketServerFactory):
    protocol = FakeRealtimeConnection  # type: ignore[assignment]
    server: FakeRealtimeServer


class FakeRealtimeServer(ConditionWaiting):
    """The fake service. Construction: ``reactor`` (listening and time), ``api_key`` (the key
    accepted), ``validate`` (hold both sides to the ``openai`` models), ``record`` (keep every
    received event, handshake and input byte for inspection), ``speed`` (None: one delta per
    reactor turn; a number: that multiple of real time, from one shared 10 ms timer), ``vad``
    (:data:`TEST_VAD` or :data:`BENCH_VAD`).

    Knobs (set before the client connects): ``reject_auth``: refuse every upgrade with HTTP 401.
    ``error_after_created``: ``{code, message}`` of an error sent right after
    ``session.created`` (then the socket closes), e.g. ``invalid_api_key``.
    ``hold_session_updated``: keep ``session.update`` unanswered until
    ``connection.release_session_updated()``. ``force_output_format``: report this output format
    in ``session.updated`` whatever was asked. ``response_audio(conn, n, bytes_per_ms)``: the
    audio of response ``n`` on connection ``conn`` (default: 1 s of :func:`pattern`).
    ``turn_audio(turn_ms, bytes_per_ms)``: when set, the audio of a response to a caller turn of
    ``turn_ms`` (the benchmark answers as long as the caller talked). ``chunk_sizes``: the delta
    sizes cycled through, in bytes. ``pause_after_ms``: hold every response after this much
    audio until ``connection.continue_response()``. ``late_deltas``: deltas still sent after a
    VAD barge-in before the response is cancelled (in flight). ``fail_responses``: codes of
    the next responses to fail (one per response, e.g. ``["server_error"]``).
    ``next_function_call``: ``(name, arguments)`` the response to the next caller turn calls
    instead of speaking (or call ``connection.call_function`` directly); a
    ``function_call_output`` for an unknown call is an error, a known one is accepted.
    ``speak_before_function_call``: that response first speaks (its audio as any response's,
    output 0) and then makes the call (output 1), as a model saying goodbye before ``end_call``
    does; a response cut short (barge-in, cancel) makes no call.

    ``flavor`` makes the fake act as that member of the family (``openai``, ``azure``,
    ``voicelive``, ``xai``): it listens on the flavor's path, accepts only the flavor's
    credential header (``api-key`` equal to ``api_key``, or ``Authorization: Bearer`` with
    ``entra_token``, for the Azure ones) and query string (HTTP 401/404/400 otherwise), opens
    with the flavor's event, holds ``session.update`` to the flavor's documented session shape
    (:mod:`mediaproxy.testing.flavor_schema`; a key of another shape is a violation) and answers
    in it, and sends Voice Live's event names. xAI's VAD does not cancel a response by itself.
    """

    def __init__(self, reactor: Any, api_key: str = "test-key", validate: bool = True, record: bool = True,
                 speed: float | None = None, vad: VadSettings = TEST_VAD, flavor: str = "openai",
                 entra_token: str | None = None) -> None:
        self.reactor = reactor
        self.api_key = api_key
        self.flavor = flavor
        self.entra_token = entra_token
        self.validate = validate
        self.record = record
        self.speed = speed
        self.vad = vad
        # Appends are parsed by hand only when nothing needs the parsed event.
        self.fast_appends = not validate and not record
        self.reject_auth = False
        self.error_after_created: dict[str, str] | None = None
        self.hold_session_updated = False
        self.force_output_format: dict[str, Any] | None = None
        self.response_audio: Callable[[int, int, int], bytes] = lambda conn, n, bpm: pattern(1000 * bpm, conn * 10 + n)
        self.turn_audio: Callable[[int, int], bytes] | None = None
        self.chunk_sizes: Sequence[int] = (160, 333, 97, 801, 41, 1200, 7, 512)
        self.pause_after_ms: int | None = None
        self.late_deltas = 0
        self.fail_responses: list[str] = []
        self.next_function_call: tuple[str, str] | None = None
        self.speak_before_function_call = False
        self.connections: list[FakeRealtimeConnection] = []
        self.handshakes: list[dict[str, str]] = []
        self.violations: list[str] = []
        self.stats = Stats()
        #: With ``speed``: the connections whose response is being delivered (insertion order).
        self.streaming: dict[FakeRealtimeConnection, None] = {}
        self._ticker: LoopingCall | None = None
        self._port: Any = None

    def listen(self, port: int = 0, backlog: int = 50) -> str:
        """Start listening on 127.0.0.1 (``port`` 0: any free one); return the ws:// URL to configure."""
        url = "ws://127.0.0.1" + (f":{port}" if port else "")
        factory = FakeRealtimeFactory(url, reactor=self.reactor)
        factory.server = self
        factory.setProtocolOptions(maxMessagePayloadSize=16 * 1024 * 1024)
        self._port = self.reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=backlog)
        if self.speed is not None and self._ticker is None:
            self._ticker = LoopingCall(self._tick)
            self._ticker.clock = self.reactor
            self._ticker.start(TICK_S, now=False)
        return f"ws://127.0.0.1:{self._port.getHost().port}{FLAVOR_PATHS[self.flavor]}"

    def _tick(self) -> None:
        """Every 10 ms: each response in progress sends its next ``speed * 10`` ms of audio."""
        assert self.speed is not None
        for connection in list(self.streaming):
            connection.tick(int(self.speed * TICK_S * 1000 * FORMAT_BYTES_PER_MS[connection.output_format]))

    def drop_random(self, choose: Callable[[Sequence[FakeRealtimeConnection]], FakeRealtimeConnection]) -> None:
        """Cut one open connection chosen by ``choose`` (:meth:`FakeRealtimeConnection.drop`) and
        record it in ``stats.drops``; nothing when none is open."""
        open_ = [c for c in self.connections if not c.closed]
        if not open_:
            return
        victim = choose(open_)
        self.stats.drops.append({"t": self.reactor.seconds(), "connection": victim.index,
                                 "instructions": str(victim.session.get("instructions", ""))})
        victim.drop()

    def connection(self, index: int = -1) -> FakeRealtimeConnection:
        return self.connections[index]

    def stop_listening(self) -> Deferred[Any]:
        """Refuse new connections from now on (existing ones stay up)."""
        port, self._port = self._port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)

    def stop(self) -> Deferred[Any]:
        """Stop listening and wait until every connection has closed."""
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        closing = [self.stop_listening(), self.when(lambda: all(c.closed for c in self.connections))]
        return DeferredList(closing, fireOnOneErrback=True)


# --- the command line (benchmarks) -------------------------------------------------------------

#: The delta sizes the benchmark cycles through, in bytes.
BENCH_CHUNK_SIZES = (160, 333, 97, 801, 41, 1200, 7, 512, 250, 640)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake in this process for a benchmark: no validation, no history, the echo
    parrot's VAD, answers as long as the caller's turn at ``--speed`` times real time. Counts go
    to ``--stats`` (JSON) when the process gets SIGTERM or after ``--max-seconds``. Each SIGUSR1
    cuts one random open connection without a closing handshake (chaos benchmarks; ``--seed``),
    recorded in the stats' ``drops``."""
    import random
    import signal

    from twisted.internet import reactor as installed

    reactor: Any = installed

    p = argparse.ArgumentParser(description="A fake OpenAI Realtime service (GA protocol) for benchmarks.")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-key", default="dummy")
    p.add_argument("--speed", type=float, default=10.0, help="delivery speed, times real time (default 10)")
    p.add_argument("--reply-ms", type=int, default=2000,
                   help="audio of a response not provoked by caller speech (greeting, response.create), ms")
    p.add_argument("--stats", default="", help="write counts here as JSON on exit")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop by itself after this long")
    p.add_argument("--seed", type=int, default=None, help="seed of SIGUSR1's choice of connection")
    args = p.parse_args(argv)

    server = FakeRealtimeServer(reactor, api_key=args.api_key, validate=False, record=False, speed=args.speed,
                                vad=BENCH_VAD)
    server.chunk_sizes = BENCH_CHUNK_SIZES
    server.response_audio = lambda conn, n, bpm: reply_audio(args.reply_ms, bpm)
    server.turn_audio = reply_audio
    server.listen(args.port, backlog=1024)

    def write_stats() -> None:
        if args.stats:
            with open(args.stats, "w") as f:
                json.dump(vars(server.stats), f)

    reactor.addSystemEventTrigger("before", "shutdown", write_stats)
    reactor.callLater(args.max_seconds, reactor.stop)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    rng = random.Random(args.seed)
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(server.drop_random, rng.choice))
    print("fake realtime ready", flush=True)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
