"""Whole-session transcripts of Asterisk ``chan_websocket`` in both control formats (plain text
and JSON): every malformed kind, wrong-sized and empty binary frames, unknown events counted and
ignored, XOFF/XON as playback pauses, the outbound commands, and the upgrade check."""

from __future__ import annotations

import base64
import json

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.options import OptionError
from mediaproxy.outcome import Outcome
from mediaproxy.platforms import asterisk
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformError,
    PlatformEvent,
    PlaybackPaused,
    ProtocolViolation,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MAX_MESSAGE_CHARS
from tests.pbx_dialects import (
    ASTERISK_SLIN16_JSON,
    ASTERISK_SLIN_PLAIN,
    ASTERISK_ULAW_JSON,
    ASTERISK_ULAW_PLAIN,
    CHANNEL_ID,
    AsteriskDialect,
    frame,
)


class AsteriskSessionTests(SynchronousTestCase):
    dialect: AsteriskDialect = ASTERISK_SLIN16_JSON

    def make(self, **options: object) -> asterisk.AsteriskSession:
        s = asterisk.new_session(asterisk.AsteriskOptions(**options))  # type: ignore[arg-type]
        s.bind_upgrade(UpgradeRequest("/asterisk?campaign=spring&lang=en", "proxy", {}))
        return s

    def started(self, **options: object) -> asterisk.AsteriskSession:
        s = self.make(**options)
        s.receive_text(self.dialect.media_start())
        return s

    def violation(self, s: asterisk.AsteriskSession, message: str | bytes, kind: str) -> None:
        events = s.receive_text(message) if isinstance(message, str) else s.receive_binary(message)
        self.assertEqual([type(e) for e in events], [ProtocolViolation], events)
        self.assertEqual(events[0].kind, kind)  # type: ignore[union-attr]
        self.assertEqual(s.receive_binary(frame(self.dialect.fmt, 1)), [])
        self.assertEqual(s.receive_text(self.dialect.dtmf("1")), [])
        s.play(frame(self.dialect.fmt, 2))
        s.mark("0:20")
        s.clear()
        self.assertEqual(s.take_output(), [])

    def test_whole_session(self) -> None:
        d = self.dialect
        s = self.make()
        events: list[PlatformEvent] = list(s.receive_text(d.media_start()))
        expected: list[PlatformEvent] = [
            CallStarted(CHANNEL_ID, d.fmt, d.metadata({"campaign": "spring", "lang": "en"}))]
        for i in range(30):
            f = frame(d.fmt, i)
            events += s.receive_binary(f)
            expected.append(CallerAudio(f))
            if i == 5:
                events += s.receive_text(d.dtmf("5")) + s.receive_text(d.dtmf("#"))
                expected += [DtmfReceived("5"), DtmfReceived("#")]
            if i == 10:
                events += s.receive_text(d.event("MEDIA_XOFF")) + s.receive_text(d.event("MEDIA_XOFF"))
                expected.append(PlaybackPaused(True))  # changes only
                events += s.receive_text(d.event("MEDIA_XON"))
                expected.append(PlaybackPaused(False))
            if i == 20:
                events += s.receive_text(d.mark_echo("3:400"))
                expected.append(MarkPlayed("3:400"))
                events += s.receive_text(d.event("MEDIA_BUFFERING_COMPLETED"))
                events += s.receive_text(d.event("QUEUE_DRAINED"))
                events += s.receive_text(d.event("STATUS", queue_length=43, xon_level=800))
                events += s.receive_text(d.event("FUTURE_THING", x=1))
                expected.append(MessageIgnored("unknown_event"))
                events += s.receive_binary(b"")
                expected.append(MessageIgnored("empty_frame"))
        self.assertEqual(events, expected)
        self.assertEqual(s.take_output(), [])  # nothing is owed to Asterisk

    def test_audio_passes_through_uncopied(self) -> None:
        s = self.started()
        f = frame(self.dialect.fmt, 4)
        [event] = s.receive_binary(f)
        self.assertTrue(event.data is f)  # type: ignore[union-attr]

    def test_any_whole_sample_frame_size(self) -> None:
        s = self.started()
        for ms in (10, 20, 30, 100):
            f = frame(self.dialect.fmt, ms, ms=ms)
            self.assertEqual(s.receive_binary(f), [CallerAudio(f)])

    def test_outbound_in_the_call_format(self) -> None:
        d = self.dialect
        s = self.started(marks="on")
        packet = frame(d.fmt, 9)
        s.play(packet)
        s.mark("1:40")
        s.clear()
        s.hangup(Outcome.BOT_HANGUP)
        audio, mark, flush, hangup = s.take_output()
        self.assertTrue(audio is packet)  # whole optimal frames: sent as they came
        self.assertEqual(d.command(mark), ("MARK_MEDIA", "1:40"))  # type: ignore[arg-type]
        self.assertEqual(d.command(flush), ("FLUSH_MEDIA", None))  # type: ignore[arg-type]
        self.assertEqual(d.command(hangup), ("HANGUP", None))  # type: ignore[arg-type]
        if d.json:
            self.assertEqual(json.loads(flush), {"command": "FLUSH_MEDIA"})  # type: ignore[arg-type]
        else:
            self.assertEqual((flush, hangup), ("FLUSH_MEDIA", "HANGUP"))
        self.assertEqual(s.receive_binary(frame(d.fmt, 1)), [])

    def test_partial_frames_are_padded_to_whole_frames(self) -> None:
        s = self.started()
        size = self.dialect.fmt.bytes_for_ms(20)
        s.play(b"\x01\x02" * (size // 2 + 10))
        [out] = s.take_output()
        self.assertEqual(len(out), 2 * size)
        self.assertEqual(out[size + 20:], self.dialect.fmt.silence(size - 20))

    def test_marks_follow_the_control_format(self) -> None:
        # auto: marks on JSON calls only (MARK_MEDIA and JSON both arrived in 20.18/22.8/23.2).
        self.assertEqual(self.started().capabilities.has_marks, self.dialect.json)
        self.assertTrue(self.started(marks="on").capabilities.has_marks)
        s = self.started(marks="off")
        self.assertFalse(s.capabilities.has_marks)
        s.mark("0:20")
        self.assertEqual(s.take_output(), [])

    def test_answer_option(self) -> None:
        out = self.started(answer=True).take_output()
        self.assertEqual([self.dialect.command(m) for m in out], [("ANSWER", None)])  # type: ignore[arg-type]

    def test_nothing_before_start(self) -> None:
        s = self.make()
        s.play(frame(self.dialect.fmt, 1))
        s.mark("m")
        s.clear()
        s.hangup(Outcome.DRAINED)
        self.assertEqual(s.take_output(), [])

    def test_errors_are_reported(self) -> None:
        s = self.started()
        d = self.dialect
        [error] = s.receive_text(d.event("ERROR", error_text="FLUSH_MEDIA not supported in passthrough mode")
                                 if d.json else f"ERROR channel_id:{CHANNEL_ID} error_text:FLUSH_MEDIA not "
                                 "supported in passthrough mode")
        self.assertEqual(error, PlatformError("command_error", "FLUSH_MEDIA not supported in passthrough mode"))

    def test_unknown_events_before_and_after_start(self) -> None:
        s = self.make()
        self.assertEqual(s.receive_text(self.dialect.event("SOMETHING_NEW")), [MessageIgnored("unknown_event")])
        s.receive_text(self.dialect.media_start())
        self.assertEqual(s.receive_text(self.dialect.event("MEDIA_END")), [MessageIgnored("unknown_event")])
        f = frame(self.dialect.fmt, 3)
        self.assertEqual(s.receive_binary(f), [CallerAudio(f)])

    # every malformed kind
    def test_media_before_start(self) -> None:
        self.violation(self.make(), frame(self.dialect.fmt, 1), "media_before_start")

    def test_events_before_start(self) -> None:
        for name in ("DTMF_END", "MEDIA_XOFF", "MEDIA_MARK_PROCESSED"):
            self.violation(self.make(), self.dialect.event(name), "event_before_start")

    def test_duplicate_start(self) -> None:
        self.violation(self.started(), self.dialect.media_start(), "duplicate_start")

    def test_unsupported_format(self) -> None:
        for bad in ({"format": "opus"}, {"format": "slin44"}, {"format": None}, {"optimal_frame_size": 0},
                    {"optimal_frame_size": 7 if self.dialect.fmt.sample_bytes == 2 else 150},
                    {"optimal_frame_size": "x"}, {"optimal_frame_size": None}):
            self.violation(self.make(), self.dialect.media_start(**bad), "unsupported_format")

    def test_start_without_ids(self) -> None:
        self.violation(self.make(), self.dialect.media_start(channel_id=None, connection_id=None, channel=None),
                       "bad_message")

    def test_bad_dtmf(self) -> None:
        for digit in ("", "x", "55"):
            self.violation(self.started(), self.dialect.dtmf(digit), "wrong_type")

    def test_not_a_control_message(self) -> None:
        for message in ("", "media_start foo", "{}" if self.dialect.json else "!!", "123 x:y"):
            self.violation(self.started(), message, "bad_message")

    def test_plain_fields_must_be_pairs(self) -> None:
        self.violation(self.make(), "MEDIA_START connection_id:a format:slin garbage", "bad_message")
        self.violation(self.started(), "DTMF_END 5", "bad_message")

    def test_bad_json(self) -> None:
        self.violation(self.started(), "{nope", "bad_json")
        self.violation(self.make(), "{" * 30000 + "}" * 30000, "bad_json")
        self.violation(self.started(), '{"event": 5}', "bad_message")

    def test_oversize(self) -> None:
        self.violation(self.started(), "X " + "x" * MAX_MESSAGE_CHARS, "oversize")
        self.violation(self.started(), '{"event":"X","p":"' + "x" * MAX_MESSAGE_CHARS + '"}', "oversize")

    def test_odd_sized_and_oversize_frames(self) -> None:
        if self.dialect.fmt.sample_bytes == 2:
            self.violation(self.started(), frame(self.dialect.fmt, 1)[:-1], "bad_payload")
        self.violation(self.started(), frame(self.dialect.fmt, 1, ms=600), "oversize_frame")

    def test_json_only_shapes(self) -> None:
        s = self.make()
        start = json.loads(ASTERISK_SLIN16_JSON.media_start())
        start["channel_variables"] = ["x"]
        self.violation(s, json.dumps(start), "wrong_type")
        s = asterisk.AsteriskSession()
        s.receive_text(ASTERISK_SLIN16_JSON.media_start())
        self.violation(s, json.dumps({"event": "MEDIA_MARK_PROCESSED", "correlation_id": 5}), "wrong_type")

    def test_mark_echo_without_id_is_not_ours(self) -> None:
        self.assertEqual(self.started().receive_text(self.dialect.mark_echo("")), [])


class AsteriskPlainTests(AsteriskSessionTests):
    dialect = ASTERISK_SLIN_PLAIN


class AsteriskUlawJsonTests(AsteriskSessionTests):
    dialect = ASTERISK_ULAW_JSON


class AsteriskUlawPlainTests(AsteriskSessionTests):
    dialect = ASTERISK_ULAW_PLAIN


class AsteriskOldVersionTests(SynchronousTestCase):
    def test_20_16_media_start(self) -> None:
        """20.16/22.6/23.0: no channel_id, plain text only; DTMF_END without channel_id."""
        s = asterisk.AsteriskSession()
        [started] = s.receive_text("MEDIA_START connection_id:c-1 channel:WebSocket/media1-01 format:ulaw "
                                   "optimal_frame_size:160 ptime:20")
        self.assertEqual(started.call_id, "c-1")  # type: ignore[union-attr]
        self.assertFalse(s.capabilities.has_marks)
        self.assertEqual(s.receive_text("DTMF_END digit:*"), [DtmfReceived("*")])


# --- upgrade check ------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def request(**headers: str) -> UpgradeRequest:
    return UpgradeRequest(target="/asterisk", host="proxy.example.com", headers=headers)


class AsteriskUpgradeTests(SynchronousTestCase):
    options = asterisk.AsteriskOptions(username="ast", password="pw")

    def test_basic_auth(self) -> None:
        good = "Basic " + base64.b64encode(b"ast:pw").decode()
        asterisk.check_upgrade(request(authorization=good), self.options, NOW)
        for bad in ("", "Basic " + base64.b64encode(b"ast:px").decode(), "Bearer x"):
            headers = {"authorization": bad} if bad else {}
            self.assertRaises(UpgradeRefused, asterisk.check_upgrade, request(**headers), self.options, NOW)

    def test_no_credentials_allow_anything(self) -> None:
        asterisk.check_upgrade(request(), asterisk.AsteriskOptions(), NOW)

    def test_both_halves_required(self) -> None:
        self.assertRaises(OptionError, asterisk.validate, asterisk.AsteriskOptions(username="ast"), "")

    def test_subprotocol(self) -> None:
        self.assertEqual(asterisk.ASTERISK.subprotocols, ("media",))
