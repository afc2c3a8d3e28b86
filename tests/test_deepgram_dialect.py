"""The Deepgram Voice Agent dialect fed whole session transcripts (sans-IO), the Settings it builds
checked against the fake service's schema, and the keep-alive on a ``task.Clock``."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import ALAW_8K, MULAW_8K, AudioFormat
from mediaproxy.backends.base import ToolSpec
from mediaproxy.backends.deepgram import DeepgramOptions, session_format_for
from mediaproxy.backends.deepgram_dialect import AgentDialect
from mediaproxy.backends.deepgram_events import (
    AgentAudio,
    AgentAudioFinished,
    ServerError,
    SettingsAccepted,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    TranscriptLine,
    UnknownMessage,
    Welcomed,
    error_code_label,
)
from mediaproxy.backends.deepgram_session import KeepAliveTimer
from mediaproxy.backends.deepgram_settings import settings_message
from mediaproxy.testing.fake_deepgram import check_settings

OPTIONS = DeepgramOptions(api_key="k", instructions="Be brief.", greeting="Hello!")
TOOL = ToolSpec("end_call", "End the call.", {"type": "object", "properties": {"reason": {"type": "string"}}})


def text(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def sent(dialect: AgentDialect) -> list[Any]:
    """The queued client frames, JSON decoded (binary frames as they are)."""
    return [frame if isinstance(frame, bytes) else json.loads(frame) for frame in dialect.take_output()]


def settings(fmt: AudioFormat = MULAW_8K, tools: tuple[ToolSpec, ...] = (TOOL,)) -> dict[str, Any]:
    return settings_message(OPTIONS, fmt, tools, prompt="Be brief.", greeting="Hello!", language="en")


class SettingsTests(TestCase):
    def test_mulaw_passes_through_both_ways(self) -> None:
        message = settings()
        self.assertEqual(message["audio"]["input"], {"encoding": "mulaw", "sample_rate": 8000})
        self.assertEqual(message["audio"]["output"], {"encoding": "mulaw", "sample_rate": 8000, "container": "none"})
        self.assertEqual(check_settings(message), [])

    def test_alaw_and_pcm(self) -> None:
        self.assertEqual(settings(ALAW_8K)["audio"]["input"]["encoding"], "alaw")
        pcm = settings(AudioFormat("l16", 24000))
        self.assertEqual(pcm["audio"]["output"], {"encoding": "linear16", "sample_rate": 24000, "container": "none"})
        self.assertEqual(check_settings(pcm), [])

    def test_agent_providers_prompt_greeting_and_functions(self) -> None:
        agent = settings()["agent"]
        self.assertEqual(agent["listen"], {"provider": {"type": "deepgram", "model": "nova-3"}})
        self.assertEqual(agent["think"]["provider"], {"type": "open_ai", "model": "gpt-4o-mini"})
        self.assertEqual(agent["think"]["prompt"], "Be brief.")
        self.assertEqual(agent["speak"], {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}})
        self.assertEqual(agent["greeting"], "Hello!")
        self.assertEqual(agent["language"], "en")
        [function] = agent["think"]["functions"]
        self.assertEqual(function["name"], "end_call")
        self.assertEqual(function["parameters"]["type"], "object")

    def test_the_schema_rejects_the_retired_instructions_key(self) -> None:
        message = settings()
        message["agent"]["think"]["instructions"] = "x"
        self.assertEqual(check_settings(message), ["Settings.agent.think.instructions is not a Settings key"])

    def test_session_formats(self) -> None:
        self.assertEqual(session_format_for(MULAW_8K), MULAW_8K)
        self.assertEqual(session_format_for(ALAW_8K), ALAW_8K)
        self.assertEqual(session_format_for(AudioFormat("l16", 24000)), AudioFormat("l16", 24000))
        self.assertEqual(session_format_for(AudioFormat("l16", 44000)), AudioFormat("l16", 16000))
        self.assertEqual(session_format_for(AudioFormat("pcmu", 16000)), AudioFormat("l16", 16000))


class TranscriptTests(TestCase):
    def setUp(self) -> None:
        self.dialect = AgentDialect(settings(), response_prefix="c1t")

    def test_a_whole_session(self) -> None:
        d = self.dialect
        # Nothing is sent before Welcome; Settings is the first client message.
        d.send_audio(b"\xff" * 160)
        self.assertEqual(sent(d), [])
        self.assertEqual(d.receive(text({"type": "Welcome", "request_id": "r-1"}), False), [Welcomed("r-1")])
        [first] = sent(d)
        self.assertEqual(first["type"], "Settings")
        self.assertFalse(d.ready)
        self.assertEqual(d.receive(text({"type": "SettingsApplied"}), False), [SettingsAccepted()])
        self.assertTrue(d.ready)
        # Caller audio: one binary frame each, unaltered.
        d.send_audio(b"\x01" * 160)
        d.send_audio(b"\x02" * 160)
        self.assertEqual(sent(d), [b"\x01" * 160, b"\x02" * 160])
        # The greeting: text, then audio numbered as turn 1, then done.
        self.assertEqual(d.receive(text({"type": "ConversationText", "role": "assistant", "content": "Hello!"}), False),
                         [TranscriptLine("bot", "Hello!")])
        self.assertEqual(d.receive(text({"type": "AgentStartedSpeaking", "total_latency": 0.2}), False), [])
        self.assertEqual(d.receive(b"a" * 37, True), [AgentAudio("c1t1", b"a" * 37)])
        self.assertEqual(d.receive(b"b" * 400, True), [AgentAudio("c1t1", b"b" * 400)])
        self.assertEqual(d.receive(text({"type": "AgentAudioDone"}), False), [AgentAudioFinished("c1t1")])
        # The caller speaks: a turn of their own, then the agent's second turn.
        self.assertEqual(d.receive(text({"type": "UserStartedSpeaking"}), False), [SpeechStarted()])
        self.assertEqual(d.receive(text({"type": "ConversationText", "role": "user", "content": "Hi"}), False),
                         [TranscriptLine("caller", "Hi"), SpeechStopped()])
        self.assertEqual(d.receive(text({"type": "AgentThinking", "content": ""}), False), [])
        self.assertEqual(d.receive(b"c" * 160, True), [AgentAudio("c1t2", b"c" * 160)])
        # Barge-in over turn 2: its in-flight audio is dropped until the next turn starts.
        self.assertEqual(d.receive(text({"type": "UserStartedSpeaking"}), False), [SpeechStarted()])
        d.interrupt("c1t2")
        self.assertEqual(sent(d), [])  # no truncate exists
        self.assertEqual(d.receive(b"d" * 160, True), [])
        self.assertEqual(d.late_audio_bytes_dropped, 160)
        self.assertEqual(d.receive(text({"type": "ConversationText", "role": "user", "content": "Wait"}), False),
                         [TranscriptLine("caller", "Wait"), SpeechStopped()])
        self.assertEqual(d.receive(b"e" * 10, True), [])  # still the cut turn's
        self.assertEqual(d.receive(text({"type": "AgentThinking"}), False), [])
        # A function call round trip.
        request = {"type": "FunctionCallRequest", "functions": [
            {"id": "fc_1", "name": "end_call", "arguments": "{\"reason\": \"done\"}", "client_side": True},
            {"id": "fc_2", "name": "server_thing", "arguments": "{}", "client_side": False}]}
        self.assertEqual(d.receive(text(request), False), [ToolCalled("fc_1", "end_call", "{\"reason\": \"done\"}")])
        d.tool_result("fc_1", "{\"ok\": true}")
        d.tool_result("fc_unknown", "{}")
        self.assertEqual(sent(d), [{"type": "FunctionCallResponse", "id": "fc_1", "name": "end_call",
                                    "content": "{\"ok\": true}"}])
        self.assertEqual(d.receive(b"f" * 10, True), [AgentAudio("c1t3", b"f" * 10)])
        self.assertEqual(d.receive(text({"type": "AgentAudioDone"}), False), [AgentAudioFinished("c1t3")])
        # DTMF as an injected user message.
        d.send_dtmf("42#")
        [inject] = sent(d)
        self.assertEqual(inject["type"], "InjectUserMessage")
        self.assertIn("42#", inject["content"])
        # Errors, warnings and unknown messages.
        self.assertEqual(
            d.receive(text({"type": "Warning", "code": "PROMPT_TOO_LONG", "description": "cut"}), False),
            [ServerError("PROMPT_TOO_LONG", "cut", fatal=False, warning=True)])
        self.assertEqual(
            d.receive(text({"type": "Error", "code": "INVALID_SETTINGS", "description": "bad"}), False),
            [ServerError("INVALID_SETTINGS", "bad", fatal=True)])
        self.assertEqual(
            d.receive(text({"type": "Error", "code": "INTERNAL_SERVER_ERROR", "description": "x"}), False),
            [ServerError("INTERNAL_SERVER_ERROR", "x", fatal=False)])
        self.assertEqual(d.receive(text({"type": "NewThing"}), False), [UnknownMessage("NewThing")])
        self.assertEqual(d.receive(b"not json", False), [UnknownMessage("(not JSON)")])
        self.assertEqual(d.receive(text({"type": "PromptUpdated"}), False), [])

    def test_a_cancelled_function_call_is_not_answered(self) -> None:
        d = self.dialect
        d.receive(text({"type": "Welcome"}), False)
        d.receive(text({"type": "SettingsApplied"}), False)
        sent(d)
        d.receive(text({"type": "FunctionCallRequest", "functions": [
            {"id": "fc_9", "name": "end_call", "arguments": "{}", "client_side": True}]}), False)
        d.receive(text({"type": "FunctionCallCancelled", "functions": [{"id": "fc_9"}]}), False)
        d.tool_result("fc_9", "{}")
        self.assertEqual(sent(d), [])

    def test_the_bridge_interrupt_alone_cuts_the_turn(self) -> None:
        d = self.dialect
        d.receive(text({"type": "Welcome"}), False)
        d.receive(text({"type": "SettingsApplied"}), False)
        d.receive(b"a" * 10, True)
        d.interrupt("c1t1")
        self.assertEqual(d.receive(b"b" * 10, True), [])
        self.assertEqual(d.receive(text({"type": "AgentAudioDone"}), False), [])  # nothing left to finish
        self.assertEqual(d.receive(b"c" * 10, True), [AgentAudio("c1t2", b"c" * 10)])

    def test_error_labels_are_bounded(self) -> None:
        self.assertEqual(error_code_label("INVALID_SETTINGS"), "INVALID_SETTINGS")
        self.assertEqual(error_code_label("PROMPT_TOO_LONG"), "PROMPT_TOO_LONG")
        self.assertEqual(error_code_label("SOMETHING_" + "x" * 100), "other")


class KeepAliveTests(TestCase):
    def test_keepalive_only_while_nothing_else_flows(self) -> None:
        clock = Clock()
        d = AgentDialect(settings())
        frames: list[Any] = []
        timer = KeepAliveTimer(clock, 4.0, lambda: (d.poll_keepalive(), frames.extend(sent(d))))
        timer.start()
        clock.advance(4.0)
        self.assertEqual(frames, [])  # no Settings sent yet: nothing to keep alive
        d.receive(text({"type": "Welcome"}), False)
        d.receive(text({"type": "SettingsApplied"}), False)
        frames.extend(sent(d))
        frames.clear()
        # Audio flows every 20 ms for 10 s: no KeepAlive.
        for _ in range(500):
            d.send_audio(b"\xff" * 160)
            clock.advance(0.02)
        self.assertEqual([f for f in frames if not isinstance(f, bytes)], [])
        frames.clear()
        # Then silence (hold): a KeepAlive within 8 s and every 4 s after.
        clock.pump([1.0] * 8)
        self.assertEqual([f for f in frames if not isinstance(f, bytes)], [{"type": "KeepAlive"}])
        clock.pump([1.0] * 8)
        self.assertEqual([f for f in frames if not isinstance(f, bytes)], [{"type": "KeepAlive"}] * 3)
        timer.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
