"""A local stand-in for the OpenAI Realtime service (GA protocol) and a recording backend
listener, for loopback tests of the OpenAI connector.

:class:`FakeRealtimeServer` listens on ``127.0.0.1`` port 0 (Autobahn). Per connection it:
checks ``Authorization: Bearer``; sends ``session.created`` with the service defaults (24 kHz PCM)
and answers ``session.update`` with the merged effective session; runs an energy VAD over the
appended caller audio (speech_started / speech_stopped, response on end of turn when
``create_response``); streams responses faster than real time in irregular chunk sizes; applies
the real service's truncate rules (error when ``audio_end_ms`` exceeds the item's audio, or the
item is not assistant audio); cancels (by VAD with ``interrupt_response``, or ``response.cancel``);
and can be told to drop, expire or refuse credentials.

Every client event is validated with the ``openai`` package's GA pydantic models (a
discriminated union, unknown keys rejected by walking ``model_extra``), and every event the fake
sends is validated against the GA server models, so both sides are held to the real protocol.
Violations are collected in ``server.violations``; tests assert it stays empty.

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeRealtimeServer.when` and
:meth:`RecordingListener.when`, which fire as soon as a condition holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union, get_args

import numpy as np
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed

from mediaproxy.audio.g711 import alaw_decode, ulaw_decode
from tests.support import ConditionWaiting

# --- validation with the openai package's models (backends-and-peers §1.7) ---------------------

_CLIENT_MEMBERS = get_args(get_args(RealtimeClientEvent)[0])  # strip the SDK's Annotated wrapper
CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(Annotated[Union[_CLIENT_MEMBERS], Field(discriminator="type")])
_SERVER_MEMBERS = get_args(get_args(RealtimeServerEvent)[0])
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(Annotated[Union[_SERVER_MEMBERS], Field(discriminator="type")])


def unknown_keys(model: Any, path: str = "$") -> list[str]:
    """Keys the models accepted only because they allow extras (misspelled or beta keys)."""
    if isinstance(model, BaseModel):
        found = [f"{path}.{key}" for key in (model.model_extra or {})]
        for key, value in model:
            found += unknown_keys(value, f"{path}.{key}")
        return found
    if isinstance(model, (list, tuple)):
        return [k for i, v in enumerate(model) for k in unknown_keys(v, f"{path}[{i}]")]
    return []


def check_event(adapter: TypeAdapter[Any], event: Any) -> list[str]:
    """Problems with ``event`` against ``adapter``'s union; empty when it is valid GA."""
    try:
        model = adapter.validate_python(event)
    except ValidationError as e:
        return [f"{err['loc']}: {err['msg']}" for err in e.errors()]
    return [f"unknown key {key}" for key in unknown_keys(model)]


# --- audio helpers -----------------------------------------------------------------------------

FORMAT_BYTES_PER_MS = {"audio/pcmu": 8, "audio/pcma": 8, "audio/pcm": 48}
SILENCE_BYTE = {"audio/pcmu": 0xFF, "audio/pcma": 0xD5, "audio/pcm": 0x00}
LOUD_FRAME = {  # 20 ms of a full-scale square wave
    "audio/pcmu": bytes([0x00, 0x80] * 80),
    "audio/pcma": bytes([0xAA, 0x2A] * 80),
    "audio/pcm": np.array([12000, -12000] * 240, dtype="<i2").tobytes(),
}


def mean_level(data: bytes, fmt: str) -> float:
    """Mean absolute sample value of ``data`` in the GA format named ``fmt``."""
    if not data:
        return 0.0
    if fmt == "audio/pcmu":
        samples = ulaw_decode(data)
    elif fmt == "audio/pcma":
        samples = alaw_decode(data)
    else:
        samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    return float(np.abs(samples.astype(np.int32)).mean())


def pattern(nbytes: int, seed: int) -> bytes:
    """Recognisable, non-silent bot audio: every byte differs from its neighbours, so a byte
    lost, duplicated or reordered anywhere shows up in a comparison."""
    return bytes((seed * 37 + i * 7 + (i >> 8)) % 251 for i in range(nbytes))


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


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key not in ("format", "turn_detection"):
            _merge(base[key], value)
        else:
            base[key] = json.loads(json.dumps(value))
    return base


class FakeRealtimeConnection(WebSocketServerProtocol):
    """One client connection to the fake service."""

    factory: FakeRealtimeFactory
    response: dict[str, Any] | None = None
    closed = False

    def onConnect(self, request: Any) -> None:
        server = self.factory.server
        self.headers = dict(request.headers)
        self.params = dict(request.params)
        server.handshakes.append(self.headers)
        if any(k.lower() == "openai-beta" for k in self.headers):
            server.violations.append("client sent the retired OpenAI-Beta header")
        if server.reject_auth or self.headers.get("authorization") != f"Bearer {server.api_key}":
            raise ConnectionDeny(401, "Unauthorized")

    def connectionMade(self) -> None:
        super().connectionMade()
        # As the real service would: no Nagle delay between the deltas of a burst (Autobahn's
        # own attempt to set this fails silently; see reconnect.DialedWebSocketProtocol).
        self.transport.setTcpNoDelay(True)

    def onOpen(self) -> None:
        server = self.factory.server
        self.index = len(server.connections)
        self.session: dict[str, Any] = json.loads(json.dumps(DEFAULT_SESSION))
        self.received: list[dict[str, Any]] = []
        self.input_audio = bytearray()
        self.input_ms = 0.0
        self.speaking = False
        self.silence_ms = 0.0
        self.user_items = 0
        self.assistant_audio_ms: dict[str, int] = {}
        self.truncations: list[tuple[str, int]] = []
        self.items_created: list[dict[str, Any]] = []
        self.errors_sent: list[str] = []
        self.response: dict[str, Any] | None = None
        self.responses = 0
        self.closed = False
        self.held_update: dict[str, Any] | None = None
        self._events = 0
        server.connections.append(self)
        self.send({"type": "session.created", "session": self.session})
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
        self.factory.server.poke()

    # --- client events -------------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        server = self.factory.server
        try:
            event = json.loads(payload)
        except ValueError:
            server.violations.append(f"not JSON: {payload[:80]!r}")
            return
        problems = check_event(CLIENT_EVENT, event)
        if problems:
            server.violations.append(f"{event.get('type')}: {problems}")
        if not event.get("event_id"):
            server.violations.append(f"{event.get('type')} without event_id")
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
        _merge(self.session, event["session"])
        effective = json.loads(json.dumps(self.session))
        forced = self.factory.server.force_output_format
        if forced is not None:
            effective["audio"]["output"]["format"] = dict(forced)
        self.send({"type": "session.updated", "session": effective})

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

    def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        data = base64.b64decode(event["audio"], validate=True)
        fmt = self.input_format
        self.input_audio += data
        # The VAD runs over the audio, not the appends: a big append (audio held while the
        # session was not ready) is judged 20 ms at a time, as the service would.
        step = 20 * FORMAT_BYTES_PER_MS[fmt]
        for offset in range(0, len(data), step):
            self._detect(data[offset: offset + step], fmt)

    def _detect(self, data: bytes, fmt: str) -> None:
        chunk_ms = len(data) / FORMAT_BYTES_PER_MS[fmt]
        self.input_ms += chunk_ms
        loud = mean_level(data, fmt) > 1000
        detection = self.turn_detection
        if loud and not self.speaking:
            self.speaking, self.silence_ms = True, 0.0
            self.user_items += 1
            start = max(0, int(self.input_ms - chunk_ms) - int(detection.get("prefix_padding_ms", 300)))
            self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": start,
                       "item_id": f"user_{self.user_items}"})
            if self.response is not None and detection.get("interrupt_response"):
                for _ in range(self.factory.server.late_deltas):
                    self._deliver_chunk()
                self.finish_response("cancelled", "turn_detected")
        elif self.speaking and not loud:
            self.silence_ms += chunk_ms
            if self.silence_ms >= detection.get("silence_duration_ms", 500):
                self.speaking = False
                item_id = f"user_{self.user_items}"
                self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(self.input_ms),
                           "item_id": item_id})
                self.send({"type": "input_audio_buffer.committed", "item_id": item_id})
                if detection.get("create_response", True):
                    self.start_response()
        elif loud:
            self.silence_ms = 0.0

    def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = dict(event["item"])
        item.setdefault("id", f"client_item_{len(self.items_created)}")
        self.items_created.append(item)
        self.send({"type": "conversation.item.added", "item": item})

    def on_response_create(self, event: dict[str, Any]) -> None:
        self.start_response()

    def on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.response is None:
            self.send_error("response_cancel_not_active", "Cancellation failed: no active response found",
                            event.get("event_id"))
            return
        self.finish_response("cancelled", "client_cancelled")

    def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        if item_id not in self.assistant_audio_ms:
            self.send_error("invalid_value", "Only model output audio messages can be truncated", event.get("event_id"))
            return
        audio_ms = self.assistant_audio_ms[item_id]
        if end_ms > audio_ms or end_ms < 0:
            self.send_error("invalid_value", f"Audio content of {audio_ms}ms is already shorter than {end_ms}ms",
                            event.get("event_id"))
            return
        self.truncations.append((item_id, end_ms))
        self.send({"type": "conversation.item.truncated", "item_id": item_id,
                   "content_index": event["content_index"], "audio_end_ms": end_ms})

    # --- responses -----------------------------------------------------------------------------

    def start_response(self) -> None:
        server = self.factory.server
        if self.response is not None:
            self.send_error("conversation_already_has_active_response", "Conversation already has an active response")
            return
        self.responses += 1
        n = self.responses
        response_id, item_id = f"resp_{self.index}_{n}", f"item_{self.index}_{n}"
        audio = server.response_audio(self.index, n, FORMAT_BYTES_PER_MS[self.output_format])
        self.response = {"id": response_id, "item_id": item_id, "audio": audio, "sent": 0, "chunk": 0,
                         "stopped": False}
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
        self.factory.reactor.callLater(0, self._stream, self.response)

    def _stream(self, response: dict[str, Any]) -> None:
        """Deliver one irregular chunk per reactor turn (much faster than real time), so that
        client events can interleave with a response in progress."""
        if response is not self.response or response["stopped"]:
            return
        pause_ms = self.factory.server.pause_after_ms
        bpm = FORMAT_BYTES_PER_MS[self.output_format]
        if pause_ms is not None and response["sent"] >= pause_ms * bpm:
            response["paused"] = True
            self.factory.server.poke()
            return
        if response["sent"] >= len(response["audio"]):
            self.finish_response("completed", None)
            return
        self._deliver_chunk()
        self.factory.reactor.callLater(0, self._stream, response)

    def _deliver_chunk(self) -> None:
        response = self.response
        if response is None or response["sent"] >= len(response["audio"]):
            return
        sizes = self.factory.server.chunk_sizes
        size = sizes[response["chunk"] % len(sizes)]
        response["chunk"] += 1
        chunk = response["audio"][response["sent"]: response["sent"] + size]
        response["sent"] += len(chunk)
        self.assistant_audio_ms[response["item_id"]] = response["sent"] // FORMAT_BYTES_PER_MS[self.output_format]
        self.send({"type": "response.output_audio.delta", "response_id": response["id"],
                   "item_id": response["item_id"], "output_index": 0, "content_index": 0,
                   "delta": base64.b64encode(chunk).decode("ascii")})

    def continue_response(self) -> None:
        """Resume a response held at ``pause_after_ms`` (it then runs to the end)."""
        if self.response is not None and self.response.pop("paused", False):
            self.factory.server.pause_after_ms = None
            self.factory.reactor.callLater(0, self._stream, self.response)

    def finish_response(self, status: str, reason: str | None) -> None:
        response, self.response = self.response, None
        if response is None:
            return
        response["stopped"] = True
        rid, iid = response["id"], response["item_id"]
        item_status = "completed" if status == "completed" else "incomplete"
        base = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        self.send({"type": "response.output_audio.done", **base})
        self.send({"type": "response.output_audio_transcript.done", **base, "transcript": f"bot says {rid}"})
        item = {"id": iid, "type": "message", "role": "assistant", "status": item_status,
                "content": [{"type": "output_audio", "transcript": f"bot says {rid}"}]}
        self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": item})
        done: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": status, "output": [item],
                                "usage": {"total_tokens": 60, "input_tokens": 20, "output_tokens": 40,
                                          "input_token_details": {"audio_tokens": 15, "text_tokens": 5,
                                                                  "cached_tokens": 0},
                                          "output_token_details": {"audio_tokens": 30, "text_tokens": 10}}}
        if reason is not None:
            done["status_details"] = {"type": status, "reason": reason}
        self.send({"type": "response.done", "response": done})
        self.factory.server.poke()

    # --- scripted faults -----------------------------------------------------------------------

    def drop(self) -> None:
        """Cut the TCP connection without a closing handshake (a mid-call network failure)."""
        self.transport.abortConnection()

    def expire(self) -> None:
        """End the session the way the service does at 60 minutes."""
        self.send_error("session_expired", "Your session hit the maximum duration of 60 minutes.")
        # 1001 "going away" is the service's code; Autobahn's sendClose only allows 1000/3000+.
        self.sendCloseFrame(1001, "Your session hit the maximum duration of 60 minutes.".encode(), isReply=False)

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
        problems = check_event(SERVER_EVENT, event)
        if problems:
            self.factory.server.violations.append(f"fake server sent bad {event['type']}: {problems}")
        self.sendMessage(json.dumps(event).encode("utf-8"), isBinary=False)


class FakeRealtimeFactory(WebSocketServerFactory):
    protocol = FakeRealtimeConnection
    server: FakeRealtimeServer


class FakeRealtimeServer(ConditionWaiting):
    """The fake service. Knobs (set before the client connects):

    ``api_key``: the key accepted. ``reject_auth``: refuse every upgrade with HTTP 401.
    ``error_after_created``: ``{code, message}`` of an error sent right after
    ``session.created`` (then the socket closes), e.g. ``invalid_api_key``.
    ``hold_session_updated``: keep ``session.update`` unanswered until
    ``connection.release_session_updated()``. ``force_output_format``: report this output format
    in ``session.updated`` whatever was asked. ``response_audio(conn, n, bytes_per_ms)``: the
    audio of response ``n`` on connection ``conn`` (default: 1 s of :func:`pattern`).
    ``chunk_sizes``: the delta sizes cycled through, in bytes. ``pause_after_ms``: hold every
    response after this much audio until ``connection.continue_response()``. ``late_deltas``:
    deltas still sent after a VAD barge-in before the response is cancelled (in flight).
    """

    def __init__(self, reactor: Any, api_key: str = "test-key") -> None:
        self.reactor = reactor
        self.api_key = api_key
        self.reject_auth = False
        self.error_after_created: dict[str, str] | None = None
        self.hold_session_updated = False
        self.force_output_format: dict[str, Any] | None = None
        self.response_audio: Callable[[int, int, int], bytes] = lambda conn, n, bpm: pattern(1000 * bpm, conn * 10 + n)
        self.chunk_sizes: tuple[int, ...] = (160, 333, 97, 801, 41, 1200, 7, 512)
        self.pause_after_ms: int | None = None
        self.late_deltas = 0
        self.connections: list[FakeRealtimeConnection] = []
        self.handshakes: list[dict[str, str]] = []
        self.violations: list[str] = []
        self._port: Any = None

    def listen(self) -> str:
        """Start listening on 127.0.0.1, port 0; return the ws:// URL to configure."""
        factory = FakeRealtimeFactory("ws://127.0.0.1", reactor=self.reactor)
        factory.server = self
        self._port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        return f"ws://127.0.0.1:{self._port.getHost().port}/v1/realtime"



    def connection(self, index: int = -1) -> FakeRealtimeConnection:
        return self.connections[index]

    def stop_listening(self) -> Deferred[Any]:
        """Refuse new connections from now on (existing ones stay up)."""
        port, self._port = self._port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)

    def stop(self) -> Deferred[Any]:
        """Stop listening and wait until every connection has closed."""
        closing = [self.stop_listening(), self.when(lambda: all(c.closed for c in self.connections))]
        return DeferredList(closing, fireOnOneErrback=True)


# --- the listener side -------------------------------------------------------------------------


class RecordingListener(ConditionWaiting):
    """A :class:`~mediaproxy.backends.base.BackendListener` that records every call in
    ``events`` and the audio per response in ``audio``. ``on_speech_started`` runs inside
    ``backend_speech_started`` (the bridge interrupts synchronously there)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.audio: dict[str, bytearray] = {}
        self.on_speech_started: Callable[[], None] | None = None


    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def has(self, kind: str, *args: Any) -> bool:
        return any(e[0] == kind and e[1:1 + len(args)] == args for e in self.events)

    def _record(self, *event: Any) -> None:
        self.events.append(event)
        self.poke()

    def backend_ready(self) -> None:
        self._record("ready")

    def backend_audio(self, response_id: str, data: bytes) -> None:
        self.audio.setdefault(response_id, bytearray()).extend(data)
        self._record("audio", response_id, len(data))

    def backend_response_done(self, response_id: str) -> None:
        self._record("done", response_id)

    def backend_speech_started(self) -> None:
        if self.on_speech_started is not None:
            self.on_speech_started()
        self._record("speech_started")

    def backend_speech_stopped(self) -> None:
        self._record("speech_stopped")

    def backend_transcript(self, role: str, text: str, final: bool) -> None:
        self._record("transcript", role, text, final)

    def backend_hangup(self, reason: str, variables: Mapping[str, str] | None = None) -> None:
        self._record("hangup", reason)

    def backend_failed(self, reason: str) -> None:
        self._record("failed", reason)
