"""Whole-session transcripts of FreeSWITCH ``mod_audio_stream``: the optional metadata frame (JSON
or free text) or the first audio frame starts the call, every malformed kind, wrong-sized and
empty binary frames, unknown messages counted and ignored, ``streamAudio`` out, the rate from the
options or the upgrade query, and the upgrade check."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.options import OptionError
from mediaproxy.outcome import Outcome
from mediaproxy.platforms import freeswitch
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MessageIgnored,
    PlatformEvent,
    ProtocolViolation,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MAX_MESSAGE_CHARS
from tests.pbx_dialects import FREESWITCH_8K, FREESWITCH_16K, FS_UUID, FreeswitchDialect, frame


class FreeswitchSessionTests(SynchronousTestCase):
    dialect: FreeswitchDialect = FREESWITCH_8K

    def make(self, target: str = "/freeswitch") -> freeswitch.FreeswitchSession:
        s = freeswitch.new_session(freeswitch.FreeswitchOptions(sample_rate=self.dialect.fmt.rate_hz))
        s.bind_upgrade(UpgradeRequest(target, "proxy", {}))
        return s

    def started(self) -> freeswitch.FreeswitchSession:
        s = self.make()
        s.receive_text(self.dialect.metadata_text())
        return s

    def violation(self, s: freeswitch.FreeswitchSession, message: str | bytes, kind: str) -> None:
        events = s.receive_text(message) if isinstance(message, str) else s.receive_binary(message)
        self.assertEqual(type(events[-1]), ProtocolViolation, events)
        self.assertEqual(events[-1].kind, kind)  # type: ignore[union-attr]
        self.assertEqual(s.receive_binary(frame(self.dialect.fmt, 1)), [])
        self.assertEqual(s.receive_text(self.dialect.dtmf("1")), [])
        s.play(frame(self.dialect.fmt, 2))
        s.clear()
        self.assertEqual(s.take_output(), [])

    def test_whole_session(self) -> None:
        d = self.dialect
        s = self.make()
        events: list[PlatformEvent] = list(s.receive_text(d.metadata_text()))
        expected: list[PlatformEvent] = [CallStarted(FS_UUID, d.fmt, d.metadata())]
        for i in range(30):
            f = frame(d.fmt, i)
            events += s.receive_binary(f)
            expected.append(CallerAudio(f))
            if i == 10:
                events += s.receive_text(d.dtmf("5"))
                expected.append(DtmfReceived("5"))
            if i == 20:
                events += s.receive_text(json.dumps({"type": "futureThing"}))
                events += s.receive_text(json.dumps({"event": "hello"}))
                expected += [MessageIgnored("unknown_event")] * 2
                events += s.receive_binary(b"")
                expected.append(MessageIgnored("empty_frame"))
        self.assertEqual(events, expected)
        self.assertEqual(s.take_output(), [])

    def test_audio_first_starts_the_call(self) -> None:
        s = freeswitch.FreeswitchSession(self.dialect.fmt.rate_hz, new_id=lambda: "generated")
        s.bind_upgrade(UpgradeRequest(f"/freeswitch?uuid={FS_UUID}&tenant=acme", "proxy", {}))
        f = frame(self.dialect.fmt, 1)
        started, audio = s.receive_binary(f)
        self.assertEqual(started, CallStarted(FS_UUID, self.dialect.fmt, {"uuid": FS_UUID, "tenant": "acme"}))
        self.assertTrue(audio.data is f)  # type: ignore[union-attr]
        s = freeswitch.FreeswitchSession(self.dialect.fmt.rate_hz, new_id=lambda: "generated")
        [started, empty] = s.receive_binary(b"")
        self.assertEqual((started.call_id, empty), ("generated", MessageIgnored("empty_frame")))  # type: ignore[union-attr]

    def test_free_text_metadata(self) -> None:
        s = freeswitch.FreeswitchSession(self.dialect.fmt.rate_hz, new_id=lambda: "generated")
        [started] = s.receive_text("agent=sales lang=en")
        self.assertEqual(started, CallStarted("generated", self.dialect.fmt, {"metadata": "agent=sales lang=en"}))

    def test_rate_from_the_query(self) -> None:
        other = 16000 if self.dialect.fmt.rate_hz == 8000 else 8000
        for value in (str(other), f"{other // 1000}k"):
            s = self.make(f"/freeswitch?sample_rate={value}")
            [started] = s.receive_text(self.dialect.metadata_text())
            self.assertEqual(started.audio_format.rate_hz, other)  # type: ignore[union-attr]
            s.play(b"\x00\x00")
            self.assertEqual(json.loads(s.take_output()[0])["data"]["sampleRate"], other)  # type: ignore[arg-type]
        self.violation(self.make("/freeswitch?sample_rate=44100"), self.dialect.metadata_text(), "unsupported_format")
        self.violation(self.make("/freeswitch?sample_rate=fast"), frame(self.dialect.fmt, 1), "unsupported_format")

    def test_outbound(self) -> None:
        d = self.dialect
        s = self.started()
        packet = frame(d.fmt, 9, ms=200)
        s.play(packet)
        s.clear()
        audio, kill = s.take_output()
        self.assertEqual(d.audio_of(audio), packet)  # type: ignore[arg-type]
        self.assertEqual(json.loads(kill), {"type": "killAudio"})  # type: ignore[arg-type]
        s.hangup(Outcome.BOT_HANGUP)
        self.assertEqual(s.take_output(), [])  # closing the socket is the whole hang-up
        self.assertEqual(s.receive_binary(frame(d.fmt, 1)), [])

    def test_capabilities(self) -> None:
        caps = self.make().capabilities
        self.assertEqual((caps.can_flush, caps.has_marks, caps.max_lead_ms, caps.packet_ms), (False, False, 20, 200))

    def test_nothing_before_start(self) -> None:
        s = self.make()
        s.play(frame(self.dialect.fmt, 1))
        s.clear()
        self.assertEqual(s.take_output(), [])

    # every malformed kind
    def test_bad_json_after_start(self) -> None:
        self.violation(self.started(), "{nope", "bad_json")
        self.violation(self.started(), "[1, 2]", "bad_json")
        self.violation(self.started(), "plain words", "bad_json")

    def test_oversize(self) -> None:
        self.violation(self.make(), "x" * (MAX_MESSAGE_CHARS + 1), "oversize")
        self.violation(self.started(), '{"type":"x","p":"' + "x" * MAX_MESSAGE_CHARS + '"}', "oversize")

    def test_bad_dtmf(self) -> None:
        for digit in ("", "x", 5, None):
            self.violation(self.started(), self.dialect.dtmf(digit), "wrong_type")

    def test_no_message_name(self) -> None:
        self.violation(self.started(), json.dumps({"x": 1}), "bad_message")

    def test_odd_sized_frame(self) -> None:
        self.violation(self.started(), frame(self.dialect.fmt, 1)[:-1], "bad_payload")
        self.violation(self.make(), frame(self.dialect.fmt, 1)[:-1], "bad_payload")

    def test_oversize_frame(self) -> None:
        self.violation(self.started(), frame(self.dialect.fmt, 1, ms=1100), "oversize_frame")

    def test_buffer_sizes(self) -> None:
        s = self.started()
        for ms in (20, 100, 500):  # STREAM_BUFFER_SIZE
            f = frame(self.dialect.fmt, ms, ms=ms)
            self.assertEqual(s.receive_binary(f), [CallerAudio(f)])


class Freeswitch16kTests(FreeswitchSessionTests):
    dialect = FREESWITCH_16K


class FreeswitchOptionTests(SynchronousTestCase):
    def test_authorization(self) -> None:
        options = freeswitch.FreeswitchOptions(authorization="Bearer abc")
        freeswitch.check_upgrade(UpgradeRequest("/fs", "h", {"authorization": "Bearer abc"}), options, 0)
        for headers in ({}, {"authorization": "Bearer abd"}):
            self.assertRaises(UpgradeRefused, freeswitch.check_upgrade, UpgradeRequest("/fs", "h", headers),
                              options, 0)
        freeswitch.check_upgrade(UpgradeRequest("/fs", "h", {}), freeswitch.FreeswitchOptions(), 0)

    def test_packet_ms_is_whole_frames(self) -> None:
        self.assertRaises(OptionError, freeswitch.validate, freeswitch.FreeswitchOptions(packet_ms=30), "")
        freeswitch.validate(freeswitch.FreeswitchOptions(packet_ms=100), "")
