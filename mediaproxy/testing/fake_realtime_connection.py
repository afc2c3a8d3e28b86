"""One client connection to the fake OpenAI Realtime service: the upgrade, the client's events,
caller audio through the fake's VAD, truncation, scripted faults and what it sends.

The responses it makes are in :mod:`~mediaproxy.testing.fake_realtime_responses`; the session
shapes of each flavor in :mod:`~mediaproxy.testing.fake_realtime_sessions`; the server that
listens and holds the knobs in :mod:`~mediaproxy.testing.fake_realtime`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from autobahn.websocket.types import ConnectionDeny

from mediaproxy.audio.vad import EnergyDetector, Transition
from mediaproxy.testing.fake_audio import FORMAT_BYTES_PER_MS, FORMATS
from mediaproxy.testing.fake_realtime_responses import RealtimeResponses
from mediaproxy.testing.fake_realtime_sessions import (
    DEFAULT_SESSION,
    VOICELIVE_DEFAULT_SESSION,
    VOICELIVE_NAMES,
    XAI_DEFAULT_SESSION,
    apply_voicelive_update,
    apply_xai_update,
    merge_session,
    upgrade_refusal,
)
from mediaproxy.testing.flavor_schema import check_session
from mediaproxy.testing.realtime_schema import adapters, check_event

_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'


class FakeRealtimeConnection(RealtimeResponses):
    """One client connection to the fake service."""

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
        refusal = (401, "Unauthorized") if server.reject_auth else upgrade_refusal(
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
            apply_voicelive_update(self.session, self.flavor_session, event["session"])
        elif flavor == "xai":
            apply_xai_update(self.session, self.flavor_session, event["session"])
        else:
            merge_session(self.session, event["session"])
        effective = json.loads(json.dumps(self.flavor_session or self.session))
        forced = self.factory.server.force_output_format
        if forced is not None:
            if flavor == "voicelive":
                effective["output_audio_format"] = forced["type"]
            else:
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
