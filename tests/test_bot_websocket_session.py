"""The ``type = websocket`` backend session on a ``MemoryReactorClock``: the bot's connection is a
recording protocol handed to the dial, so the turn-end timer, the mark bound, the early audio, the
speech detector and the ``stop`` at the end are checked on injected time without a socket."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.backends.base import CallInfo
from mediaproxy.backends.bot_websocket import BotWebSocketOptions
from mediaproxy.backends.bot_websocket_session import MAX_PENDING_MARKS, BotClientProtocol, BotWebSocketSession
from mediaproxy.metrics import Metrics
from mediaproxy.testing.fake_realtime import LOUD_FRAME
from mediaproxy.testing.recording_listener import RecordingListener

LOUD = LOUD_FRAME["audio/pcmu"]
QUIET = b"\xff" * 160


class RecordingBotSocket(BotClientProtocol):
    """What the session sends on its connection, decoded; no transport."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Any] = []
        self.closed_with: int | None = None

    def sendMessage(self, payload: bytes, isBinary: bool = False, *args: Any, **kwargs: Any) -> None:
        self.frames.append(payload if isBinary else json.loads(payload))

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed_with = code

    def texts(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.frames if isinstance(f, dict) and (kind is None or f["type"] == kind)]


class SessionTests(SynchronousTestCase):
    def open(self, **options: Any) -> tuple[BotWebSocketSession, RecordingBotSocket]:
        self.reactor = MemoryReactorClock()
        self.listener = RecordingListener()
        self.metrics = Metrics()
        self.session = BotWebSocketSession(
            "bot", BotWebSocketOptions(url="ws://127.0.0.1:9/bot", api_key="k", audio_format="pcmu/8000", **options),
            CallInfo("CA1", "twilio", {"customer": "42"}), self.listener, MULAW_8K, self.reactor, self.metrics,
            random=lambda: 0.5)
        return self.session, RecordingBotSocket()

    def connect(self, proto: RecordingBotSocket) -> None:
        factory = self.reactor.tcpClients[-1][2]
        self.assertEqual(factory.headers, {"Authorization": "Bearer k"})
        factory.opened.callback(proto)

    def test_caller_audio_before_the_connection_is_held_and_sent_after_start(self) -> None:
        session, proto = self.open()
        session.start()
        session.send_audio(b"\x01" * 160)
        session.send_audio(b"\x02" * 160)
        self.connect(proto)
        self.assertEqual(self.listener.kinds(), ["ready"])
        [start] = proto.texts()
        self.assertEqual((start["type"], start["context"], start["resumed"]), ("start", {}, False))
        self.assertEqual(proto.frames[1:], [b"\x01" * 160 + b"\x02" * 160])

    def test_the_turn_ends_after_turn_end_ms_without_bot_audio(self) -> None:
        session, proto = self.open(turn_end_ms=400)
        session.start()
        self.connect(proto)
        session.message_received(proto, b"\x10" * 800, True)
        self.reactor.advance(0.3)
        session.message_received(proto, b"\x11" * 800, True)  # the pause restarts
        self.reactor.advance(0.399)
        self.assertNotIn("done", self.listener.kinds())
        self.reactor.advance(0.002)
        self.assertEqual(self.listener.events[-1], ("done", "c1t1"))
        session.message_received(proto, b"\x12" * 80, True)
        self.assertEqual(self.listener.events[-1], ("audio", "c1t2", 80))
        session.close()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_marks_are_answered_when_heard_and_bounded(self) -> None:
        session, proto = self.open()
        session.start()
        self.connect(proto)
        for n in range(MAX_PENDING_MARKS + 1):
            session.message_received(proto, json.dumps({"type": "mark", "name": f"m{n}"}).encode(), False)
        self.assertEqual(len(self.listener.heard_waiters), MAX_PENDING_MARKS)
        [error] = proto.texts("error")
        self.assertEqual(error["code"], "too_many_marks")
        self.assertEqual(self.metrics.registry.get_sample_value(
            "mediaproxy_backend_errors_total", {"backend": "bot", "code": "too_many_marks"}), 1)
        self.listener.heard_waiters[0].callback(True)
        self.listener.heard_waiters[1].callback(False)
        self.assertEqual(proto.texts("mark"), [{"type": "mark", "name": "m0", "played": True},
                                               {"type": "mark", "name": "m1", "played": False}])
        # The call ends with marks still waiting: they are dropped quietly.
        session.call_ending("completed")
        session.close()
        for d in self.listener.heard_waiters[2:]:
            d.errback(CancelledError())
        self.assertEqual(proto.texts()[-1], {"type": "stop", "reason": "completed"})
        self.assertEqual(proto.closed_with, 1000)

    def test_detect_speech_tells_the_bot_then_the_bridge(self) -> None:
        session, proto = self.open(detect_speech=True, speech_silence_ms=100)
        session.start()
        self.connect(proto)
        seen: list[list[str]] = []
        self.listener.on_speech_started = lambda: seen.append([t["type"] for t in proto.texts()])
        for frame in [QUIET, LOUD, LOUD, LOUD] + [QUIET] * 5:
            session.send_audio(frame)
        self.assertEqual(seen, [["start", "speech_started"]])
        self.assertEqual([k for k in self.listener.kinds() if k.startswith("speech")],
                         ["speech_started", "speech_stopped"])
        self.assertEqual([t["type"] for t in proto.texts()], ["start", "speech_started", "speech_stopped"])
        self.assertEqual(len([f for f in proto.frames if isinstance(f, bytes)]), 9)

    def test_hangup_and_transfer_become_call_actions_and_refusals_come_back(self) -> None:
        session, proto = self.open()
        session.start()
        self.connect(proto)
        session.message_received(proto, b"\x10" * 160, True)
        session.message_received(proto, b'{"type": "hangup"}', False)
        self.assertEqual(self.listener.events[-2:], [
            ("done", "c1t1"), ("tool_call", "bot-1", "end_call", '{"reason": "the bot ended the call"}')])
        session.tool_result("bot-1", json.dumps({"cancelled": "the caller spoke"}))
        session.message_received(proto, b'{"type": "transfer", "target": "sales", "summary": "quote"}', False)
        self.assertEqual(self.listener.events[-1],
                         ("tool_call", "bot-2", "transfer_call", '{"target": "sales", "summary": "quote"}'))
        session.tool_result("bot-2", json.dumps({"error": "target must be one of ['billing']"}))
        session.tool_result("bot-2", json.dumps({"error": "answered twice"}))  # ignored
        self.assertEqual(proto.texts("action_result"), [
            {"type": "action_result", "action": "hangup", "outcome": "cancelled", "detail": "the caller spoke"},
            {"type": "action_result", "action": "transfer", "outcome": "refused",
             "detail": "target must be one of ['billing']"},
        ])

    def test_a_lost_connection_finishes_the_turn_and_redials_resumed(self) -> None:
        session, proto = self.open()
        session.start()
        self.connect(proto)
        session.message_received(proto, b"\x10" * 160, True)
        session.connection_closed(proto, 1006, None)
        self.assertEqual(self.listener.events[-1], ("done", "c1t1"))
        session.send_audio(b"\x03" * 160)  # held while redialling
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(0.25)  # the first backoff (random 0.5: no jitter)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        second = RecordingBotSocket()
        self.connect(second)
        self.assertEqual(second.texts()[0]["resumed"], True)
        self.assertEqual(second.frames[1], b"\x03" * 160)
        self.assertEqual(self.listener.kinds().count("ready"), 1)
        session.close()
