"""The ElevenLabs Agents dialect fed whole conversation transcripts (sans-IO): what it answers,
what it reports, and the initiation message checked against the fake service's schema."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import ALAW_8K, L16_16K, MULAW_8K, AudioFormat
from mediaproxy.backends.elevenlabs_dialect import (
    ConversationDialect,
    initiation_message,
)
from mediaproxy.backends.elevenlabs_events import (
    ERROR_CODE_LABELS,
    AgentAudio,
    AgentAudioFinished,
    ConversationStarted,
    Interrupted,
    MalformedMessage,
    ServerError,
    ToolCalled,
    TranscriptLine,
    UnknownMessage,
    error_code_label,
    format_name,
    parse_format,
)
from mediaproxy.testing.fake_elevenlabs import check_initiation

INITIATION = initiation_message(dynamic_variables={"customer": "Ada"})


def frame(kind: str, body: dict[str, Any] | None = None, **extra: Any) -> str:
    message: dict[str, Any] = {"type": kind, **extra}
    if body is not None:
        message[f"{kind}_event"] = body
    return json.dumps(message)


def audio(event_id: Any, data: bytes) -> str:
    return frame("audio", {"audio_base_64": base64.b64encode(data).decode(), "event_id": event_id})


METADATA = frame("conversation_initiation_metadata", {
    "conversation_id": "conv_1", "agent_output_audio_format": "ulaw_8000", "user_input_audio_format": "pcm_16000"})


def sent(dialect: ConversationDialect) -> list[Any]:
    return [json.loads(f) for f in dialect.take_output()]


def started() -> ConversationDialect:
    dialect = ConversationDialect(INITIATION, response_prefix="c1e")
    dialect.opened()
    dialect.receive(METADATA)
    dialect.take_output()
    return dialect


class InitiationTests(TestCase):
    def test_no_override_by_default_only_the_dynamic_variables(self) -> None:
        self.assertEqual(INITIATION, {"type": "conversation_initiation_client_data",
                                      "dynamic_variables": {"customer": "Ada"}})
        self.assertEqual(initiation_message(dynamic_variables={}), {"type": "conversation_initiation_client_data"})
        self.assertEqual(check_initiation(INITIATION), [])

    def test_overrides_when_set_and_an_empty_first_message_silences_the_greeting(self) -> None:
        message = initiation_message(dynamic_variables={}, prompt="Be brief.", first_message="", language="de")
        self.assertEqual(message["conversation_config_override"],
                         {"agent": {"prompt": {"prompt": "Be brief."}, "first_message": "", "language": "de"}})
        self.assertEqual(check_initiation(message), [])

    def test_the_schema_catches_an_unknown_override(self) -> None:
        message = initiation_message(dynamic_variables={})
        message["conversation_config_override"] = {"agent": {"voice": "x"}}
        self.assertEqual(check_initiation(message),
                         ["initiation.conversation_config_override.agent.voice is not a known key"])


class FormatTests(TestCase):
    def test_vendor_names(self) -> None:
        self.assertEqual(parse_format("ulaw_8000"), MULAW_8K)
        self.assertEqual(parse_format("alaw_8000"), ALAW_8K)
        self.assertEqual(parse_format("pcm_16000"), L16_16K)
        self.assertEqual(parse_format("pcm_48000"), AudioFormat("l16", 48000))
        for name in ("pcm_22050", "pcm_44100", "ulaw_16000", "mp3_44100_128", "pcm", "", "pcm_0008000"):
            self.assertIsNone(parse_format(name), name)
        for fmt in (MULAW_8K, ALAW_8K, L16_16K, AudioFormat("l16", 24000)):
            self.assertEqual(parse_format(format_name(fmt)), fmt)


class ConversationTests(TestCase):
    def test_a_whole_conversation(self) -> None:
        dialect = ConversationDialect(INITIATION, response_prefix="c1e")
        # Nothing goes out before the socket is open; then the initiation, once.
        self.assertEqual(sent(dialect), [])
        dialect.send_audio(b"\x01\x02")
        dialect.opened()
        dialect.opened()
        self.assertEqual(sent(dialect), [INITIATION])
        dialect.send_audio(b"early")  # not ready: the session holds it
        self.assertEqual(sent(dialect), [])
        self.assertEqual(dialect.receive(METADATA),
                         [ConversationStarted("conv_1", L16_16K, MULAW_8K, "pcm_16000", "ulaw_8000")])
        self.assertTrue(dialect.ready)
        self.assertEqual(dialect.conversation_id, "conv_1")
        dialect.send_audio(b"\x00\x01\xff")
        self.assertEqual(dialect.take_output(), ['{"user_audio_chunk":"AAH/"}'])
        transcript: list[tuple[str, list[Any], list[Any]]] = []
        for message in (
            frame("ping", {"event_id": 1, "ping_ms": None}),
            frame("agent_response", {"agent_response": " Hello! ", "event_id": 2}),
            audio(2, b"aa"),
            audio(2, b"bb"),
            frame("vad_score", {"vad_score": 0.1}),
            frame("user_transcript", user_transcription_event={"user_transcript": "hi", "event_id": 3}),
            frame("agent_response", {"agent_response": "How can I help?"}),
            audio(4, b"cc"),
            frame("interruption", {"event_id": 4}),
            audio(4, b"late"),
            frame("agent_response_correction", {"original_agent_response": "How can I help?",
                                                "corrected_agent_response": "How can"}),
            audio(5, b"dd"),
            frame("client_tool_call", client_tool_call={"tool_name": "end_call", "tool_call_id": "t1",
                                                        "parameters": {"reason": "done"}}),
            frame("ping", {"event_id": 6, "ping_ms": 87}),
        ):
            transcript.append((message, dialect.receive(message), sent(dialect)))
        events = [e for _, e, _ in transcript]
        self.assertEqual(events, [
            [],
            [TranscriptLine("bot", "Hello!")],
            [AgentAudio("c1e2", b"aa")],
            [AgentAudio("c1e2", b"bb")],
            [],
            [AgentAudioFinished("c1e2"), TranscriptLine("caller", "hi")],
            [TranscriptLine("bot", "How can I help?")],
            [AgentAudio("c1e4", b"cc")],
            [Interrupted(4)],
            [],  # at or before the interruption's event id: dropped
            [TranscriptLine("bot", "How can", corrected=True)],
            [AgentAudio("c1e5", b"dd")],
            [AgentAudioFinished("c1e5"), ToolCalled("t1", "end_call", '{"reason": "done"}')],
            [],
        ])
        answers = [a for _, _, a in transcript]
        self.assertEqual(answers[0], [{"type": "pong", "event_id": 1}])
        self.assertEqual(answers[-1], [{"type": "pong", "event_id": 6}])
        self.assertEqual(sum(len(a) for a in answers), 2)  # only the pongs
        self.assertEqual(dialect.last_ping_ms, 87)
        self.assertEqual(dialect.late_audio_bytes_dropped, 4)
        self.assertTrue(dialect.has_tool_call("t1"))
        dialect.tool_result("t1", '{"ok": true}')
        dialect.tool_result("t1", '{"error": "no such target"}')
        dialect.tool_result("unknown", "{}")  # never made in this conversation: not answered
        self.assertEqual(sent(dialect), [
            {"type": "client_tool_result", "tool_call_id": "t1", "result": '{"ok": true}', "is_error": False},
            {"type": "client_tool_result", "tool_call_id": "t1", "result": '{"error": "no such target"}',
             "is_error": True},
        ])

    def test_a_finished_response_that_goes_on_is_a_new_response(self) -> None:
        dialect = started()
        self.assertEqual(dialect.receive(audio(7, b"a")), [AgentAudio("c1e7", b"a")])
        self.assertEqual(dialect.finish_response(), [AgentAudioFinished("c1e7")])
        self.assertEqual(dialect.finish_response(), [])
        self.assertEqual(dialect.receive(audio(7, b"b")), [AgentAudio("c1e7.2", b"b")])
        self.assertEqual(dialect.receive(audio(8, b"c")), [AgentAudioFinished("c1e7.2"), AgentAudio("c1e8", b"c")])
        self.assertEqual(dialect.open_response, "c1e8")

    def test_the_bridge_cut_drops_the_rest_of_that_response_only(self) -> None:
        dialect = started()
        dialect.receive(audio(3, b"a"))
        dialect.interrupt("c1e2")  # not the open one: nothing happens
        self.assertEqual(dialect.open_response, "c1e3")
        dialect.interrupt("c1e3")
        self.assertIsNone(dialect.open_response)
        self.assertEqual(dialect.receive(audio(3, b"stale")), [])
        self.assertEqual(dialect.receive(audio(2, b"older")), [])
        self.assertEqual(dialect.receive(audio(4, b"new")), [AgentAudio("c1e4", b"new")])
        self.assertEqual(sent(dialect), [])  # the service truncates by itself

    def test_an_interruption_without_audio_and_one_behind_the_open_response(self) -> None:
        dialect = started()
        self.assertEqual(dialect.receive(frame("interruption", {"event_id": "2"})), [Interrupted(2)])
        dialect.receive(audio(5, b"a"))
        self.assertEqual(dialect.receive(frame("interruption", {"event_id": 3})), [Interrupted(3)])
        self.assertEqual(dialect.open_response, "c1e5")  # a later response plays on

    def test_keys_and_background_go_out_as_text_once_ready(self) -> None:
        dialect = ConversationDialect(INITIATION)
        dialect.opened()
        dialect.take_output()
        dialect.send_dtmf("12#")
        dialect.contextual_update("note")
        self.assertEqual(sent(dialect), [])
        dialect.receive(METADATA)
        dialect.send_dtmf("12#")
        dialect.send_dtmf("")
        dialect.contextual_update("The caller is a premium customer.")
        self.assertEqual(sent(dialect), [
            {"type": "user_message", "text": "(The caller pressed the keys: 12#)"},
            {"type": "contextual_update", "text": "The caller is a premium customer."},
        ])

    def test_a_lone_surrogate_goes_out_as_ascii_json(self) -> None:
        dialect = started()
        dialect.receive(frame("client_tool_call", client_tool_call={"tool_name": "x", "tool_call_id": "t\ud800"}))
        dialect.tool_result("t\ud800", "caf\u00e9 \ud800")
        [out] = dialect.take_output()
        self.assertTrue(out.isascii())
        self.assertEqual(json.loads(out)["tool_call_id"], "t\ud800")


class MalformedInputTests(TestCase):
    def test_not_json_no_type_and_unknown_types(self) -> None:
        dialect = started()
        self.assertEqual(dialect.receive(b"\xff{"), [UnknownMessage("(not JSON)")])
        self.assertEqual(dialect.receive("[" * 100000), [UnknownMessage("(not JSON)")])
        self.assertEqual(dialect.receive("[]"), [UnknownMessage("(no type)")])
        self.assertEqual(dialect.receive('{"type": 3}'), [UnknownMessage("(no type)")])
        self.assertEqual(dialect.receive(frame("brand_new")), [UnknownMessage("brand_new")])
        for ignored in ("vad_score", "internal_tentative_agent_response", "agent_tool_response"):
            self.assertEqual(dialect.receive(frame(ignored, {"x": 1})), [])

    def test_known_types_with_unusable_fields(self) -> None:
        dialect = started()
        for message in (
            frame("audio", {"audio_base_64": "!!", "event_id": 1}),
            frame("audio", {"audio_base_64": "AA==", "event_id": -1}),
            frame("audio", {"audio_base_64": "AA==", "event_id": True}),
            frame("audio", {"audio_base_64": 5, "event_id": 1}),
            frame("audio"),
            frame("ping", {"ping_ms": 3}),
            frame("interruption", {"event_id": "x"}),
            frame("agent_response", {"agent_response": 3}),
            frame("user_transcript"),
            frame("client_tool_call", client_tool_call={"tool_name": "end_call"}),
            frame("client_tool_call", client_tool_call="end_call"),
            METADATA,  # a second one
        ):
            [event] = dialect.receive(message)
            self.assertIsInstance(event, MalformedMessage, message)
        self.assertEqual(sent(dialect), [])

    def test_audio_before_the_conversation_started_is_malformed(self) -> None:
        dialect = ConversationDialect(INITIATION)
        dialect.opened()
        self.assertEqual(dialect.receive(audio(1, b"a")), [MalformedMessage("audio")])

    def test_errors_and_their_labels(self) -> None:
        dialect = started()
        self.assertEqual(dialect.receive(frame("error", {"code": "quota_exceeded", "message": "no credits"})),
                         [ServerError("quota_exceeded", "no credits")])
        self.assertEqual(dialect.receive('{"type": "error", "message": "boom"}'), [ServerError("error", "boom")])
        self.assertEqual(error_code_label("malformed_message"), "malformed_message")
        self.assertEqual(error_code_label("quota_exceeded"), "other")
        self.assertLessEqual(len(ERROR_CODE_LABELS), 8)

    def test_unsupported_agent_formats_are_reported_not_guessed(self) -> None:
        dialect = ConversationDialect(INITIATION)
        dialect.opened()
        [event] = dialect.receive(frame("conversation_initiation_metadata", {
            "conversation_id": "c", "agent_output_audio_format": "pcm_44100", "user_input_audio_format": 3}))
        self.assertEqual(event, ConversationStarted("c", L16_16K, None, "pcm_16000", "pcm_44100"))
