"""Regression tests for the bugs the fuzz suites (``tests/test_fuzz_platforms.py``) found: each is
the input the fuzzer produced, reduced to a plain unit test."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial import unittest

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.backends.connection import CallLog
from mediaproxy.backends.deepgram_dialect import AgentDialect, SettingsAccepted, UnknownMessage
from mediaproxy.backends.gemini import GeminiOptions
from mediaproxy.backends.gemini_dialect import GeminiDialect, SessionReady
from mediaproxy.backends.gemini_dialect import ServerError as GeminiServerError
from mediaproxy.backends.openai_dialect import RealtimeDialect
from mediaproxy.backends.openai_events import ServerError
from mediaproxy.backends.openai_session_config import RealtimeOptions
from mediaproxy.platforms.asterisk import AsteriskSession
from mediaproxy.platforms.audiocodes_session import AudioCodesSession
from mediaproxy.platforms.audiohook_session import AudioHookSession
from mediaproxy.platforms.base import CallEnded, CallStarted, PlatformError, ProtocolViolation, UpgradeRequest
from mediaproxy.platforms.exotel import ExotelSession
from mediaproxy.platforms.freeswitch import FreeswitchSession
from mediaproxy.platforms.plivo import PlivoSession
from mediaproxy.platforms.twilio import TwilioSession
from mediaproxy.platforms.vonage import VonageSession
from mediaproxy.server.port import PlatformPort


def frames(session: Any) -> list[Any]:
    """What the session queued, as the glue sends it: text frames encoded as UTF-8 (which must
    not raise), then parsed."""
    return [json.loads(item.encode("utf-8")) for item in session.take_output() if isinstance(item, str)]


SID = "5e0b7c1d-2a3f-4d6e-8b9a-0c1d2e3f4a5b"
ORG = "6f1c2a9e-3b7d-4c21-9a55-0d2e8b4f7a10"
CONVERSATION = "0b7c1d5e-2a3f-4d6e-8b9a-0c1d2e3f4a5b"
EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}


def hook_message(mtype: str, seq: int, parameters: dict[str, Any]) -> str:
    return json.dumps({"version": "2", "id": SID, "type": mtype, "seq": seq, "serverseq": 0,
                       "position": "PT0S", "parameters": parameters})


def hook_open(media: list[Any]) -> str:
    return hook_message("open", 1, {"organizationId": ORG, "conversationId": CONVERSATION,
                                    "participant": {"id": CONVERSATION}, "media": media})


def hook_session(mode: str = "connector") -> AudioHookSession:
    session = AudioHookSession(mode)
    session.bind_upgrade(UpgradeRequest("/audiohook", "proxy", {"audiohook-session-id": SID,
                                                                "audiohook-organization-id": ORG}))
    return session


class AudioHookRegressionTests(unittest.TestCase):
    def test_media_offer_with_a_list_as_format_is_skipped(self) -> None:
        """An offer whose ``format`` is a list (unhashable) raised TypeError out of
        ``receive_text``; it is an unusable entry like any other, and the next one is taken."""
        session = hook_session()
        events = session.receive_text(hook_open([{**EXTERNAL, "format": ["PCMU"]}, EXTERNAL]))
        self.assertIsInstance(events[0], CallStarted)
        opened = json.loads(session.take_output()[0])
        self.assertEqual(opened["parameters"]["media"], [EXTERNAL])

    def test_only_an_unhashable_format_is_unsupported_media(self) -> None:
        session = hook_session()
        (violation,) = session.receive_text(hook_open([{**EXTERNAL, "format": {"name": "PCMU"}}]))
        self.assertEqual(violation, ProtocolViolation("unsupported_media", "no supported media format offered"))

    def test_lone_surrogate_in_an_unknown_type_is_escaped_in_disconnect_info(self) -> None:
        """The fuzzer sent ``"type": "\\ud800x"``: ``disconnect.info`` quotes the type, and the
        text frame could not be encoded (UnicodeEncodeError in the glue's send)."""
        session = hook_session("monitor")
        (violation,) = session.receive_text(hook_message("\ud800x", 1, {}))
        self.assertEqual(violation.kind, "unknown_type")
        (disconnect,) = frames(session)
        self.assertEqual(disconnect["parameters"]["info"], "Client Error: '\ud800x' is not a supported client message")

    def test_lone_surrogate_in_an_echoed_offer(self) -> None:
        """``opened`` echoes the chosen offer unchanged, unknown fields and all."""
        session = hook_session()
        offer = {**EXTERNAL, "label": "\udfff\ud800é"}
        session.receive_text(hook_open([offer]))
        (opened,) = frames(session)
        self.assertEqual(opened["parameters"]["media"], [offer])

    def test_an_infinite_number_in_an_echoed_offer_is_not_json(self) -> None:
        """The fuzzer's offer ``{..., "ulvktemrp": Infinity}``: ``opened`` echoed it, and went out
        with a bare ``Infinity`` no strict parser reads. Such a message is not JSON (RFC 8259),
        answered as any other: ``bad_json`` and ``disconnect``. ``1e999`` (Python's inf) too."""
        for literal in ("Infinity", "-Infinity", "NaN", "1e999"):
            session = hook_session("monitor")
            text = hook_open([EXTERNAL]).replace('"rate": 8000', f'"rate": 8000, "x": {literal}', 1)
            self.assertIn(literal, text)
            (violation,) = session.receive_text(text)
            self.assertEqual(violation.kind, "bad_json", literal)
            (disconnect,) = frames(session)
            self.assertEqual(disconnect["type"], "disconnect")

    def test_lone_surrogate_in_an_error_message_and_close_reason_is_loggable(self) -> None:
        """The loopback fuzzer's ``error {message: "…\\udc00…"}``: the bridge logs the message,
        and the UTF-8 log file could not write it (the close reason is logged the same way)."""
        session = hook_session()
        session.receive_text(hook_open([EXTERNAL]))
        (error,) = session.receive_text(hook_message("error", 2, {"code": 500, "message": "a\udc00é"}))
        self.assertEqual(error, PlatformError("500", "a\\udc00é"))
        self.assertEqual(session.receive_text(hook_message("close", 3, {"reason": "\ud800"})), [CallEnded("\\ud800")])


def codes_message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


class AudioCodesRegressionTests(unittest.TestCase):
    def test_lone_surrogate_participant_is_escaped_in_the_ack(self) -> None:
        """The fuzzer's ``userStream.start {participant: "\\ud800"}``: the ack echoes the
        participant, and its text frame could not be encoded."""
        session = AudioCodesSession()
        session.receive_text(codes_message("session.initiate", conversationId="c", supportedMediaFormats=["raw/mulaw"]))
        session.receive_text(codes_message("userStream.start", participant="\ud800"))
        self.assertEqual([m["type"] for m in frames(session)], ["session.accepted", "userStream.started"])
        session.receive_text(codes_message("userStream.stop", participant="\ud800é"))
        self.assertEqual(frames(session), [{"type": "userStream.stopped", "participant": "\ud800é"}])

    def test_lone_surrogate_conversation_id_in_a_rejected_resume(self) -> None:
        session = AudioCodesSession()
        session.receive_text(codes_message("session.resume", conversationId="\ud800"))
        session.resume_rejected()
        self.assertEqual(frames(session), [{"type": "session.error", "reason": "conversation not found",
                                            "conversationId": "\ud800"}])


class RealtimeDialectRegressionTests(unittest.TestCase):
    def dialect(self) -> RealtimeDialect:
        return RealtimeDialect(RealtimeOptions(api_key="k"), MULAW_8K)

    def test_deeply_nested_message_is_malformed(self) -> None:
        """The fuzzer's ``[[[…]]]`` 30000 deep: ``json.loads`` raises RecursionError (not
        ValueError), which escaped ``receive``."""
        (error,) = self.dialect().receive("[" * 30000 + "]" * 30000)
        self.assertEqual(error.code, "malformed_event")  # type: ignore[union-attr]

    def test_infinite_numbers_are_malformed(self) -> None:
        """``1e400`` parses as infinity, and ``int()`` of it raised OverflowError out of
        ``receive`` (speech times, an audio delta's ``content_index``, rate limits)."""
        dialect = self.dialect()
        for message in (
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": "INF"},
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": "INF"},
            {"type": "response.output_audio.delta", "item_id": "i", "response_id": "r", "delta": "",
             "content_index": "INF"},
            {"type": "rate_limits.updated", "rate_limits": [{"name": "tokens", "remaining": "INF"}]},
        ):
            text = json.dumps(message).replace('"INF"', "1e400")
            (error,) = dialect.receive(text)
            self.assertEqual(error, ServerError("malformed_event", error.message), text)  # type: ignore[union-attr]
        self.assertEqual(dialect.take_output(), [])


ODD_DIGIT_RATES = ("\u00b2", "9" * 5000)
"""Sample rates ``str.isdigit`` accepts and ``int()`` refuses: a superscript two, and a number of
more digits than ``int()`` converts."""


class SampleRateRegressionTests(unittest.TestCase):
    """The fuzzer's opening messages with a sample rate written as an odd digit string: ``int()``
    raised ValueError out of ``receive_text``. Each is an unsupported format."""

    def test_plivo_start(self) -> None:
        for rate in ODD_DIGIT_RATES:
            start = {"event": "start", "start": {"callId": "c", "streamId": "s", "mediaFormat": {
                "encoding": "audio/x-mulaw", "sampleRate": rate}}}
            (violation,) = PlivoSession().receive_text(json.dumps(start))
            self.assertEqual(violation.kind, "unsupported_format")  # type: ignore[union-attr]

    def test_exotel_start(self) -> None:
        for rate in ODD_DIGIT_RATES:
            start = {"event": "start", "start": {"call_sid": "c", "stream_sid": "s", "media_format": {
                "encoding": "audio/x-raw", "sample_rate": rate, "bit_rate": "16"}}}
            (violation,) = ExotelSession().receive_text(json.dumps(start))
            self.assertEqual(violation.kind, "unsupported_format")  # type: ignore[union-attr]

    def test_vonage_connected(self) -> None:
        for rate in ODD_DIGIT_RATES:
            connected = {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}"}
            (violation,) = VonageSession().receive_text(json.dumps(connected))
            self.assertEqual(violation.kind, "unsupported_format")  # type: ignore[union-attr]

    def test_string_rates_still_count(self) -> None:
        """Plivo and Exotel send rates as strings: those of ASCII digits are taken as before."""
        start = {"event": "start", "start": {"callId": "c", "streamId": "s", "mediaFormat": {
            "encoding": "audio/x-l16", "sampleRate": "16000"}}}
        self.assertIsInstance(PlivoSession().receive_text(json.dumps(start))[0], CallStarted)
        start = {"event": "start", "start": {"call_sid": "c", "stream_sid": "s", "media_format": {
            "sample_rate": "16000"}}}
        self.assertIsInstance(ExotelSession().receive_text(json.dumps(start))[0], CallStarted)


AGENT_SETTINGS = {"type": "Settings", "audio": {}, "agent": {}}


def welcomed_agent() -> AgentDialect:
    """A Voice Agent dialect past Welcome and SettingsApplied, its Settings taken."""
    dialect = AgentDialect(AGENT_SETTINGS)
    dialect.receive('{"type":"Welcome","request_id":"r"}', False)
    dialect.receive('{"type":"SettingsApplied"}', False)
    dialect.take_output()
    return dialect


class AgentDialectRegressionTests(unittest.TestCase):
    def test_deeply_nested_message_is_not_json(self) -> None:
        """The fuzzer's ``[[[…`` 30000 deep: ``json.loads`` raises RecursionError (not
        ValueError), which escaped ``receive``."""
        dialect = AgentDialect(AGENT_SETTINGS)
        self.assertEqual(dialect.receive("[" * 30000 + "]" * 30000, False), [UnknownMessage("(not JSON)")])
        self.assertEqual(dialect.receive(b"[" * 30000, False), [UnknownMessage("(not JSON)")])

    def test_lone_surrogates_in_client_messages_are_escaped(self) -> None:
        """The fuzzer's function name ``"\\ud800"`` (echoed in FunctionCallResponse), a tool's
        output and the caller's keys with lone surrogates: the text frame could not be encoded
        as UTF-8 (UnicodeEncodeError in the glue's send). Other non-ASCII text goes out as is."""
        dialect = welcomed_agent()
        dialect.receive(json.dumps({"type": "FunctionCallRequest", "functions": [
            {"id": "fc", "name": "f\ud800", "arguments": "{}", "client_side": True}]}), False)
        dialect.tool_result("fc", "x\udc00")
        dialect.send_dtmf("1\ud800")
        dialect.send_dtmf("é")
        response, keys, plain = frames(dialect)
        self.assertEqual((response["name"], response["content"]), ("f\ud800", "x\udc00"))
        self.assertIn("1\ud800", keys["content"])
        self.assertIn("é", plain["content"])

    def test_settings_applied_before_welcome_is_not_ready(self) -> None:
        """The fuzzer's ``SettingsApplied`` before any ``Welcome``: the dialect became ready and
        sent caller audio and keys before its Settings (the service's
        NON_SETTINGS_MESSAGE_BEFORE_SETTINGS, fatal). Now it is an unusable message; the real
        one after Settings still counts."""
        dialect = AgentDialect(AGENT_SETTINGS)
        self.assertEqual(dialect.receive('{"type":"SettingsApplied"}', False), [UnknownMessage("SettingsApplied")])
        dialect.send_audio(b"\xff" * 160)
        dialect.send_dtmf("1")
        self.assertFalse(dialect.ready)
        self.assertEqual(dialect.take_output(), [])
        dialect.receive('{"type":"Welcome"}', False)
        self.assertEqual(dialect.receive('{"type":"SettingsApplied"}', False), [SettingsAccepted()])
        dialect.send_audio(b"\xff" * 160)
        self.assertEqual(dialect.take_output(), [json.dumps(AGENT_SETTINGS), b"\xff" * 160])


class StubWire:
    """A socket that records what the port does with it."""

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.closed = 0
        self.codes: list[int] = []

    def send_frame(self, message: str | bytes) -> None:
        self.sent.append(message)

    def close_socket(self, code: int = 1000) -> None:
        self.closed += 1
        self.codes.append(code)

    def drop_socket(self) -> None:
        self.closed += 1

    def register_producer(self, producer: Any) -> None:
        pass

    def unregister_producer(self) -> None:
        pass


class StubCall:
    """A call bridge that records the events it is handed (the real one counts each violation)
    and, as the real one does, closes its leg on a violation."""

    def __init__(self, leg: PlatformPort) -> None:
        self.leg = leg
        self.events: list[Any] = []

    def handle(self, events: list[Any]) -> None:
        self.events += events
        if any(isinstance(e, ProtocolViolation) for e in events):
            self.leg.close()


class PortRegressionTests(unittest.TestCase):
    def port(self) -> tuple[PlatformPort, StubCall]:
        port = PlatformPort(TwilioSession(), StubWire(), Clock())
        call = StubCall(port)
        port.call = call  # type: ignore[assignment]
        return port, call

    def test_bad_utf8_after_a_violation_is_not_counted_again(self) -> None:
        """The loopback fuzzer's hostile connections sent frames after the one that ended the
        session; the port turned each non-UTF-8 one into a fresh ``bad_utf8`` violation (counted
        in ``protocol_errors_total`` again, while the session ignores any other input then)."""
        port, call = self.port()
        port.received(b"{not json", False)
        port.received(b'{"event":"\xff"}', False)
        self.assertEqual([e.kind for e in call.events], ["bad_json"])

    def test_bad_utf8_while_closing_is_not_counted(self) -> None:
        port, call = self.port()
        port.close()
        port.received(b"\xff", False)
        self.assertEqual(call.events, [])

    def test_bad_utf8_on_a_live_session_is_a_violation(self) -> None:
        port, call = self.port()
        port.received(b"\xff", False)
        self.assertEqual(call.events, [ProtocolViolation("bad_utf8", "text frame is not UTF-8")])

    def test_input_after_a_bad_utf8_violation_is_not_read(self) -> None:
        """The port's own ``bad_utf8`` violation ends the call, but the session never saw the
        frame: the next text frame reached it and gave a second violation (``bad_json``),
        counted again."""
        port, call = self.port()
        port.received(b"\xff", False)
        port.received(b"{not json", False)
        port.received(b"\x00", True)
        self.assertEqual([e.kind for e in call.events], ["bad_utf8"])


class AsteriskRegressionTests(unittest.TestCase):
    """Found by :mod:`tests.test_fuzz_pbx`."""

    def test_json_format_that_is_a_list_is_unsupported(self) -> None:
        """``"format": ["slin16"]`` raised TypeError (unhashable) out of ``receive_text``."""
        session = AsteriskSession()
        (violation,) = session.receive_text(json.dumps({"event": "MEDIA_START", "channel_id": "c",
                                                        "format": ["slin16"], "optimal_frame_size": 640}))
        self.assertEqual(violation.kind, "unsupported_format")  # type: ignore[union-attr]

    def test_frame_size_of_digits_int_refuses(self) -> None:
        """``optimal_frame_size:²`` and a 5000-digit size passed ``isdigit`` and raised ValueError
        out of ``int()``."""
        for size in ("\u00b2", "9" * 5000):
            session = AsteriskSession()
            (violation,) = session.receive_text(f"MEDIA_START channel_id:c format:slin optimal_frame_size:{size}")
            self.assertEqual(violation.kind, "unsupported_format")  # type: ignore[union-attr]

    def started_plain(self) -> AsteriskSession:
        session = AsteriskSession(marks="on")
        session.receive_text("MEDIA_START channel_id:c format:ulaw optimal_frame_size:160")
        return session

    def test_plain_mark_is_one_printable_ascii_word(self) -> None:
        """A plain-text ``MARK_MEDIA`` carried the name as given: a lone surrogate could not be
        sent (UnicodeEncodeError in the glue) and a blank name gave ``MARK_MEDIA `` with no id."""
        session = self.started_plain()
        session.mark("a \ud800b\u00e9")
        session.mark(" \t")
        session.mark("12:340")
        self.assertEqual(session.take_output(), ["MARK_MEDIA ab", "MARK_MEDIA 12:340"])

    def test_empty_packet_is_not_sent(self) -> None:
        """``play(b"")`` queued an empty binary frame (not a whole frame of audio)."""
        session = self.started_plain()
        session.play(b"")
        self.assertEqual(session.take_output(), [])


class FreeswitchRegressionTests(unittest.TestCase):
    def test_empty_sample_rate_refuses_the_call(self) -> None:
        """``?sample_rate=`` was remembered as an empty bad rate, which reads as none: the call
        started at the configured rate instead of being refused like any other bad rate."""
        session = FreeswitchSession()
        session.bind_upgrade(UpgradeRequest("/freeswitch?sample_rate=", "proxy", {}))
        (violation,) = session.receive_binary(bytes(320))
        self.assertEqual(violation.kind, "unsupported_format")  # type: ignore[union-attr]


class GeminiRegressionTests(unittest.TestCase):
    """Found by :mod:`tests.test_fuzz_gemini`."""

    def dialect(self) -> GeminiDialect:
        dialect = GeminiDialect(GeminiOptions(api_key="k", greeting="Hello!"))
        dialect.take_output()
        return dialect

    def test_bad_field_beside_setup_complete_does_not_lose_ready(self) -> None:
        """``{"setupComplete": {}, "goAway": 5}``: the whole message became one malformed_event
        error after the dialect had set itself ready and queued the greeting, so SessionReady
        never reached the session (the dial never completed)."""
        dialect = self.dialect()
        events = dialect.receive(json.dumps({"setupComplete": {}, "goAway": 5}))
        self.assertEqual([type(e) for e in events], [SessionReady, GeminiServerError])
        self.assertTrue(dialect.ready)
        self.assertEqual([list(json.loads(m)) for m in dialect.take_output()], [["clientContent"]])

    def test_audio_before_a_bad_part_is_kept(self) -> None:
        """Audio read before an unusable part is still reported (it had already opened the turn)."""
        dialect = self.dialect()
        events = dialect.receive(json.dumps({"serverContent": {"modelTurn": {"parts": [
            {"inlineData": {"data": "AAAA"}}, {"inlineData": ["AAAA"]}]}}}))
        self.assertEqual([type(e).__name__ for e in events], ["ModelAudio", "ServerError"])
        self.assertEqual(dialect.turn_active, "g1_1")

    def test_tool_result_that_is_not_strict_json_goes_as_text(self) -> None:
        """A tool answering ``NaN``, ``1e999`` or deeply nested JSON: NaN and Infinity went out
        in the toolResponse (not JSON), and the nesting raised RecursionError out of tool_result."""
        for output in ("NaN", '{"a": 1e999}', "[" * 30000):
            dialect = self.dialect()
            dialect.tool_result("fc-1", output)
            (message,) = dialect.take_output()
            (response,) = json.loads(message, parse_constant=float.__call__)["toolResponse"]["functionResponses"]
            self.assertEqual(response["response"], {"output": output})

    def test_interrupt_with_an_infinite_position(self) -> None:
        dialect = self.dialect()
        dialect.receive(json.dumps({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "AAAA"}}]}}}))
        dialect.interrupt("g1_1", float("inf"))
        dialect.interrupt("g1_1", float("nan"))
        self.assertEqual(dialect.heard_text("g1_1", "hello there"), "")


class BackendLogRegressionTests(unittest.TestCase):
    """Found by :mod:`tests.test_fuzz_loopback_gemini`."""

    def test_lone_surrogate_from_the_server_is_escaped_in_the_log(self) -> None:
        """A Gemini tool call named ``"\\ud800"`` was logged as is ("model calls tool ..."): the
        log file's UTF-8 write raised UnicodeEncodeError (and twisted drops such an observer)."""
        events: list[Any] = []
        call_log = CallLog(Logger(observer=events.append), "CA\ud800", "gemini", ())
        call_log.log("info", "model calls tool {tool}", tool="\ud800x", count=3)
        (event,) = events
        self.assertEqual((event["tool"], event["call_id"], event["count"]), ("\\ud800x", "CA\\ud800", 3))
        formatEvent(event).encode("utf-8")
