"""Loopback tests of the OpenAI Realtime connector against the fake GA service
(mediaproxy/testing/fake_realtime.py). The real reactor carries real sockets on 127.0.0.1; every
wait is a Deferred that fires on an event, never a sleep."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from mediaproxy.audio.format import L16_16K, L16_24K, MULAW_8K
from mediaproxy.backends.base import CallInfo
from mediaproxy.backends.openai import OpenAIRealtimeBackend
from mediaproxy.backends.openai_session import OpenAIRealtimeSession
from mediaproxy.backends.openai_session_config import RealtimeOptions
from mediaproxy.backends.openai_socket import RealtimeClientProtocol
from mediaproxy.metrics import Metrics
from mediaproxy.testing.fake_realtime import LOUD_FRAME, FakeRealtimeServer
from mediaproxy.testing.recording_listener import RecordingListener


def quiet_frames(count: int, seed: int = 0) -> list[bytes]:
    """20 ms µ-law frames of low-level audio (below the fake VAD) that differ byte by byte, so a
    lost, reordered or altered byte shows."""
    frames = []
    for n in range(count):
        frames.append(bytes((0xF0 if i % 2 else 0x70) + (seed + n * 3 + i) % 16 for i in range(160)))
    return frames


SILENT_FRAME = b"\xff" * 160


class LoopbackTestCase(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.server = FakeRealtimeServer(reactor)
        self.url = self.server.listen()
        self.metrics = Metrics()
        self.options = RealtimeOptions(api_key="test-key", url=self.url, transcription_model="",
                                       reconnect_backoff_ms=0, reconnect_max_backoff_ms=0,
                                       connect_timeout_seconds=10.0)
        self.sessions: list[OpenAIRealtimeSession] = []
        self.websockets: list[RealtimeClientProtocol] = []
        opened = RealtimeClientProtocol.onOpen

        def record(proto: RealtimeClientProtocol) -> None:
            self.websockets.append(proto)
            opened(proto)

        self.patch(RealtimeClientProtocol, "onOpen", record)

    @defer.inlineCallbacks
    def tearDown(self) -> Any:
        for session in self.sessions:
            session.close()
        # client sockets too, so no Autobahn timer or socket outlives the test
        yield defer.DeferredList([proto.is_closed for proto in self.websockets])
        yield self.server.stop()
        self.assertEqual(self.server.violations, [])

    def open(self, listener: RecordingListener, options: RealtimeOptions | None = None,
             platform_format: Any = MULAW_8K, call_id: str = "CA1") -> OpenAIRealtimeSession:
        backend = OpenAIRealtimeBackend("openai", options or self.options, reactor, self.metrics,
                                        random=lambda: 0.5)
        session = backend.open_session(CallInfo(call_id, "twilio"), listener, platform_format)
        self.sessions.append(session)
        return session

    def metric(self, metric_name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value("mediaproxy_" + metric_name, labels) or 0.0


class PassThroughTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_mulaw_bytes_identical_both_ways(self) -> Any:
        listener = RecordingListener()
        session = self.open(listener, replace(self.options, greeting="Hello."))
        self.assertEqual(session.audio_format, MULAW_8K)
        yield listener.when(lambda: listener.has("ready"))
        conn = self.server.connection(0)
        self.assertEqual(conn.headers["authorization"], "Bearer test-key")
        self.assertEqual(conn.params["model"], ["gpt-realtime"])
        self.assertFalse(any(k.lower() == "openai-beta" for k in conn.headers))
        self.assertEqual((conn.input_format, conn.output_format), ("audio/pcmu", "audio/pcmu"))

        frames = quiet_frames(40)
        for frame in frames:
            session.send_audio(frame)
        yield self.server.when(lambda: len(conn.input_audio) == 40 * 160)
        self.assertEqual(bytes(conn.input_audio), b"".join(frames))
        appends = [e for e in conn.received if e["type"] == "input_audio_buffer.append"]
        self.assertEqual(len(appends), 40)  # default: each 20 ms frame forwarded at once

        # the greeting response: 1 s delivered in irregular chunks, faster than real time
        yield listener.when(lambda: listener.has("transcript", "bot", "bot says resp_0_1", True))
        self.assertTrue(listener.has("done", "item_0_1"))
        expected = self.server.response_audio(0, 1, 8)
        self.assertEqual(bytes(listener.audio["item_0_1"]), expected)
        self.assertGreater(len({e[2] for e in listener.events if e[0] == "audio"}), 3)
        greeting = [e for e in conn.received if e["type"] == "conversation.item.create"]
        self.assertIn("Hello.", greeting[0]["item"]["content"][0]["text"])
        # a second response is a barrier: once its audio is here, response.done of the first was
        # processed (one ordered socket)
        yield self.server.when(lambda: conn.response is None)
        conn.start_response()
        yield listener.when(lambda: "item_0_2" in listener.audio)
        self.assertEqual(self.metric("backend_tokens_total", backend="openai", kind="output_audio"), 30)
        # after response 2
        self.assertEqual(self.metric("backend_rate_limit_remaining", backend="openai", name="tokens"), 39998)
        self.assertEqual(self.metric("backend_connect_seconds_count", backend="openai"), 1)
        self.assertEqual(listener.kinds().count("ready"), 1)

    @defer.inlineCallbacks
    def test_pcm_platform_gets_24k_session(self) -> Any:
        listener = RecordingListener()
        session = self.open(listener, platform_format=L16_16K)
        self.assertEqual(session.audio_format, L16_24K)
        yield listener.when(lambda: listener.has("ready"))
        conn = self.server.connection(0)
        self.assertEqual(conn.session["audio"]["input"]["format"], {"type": "audio/pcm", "rate": 24000})

    @defer.inlineCallbacks
    def test_caller_speech_drives_turns(self) -> Any:
        listener = RecordingListener()
        session = self.open(listener)
        yield listener.when(lambda: listener.has("ready"))
        for _ in range(10):
            session.send_audio(LOUD_FRAME["audio/pcmu"])
        for _ in range(30):  # 600 ms: longer than silence_duration_ms
            session.send_audio(SILENT_FRAME)
        yield listener.when(lambda: listener.has("done", "item_0_1"))
        kinds = listener.kinds()
        self.assertLess(kinds.index("speech_started"), kinds.index("speech_stopped"))
        self.assertLess(kinds.index("speech_stopped"), kinds.index("audio"))


class BargeInTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def barge_in(self, options: RealtimeOptions, played_ms: int) -> Any:
        """A greeting held after 600 ms of audio; the caller speaks; the listener interrupts
        synchronously inside speech_started with ``played_ms``."""
        self.server.pause_after_ms = 600
        self.server.late_deltas = 2
        listener = RecordingListener()
        session = self.open(listener, replace(options, greeting="Hi."))
        yield listener.when(lambda: len(listener.audio.get("item_0_1", b"")) >= 4800)
        conn = self.server.connection(0)
        yield self.server.when(lambda: conn.response is not None and conn.response.get("paused"))
        self.received_before = len(listener.audio["item_0_1"])
        listener.on_speech_started = lambda: session.interrupt("item_0_1", played_ms)
        session.send_audio(LOUD_FRAME["audio/pcmu"])
        yield self.server.when(lambda: conn.truncations or conn.errors_sent)
        return listener, conn

    @defer.inlineCallbacks
    def test_truncate_at_played_position_and_late_audio_dropped(self) -> Any:
        listener, conn = yield self.barge_in(self.options, 250)
        self.assertEqual(conn.truncations, [("item_0_1", 250)])
        self.assertEqual(conn.errors_sent, [])
        yield listener.when(lambda: listener.has("transcript", "bot"))
        # the server cancelled by itself (interrupt_response): the client sent no cancel
        self.assertNotIn("response.cancel", [e["type"] for e in conn.received])
        # two late deltas reached the client after speech_started; none reached the bridge
        self.assertEqual(len(listener.audio["item_0_1"]), self.received_before)
        self.assertFalse(listener.has("done", "item_0_1"))

    @defer.inlineCallbacks
    def test_truncate_clamped_and_cancel_when_server_does_not(self) -> Any:
        options = replace(self.options, interrupt_response=False)
        listener, conn = yield self.barge_in(options, 5000)
        # clamped to what had arrived when the interrupt came (the late deltas came after it)
        self.assertEqual(conn.truncations, [("item_0_1", self.received_before // 8)])
        yield self.server.when(lambda: conn.response is None)
        self.assertIn("response.cancel", [e["type"] for e in conn.received])
        self.assertEqual(conn.errors_sent, [])


class FaultTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_reconnect_mid_call_keeps_going(self) -> Any:
        listener = RecordingListener()
        session = self.open(listener, replace(self.options, transcription_model="gpt-4o-mini-transcribe"))
        yield listener.when(lambda: listener.has("ready"))
        first = self.server.connection(0)
        for _ in range(10):
            session.send_audio(LOUD_FRAME["audio/pcmu"])
        for _ in range(30):  # 600 ms: longer than silence_duration_ms
            session.send_audio(SILENT_FRAME)
        yield listener.when(lambda: listener.has("transcript", "bot", "bot says resp_0_1", True))
        first.drop()
        yield self.server.when(lambda: len(self.server.connections) == 2 and any(
            e["type"] == "conversation.item.create" for e in self.server.connection(1).received))
        second = self.server.connection(1)
        note = [e for e in second.received if e["type"] == "conversation.item.create"][0]["item"]
        self.assertEqual(note["role"], "system")
        self.assertIn("do not greet", note["content"][0]["text"])
        self.assertIn("assistant: bot says resp_0_1", note["content"][0]["text"])
        # audio keeps flowing on the new connection
        frames = quiet_frames(5, seed=9)
        for frame in frames:
            session.send_audio(frame)
        yield self.server.when(lambda: bytes(second.input_audio).endswith(b"".join(frames)))
        self.assertFalse(listener.has("failed"))
        self.assertEqual(listener.kinds().count("ready"), 1)
        self.assertEqual(self.metric("backend_reconnects_total", backend="openai"), 1)
        self.assertEqual(self.metric("backend_connect_seconds_count", backend="openai"), 2)

    @defer.inlineCallbacks
    def test_session_expiry_starts_new_session(self) -> Any:
        listener = RecordingListener()
        self.open(listener)
        yield listener.when(lambda: listener.has("ready"))
        self.server.connection(0).expire()
        yield self.server.when(lambda: len(self.server.connections) == 2 and self.server.connection(1).received)
        self.assertFalse(listener.has("failed"))
        self.assertEqual(self.metric("backend_errors_total", backend="openai", code="session_expired"), 1,
                         (self.server.connection(0).errors_sent, listener.events,
                          self.metric("backend_reconnects_total", backend="openai")))

    @defer.inlineCallbacks
    def test_auth_refused_fails_at_once(self) -> Any:
        self.server.reject_auth = True
        listener = RecordingListener()
        self.open(listener)
        yield listener.when(lambda: listener.has("failed"))
        (failed,) = [e for e in listener.events if e[0] == "failed"]
        self.assertIn("401", failed[1])
        self.assertEqual(listener.kinds(), ["failed"])
        self.assertEqual(len(self.server.handshakes), 1)  # no retry with a bad key
        self.assertEqual(self.metric("backend_reconnects_total", backend="openai"), 0)

    @defer.inlineCallbacks
    def test_invalid_api_key_error_fails_at_once(self) -> Any:
        self.server.error_after_created = {"code": "invalid_api_key", "message": "Incorrect API key provided"}
        listener = RecordingListener()
        self.open(listener)
        yield listener.when(lambda: listener.has("failed"))
        self.assertIn("invalid_api_key", listener.events[-1][1])
        self.assertEqual(self.metric("backend_errors_total", backend="openai", code="invalid_api_key"), 1)
        self.assertEqual(len(self.server.handshakes), 1)

    @defer.inlineCallbacks
    def test_format_mismatch_fails(self) -> Any:
        self.server.force_output_format = {"type": "audio/pcm", "rate": 24000}
        listener = RecordingListener()
        self.open(listener)
        yield listener.when(lambda: listener.has("failed"))
        self.assertIn("format", listener.events[-1][1])
        self.assertFalse(listener.has("ready"))
        self.assertEqual(self.metric("backend_errors_total", backend="openai", code="format_mismatch"), 1)

    @defer.inlineCallbacks
    def test_reconnects_exhausted_fails(self) -> Any:
        listener = RecordingListener()
        self.open(listener, replace(self.options, reconnect_attempts=2))
        yield listener.when(lambda: listener.has("ready"))
        yield self.server.stop_listening()  # every redial is refused from now on
        self.server.connection(0).drop()
        yield listener.when(lambda: listener.has("failed"))
        self.assertIn("after 2 attempts", listener.events[-1][1])
        self.assertEqual(self.metric("backend_reconnects_total", backend="openai"), 2)

    @defer.inlineCallbacks
    def test_audio_held_before_ready_is_bounded(self) -> Any:
        self.server.hold_session_updated = True
        listener = RecordingListener()
        session = self.open(listener)
        for frame in quiet_frames(5, seed=1):  # before the socket is even open
            session.send_audio(frame)
        yield self.server.when(lambda: self.server.connections and self.server.connection(0).held_update)
        frames = quiet_frames(70, seed=2)
        for frame in frames:
            session.send_audio(frame)
        conn = self.server.connection(0)
        self.assertEqual(len(conn.input_audio), 0)
        conn.release_session_updated()
        yield listener.when(lambda: listener.has("ready"))
        yield self.server.when(lambda: len(conn.input_audio) >= 8000)
        self.assertEqual(bytes(conn.input_audio), b"".join(frames)[-8000:])
        self.assertEqual(self.metric("frames_dropped_total", direction="in", reason="backend_not_ready"), 25)


class IsolationAndFlowTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_two_sessions_isolated(self) -> Any:
        a, b = RecordingListener(), RecordingListener()
        options = replace(self.options, greeting="Hi.")
        session_a = self.open(a, options, call_id="CA-a")
        self.open(b, options, call_id="CA-b")
        yield a.when(lambda: len(a.audio) == 1 and a.has("done", next(iter(a.audio))))
        yield b.when(lambda: len(b.audio) == 1 and b.has("done", next(iter(b.audio))))
        (item_a,), (item_b,) = a.audio, b.audio
        self.assertNotEqual(item_a, item_b)
        for item, listener in ((item_a, a), (item_b, b)):
            index, n = (int(x) for x in item.split("_")[1:])
            self.assertEqual(bytes(listener.audio[item]), self.server.response_audio(index, n, 8))
        # caller audio of one call reaches only its own connection
        frames = quiet_frames(3, seed=5)
        for frame in frames:
            session_a.send_audio(frame)
        conn_a = self.server.connection(int(item_a.split("_")[1]))
        conn_b = self.server.connection(int(item_b.split("_")[1]))
        yield self.server.when(lambda: len(conn_a.input_audio) == 480)
        self.assertEqual(bytes(conn_a.input_audio), b"".join(frames))
        self.assertEqual(len(conn_b.input_audio), 0)
        # ending one call leaves the other up
        session_a.close()
        yield self.server.when(lambda: conn_a.closed)
        self.assertFalse(conn_b.closed)
        self.assertFalse(a.has("failed") or b.has("failed"))

    @defer.inlineCallbacks
    def test_pause_never_stops_reading_the_socket(self) -> Any:
        # The playout no longer pauses backends, and a paused session still reads its socket:
        # speech_started (barge-in) must never wait behind queued audio.
        options = replace(self.options, greeting="Hi.")
        listener = RecordingListener()
        holder: list[OpenAIRealtimeSession] = []
        listener.backend_ready = lambda: (holder[0].pauseProducing(), RecordingListener.backend_ready(listener))  # type: ignore[method-assign]
        holder.append(self.open(listener, options))
        yield listener.when(lambda: any(e[0] == "done" for e in listener.events))
        (item,) = listener.audio
        self.assertEqual(bytes(listener.audio[item]), self.server.response_audio(0, 1, 8))
        for _ in range(3):
            holder[0].send_audio(LOUD_FRAME["audio/pcmu"])
        yield listener.when(lambda: listener.has("speech_started"))
        holder[0].resumeProducing()

    @defer.inlineCallbacks
    def test_close_is_idempotent_and_silent(self) -> Any:
        listener = RecordingListener()
        session = self.open(listener)
        yield listener.when(lambda: listener.has("ready"))
        conn = self.server.connection(0)
        session.close()
        session.close()
        session.send_audio(SILENT_FRAME)
        yield self.server.when(lambda: conn.closed)
        self.assertEqual(listener.kinds(), ["ready"])

    @defer.inlineCallbacks
    def test_close_before_ready(self) -> Any:
        self.server.hold_session_updated = True
        listener = RecordingListener()
        session = self.open(listener)
        yield self.server.when(lambda: self.server.connections and self.server.connection(0).held_update)
        session.close()
        yield self.server.when(lambda: self.server.connection(0).closed)
        self.assertEqual(listener.events, [])


class WirelessSession:
    """An :class:`OpenAIRealtimeSession` on a ``MemoryReactorClock``: the dial is answered by
    hand (no socket, no handshake) and server events are fed straight to the session, so a test
    can play a server that breaks the protocol the fake service is held to."""

    def __init__(self, metrics: Metrics, options: RealtimeOptions) -> None:
        self.reactor = MemoryReactorClock()
        self.listener = RecordingListener()
        self.sent: list[dict[str, Any]] = []
        self.session = OpenAIRealtimeSession("openai", options, CallInfo("CA1", "twilio"), self.listener,
                                             MULAW_8K, self.reactor, metrics, random=lambda: 0.5)
        self.session.start()
        factory = self.reactor.tcpClients[-1][2]
        proto = factory.buildProtocol(None)
        proto.sendMessage = lambda payload, isBinary=False: self.sent.append(json.loads(payload))
        proto.sendClose = lambda code=None, reason=None: None
        proto.dropConnection = lambda abort=False: None
        proto.onOpen()
        self.proto = proto

    def server(self, event_type: str, **fields: Any) -> None:
        self.session.message_received(self.proto, json.dumps({"type": event_type, **fields}).encode())

    def configure(self) -> None:
        self.server("session.created", session={"type": "realtime"})
        (update,) = [e for e in self.sent if e["type"] == "session.update"]
        self.server("session.updated", session=update["session"])


class HostileServerTests(unittest.TestCase):
    """Whatever the server sends, the label series of the backend metrics stay bounded."""

    def setUp(self) -> None:
        self.metrics = Metrics()
        self.wire = WirelessSession(self.metrics, RealtimeOptions(api_key="k", url="ws://127.0.0.1:9/v1/realtime",
                                                                  transcription_model=""))
        self.wire.configure()
        self.assertTrue(self.wire.listener.has("ready"))
        self.addCleanup(self.wire.session.close)

    def series(self, metric_name: str) -> list[dict[str, str]]:
        """The label sets of ``metric_name``'s samples (a histogram's or counter's side samples
        such as ``_created`` left out)."""
        return [sample.labels for family in self.metrics.registry.collect() for sample in family.samples
                if sample.name == "mediaproxy_" + metric_name]

    def test_thousand_error_codes_bounded(self) -> None:
        for n in range(1000):
            self.wire.server("error", error={"type": f"type_{n}", "code": f"code_{n}", "message": "m"})
            self.wire.server("error", error={"type": f"type_{n}", "message": "m"})
        self.wire.server("error", error={"type": "invalid_request_error", "code": "invalid_value", "message": "m"})
        self.wire.server("conversation.item.input_audio_transcription.failed", item_id="i", content_index=0,
                         error={"code": "transcriber_on_fire"})
        codes = {labels["code"] for labels in self.series("backend_errors_total")}
        self.assertEqual(codes, {"other", "invalid_value"})
        self.assertEqual(self.metric("backend_errors_total", code="other"), 2001)
        self.assertFalse(self.wire.listener.has("failed"))

    def test_thousand_event_types_bounded_and_ignored(self) -> None:
        for n in range(1000):
            self.wire.server(f"response.novel_{n}.delta", delta="x")
        self.assertEqual(self.series("backend_errors_total"), [{"backend": "openai", "code": "unknown_event"}])
        self.assertEqual(self.metric("backend_errors_total", code="unknown_event"), 1000)
        self.assertEqual(self.wire.listener.kinds(), ["ready"])  # never fatal
        self.wire.session.send_audio(b"\xff" * 160)
        self.assertEqual(self.wire.sent[-1]["type"], "input_audio_buffer.append")

    def test_thousand_rate_limit_names_bounded(self) -> None:
        for n in range(1000):
            self.wire.server("rate_limits.updated", rate_limits=[
                {"name": f"limit_{n}", "limit": 10, "remaining": n, "reset_seconds": 1.0},
                {"name": "tokens", "limit": 9000, "remaining": 8000, "reset_seconds": 1.0}])
        names = sorted(labels["name"] for labels in self.series("backend_rate_limit_remaining"))
        self.assertEqual(names, ["other", "tokens"])
        self.assertEqual(self.metric("backend_rate_limit_remaining", name="tokens"), 8000)

    def test_token_kinds_bounded(self) -> None:
        details = {f"novel_{n}_tokens": 1 for n in range(1000)}
        for _ in range(3):
            self.wire.server("response.done", response={"id": "r", "status": "completed", "usage": {
                "input_token_details": {"audio_tokens": 2, **details}, "output_token_details": details}})
        self.assertEqual(self.series("backend_tokens_total"), [{"backend": "openai", "kind": "input_audio"}])
        self.assertEqual(self.metric("backend_tokens_total", kind="input_audio"), 6)

    def metric(self, metric_name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value("mediaproxy_" + metric_name,
                                                      {"backend": "openai", **labels}) or 0.0


KEY = "sk-test-do-not-log-4f1d2c"


class CapturedLogs:
    def capture_logs(self: Any) -> list[str]:
        """Every log event from now on, flattened to text (format, formatted line and the repr of
        every field), so a secret hidden in any field is found."""
        lines: list[str] = []

        def observe(event: Any) -> None:
            lines.append(f"{formatEvent(event)} {event!r}")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines


class LoggingTests(CapturedLogs, LoopbackTestCase):
    """Log lines carry neither the API key nor transcripts (personal data)."""

    KEY = KEY

    @defer.inlineCallbacks
    def test_no_key_or_transcript_in_logs(self) -> Any:
        lines = self.capture_logs()
        self.server.api_key = self.KEY
        listener = RecordingListener()
        options = replace(self.options, api_key=self.KEY, greeting="Hello.")
        session = self.open(listener, options)
        yield listener.when(lambda: listener.has("transcript", "bot", "bot says resp_0_1", True))
        self.server.connection(0).drop()  # a reconnect dials with the key again
        yield self.server.when(lambda: len(self.server.connections) == 2 and self.server.connection(1).received)
        session.close()
        transcripts = {e[2] for e in listener.events if e[0] == "transcript" and e[2]}
        self.assertTrue(transcripts)
        self.assertTrue(lines)
        for line in lines:
            self.assertNotIn(self.KEY, line)
            self.assertNotIn("Bearer", line)
            for text in transcripts:
                self.assertNotIn(text, line)

    @defer.inlineCallbacks
    def test_no_key_in_logs_when_refused(self) -> Any:
        lines = self.capture_logs()
        self.server.reject_auth = True
        listener = RecordingListener()
        self.open(listener, replace(self.options, api_key=self.KEY))
        yield listener.when(lambda: listener.has("failed"))
        self.assertTrue(any("backend failed" in line for line in lines))
        self.assertFalse([line for line in lines if self.KEY in line or "Bearer" in line])


class RedactionTests(CapturedLogs, unittest.TestCase):
    """A key the server echoes back is not logged or reported either."""

    def test_key_echoed_by_the_server_is_redacted(self) -> None:
        lines = self.capture_logs()
        wire = WirelessSession(Metrics(), RealtimeOptions(api_key=KEY, url="ws://127.0.0.1:9/v1/realtime"))
        wire.configure()
        wire.server("error", error={"type": "invalid_request_error", "code": "invalid_value",
                                    "message": f"bad thing near {KEY}"})
        wire.server("error", error={"type": "invalid_request_error", "code": "invalid_api_key",
                                    "message": f"Incorrect API key provided: {KEY}"})
        (failed,) = [e for e in wire.listener.events if e[0] == "failed"]
        self.assertNotIn(KEY, failed[1])
        self.assertIn("invalid_api_key", failed[1])
        self.assertTrue(any("bad thing near [api key]" in line for line in lines))
        self.assertFalse([line for line in lines if KEY in line])


class FunctionCallLoopbackTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_model_calls_a_tool_and_speaks_its_result(self) -> Any:
        from mediaproxy.backends.base import ToolSpec

        tool = ToolSpec("end_call", "Hang up.", {"type": "object", "properties": {}})
        listener = RecordingListener()
        backend = OpenAIRealtimeBackend("openai", self.options, reactor, self.metrics, random=lambda: 0.5)
        session = backend.open_session(CallInfo("CA1", "twilio", tools=(tool,)), listener, MULAW_8K)
        self.sessions.append(session)
        self.server.next_function_call = ("end_call", '{"reason":"done"}')
        yield listener.when(lambda: listener.has("ready"))
        for _ in range(5):
            session.send_audio(LOUD_FRAME["audio/pcmu"])
        for _ in range(30):
            session.send_audio(SILENT_FRAME)
        yield listener.when(lambda: listener.has("tool_call"))
        [call] = [e for e in listener.events if e[0] == "tool_call"]
        self.assertEqual(call[2:], ("end_call", '{"reason":"done"}'))
        self.assertEqual(listener.kinds().count("tool_call"), 1)
        session.tool_result(call[1], '{"ok":true}')
        yield listener.when(lambda: any(e[0] == "done" for e in listener.events))
        conn = self.server.connection(0)
        outputs = [i for i in conn.items_created if i.get("type") == "function_call_output"]
        self.assertEqual(outputs, [{"type": "function_call_output", "call_id": call[1], "output": '{"ok":true}',
                                    "id": outputs[0]["id"]}])
        self.assertEqual(conn.errors_sent, [])
        self.assertEqual(conn.session["tools"][0]["name"], "end_call")


class _TimersOnClock:
    """The real reactor for sockets, a ``Clock`` for timers: the session's chunk timer runs on
    simulated time while its WebSocket is a real loopback one."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        return self._clock.callLater(delay, f, *args, **kwargs)

    def seconds(self) -> float:
        return float(self._clock.seconds())


class InputChunkTests(LoopbackTestCase):
    @defer.inlineCallbacks
    def test_paced_frames_go_in_whole_chunks(self) -> Any:
        clock = Clock()
        listener = RecordingListener()
        backend = OpenAIRealtimeBackend("openai", replace(self.options, input_chunk_ms=60), _TimersOnClock(clock),
                                        self.metrics, random=lambda: 0.5)
        session = backend.open_session(CallInfo("CA1", "twilio"), listener, MULAW_8K)
        self.sessions.append(session)
        yield listener.when(lambda: listener.has("ready"))
        conn = self.server.connection(0)
        frames = quiet_frames(31)
        for frame in frames:  # one frame every 20 ms, as a platform sends them
            session.send_audio(frame)
            clock.advance(0.02)
        clock.advance(0.06)  # the last frame's chunk timer: a caller who fell silent is not held
        yield self.server.when(lambda: len(conn.input_audio) == 31 * 160)
        self.assertEqual(bytes(conn.input_audio), b"".join(frames))
        sizes = [len(base64.b64decode(e["audio"])) for e in conn.received if e["type"] == "input_audio_buffer.append"]
        self.assertEqual(sizes, [480] * 10 + [160])
