#!/usr/bin/env python3
"""A small, fast stand-in for the OpenAI Realtime service (GA protocol) for benchmarks.

    .venv/bin/python bench/fake_realtime_server.py --port 9123 --api-key dummy --stats out.json

Runs in its own process so that its CPU is not the proxy's. Per connection it checks
``Authorization: Bearer``, sends ``session.created``, answers ``session.update`` with the
requested formats, runs an energy VAD over the appended caller audio 20 ms at a time (sending
``input_audio_buffer.speech_started`` / ``speech_stopped`` with the echo parrot's timing, so the
simulator in ``mediaproxy/sim`` can account for every reply), and answers each caller turn with
as much µ-law audio as the turn lasted, delivered at ``--speed`` times real time in irregular
delta sizes (one shared 10 ms timer serves every response). Speech during a response in generation cancels
it (``interrupt_response``). ``conversation.item.truncate`` is checked against the audio sent for
the item, as the real service does; counts go to ``--stats`` (JSON) when the process gets SIGTERM.

Unlike tests/fake_realtime.py nothing is validated against the ``openai`` models: this fake must
cost little. Loopback only; it stops by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor
from twisted.internet.task import LoopingCall

TICK_S = 0.010
CHUNK_SIZES = (160, 333, 97, 801, 41, 1200, 7, 512, 250, 640)
BYTES_PER_MS = 8  # audio/pcmu and audio/pcma

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediaproxy.audio.g711 import ulaw_decode  # noqa: E402

# Squared linear value of each µ-law byte, and the echo backend's default threshold (-40 dBFS,
# mean square): the same notion of "loud" as the parrot the simulator models.
_ULAW_SQUARE = ulaw_decode(bytes(range(256))).astype(np.float64) ** 2
LOUD_MEAN_SQUARE = (32768.0 * 10 ** (-40.0 / 20.0)) ** 2
ONSET_FRAMES = 2

_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'


class Stats:
    """What the fake saw, written as JSON at the end."""

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


STATS = Stats()


class Response:
    __slots__ = ("id", "item_id", "audio", "sent", "chunk", "conn")

    def __init__(self, conn: FakeConnection, response_id: str, item_id: str, audio: bytes) -> None:
        self.conn = conn
        self.id = response_id
        self.item_id = item_id
        self.audio = audio
        self.sent = 0
        self.chunk = 0


ACTIVE: dict[Response, None] = {}


def stream_tick() -> None:
    """Every 10 ms: each active response sends the next ``speed * 10`` ms of its audio."""
    per_tick = int(ARGS.speed * TICK_S * 1000 * BYTES_PER_MS)
    for response in list(ACTIVE):
        budget = per_tick
        while budget > 0 and response.sent < len(response.audio):
            size = min(CHUNK_SIZES[response.chunk % len(CHUNK_SIZES)], budget)
            response.chunk += 1
            chunk = response.audio[response.sent: response.sent + size]
            response.sent += len(chunk)
            response.conn.item_audio_ms[response.item_id] = response.sent // BYTES_PER_MS
            budget -= len(chunk)
            response.conn.send({"type": "response.output_audio.delta", "response_id": response.id,
                                "item_id": response.item_id, "output_index": 0, "content_index": 0,
                                "delta": base64.b64encode(chunk).decode("ascii")})
        if response.sent >= len(response.audio):
            response.conn.finish_response("completed", None)


class FakeConnection(WebSocketServerProtocol):
    """One proxy call's backend connection."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.setTcpNoDelay(True)

    def onConnect(self, request: Any) -> None:
        if request.headers.get("authorization") != f"Bearer {ARGS.api_key}":
            STATS.refused += 1
            raise ConnectionDeny(401, "Unauthorized")

    def onOpen(self) -> None:
        STATS.connections += 1
        self.index = STATS.connections
        self.events = 0
        self.session: dict[str, Any] = {
            "type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500,
                                                   "create_response": True, "interrupt_response": True}},
                      "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}}}
        self.speaking = False
        self.onset = 0
        self.quiet = 0
        self.length = 0
        self.input_ms = 0
        self.turns = 0
        self.responses = 0
        self.response: Response | None = None
        self.item_audio_ms: dict[str, int] = {}
        self.send({"type": "session.created", "session": self.session})

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if getattr(self, "response", None) is not None:
            ACTIVE.pop(self.response, None)  # type: ignore[arg-type]
            self.response = None

    def send(self, event: dict[str, Any]) -> None:
        self.events += 1
        event["event_id"] = f"ev_{self.index}_{self.events}"
        self.sendMessage(json.dumps(event, separators=(",", ":")).encode(), False)

    def error(self, code: str, message: str, event_id: str | None) -> None:
        self.send({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                              "message": message, "event_id": event_id}})

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload.startswith(_APPEND_PREFIX):
            # The hot path (every 20 ms per call): no JSON parse for the proxy's appends.
            STATS.appends += 1
            end = payload.index(b'"', len(_APPEND_PREFIX))
            self.audio_in(base64.b64decode(payload[len(_APPEND_PREFIX):end]))
            return
        event = json.loads(payload)
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            STATS.appends += 1
            self.audio_in(base64.b64decode(event["audio"]))
        elif kind == "session.update":
            for side in ("input", "output"):
                requested = event["session"].get("audio", {}).get(side, {})
                self.session["audio"][side].update(requested)
            self.send({"type": "session.updated", "session": self.session})
        elif kind == "conversation.item.truncate":
            audio_ms = self.item_audio_ms.get(event["item_id"])
            end_ms = event["audio_end_ms"]
            if audio_ms is None or not isinstance(end_ms, int) or not 0 <= end_ms <= audio_ms:
                STATS.truncate_errors += 1
                self.error("invalid_value", f"bad truncate {end_ms} of {audio_ms}", event.get("event_id"))
            else:
                STATS.truncates_ok += 1
                STATS.truncate_ms.append(end_ms)
                self.send({"type": "conversation.item.truncated", "item_id": event["item_id"],
                           "content_index": 0, "audio_end_ms": end_ms})
        elif kind == "response.cancel":
            STATS.cancels_received += 1
            if self.response is not None:
                self.finish_response("cancelled", "client_cancelled")
            else:
                self.error("response_cancel_not_active", "no active response", event.get("event_id"))
        elif kind == "response.create":
            self.start_response()
        elif kind == "conversation.item.create":
            item = dict(event["item"], id=f"client_{self.index}_{self.events}")
            self.send({"type": "conversation.item.added", "item": item})

    def audio_in(self, data: bytes) -> None:
        """The VAD, 20 ms at a time, with the echo parrot's timing (so the simulator's accounting
        of replies holds): two loud frames start an utterance (``speech_started`` at the second),
        ``silence_duration_ms`` of quiet ends it (``speech_stopped``), and the answer is as long
        as the utterance was, trailing quiet included."""
        detection = self.session["audio"]["input"].get("turn_detection") or {}
        silence_frames = max(1, int(detection.get("silence_duration_ms", 500)) // 20)
        squares = _ULAW_SQUARE[np.frombuffer(data, dtype=np.uint8)]
        for offset in range(0, len(squares), 160):
            loud = float(squares[offset: offset + 160].mean()) > LOUD_MEAN_SQUARE
            self.input_ms += 20
            if not self.speaking:
                self.onset = self.onset + 1 if loud else 0
                if self.onset < ONSET_FRAMES:
                    continue
                self.speaking, self.quiet, self.length = True, 0, self.onset
                self.turns += 1
                STATS.speech_started += 1
                self.send({"type": "input_audio_buffer.speech_started",
                           "audio_start_ms": max(0, self.input_ms - 300), "item_id": f"user_{self.turns}"})
                if self.response is not None and detection.get("interrupt_response", True):
                    STATS.responses_cancelled_by_vad += 1
                    self.finish_response("cancelled", "turn_detected")
                continue
            self.length += 1
            self.quiet = 0 if loud else self.quiet + 1
            if self.quiet >= silence_frames:
                self.speaking, self.onset = False, 0
                item_id = f"user_{self.turns}"
                self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.input_ms,
                           "item_id": item_id})
                self.send({"type": "input_audio_buffer.committed", "item_id": item_id})
                if detection.get("create_response", True):
                    self.start_response(self.length * 20)

    def start_response(self, audio_ms: int | None = None) -> None:
        if self.response is not None:
            self.error("conversation_already_has_active_response", "active response", None)
            return
        self.responses += 1
        STATS.responses += 1
        rid, iid = f"resp_{self.index}_{self.responses}", f"item_{self.index}_{self.responses}"
        audio = REPLY_AUDIO if audio_ms is None else reply_audio(audio_ms)
        self.response = Response(self, rid, iid, audio)
        self.item_audio_ms[iid] = 0
        self.send({"type": "response.created", "response": {"id": rid, "object": "realtime.response",
                                                             "status": "in_progress", "output": []}})
        self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0,
                   "item": {"id": iid, "type": "message", "role": "assistant", "status": "in_progress",
                            "content": []}})
        ACTIVE[self.response] = None

    def finish_response(self, status: str, reason: str | None) -> None:
        response, self.response = self.response, None
        if response is None:
            return
        ACTIVE.pop(response, None)
        self.item_audio_ms[response.item_id] = response.sent // BYTES_PER_MS
        base = {"response_id": response.id, "item_id": response.item_id, "output_index": 0, "content_index": 0}
        self.send({"type": "response.output_audio.done", **base})
        done: dict[str, Any] = {"id": response.id, "object": "realtime.response", "status": status, "output": [],
                                "usage": {"total_tokens": 60, "input_tokens": 20, "output_tokens": 40,
                                          "output_token_details": {"audio_tokens": 30, "text_tokens": 10}}}
        if reason is not None:
            done["status_details"] = {"type": status, "reason": reason}
        self.send({"type": "response.done", "response": done})


@functools.lru_cache(maxsize=256)
def reply_audio(ms: int) -> bytes:
    """Recognisable, non-silent µ-law: a 400 Hz-ish square wave of mid-level codes."""
    frame = bytes([0x20] * 10 + [0xA0] * 10) * 8
    return (frame * (ms // 20 + 1))[: ms * BYTES_PER_MS]


def write_stats() -> None:
    if ARGS.stats:
        with open(ARGS.stats, "w") as f:
            json.dump(vars(STATS), f)


def main() -> int:
    global ARGS, REPLY_AUDIO
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-key", default="dummy")
    p.add_argument("--speed", type=float, default=10.0, help="delivery speed, times real time (default 10)")
    p.add_argument("--reply-ms", type=int, default=2000,
                   help="audio of a response not provoked by caller speech (greeting, response.create), ms")
    p.add_argument("--stats", default="", help="write counts here as JSON on exit")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop by itself after this long")
    ARGS = p.parse_args()
    REPLY_AUDIO = reply_audio(ARGS.reply_ms)
    factory = WebSocketServerFactory(f"ws://127.0.0.1:{ARGS.port}")
    factory.protocol = FakeConnection
    factory.setProtocolOptions(maxMessagePayloadSize=16 * 1024 * 1024)
    reactor.listenTCP(ARGS.port, factory, interface="127.0.0.1", backlog=1024)
    LoopingCall(stream_tick).start(TICK_S, now=False)
    reactor.addSystemEventTrigger("before", "shutdown", write_stats)
    reactor.callLater(ARGS.max_seconds, reactor.stop)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    print("fake realtime ready", flush=True)
    reactor.run(installSignalHandlers=False)
    return 0


ARGS: argparse.Namespace
REPLY_AUDIO = b""

if __name__ == "__main__":
    sys.exit(main())
