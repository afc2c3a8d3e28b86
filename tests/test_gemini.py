"""The Gemini Live backend: the sans-IO dialect fed whole sessions (setup, audio, barge-in, tool
round trip, resumption), and the session glue on a ``task.Clock`` with scripted connections (a
``goAway`` replaced by a new connection without a gap, the stall watchdog, auth failure)."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import L16_16K, L16_24K, MULAW_8K
from mediaproxy.backends.base import CallInfo, ToolSpec
from mediaproxy.backends.gemini import GeminiOptions, session_format_for
from mediaproxy.backends.gemini_dialect import GeminiDialect
from mediaproxy.backends.gemini_events import (
    GoingAway,
    ModelAudio,
    ResumptionHandle,
    ServerError,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    TranscriptReceived,
    TurnEnded,
    UnknownEventReceived,
    UsageReported,
)
from mediaproxy.backends.gemini_memory import HISTORY_LINES, ConversationMemory
from mediaproxy.backends.gemini_session import GeminiLiveSession
from mediaproxy.backends.gemini_watchdog import StallWatchdog
from mediaproxy.metrics import Metrics
from mediaproxy.testing.fake_gemini import check_message
from mediaproxy.testing.recording_listener import RecordingListener

KEY = "test-key-123456"
TOOLS = (ToolSpec("end_call", "End the call.", {"type": "object", "properties": {"reason": {"type": "string"}}}),)


def options(**kw: Any) -> GeminiOptions:
    return GeminiOptions(api_key=KEY, url="ws://127.0.0.1:9/ws/live", **kw)


def audio_msg(data: bytes, text: str | None = None) -> str:
    content: dict[str, Any] = {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(data).decode()}}]}}
    if text is not None:
        content["outputTranscription"] = {"text": text}
    return json.dumps({"serverContent": content})


def content(**fields: Any) -> str:
    return json.dumps({"serverContent": fields})


class DialectTests(TestCase):
    def test_setup_is_first_and_valid(self) -> None:
        dialect = GeminiDialect(options(instructions="Be brief.", greeting="Hello!", language="en-US"), tools=TOOLS)
        [setup] = dialect.take_output()
        message = json.loads(setup)
        self.assertEqual(check_message(message), [])
        s = message["setup"]
        self.assertEqual(s["model"], "models/gemini-2.5-flash-native-audio-preview-09-2025")
        self.assertEqual(s["generationConfig"]["responseModalities"], ["AUDIO"])
        self.assertEqual(s["generationConfig"]["speechConfig"],
                         {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}, "languageCode": "en-US"})
        self.assertEqual(s["systemInstruction"], {"parts": [{"text": "Be brief."}]})
        self.assertEqual(s["tools"][0]["functionDeclarations"][0]["name"], "end_call")
        self.assertEqual((s["inputAudioTranscription"], s["outputAudioTranscription"], s["sessionResumption"]),
                         ({}, {}, {}))
        self.assertEqual(dialect.receive('{"setupComplete":{}}'), [SessionReady()])
        [greet] = dialect.take_output()
        self.assertTrue(json.loads(greet)["clientContent"]["turnComplete"])
        self.assertEqual(check_message(json.loads(greet)), [])

    def test_whole_session(self) -> None:
        dialect = GeminiDialect(options())
        dialect.take_output()
        dialect.receive('{"setupComplete":{}}')
        dialect.send_audio(b"\x01\x00" * 320)
        [append] = dialect.take_output()
        self.assertEqual(check_message(json.loads(append)), [])
        self.assertEqual(json.loads(append)["realtimeInput"]["audio"]["mimeType"], "audio/pcm;rate=16000")
        self.assertEqual(dialect.receive(content(inputTranscription={"text": "Hello "})),
                         [TranscriptReceived("caller", "Hello", False)])
        self.assertEqual(dialect.receive(content(inputTranscription={"text": "there"})),
                         [TranscriptReceived("caller", "Hello there", False)])
        events = dialect.receive(audio_msg(b"\x00" * 480, "Hi "))
        self.assertEqual(events, [TranscriptReceived("caller", "Hello there", True), SpeechStopped(),
                                  ModelAudio("g1_1", b"\x00" * 480), TranscriptReceived("bot", "Hi", False)])
        self.assertEqual(dialect.receive(content(generationComplete=True)),
                         [TranscriptReceived("bot", "Hi", True), TurnEnded("g1_1", False)])
        self.assertEqual(dialect.receive(content(turnComplete=True)), [])
        self.assertEqual(dialect.receive('{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}'),
                         [ResumptionHandle("h1")])
        self.assertEqual(dialect.receive('{"sessionResumptionUpdate":{"resumable":false}}'), [])
        self.assertEqual(dialect.receive('{"goAway":{"timeLeft":"12.5s"}}'), [GoingAway(12.5)])
        usage = {"usageMetadata": {"promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 7}],
                                   "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 9},
                                                             {"modality": "TEXT", "tokenCount": 2}]}}
        self.assertEqual(dialect.receive(json.dumps(usage)),
                         [UsageReported({"input_audio": 7, "output_audio": 9, "output_text": 2})])
        self.assertEqual(dialect.receive('{"somethingNew":{}}'), [UnknownEventReceived("somethingNew")])
        self.assertEqual(dialect.receive("not json")[0].code, "malformed_event")  # type: ignore[union-attr]
        self.assertIsInstance(dialect.receive(content(modelTurn={"parts": [{"inlineData": {"data": "@@"}}]}))[0],
                              ServerError)

    def test_barge_in_drops_the_rest_and_cuts_the_transcript(self) -> None:
        dialect = GeminiDialect(options())
        dialect.receive('{"setupComplete":{}}')
        dialect.receive(audio_msg(b"\x00" * 48 * 1000, "one two three four"))  # 1 s of audio
        events = dialect.receive(content(interrupted=True))
        self.assertEqual(events[0], SpeechStarted())
        self.assertEqual(events[-1], TurnEnded("g1_1", True, "one two three four"))
        self.assertNotIn(TranscriptReceived("bot", "one two three four", True), events)
        # The bridge reports what was heard from inside backend_speech_started, before the
        # session handles TurnEnded and cuts the final line with heard_text.
        dialect.interrupt("g1_1", 500)
        self.assertTrue(dialect.is_cut("g1_1"))
        self.assertEqual(dialect.heard_text("g1_1", "one two three four"), "one two")
        # Late audio of the cut turn never comes back; the next answer is a new turn.
        self.assertEqual(dialect.receive(content(turnComplete=True)), [])
        self.assertEqual(dialect.receive(audio_msg(b"\x01" * 48)), [ModelAudio("g1_2", b"\x01" * 48)])

    def test_tool_round_trip(self) -> None:
        dialect = GeminiDialect(options(), tools=TOOLS)
        dialect.receive('{"setupComplete":{}}')
        dialect.take_output()
        call = {"toolCall": {"functionCalls": [{"id": "fc1", "name": "end_call", "args": {"reason": "done"}}]}}
        self.assertEqual(dialect.receive(json.dumps(call)), [ToolCalled("fc1", "end_call", '{"reason": "done"}')])
        self.assertTrue(dialect.has_tool_call("fc1"))
        dialect.tool_result("fc1", '{"ok": true}')
        [response] = dialect.take_output()
        self.assertEqual(check_message(json.loads(response)), [])
        self.assertEqual(json.loads(response), {"toolResponse": {"functionResponses": [
            {"id": "fc1", "name": "end_call", "response": {"ok": True}}]}})
        dialect.receive(json.dumps(call).replace("fc1", "fc2"))
        dialect.tool_result("fc2", "plain text")
        self.assertEqual(json.loads(dialect.take_output()[0])["toolResponse"]["functionResponses"][0]["response"],
                         {"output": "plain text"})

    def test_resumed_setup_carries_the_handle_and_no_greeting(self) -> None:
        dialect = GeminiDialect(options(greeting="Hello!"), handle="h7", resumed=True, connection=2)
        self.assertEqual(json.loads(dialect.take_output()[0])["setup"]["sessionResumption"], {"handle": "h7"})
        dialect.receive('{"setupComplete":{}}')
        self.assertEqual(dialect.take_output(), [])
        fresh = GeminiDialect(options(greeting="Hello!"), resumed=True, resume_context="caller: hi", connection=2)
        fresh.take_output()
        fresh.receive('{"setupComplete":{}}')
        [note] = fresh.take_output()
        self.assertIn("caller: hi", json.loads(note)["clientContent"]["turns"][0]["parts"][0]["text"])

    def test_formats(self) -> None:
        self.assertEqual(session_format_for(MULAW_8K), L16_16K)
        self.assertEqual(session_format_for(L16_16K), L16_16K)
        self.assertEqual(session_format_for(L16_24K), L16_24K)


class FakeProto:
    """A stand-in for one open WebSocket of the session."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: int | None = None
        self.session: Any = None
        self.dialect: Any = None
        self.ready: Any = None

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append(json.loads(payload))

    def sendClose(self, code: int = 1000) -> None:
        self.closed = code

    def dropConnection(self, abort: bool = False) -> None:
        self.closed = 1006

    def audio_sent(self) -> int:
        return sum(len(base64.b64decode(m["realtimeInput"]["audio"]["data"]))
                   for m in self.sent if "audio" in m.get("realtimeInput", {}))


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.listener = RecordingListener()
        self.metrics = Metrics()
        self.protos: list[FakeProto] = []
        self.urls: list[str] = []

    def connect(self, url: str) -> Deferred[Any]:
        self.urls.append(url)
        proto = FakeProto()
        self.protos.append(proto)
        return _fired(proto)

    def session(self, **kw: Any) -> GeminiLiveSession:
        session = GeminiLiveSession("gemini", options(**kw), CallInfo("c1", "twilio", tools=TOOLS), self.listener,
                                    L16_16K, self.clock, self.metrics, random=lambda: 0.5, connect=self.connect)
        session.start()
        self.clock.advance(0)
        return session

    def up(self, session: GeminiLiveSession, proto: FakeProto) -> None:
        session.message_received(proto, b'{"setupComplete":{}}')  # type: ignore[arg-type]

    def recv(self, session: GeminiLiveSession, proto: FakeProto, message: str) -> None:
        session.message_received(proto, message.encode())  # type: ignore[arg-type]

    def test_go_away_switches_connections_without_a_gap(self) -> None:
        session = self.session()
        [first] = self.protos
        self.assertEqual(self.urls, [f"ws://127.0.0.1:9/ws/live?key={KEY}"])
        self.assertIn("setup", first.sent[0])
        self.up(session, first)
        self.assertEqual(self.listener.kinds(), ["ready"])
        self.recv(session, first, '{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}')
        # The model is answering (1 s of 24 kHz audio) when the server announces its end.
        self.recv(session, first, audio_msg(b"\x10\x00" * 24000))
        self.recv(session, first, '{"sessionResumptionUpdate":{"newHandle":"h2","resumable":true}}')
        self.recv(session, first, '{"goAway":{"timeLeft":"5s"}}')
        self.clock.advance(0)
        second = self.protos[1]
        self.assertEqual(second.sent[0]["setup"]["sessionResumption"], {"handle": "h2"})
        # Until the new connection is set up, the caller's audio still goes to the old one.
        session.send_audio(b"\x00\x00" * 320)
        self.assertEqual((first.audio_sent(), second.audio_sent()), (640, 0))
        self.up(session, second)
        # Switched: the old connection keeps playing its turn; the caller goes to both.
        session.send_audio(b"\x00\x00" * 320)
        self.assertEqual((first.audio_sent(), second.audio_sent()), (1280, 640))
        self.assertIsNone(first.closed)
        self.recv(session, first, audio_msg(b"\x10\x00" * 2400))
        self.recv(session, first, content(turnComplete=True))
        self.assertEqual(first.closed, 1000)
        # The bridge saw one response, whole, done once; never a failure, never a second ready.
        self.assertEqual(self.listener.kinds().count("ready"), 1)
        self.assertIn(("done", "g1_1"), self.listener.events)
        self.assertEqual(len(self.listener.audio["g1_1"]), (24000 + 2400) * 2 * 2 // 3)
        self.assertFalse(any(k == "failed" for k in self.listener.kinds()))
        session.send_audio(b"\x00\x00" * 320)
        self.assertEqual(second.audio_sent(), 1280)
        self.assertEqual(self.metrics.registry.get_sample_value(
            "mediaproxy_backend_reconnects_total", {"backend": "gemini"}), 1)
        session.close()

    def test_go_away_without_a_turn_closes_the_old_connection_at_once(self) -> None:
        session = self.session()
        first = self.protos[0]
        self.up(session, first)
        self.recv(session, first, '{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}')
        self.recv(session, first, '{"goAway":{"timeLeft":"1s"}}')
        self.clock.advance(0)
        self.up(session, self.protos[1])
        self.assertEqual(first.closed, 1000)
        session.connection_closed(first, 1000, "")  # type: ignore[arg-type]
        self.assertEqual(len(self.protos), 2)
        session.close()

    def test_watchdog_nudges_then_replaces_the_connection(self) -> None:
        session = self.session(stall_seconds=5.0)
        first = self.protos[0]
        self.up(session, first)
        self.recv(session, first, '{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}')
        # The caller talks over the bot; the model then says nothing.
        self.recv(session, first, audio_msg(b"\x00\x00" * 240))
        self.recv(session, first, content(interrupted=True))
        self.recv(session, first, content(inputTranscription={"text": "wait"}))
        self.clock.advance(4.9)
        self.assertFalse(any("audioStreamEnd" in m.get("realtimeInput", {}) for m in first.sent))
        self.clock.advance(0.2)
        self.assertTrue(any(m.get("realtimeInput", {}).get("audioStreamEnd") for m in first.sent))
        self.assertEqual(len(self.protos), 1)
        self.clock.advance(5.0)
        self.assertEqual(len(self.protos), 2)
        self.assertEqual(self.protos[1].sent[0]["setup"]["sessionResumption"], {"handle": "h1"})
        self.assertEqual(self.metrics.registry.get_sample_value(
            "mediaproxy_backend_errors_total", {"backend": "gemini", "code": "model_stalled"}), 1)
        session.close()

    def test_barge_in_final_bot_line_is_what_was_heard(self) -> None:
        session = self.session()
        first = self.protos[0]
        self.up(session, first)
        self.listener.on_speech_started = lambda: session.interrupt("g1_1", 500)
        self.recv(session, first, audio_msg(b"\x00\x00" * 24000, "one two three four"))  # 1 s
        self.recv(session, first, content(interrupted=True))
        finals = [t.text for t in self.listener.transcripts if t.final and t.role == "bot"]
        self.assertEqual(finals, ["one two"])
        self.assertNotIn(("done", "g1_1"), self.listener.events)
        session.close()

    def test_watchdog_stays_quiet_when_the_model_answers(self) -> None:
        session = self.session(stall_seconds=5.0)
        first = self.protos[0]
        self.up(session, first)
        self.recv(session, first, content(inputTranscription={"text": "hello"}))
        self.clock.advance(3)
        self.recv(session, first, audio_msg(b"\x00\x00" * 240))
        self.clock.advance(20)
        self.assertFalse(any("audioStreamEnd" in m.get("realtimeInput", {}) for m in first.sent))
        self.assertEqual(len(self.protos), 1)
        session.close()

    def test_bad_key_fails_the_call(self) -> None:
        self.session()
        first = self.protos[0]
        first.session.connection_closed(first, 1007, "API key not valid. Please pass a valid API key.")
        self.assertEqual(self.listener.kinds(), ["failed"])
        self.assertEqual(len(self.protos), 1)

    def test_refused_handle_falls_back_to_a_fresh_session(self) -> None:
        session = self.session()
        first = self.protos[0]
        self.up(session, first)
        self.recv(session, first, '{"sessionResumptionUpdate":{"newHandle":"old","resumable":true}}')
        self.recv(session, first, content(inputTranscription={"text": "my order"}))
        self.recv(session, first, audio_msg(b"\x00\x00" * 240, "Sure."))
        self.recv(session, first, content(turnComplete=True))
        session.connection_closed(first, 1006, "")  # type: ignore[arg-type]
        self.clock.advance(1)
        second = self.protos[1]
        self.assertEqual(second.sent[0]["setup"]["sessionResumption"], {"handle": "old"})
        session.connection_closed(second, 1007, "Session resumption handle is invalid.")  # type: ignore[arg-type]
        self.clock.advance(1)
        third = self.protos[2]
        self.assertEqual(third.sent[0]["setup"]["sessionResumption"], {})
        self.up(session, third)
        note = third.sent[1]["clientContent"]["turns"][0]["parts"][0]["text"]
        self.assertIn("caller: my order", note)
        self.assertNotIn("failed", self.listener.kinds())
        session.close()


def _fired(value: Any) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.callback(value)
    return d


class WatchdogTests(TestCase):
    def test_deadline_moves_with_each_sign_without_new_timers(self) -> None:
        clock = Clock()
        calls: list[str] = []
        dog = StallWatchdog(clock, 2.0, lambda: calls.append("nudge"), lambda: calls.append("stall"))
        dog.caller_spoke()
        clock.advance(1.5)
        dog.caller_spoke()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(1.0)
        self.assertEqual(calls, [])
        clock.advance(1.0)
        self.assertEqual(calls, ["nudge"])
        clock.advance(2.0)
        self.assertEqual(calls, ["nudge", "stall"])
        self.assertFalse(dog.armed)
        off = StallWatchdog(clock, 0.0, lambda: calls.append("x"), lambda: calls.append("x"))
        off.caller_spoke()
        self.assertFalse(off.armed)


class ConversationMemoryTests(TestCase):
    def test_resume_context_is_the_newest_lines_in_order(self) -> None:
        memory = ConversationMemory()
        self.assertEqual(memory.resume_context(), "")
        for i in range(HISTORY_LINES + 4):
            memory.final_line(1 + i // 10, "caller" if i % 2 == 0 else "bot", f"line {i}")
        expected = [f"{'caller' if i % 2 == 0 else 'assistant'}: line {i}" for i in range(4, HISTORY_LINES + 4)]
        self.assertEqual(memory.resume_context().splitlines(), ["Recent conversation, oldest first:", *expected])

    def test_result_note_names_the_function_and_held_results_are_taken_once(self) -> None:
        memory = ConversationMemory()
        memory.tool_called("c1", "lookup_order")
        self.assertIn("lookup_order", memory.result_note("c1", '{"ok":true}'))
        self.assertIn("a function", memory.result_note("c9", "{}"))
        memory.hold_result("c1", "{}")
        self.assertEqual(memory.take_held_results(), [("c1", "{}")])
        self.assertEqual(memory.take_held_results(), [])


class ExampleConfigTests(TestCase):
    def test_etc_gemini_ini_loads_with_dummy_environment(self) -> None:
        from twisted.python.filepath import FilePath

        from mediaproxy.config import load_config

        path = FilePath(__file__).parent().parent().child("etc").child("gemini.ini").path
        config = load_config(path, {"GEMINI_API_KEY": "dummy", "TWILIO_AUTH_TOKEN": "dummy"})
        self.assertEqual(config.backends["gemini"].type.name, "gemini")
        self.assertEqual(config.backends["gemini"].common.tools, ("end_call",))
