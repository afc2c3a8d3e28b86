"""Failed responses, transcripts, session limits and function calling of the OpenAI Realtime
connector: the sans-IO dialect, and the session on a ``MemoryReactorClock`` (a ``task.Clock``)
fed server events by hand."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

from twisted.trial import unittest

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.backends.base import CallInfo, ToolSpec
from mediaproxy.backends.openai_events import ResponseFailed, SessionExpired, ToolCalled, TranscriptReceived
from mediaproxy.backends.openai_session import OpenAIRealtimeSession
from mediaproxy.backends.openai_session_config import RealtimeOptions
from mediaproxy.metrics import Metrics
from tests.test_openai_dialect import DialectHarness
from tests.test_openai_session import WirelessSession

OPTIONS = RealtimeOptions(api_key="k", url="ws://127.0.0.1:9/v1/realtime", transcription_model="whisper-1",
                          response_retries=2, response_retry_backoff_ms=500)
TOOL = ToolSpec("transfer_call", "Transfer the caller to a human.",
                {"type": "object", "properties": {"queue": {"type": "string"}}})


def failed(response_id: str, code: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"id": response_id, "object": "realtime.response", "status": "failed", "output": [],
            "status_details": {"type": "failed", "error": {"type": kind, "code": code, "message": f"{code} m"}}}


def function_call(call_id: str = "call_1", status: str = "completed") -> dict[str, Any]:
    return {"id": "fc_1", "type": "function_call", "status": status, "name": "transfer_call",
            "call_id": call_id, "arguments": '{"queue":"billing"}'}


class Wire(WirelessSession):
    def __init__(self, options: RealtimeOptions = OPTIONS, tools: tuple[ToolSpec, ...] = ()) -> None:
        self.metrics = Metrics()
        super().__init__(self.metrics, options)
        if tools:  # the dial already happened: rebuild with the tools
            self.session.close()
            self.reactor = type(self.reactor)()
            self.session = OpenAIRealtimeSession("openai", options, CallInfo("CA1", "twilio", tools=tools),
                                                 self.listener, MULAW_8K, self.reactor, self.metrics,
                                                 random=lambda: 0.5)
            self.session.start()
            proto = self.reactor.tcpClients[-1][2].buildProtocol(None)
            proto.sendMessage = lambda payload, isBinary=False: self.sent.append(json.loads(payload))
            proto.sendClose = lambda code=None, reason=None: None
            proto.dropConnection = lambda abort=False: None
            proto.onOpen()
            self.proto = proto
        self.configure()

    def errors(self, code: str) -> float:
        return self.metrics.registry.get_sample_value(
            "mediaproxy_backend_errors_total", {"backend": "openai", "code": code}) or 0.0

    def creates(self) -> int:
        return sum(1 for e in self.sent if e["type"] == "response.create")


class FailedResponseDialectTests(unittest.TestCase):
    def test_cause_read_from_status_details_error(self) -> None:
        h = DialectHarness(self)
        h.configure()
        events = h.server("response.done", response=failed("r1", "rate_limit_exceeded", "rate_limit_error"))
        self.assertIn(ResponseFailed("r1", "rate_limit_exceeded", "rate_limit_exceeded m", False), events)
        events = h.server("response.done", response=failed("r2", "insufficient_quota", "insufficient_quota"))
        self.assertIn(ResponseFailed("r2", "insufficient_quota", "insufficient_quota m", True), events)
        events = h.server("response.done", response={**failed("r3", ""), "status_details": {
            "type": "failed", "error": {"type": "authentication_error", "message": "bad key"}}})
        self.assertIn(ResponseFailed("r3", "authentication_error", "bad key", True), events)
        events = h.server("response.done", response={"id": "r4", "status": "failed"})
        self.assertIn(ResponseFailed("r4", "unknown", "", False), events)


class FailedResponseSessionTests(unittest.TestCase):
    def test_fatal_ends_the_call_at_once(self) -> None:
        w = Wire()
        w.server("response.done", response=failed("r1", "insufficient_quota", "insufficient_quota"))
        self.assertTrue(w.listener.has("failed"))
        self.assertIn("insufficient_quota", [e for e in w.listener.events if e[0] == "failed"][0][1])
        self.assertEqual(w.errors("insufficient_quota"), 1)
        self.assertEqual(w.reactor.getDelayedCalls(), [])

    def test_transient_retried_with_backoff_then_recovers(self) -> None:
        w = Wire()
        before = w.creates()
        w.server("response.done", response=failed("r1", "server_error", "server_error"))
        self.assertEqual(w.errors("server_error"), 1)
        w.reactor.advance(0.499)
        self.assertEqual(w.creates(), before)
        w.reactor.advance(0.001)
        self.assertEqual(w.creates(), before + 1)
        w.server("response.done", response=failed("r2", "rate_limit_exceeded", "rate_limit_error"))
        w.reactor.advance(0.999)
        self.assertEqual(w.creates(), before + 1)
        w.reactor.advance(0.001)  # doubled: 1 s
        self.assertEqual(w.creates(), before + 2)
        w.server("response.done", response={"id": "r3", "status": "completed", "output": []})
        # A success resets the count: two more transient failures are retried again.
        w.server("response.done", response=failed("r4", "server_error", "server_error"))
        w.reactor.advance(0.5)
        self.assertEqual(w.creates(), before + 3)
        self.assertFalse(w.listener.has("failed"))

    def test_transient_exhausted_ends_the_call(self) -> None:
        w = Wire()
        for n in range(3):
            w.server("response.done", response=failed(f"r{n}", "server_error", "server_error"))
            w.reactor.advance(10)
        self.assertTrue(w.listener.has("failed"))
        self.assertEqual(w.errors("server_error"), 3)
        self.assertEqual(w.reactor.getDelayedCalls(), [])

    def test_caller_speech_cancels_the_retry(self) -> None:
        w = Wire()
        before = w.creates()
        w.server("response.done", response=failed("r1", "server_error", "server_error"))
        w.server("input_audio_buffer.speech_started", audio_start_ms=10, item_id="u1")
        w.reactor.advance(10)
        self.assertEqual(w.creates(), before)


class SessionLimitTests(unittest.TestCase):
    def test_recognised_by_code(self) -> None:
        h = DialectHarness(self)
        h.configure()
        self.assertEqual(h.server("error", error={"type": "invalid_request_error", "code": "session_expired",
                                                  "message": "expired"}), [SessionExpired("expired")])

    def test_recognised_by_message(self) -> None:
        h = DialectHarness(self)
        h.configure()
        message = "Your session hit the maximum duration of 60 minutes."
        self.assertEqual(h.server("error", error={"type": "invalid_request_error", "message": message}),
                         [SessionExpired(message)])
        self.assertEqual(h.server("error", error={"type": "invalid_request_error", "code": "other_code",
                                                  "message": "Session hit the MAXIMUM DURATION"}),
                         [SessionExpired("Session hit the MAXIMUM DURATION")])

    def test_message_triggers_the_immediate_redial(self) -> None:
        w = Wire(replace(OPTIONS, reconnect_backoff_ms=5000, reconnect_max_backoff_ms=5000))
        dials = len(w.reactor.tcpClients)
        w.server("error", error={"type": "invalid_request_error",
                                 "message": "Your session hit the maximum duration of 60 minutes."})
        w.session.connection_closed(w.proto, 1000, "bye")
        w.reactor.advance(0)
        self.assertEqual(len(w.reactor.tcpClients), dials + 1)  # no backoff

    def test_close_reason_alone_triggers_the_immediate_redial(self) -> None:
        w = Wire(replace(OPTIONS, reconnect_backoff_ms=5000, reconnect_max_backoff_ms=5000))
        dials = len(w.reactor.tcpClients)
        w.session.connection_closed(w.proto, 1000, "Your session hit the maximum duration of 60 minutes.")
        w.reactor.advance(0)
        self.assertEqual(len(w.reactor.tcpClients), dials + 1)


class TranscriptTests(unittest.TestCase):
    def test_partials_accumulate_per_item_and_never_say_none(self) -> None:
        h = DialectHarness(self)
        h.configure()
        base = {"response_id": "r", "output_index": 0, "content_index": 0}
        h.server("response.output_audio_transcript.delta", **base, item_id="a", delta="Hel")
        h.server("response.output_audio_transcript.delta", **base, item_id="b", delta="Other")
        events = h.server("response.output_audio_transcript.delta", **base, item_id="a", delta="lo there")
        self.assertEqual(events, [TranscriptReceived("bot", "Hello there", False, "a")])
        self.assertEqual(h.dialect.receive('{"type":"response.output_audio_transcript.delta","response_id":"r",'
                                           '"item_id":"a","output_index":0,"content_index":0,"delta":null}'), [])
        h.server("conversation.item.input_audio_transcription.delta", item_id="u", content_index=0, delta="I ")
        events = h.server("conversation.item.input_audio_transcription.delta", item_id="u", content_index=0,
                          delta="want")
        self.assertEqual([e.text for e in events], ["I want"])

    def test_caller_times_on_the_session_timeline_across_a_reconnect(self) -> None:
        w = Wire(replace(OPTIONS, transcription_language="de"))
        for _ in range(100):  # 2 s of caller audio on the first connection
            w.session.send_audio(b"\xff" * 160)
        w.server("input_audio_buffer.speech_started", audio_start_ms=500, item_id="u1")
        w.server("input_audio_buffer.speech_stopped", audio_end_ms=1500, item_id="u1")
        w.server("conversation.item.input_audio_transcription.delta", item_id="u1", content_index=0, delta="Hal")
        w.server("conversation.item.input_audio_transcription.completed", item_id="u1", content_index=0,
                 transcript="Hallo", usage={"type": "duration", "seconds": 1.0})
        partial, final = w.listener.transcripts
        self.assertEqual((partial.text, partial.final, partial.start_ms, partial.end_ms), ("Hal", False, 500, 1500))
        self.assertEqual((final.text, final.start_ms, final.end_ms, final.language, final.words),
                         ("Hallo", 500, 1500, "de", ()))
        # A reconnect: 2 s went to the first connection, 0.5 s is held while redialling.
        w.session.connection_closed(w.proto, 1006, "lost")
        for _ in range(25):
            w.session.send_audio(b"\xff" * 160)
        w.reactor.advance(1)
        proto = w.reactor.tcpClients[-1][2].buildProtocol(None)
        proto.sendMessage = lambda payload, isBinary=False: None
        proto.sendClose = lambda code=None, reason=None: None
        proto.dropConnection = lambda abort=False: None
        proto.onOpen()
        w.proto = proto
        w.configure()
        w.session.set_language("fr-FR")
        w.server("input_audio_buffer.speech_started", audio_start_ms=100, item_id="u2")
        w.server("input_audio_buffer.speech_stopped", audio_end_ms=400, item_id="u2")
        w.server("conversation.item.input_audio_transcription.completed", item_id="u2", content_index=0,
                 transcript="Bonjour", usage={"type": "duration", "seconds": 1.0})
        last = w.listener.transcripts[-1]
        self.assertEqual((last.start_ms, last.end_ms, last.language), (2100, 2400, "fr-FR"))


class HeardTranscriptTests(unittest.TestCase):
    def bot_item(self, w: Wire, ms: int, item: str = "item_1", response: str = "resp_1") -> None:
        w.server("response.created", response={"id": response, "object": "realtime.response",
                                                "status": "in_progress", "output": []})
        w.server("response.output_audio.delta", response_id=response, item_id=item, output_index=0,
                 content_index=0, delta=base64.b64encode(b"\x10" * 8 * ms).decode())

    def test_final_after_the_cut_is_cut_to_what_was_heard_and_replayed_so(self) -> None:
        w = Wire()
        self.bot_item(w, 4000)
        w.server("response.output_audio_transcript.delta", response_id="resp_1", item_id="item_1",
                 output_index=0, content_index=0, delta="One two three four")
        w.session.interrupt("item_1", 1000)
        w.server("response.output_audio_transcript.delta", response_id="resp_1", item_id="item_1",
                 output_index=0, content_index=0, delta=" five six")  # dropped: not said
        text = "One two three four five six seven eight"
        w.server("response.output_audio_transcript.done", response_id="resp_1", item_id="item_1",
                 output_index=0, content_index=0, transcript=text)
        final = w.listener.transcripts[-1]
        self.assertTrue(final.final)
        self.assertEqual(final.text, "One two")  # 1/4 of the audio: 9 of 39 chars, back to a word
        self.assertNotIn("five", " ".join(t.text for t in w.listener.transcripts))
        self.assertEqual(self.replayed(w), "assistant: One two")

    def test_final_before_the_cut_is_cut_in_the_replayed_history(self) -> None:
        w = Wire()
        self.bot_item(w, 2000)
        w.server("response.output_audio_transcript.done", response_id="resp_1", item_id="item_1",
                 output_index=0, content_index=0, transcript="Alpha beta gamma delta")
        w.server("response.done", response={"id": "resp_1", "status": "completed", "output": []})
        w.session.interrupt("item_1", 1000)
        self.assertEqual(self.replayed(w), "assistant: Alpha beta")

    def test_nothing_heard_nothing_said(self) -> None:
        w = Wire()
        self.bot_item(w, 2000)
        w.session.interrupt("item_1", 0)
        w.server("response.output_audio_transcript.done", response_id="resp_1", item_id="item_1",
                 output_index=0, content_index=0, transcript="Never heard")
        self.assertFalse(any(t.final for t in w.listener.transcripts))
        self.assertEqual(self.replayed(w), "")

    def replayed(self, w: Wire) -> str:
        """The history lines in the system note of the connection after a reconnect."""
        w.session.connection_closed(w.proto, 1006, "lost")
        w.reactor.advance(1)
        sent: list[dict[str, Any]] = []
        proto = w.reactor.tcpClients[-1][2].buildProtocol(None)
        proto.sendMessage = lambda payload, isBinary=False: sent.append(json.loads(payload))
        proto.sendClose = lambda code=None, reason=None: None
        proto.dropConnection = lambda abort=False: None
        proto.onOpen()
        w.proto, w.sent = proto, sent
        w.configure()
        notes = [e["item"]["content"][0]["text"] for e in sent if e["type"] == "conversation.item.create"]
        (note,) = notes
        _, _, history = note.partition("Recent conversation, oldest first:\n")
        return history


class ToolTests(unittest.TestCase):
    def test_tools_in_the_session_update(self) -> None:
        h = DialectHarness(self, tools=(TOOL,))
        h.server("session.created", session={"type": "realtime"})
        (update,) = h.sent()
        self.assertEqual(update["session"]["tools"], [{"type": "function", "name": "transfer_call",
                                                       "description": "Transfer the caller to a human.",
                                                       "parameters": dict(TOOL.parameters)}])
        self.assertEqual(update["session"]["tool_choice"], "auto")

    def test_each_call_reported_once_and_result_answered(self) -> None:
        h = DialectHarness(self, tools=(TOOL,))
        h.configure()
        h.response_created("resp_1")
        args = {"response_id": "resp_1", "item_id": "fc_1", "output_index": 0, "call_id": "call_1",
                "name": "transfer_call", "arguments": '{"queue":"billing"}'}
        self.assertEqual(h.server("response.function_call_arguments.done", **args), [])
        events = h.server("response.output_item.done", response_id="resp_1", output_index=0, item=function_call())
        self.assertEqual(events, [ToolCalled("call_1", "transfer_call", '{"queue":"billing"}')])
        h.dialect.tool_result("call_1", '{"ok":true}')
        sent = h.sent()
        self.assertEqual([e["type"] for e in sent], ["conversation.item.create"])  # response still active
        self.assertEqual(sent[0]["item"], {"type": "function_call_output", "call_id": "call_1",
                                           "output": '{"ok":true}'})
        events = h.server("response.done", response={"id": "resp_1", "status": "completed",
                                                      "output": [function_call()]})
        self.assertFalse(any(isinstance(e, ToolCalled) for e in events))  # reported once
        self.assertEqual([e["type"] for e in h.sent()], ["response.create"])

    def test_incomplete_call_not_reported(self) -> None:
        h = DialectHarness(self, tools=(TOOL,))
        h.configure()
        events = h.server("response.done", response={"id": "r", "status": "cancelled",
                                                      "output": [function_call(status="incomplete")]})
        self.assertFalse(any(isinstance(e, ToolCalled) for e in events))

    def test_session_reports_call_and_result_after_reconnect_is_a_note(self) -> None:
        w = Wire(tools=(TOOL,))
        (update,) = [e for e in w.sent if e["type"] == "session.update"]
        self.assertEqual(update["session"]["tools"][0]["name"], "transfer_call")
        w.server("response.output_item.done", response_id="resp_1", output_index=0, item=function_call())
        self.assertTrue(w.listener.has("tool_call", "call_1", "transfer_call", '{"queue":"billing"}'))
        w.session.connection_closed(w.proto, 1006, "lost")
        w.session.tool_result("call_1", '{"ok":true}')  # while reconnecting: kept
        w.reactor.advance(1)
        sent: list[dict[str, Any]] = []
        proto = w.reactor.tcpClients[-1][2].buildProtocol(None)
        proto.sendMessage = lambda payload, isBinary=False: sent.append(json.loads(payload))
        proto.sendClose = lambda code=None, reason=None: None
        proto.dropConnection = lambda abort=False: None
        proto.onOpen()
        w.proto, w.sent = proto, sent
        w.configure()
        (update,) = [e for e in sent if e["type"] == "session.update"]
        self.assertEqual(update["session"]["tools"][0]["name"], "transfer_call")  # tools re-sent
        texts = [e["item"]["content"][0]["text"] for e in sent if e["type"] == "conversation.item.create"]
        self.assertTrue(any("transfer_call" in t and '{"ok":true}' in t for t in texts))
        self.assertEqual(sent[-1]["type"], "response.create")

    def test_set_language_updates_transcription(self) -> None:
        w = Wire()
        w.session.set_language("es-MX")
        update = w.sent[-1]
        self.assertEqual(update["type"], "session.update")
        self.assertEqual(update["session"]["audio"]["input"]["transcription"], {"model": "whisper-1",
                                                                                "language": "es"})
