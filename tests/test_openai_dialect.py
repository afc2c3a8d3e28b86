"""Sans-IO tests of the OpenAI Realtime GA dialect: transcripts of server events in, neutral
events and client messages out. Every client message is checked against the ``openai``
package's GA models (unknown keys rejected)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

from twisted.trial import unittest

from mediaproxy.audio.format import ALAW_8K, L16_24K, MULAW_8K, AudioFormat
from mediaproxy.backends.openai_catalogue import FATAL_ERROR_CODES, IGNORED_EVENTS, USAGE_TOKEN_KINDS, usage_tokens
from mediaproxy.backends.openai_dialect import RealtimeDialect
from mediaproxy.backends.openai_events import (
    TOKEN_KIND_LABELS,
    AudioFinished,
    AudioReceived,
    RateLimitsReported,
    ResponseEnded,
    ServerError,
    SessionExpired,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    TranscriptReceived,
    UnknownEventReceived,
    UsageReported,
    error_code_label,
)
from mediaproxy.backends.openai_session_config import RealtimeOptions, wire_format
from mediaproxy.testing.realtime_schema import CLIENT_EVENT, check_event, server_event_types

OPTIONS = RealtimeOptions(api_key="k", instructions="Be brief.")
BETA_KEYS = {"input_audio_format", "output_audio_format", "modalities", "voice", "turn_detection",
             "input_audio_transcription", "max_response_output_tokens"}


class DialectHarness:
    """Feeds server events to a dialect and decodes (and validates) what it sends."""

    def __init__(self, test: unittest.TestCase, options: RealtimeOptions = OPTIONS,
                 fmt: AudioFormat = MULAW_8K, **kwargs: Any) -> None:
        self.test = test
        self.fmt = fmt
        self.dialect = RealtimeDialect(options, fmt, **kwargs)
        self.seq = 0

    def server(self, event_type: str, **fields: Any) -> list[Any]:
        self.seq += 1
        return self.dialect.receive(json.dumps({"type": event_type, "event_id": f"s{self.seq}", **fields}))

    def sent(self) -> list[dict[str, Any]]:
        events = [json.loads(m) for m in self.dialect.take_output()]
        for event in events:
            self.test.assertEqual(check_event(CLIENT_EVENT, event), [], event)
            self.test.assertTrue(event.get("event_id"))
        return events

    def configure(self) -> list[dict[str, Any]]:
        """session.created → session.update → session.updated (as asked); returns what was sent
        after session.updated."""
        self.server("session.created", session={"type": "realtime"})
        (update,) = self.sent()
        events = self.server("session.updated", session=update["session"])
        self.test.assertIsInstance(events[0], SessionReady)
        return self.sent()

    def delta(self, item_id: str, data: bytes, response_id: str = "resp_1") -> list[Any]:
        return self.server("response.output_audio.delta", response_id=response_id, item_id=item_id,
                           output_index=0, content_index=0, delta=base64.b64encode(data).decode())

    def response_created(self, response_id: str = "resp_1") -> None:
        self.server("response.created", response={"id": response_id, "status": "in_progress"})


class SessionUpdateTests(unittest.TestCase):
    def test_update_is_ga_shaped_for_each_format(self) -> None:
        for fmt, wire in ((MULAW_8K, "audio/pcmu"), (ALAW_8K, "audio/pcma"), (L16_24K, "audio/pcm")):
            h = DialectHarness(self, fmt=fmt)
            self.assertEqual(h.server("session.created", session={"type": "realtime"}), [])
            (update,) = h.sent()
            session = update["session"]
            self.assertEqual(update["type"], "session.update")
            self.assertEqual(session["type"], "realtime")
            self.assertEqual(session["output_modalities"], ["audio"])
            self.assertEqual(session["audio"]["input"]["format"]["type"], wire)
            self.assertEqual(session["audio"]["output"]["format"]["type"], wire)
            self.assertEqual(session["audio"]["output"]["voice"], "marin")
            self.assertEqual(session["instructions"], "Be brief.")
            self.assertFalse(BETA_KEYS & set(session), "beta keys in a GA session.update")
        self.assertEqual(wire_format(L16_24K), {"type": "audio/pcm", "rate": 24000})

    def test_turn_detection_knobs(self) -> None:
        options = replace(OPTIONS, vad_threshold=0.7, prefix_padding_ms=200, silence_duration_ms=650,
                          idle_timeout_ms=6000, interrupt_response=False)
        h = DialectHarness(self, options)
        h.server("session.created", session={})
        detection = h.sent()[0]["session"]["audio"]["input"]["turn_detection"]
        self.assertEqual(detection, {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 200,
                                     "silence_duration_ms": 650, "create_response": True,
                                     "interrupt_response": False, "idle_timeout_ms": 6000})
        h = DialectHarness(self, replace(OPTIONS, turn_detection="semantic_vad", eagerness="low"))
        h.server("session.created", session={})
        detection = h.sent()[0]["session"]["audio"]["input"]["turn_detection"]
        self.assertEqual(detection, {"type": "semantic_vad", "eagerness": "low", "create_response": True,
                                     "interrupt_response": True})

    def test_transcription_and_noise_reduction(self) -> None:
        h = DialectHarness(self, replace(OPTIONS, transcription_language="de", noise_reduction="far_field"))
        h.server("session.created", session={})
        audio_in = h.sent()[0]["session"]["audio"]["input"]
        self.assertEqual(audio_in["transcription"], {"model": "gpt-4o-mini-transcribe", "language": "de"})
        self.assertEqual(audio_in["noise_reduction"], {"type": "far_field"})
        h = DialectHarness(self, replace(OPTIONS, transcription_model="", noise_reduction="off"))
        h.server("session.created", session={})
        audio_in = h.sent()[0]["session"]["audio"]["input"]
        self.assertNotIn("transcription", audio_in)
        self.assertNotIn("noise_reduction", audio_in)

    def test_session_update_sent_once(self) -> None:
        h = DialectHarness(self)
        h.server("session.created", session={})
        h.server("session.created", session={})
        self.assertEqual(len(h.sent()), 1)

    def test_format_mismatch_is_fatal(self) -> None:
        h = DialectHarness(self)
        h.server("session.created", session={})
        (update,) = h.sent()
        effective = json.loads(json.dumps(update["session"]))
        effective["audio"]["output"]["format"] = {"type": "audio/pcm", "rate": 24000}
        (error,) = h.server("session.updated", session=effective)
        self.assertIsInstance(error, ServerError)
        self.assertEqual((error.code, error.fatal), ("format_mismatch", True))
        self.assertIn("audio.output.format is audio/pcm, asked for audio/pcmu", error.message)
        self.assertFalse(h.dialect.ready)

    def test_missing_format_is_a_mismatch(self) -> None:
        h = DialectHarness(self)
        h.server("session.created", session={})
        h.sent()
        (error,) = h.server("session.updated", session={"type": "realtime"})
        self.assertTrue(error.fatal)

    def test_ready_without_greeting_sends_nothing(self) -> None:
        h = DialectHarness(self)
        self.assertEqual(h.configure(), [])
        self.assertTrue(h.dialect.ready)

    def test_greeting(self) -> None:
        h = DialectHarness(self, replace(OPTIONS, greeting="Thanks for calling Acme."))
        item, create = h.configure()
        self.assertEqual(item["type"], "conversation.item.create")
        self.assertEqual(item["item"]["role"], "system")
        self.assertIn("Thanks for calling Acme.", item["item"]["content"][0]["text"])
        self.assertEqual(create["type"], "response.create")

    def test_resume_sends_note_and_no_greeting(self) -> None:
        h = DialectHarness(self, replace(OPTIONS, greeting="Hello."), resumed=True,
                           resume_context="caller: I need a refund")
        (note,) = h.configure()
        self.assertEqual(note["item"]["role"], "system")
        self.assertIn("continue the conversation", note["item"]["content"][0]["text"])
        self.assertIn("caller: I need a refund", note["item"]["content"][0]["text"])

    def test_effective_interrupt_response_is_used(self) -> None:
        h = DialectHarness(self)
        h.server("session.created", session={})
        (update,) = h.sent()
        effective = json.loads(json.dumps(update["session"]))
        effective["audio"]["input"]["turn_detection"]["interrupt_response"] = False
        (ready,) = h.server("session.updated", session=effective)
        self.assertFalse(ready.interrupt_response)

    def test_event_ids_are_unique_and_prefixed(self) -> None:
        h = DialectHarness(self, event_prefix="c7")
        h.configure()
        for _ in range(3):
            h.dialect.send_audio(b"\xff" * 160)
        ids = [e["event_id"] for e in h.sent()]
        self.assertEqual(len(set(ids)), 3)
        self.assertTrue(all(i.startswith("c7_") for i in ids))


class InputAudioTests(unittest.TestCase):
    def test_each_frame_forwarded_at_once_by_default(self) -> None:
        h = DialectHarness(self)
        h.configure()
        frames = [bytes([i]) * 160 for i in range(3)]
        for frame in frames:
            h.dialect.send_audio(frame)
        sent = h.sent()
        self.assertEqual([e["type"] for e in sent], ["input_audio_buffer.append"] * 3)
        self.assertEqual([base64.b64decode(e["audio"]) for e in sent], frames)
        self.assertFalse(h.dialect.has_pending_audio)

    def test_coalescing(self) -> None:
        h = DialectHarness(self, replace(OPTIONS, input_chunk_ms=60))
        h.configure()
        audio = bytes(range(256)) * 5  # 1280 bytes = 160 ms of µ-law
        for i in range(0, len(audio), 160):
            h.dialect.send_audio(audio[i:i + 160])
        sent = [base64.b64decode(e["audio"]) for e in h.sent()]
        self.assertEqual([len(c) for c in sent], [480, 480])
        self.assertTrue(h.dialect.has_pending_audio)
        h.dialect.flush_audio()
        sent += [base64.b64decode(e["audio"]) for e in h.sent()]
        self.assertEqual(b"".join(sent), audio)
        h.dialect.flush_audio()
        self.assertEqual(h.sent(), [])

    def test_pcm_chunk_size_follows_format(self) -> None:
        h = DialectHarness(self, replace(OPTIONS, input_chunk_ms=40), fmt=L16_24K)
        h.configure()
        h.dialect.send_audio(b"\x01\x00" * 480)  # 20 ms
        self.assertEqual(h.sent(), [])
        h.dialect.send_audio(b"\x01\x00" * 480)
        (append,) = h.sent()
        self.assertEqual(len(base64.b64decode(append["audio"])), 1920)


class OutputAudioTests(unittest.TestCase):
    def test_deltas_decoded_and_finished(self) -> None:
        h = DialectHarness(self)
        h.configure()
        h.response_created()
        data = bytes(range(200))
        self.assertEqual(h.delta("item_1", data), [AudioReceived("item_1", "resp_1", data)])
        events = h.server("response.output_audio.done", response_id="resp_1", item_id="item_1",
                          output_index=0, content_index=0)
        self.assertEqual(events, [AudioFinished("item_1")])
        events = h.server("response.done", response={"id": "resp_1", "status": "completed"})
        self.assertEqual(events, [ResponseEnded("resp_1", "completed", "")])
        self.assertFalse(h.dialect.response_active)

    def test_failed_response_without_audio_done_still_finishes_item(self) -> None:
        h = DialectHarness(self)
        h.configure()
        h.response_created()
        h.delta("item_1", b"\x00" * 80)
        self.assertEqual(h.dialect.unfinished_items(), ["item_1"])
        events = h.server("response.done", response={
            "id": "resp_1", "status": "failed", "status_details": {"type": "failed"}})
        self.assertEqual(events[0], AudioFinished("item_1"))
        self.assertEqual(events[1], ResponseEnded("resp_1", "failed", ""))
        self.assertEqual(h.dialect.unfinished_items(), [])

    def test_usage_and_rate_limits(self) -> None:
        h = DialectHarness(self)
        h.configure()
        usage = {"total_tokens": 60, "input_tokens": 20, "output_tokens": 40,
                 "input_token_details": {"audio_tokens": 15, "text_tokens": 5, "cached_tokens": 0},
                 "output_token_details": {"audio_tokens": 30, "text_tokens": 10}}
        events = h.server("response.done", response={"id": "r", "status": "completed", "usage": usage})
        self.assertIn(UsageReported({"input_audio": 15, "input_text": 5, "output_audio": 30, "output_text": 10}),
                      events)
        events = h.server("rate_limits.updated", rate_limits=[
            {"name": "requests", "limit": 100, "remaining": 99, "reset_seconds": 1.0},
            {"name": "tokens", "limit": 9000, "remaining": 8000, "reset_seconds": 2.5}])
        self.assertEqual(events, [RateLimitsReported({"requests": 99, "tokens": 8000})])
        self.assertLessEqual({kind for _, _, kind in USAGE_TOKEN_KINDS}, TOKEN_KIND_LABELS)
        self.assertEqual(usage_tokens(None), {})
        self.assertEqual(usage_tokens({"input_token_details": "x"}), {})

    def test_transcripts(self) -> None:
        h = DialectHarness(self)
        h.configure()
        base = {"response_id": "r", "item_id": "i", "output_index": 0, "content_index": 0}
        self.assertEqual(h.server("response.output_audio_transcript.delta", **base, delta="Hel"),
                         [TranscriptReceived("bot", "Hel", False, "i")])
        self.assertEqual(h.server("response.output_audio_transcript.done", **base, transcript="Hello"),
                         [TranscriptReceived("bot", "Hello", True, "i")])
        self.assertEqual(h.server("conversation.item.input_audio_transcription.delta", item_id="u",
                                  content_index=0, delta="I wa"),
                         [TranscriptReceived("caller", "I wa", False, "u")])
        self.assertEqual(h.server("conversation.item.input_audio_transcription.completed", item_id="u",
                                  content_index=0, transcript="I want a refund",
                                  usage={"type": "duration", "seconds": 1.2}),
                         [TranscriptReceived("caller", "I want a refund", True, "u")])

    def test_speech_events(self) -> None:
        h = DialectHarness(self)
        h.configure()
        self.assertEqual(h.server("input_audio_buffer.speech_started", audio_start_ms=1200, item_id="u1"),
                         [SpeechStarted(1200)])
        self.assertEqual(h.server("input_audio_buffer.speech_stopped", audio_end_ms=2300, item_id="u1"),
                         [SpeechStopped(2300)])


class BargeInTests(unittest.TestCase):
    def playing(self, options: RealtimeOptions = OPTIONS, ms: int = 1000, done: bool = False) -> DialectHarness:
        h = DialectHarness(self, options)
        h.configure()
        h.response_created()
        h.delta("item_1", b"\x55" * (8 * ms))
        if done:
            h.server("response.output_audio.done", response_id="resp_1", item_id="item_1",
                     output_index=0, content_index=0)
        return h

    def test_vad_barge_in_truncates_at_played_position_without_cancel(self) -> None:
        h = self.playing()
        h.server("input_audio_buffer.speech_started", audio_start_ms=500, item_id="u1")
        h.dialect.interrupt("item_1", 420.7)
        (truncate,) = h.sent()  # interrupt_response: the server cancels by itself
        self.assertEqual(truncate, {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0,
                                    "audio_end_ms": 420, "event_id": truncate["event_id"]})

    def test_truncate_clamped_to_audio_received(self) -> None:
        h = self.playing(ms=300)
        h.server("input_audio_buffer.speech_started", audio_start_ms=500, item_id="u1")
        h.dialect.interrupt("item_1", 385)  # the playout's estimate overshoots what arrived
        (truncate,) = h.sent()
        self.assertEqual(truncate["audio_end_ms"], 300)

    def test_cancel_when_server_does_not_interrupt(self) -> None:
        h = self.playing(replace(OPTIONS, interrupt_response=False))
        h.server("input_audio_buffer.speech_started", audio_start_ms=500, item_id="u1")
        h.dialect.interrupt("item_1", 200)
        cancel, truncate = h.sent()  # the cancel goes out with the speech, before the bridge asks
        self.assertEqual(truncate["audio_end_ms"], 200)
        self.assertEqual(cancel["type"], "response.cancel")
        self.assertEqual(cancel["response_id"], "resp_1")

    def test_speech_cancels_even_when_nothing_was_heard(self) -> None:
        # interrupt_response off and the caller talks before any audio played: the bridge has
        # nothing to truncate and never calls interrupt(), but the answer must still stop.
        h = DialectHarness(self, replace(OPTIONS, interrupt_response=False))
        h.configure()
        h.response_created()
        self.assertEqual(h.server("input_audio_buffer.speech_started", audio_start_ms=500, item_id="u1"),
                         [SpeechStarted(500)])
        (cancel,) = h.sent()
        self.assertEqual((cancel["type"], cancel["response_id"]), ("response.cancel", "resp_1"))
        self.assertEqual(h.delta("item_1", b"\x55" * 800), [])  # in flight: dropped
        h.dialect.interrupt("item_1", 0)
        self.assertEqual(h.sent(), [])  # no second cancel

    def test_speech_with_server_interrupt_sends_nothing_but_drops_late_audio(self) -> None:
        h = DialectHarness(self, OPTIONS)
        h.configure()
        h.response_created()
        h.server("input_audio_buffer.speech_started", audio_start_ms=500, item_id="u1")
        self.assertEqual(h.sent(), [])
        self.assertEqual(h.delta("item_1", b"\x55" * 800), [])

    def test_cancel_when_interrupt_not_from_server_vad(self) -> None:
        h = self.playing()  # interrupt_response on, but no speech_started: a local barge-in
        h.dialect.interrupt("item_1", 200)
        self.assertEqual([e["type"] for e in h.sent()], ["conversation.item.truncate", "response.cancel"])

    def test_no_cancel_after_response_done(self) -> None:
        h = self.playing(replace(OPTIONS, interrupt_response=False), done=True)
        h.server("response.done", response={"id": "resp_1", "status": "completed"})
        h.dialect.interrupt("item_1", 200)
        self.assertEqual([e["type"] for e in h.sent()], ["conversation.item.truncate"])

    def test_nothing_played_no_truncate(self) -> None:
        h = self.playing(replace(OPTIONS, interrupt_response=False))
        h.dialect.interrupt("item_1", 0)
        self.assertEqual([e["type"] for e in h.sent()], ["response.cancel"])
        h = self.playing()
        h.server("input_audio_buffer.speech_started", audio_start_ms=0, item_id="u1")
        h.dialect.interrupt("item_1", 0.6)  # under one whole millisecond
        self.assertEqual(h.sent(), [])

    def test_playback_finished_no_truncate(self) -> None:
        h = self.playing(ms=500, done=True)
        h.server("response.done", response={"id": "resp_1", "status": "completed"})
        h.dialect.interrupt("item_1", 500)
        self.assertEqual(h.sent(), [])

    def test_all_received_played_but_more_coming_still_truncates(self) -> None:
        h = self.playing(ms=500)  # an underrun: the item is not finished
        h.server("input_audio_buffer.speech_started", audio_start_ms=0, item_id="u1")
        h.dialect.interrupt("item_1", 500)
        (truncate,) = h.sent()
        self.assertEqual(truncate["audio_end_ms"], 500)

    def test_late_deltas_dropped(self) -> None:
        h = self.playing()
        h.server("input_audio_buffer.speech_started", audio_start_ms=0, item_id="u1")
        h.dialect.interrupt("item_1", 100)
        self.assertEqual(h.delta("item_1", b"\x01" * 160), [])
        self.assertEqual(h.delta("item_2", b"\x01" * 160), [])  # a later item of the same response
        base = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
        self.assertEqual(h.server("response.output_audio_transcript.delta", **base, delta="more"), [])
        self.assertEqual(h.server("response.output_audio.done", **base), [])
        self.assertEqual(h.dialect.late_audio_bytes_dropped, 320)
        events = h.server("response.done", response={"id": "resp_1", "status": "cancelled",
                                                     "status_details": {"type": "cancelled",
                                                                        "reason": "turn_detected"}})
        self.assertEqual(events, [ResponseEnded("resp_1", "cancelled", "turn_detected")])
        # the next response plays normally
        h.response_created("resp_2")
        self.assertEqual(h.delta("item_3", b"\x02" * 8, "resp_2"), [AudioReceived("item_3", "resp_2", b"\x02" * 8)])

    def test_interrupt_twice_or_unknown_item_does_nothing(self) -> None:
        h = self.playing()
        h.server("input_audio_buffer.speech_started", audio_start_ms=0, item_id="u1")
        h.dialect.interrupt("item_1", 100)
        h.sent()
        h.dialect.interrupt("item_1", 150)
        h.dialect.interrupt("item_from_old_connection", 150)
        self.assertEqual(h.sent(), [])

    def test_pcm_truncate_uses_pcm_bytes(self) -> None:
        h = DialectHarness(self, fmt=L16_24K)
        h.configure()
        h.response_created()
        h.delta("item_1", b"\x00\x01" * 2400)  # 100 ms at 24 kHz
        h.server("input_audio_buffer.speech_started", audio_start_ms=0, item_id="u1")
        h.dialect.interrupt("item_1", 250)
        (truncate,) = h.sent()
        self.assertEqual(truncate["audio_end_ms"], 100)


class ErrorTests(unittest.TestCase):
    def test_malformed_messages_are_errors_not_exceptions(self) -> None:
        h = DialectHarness(self)
        h.configure()
        for message in ("not json", "[]", '{"no":"type"}', '{"type": 5}', b"\xff\xfe",
                        '{"type":"response.output_audio.delta"}',
                        '{"type":"response.output_audio.delta","item_id":"i","response_id":"r","delta":"@@@"}',
                        '{"type":"response.created","response":null}',
                        '{"type":"rate_limits.updated","rate_limits":[{"name":"tokens","remaining":"x"}]}',
                        '{"type":"response.done","response":"x"}'):
            events = h.dialect.receive(message)
            self.assertEqual(len(events), 1, message)
            self.assertIsInstance(events[0], ServerError)
            self.assertEqual(events[0].code, "malformed_event")
            self.assertFalse(events[0].fatal)

    def test_unknown_events_ignored(self) -> None:
        h = DialectHarness(self)
        self.assertEqual(h.server("conversation.item.added", item={}), [])

    def test_unknown_event_types_reported_never_fatal(self) -> None:
        h = DialectHarness(self)
        h.configure()
        self.assertEqual(h.server("response.hologram.delta", delta="x"),
                         [UnknownEventReceived("response.hologram.delta")])
        self.assertEqual(h.sent(), [])
        self.assertTrue(h.dialect.ready)
        h.response_created()
        self.assertEqual(h.delta("item_1", b"\x01" * 8), [AudioReceived("item_1", "resp_1", b"\x01" * 8)])

    def test_every_ga_server_event_is_known(self) -> None:
        # A GA event the dialect neither handles nor ignores on purpose would count as unknown.
        h = DialectHarness(self)
        ga_types = server_event_types()
        self.assertGreater(len(ga_types), 40)
        self.assertLessEqual(IGNORED_EVENTS, ga_types)
        for event_type in sorted(ga_types - IGNORED_EVENTS):
            unknown = [e for e in h.server(event_type) if isinstance(e, UnknownEventReceived)]
            self.assertEqual(unknown, [], event_type)

    def test_fatal_codes_have_their_own_label(self) -> None:
        for code in FATAL_ERROR_CODES | {"session_expired", "malformed_event", "format_mismatch"}:
            self.assertEqual(error_code_label(code), code)
        self.assertEqual(error_code_label("x" * 10000), "other")

    def test_classification(self) -> None:
        h = DialectHarness(self)
        h.configure()

        def error(code: str, **extra: Any) -> Any:
            (event,) = h.server("error", error={"type": "invalid_request_error", "code": code, "message": "m",
                                                **extra})
            return event

        self.assertEqual(error("invalid_api_key"), ServerError("invalid_api_key", "m", fatal=True))
        self.assertEqual(error("insufficient_quota"), ServerError("insufficient_quota", "m", fatal=True))
        self.assertEqual(error("response_cancel_not_active"), ServerError("response_cancel_not_active", "m"))
        self.assertEqual(error("session_expired"), SessionExpired("m"))
        (event,) = h.server("error", error={"type": "server_error", "message": "boom"})
        self.assertEqual(event, ServerError("server_error", "boom"))

    def test_rejected_session_update_is_fatal(self) -> None:
        h = DialectHarness(self)
        h.server("session.created", session={})
        (update,) = h.sent()
        (event,) = h.server("error", error={"type": "invalid_request_error", "code": "unknown_parameter",
                                            "message": "Unknown parameter", "event_id": update["event_id"]})
        self.assertTrue(event.fatal)
        self.assertIn("session.update rejected", event.message)

    def test_dtmf(self) -> None:
        h = DialectHarness(self)
        h.configure()
        h.dialect.send_dtmf("12#")
        item, create = h.sent()
        self.assertIn("12#", item["item"]["content"][0]["text"])
        self.assertEqual(create["type"], "response.create")
        h.response_created()
        h.dialect.send_dtmf("4")
        self.assertEqual([e["type"] for e in h.sent()], ["conversation.item.create"])


class ValidatorTests(unittest.TestCase):
    """The validator itself must reject what the connector must never send."""

    def test_beta_and_misspelled_events_fail(self) -> None:
        beta = {"type": "session.update", "session": {"type": "realtime", "input_audio_format": "g711_ulaw"}}
        self.assertTrue(check_event(CLIENT_EVENT, beta))
        self.assertTrue(check_event(CLIENT_EVENT, {"type": "input_audio_buffer.appendd", "audio": ""}))
        self.assertTrue(check_event(CLIENT_EVENT, {"type": "conversation.item.truncate", "item_id": "i",
                                                   "content_index": 0, "audio_end_ms": 1.5}))
        self.assertTrue(check_event(CLIENT_EVENT, {"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}))
        self.assertEqual(check_event(CLIENT_EVENT, {"type": "response.cancel"}), [])
