"""Whole-session transcripts of the binary-audio platforms (Vonage WebSockets, jambonz
``listen``): every malformed kind, wrong-sized and empty binary frames, unknown events counted
and ignored, the outbound shapes, and the upgrade checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.options import OptionError
from mediaproxy.outcome import Outcome
from mediaproxy.platforms import jambonz, vonage
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformEvent,
    PlatformSession,
    ProtocolViolation,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MAX_MESSAGE_CHARS
from tests.binary_dialects import CALL_ID, JAMBONZ_8K, JAMBONZ_16K, VONAGE_8K, VONAGE_16K, BinaryDialect, frame, text


class BinarySessionContract:
    """Mixed into a ``SynchronousTestCase``: ``dialect`` set, ``make`` a fresh session."""

    dialect: BinaryDialect
    assertEqual: Any
    assertIsInstance: Any
    assertTrue: Any

    def make(self) -> PlatformSession:
        raise NotImplementedError

    def started(self) -> PlatformSession:
        s = self.make()
        s.receive_text(text(self.dialect.opening()))
        return s

    def violation(self, s: PlatformSession, message: str | bytes, kind: str) -> None:
        events = s.receive_text(message) if isinstance(message, str) else s.receive_binary(message)
        self.assertEqual([type(e) for e in events], [ProtocolViolation], events)
        self.assertEqual(events[0].kind, kind)  # type: ignore[union-attr]
        # Silence afterwards: nothing is parsed, nothing is sent.
        self.assertEqual(s.receive_binary(frame(self.dialect.fmt, 1)), [])
        self.assertEqual(s.receive_text(text(self.dialect.dtmf("1"))), [])
        s.play(frame(self.dialect.fmt, 2))
        s.mark("x")
        self.assertEqual(s.take_output(), [])

    def test_whole_session(self) -> None:
        d = self.dialect
        s = self.make()
        events: list[PlatformEvent] = list(s.receive_text(text(d.opening())))
        expected: list[PlatformEvent] = [CallStarted(CALL_ID, d.fmt, d.metadata())]
        for i in range(30):
            f = frame(d.fmt, i)
            events += s.receive_binary(f)
            expected.append(CallerAudio(f))
            if i == 10:
                events += s.receive_text(text(d.dtmf("5")))
                expected.append(DtmfReceived("5"))
            if i == 20:
                events += s.receive_text(text(d.mark_echo("3:400")))
                expected.append(MarkPlayed("3:400"))
                events += s.receive_text(text({"event": "futureThing", "type": "x"}))
                expected.append(MessageIgnored("unknown_event"))
                events += s.receive_binary(b"")
                expected.append(MessageIgnored("empty_frame"))
        self.assertEqual(events, expected)
        self.assertEqual(s.take_output(), [])  # nothing is owed to the vendor

    def test_audio_passes_through_uncopied(self) -> None:
        s = self.started()
        f = frame(self.dialect.fmt, 4)
        [event] = s.receive_binary(f)
        self.assertTrue(event.data is f)  # type: ignore[union-attr]

    def test_outbound(self) -> None:
        d = self.dialect
        s = self.started()
        packet = frame(d.fmt, 9)
        s.play(packet)
        s.mark('we"ird\\name\u00e9')
        s.clear()
        audio, mark, clear = s.take_output()
        self.assertTrue(audio is packet)  # one exact frame: sent as it came
        self.assertEqual(d.kind_of(json.loads(mark)), "mark")  # type: ignore[arg-type]
        self.assertEqual(d.mark_name(json.loads(mark)), 'we"ird\\name\u00e9')  # type: ignore[arg-type]
        self.assertEqual(d.kind_of(json.loads(clear)), "clear")  # type: ignore[arg-type]

    def test_nothing_before_start_or_after_hangup(self) -> None:
        s = self.make()
        s.play(frame(self.dialect.fmt, 1))
        s.mark("m")
        s.clear()
        self.assertEqual(s.take_output(), [])
        s = self.started()
        s.hangup(Outcome.COMPLETED)
        s.take_output()
        s.play(frame(self.dialect.fmt, 1))
        s.clear()
        self.assertEqual(s.take_output(), [])
        self.assertEqual(s.receive_binary(frame(self.dialect.fmt, 1)), [])

    def test_transfer_ends_the_stream(self) -> None:
        self.assertEqual(self.make().transfer("sip:a@b", ""), False)
        s = self.started()
        self.assertTrue(s.capabilities.can_transfer)
        self.assertEqual(s.transfer("sip:a@b", "summary"), True)
        self.assertEqual(s.receive_binary(frame(self.dialect.fmt, 1)), [])

    # every malformed kind
    def test_bad_json(self) -> None:
        self.violation(self.make(), "{nope", "bad_json")
        self.violation(self.make(), "[1, 2]", "bad_json")
        self.violation(self.make(), "[" * 30000 + "]" * 30000, "bad_json")

    def test_oversize(self) -> None:
        self.violation(self.started(), '{"event":"x","p":"' + "x" * MAX_MESSAGE_CHARS + '"}', "oversize")

    def test_media_before_start(self) -> None:
        self.violation(self.make(), frame(self.dialect.fmt, 1), "media_before_start")

    def test_unsupported_format(self) -> None:
        bad = ({"content-type": "audio/l16;rate=44100"} if self.dialect.name == "vonage"
               else {"sampleRate": 44100})
        self.violation(self.make(), text(self.dialect.opening(**bad)), "unsupported_format")

    def test_bad_dtmf(self) -> None:
        for digit in ("", "x", 5, None, "55x"):
            self.violation(self.started(), text(self.dialect.dtmf(digit)), "wrong_type")

    def test_mark_without_name(self) -> None:
        self.violation(self.started(), text(self.dialect.mark_echo(7)), "wrong_type")

    def test_no_message_name(self) -> None:
        self.violation(self.started(), text({"x": 1}), "bad_message")

    def test_odd_sized_frame(self) -> None:
        kind = "bad_frame_size" if self.dialect.name == "vonage" else "bad_payload"
        self.violation(self.started(), frame(self.dialect.fmt, 1)[:-1], kind)

    def test_unknown_events_are_counted_and_the_call_goes_on(self) -> None:
        s = self.started()
        other = {"event": "websocket:error"} if self.dialect.name == "vonage" else {"type": "new"}
        events = s.receive_text(text({"event": "websocket:media:update"})) + s.receive_text(text(other))
        self.assertEqual(events, [MessageIgnored("unknown_event")] * 2)
        f = frame(self.dialect.fmt, 3)
        self.assertEqual(s.receive_binary(f), [CallerAudio(f)])

    def test_empty_frames_are_counted_and_the_call_goes_on(self) -> None:
        s = self.started()
        self.assertEqual(s.receive_binary(b""), [MessageIgnored("empty_frame")])
        f = frame(self.dialect.fmt, 3)
        self.assertEqual(s.receive_binary(f), [CallerAudio(f)])


class VonageSessionTests(BinarySessionContract, SynchronousTestCase):
    dialect = VONAGE_16K

    def make(self) -> PlatformSession:
        return vonage.new_session(vonage.VonageOptions())

    def test_frame_size_is_exact(self) -> None:
        self.violation(self.started(), frame(self.dialect.fmt, 1, ms=40), "bad_frame_size")
        self.violation(self.started(), frame(self.dialect.fmt, 1, ms=10), "bad_frame_size")

    def test_duplicate_connected(self) -> None:
        self.violation(self.started(), text(self.dialect.opening()), "duplicate_start")

    def test_dtmf_before_connected(self) -> None:
        self.violation(self.make(), text(self.dialect.dtmf("1")), "dtmf_before_start")

    def test_content_types(self) -> None:
        for value, rate in (("audio/l16;rate=8000", 8000), ("audio/L16; rate=24000", 24000)):
            s = self.make()
            [started] = s.receive_text(text(self.dialect.opening(**{"content-type": value})))
            self.assertEqual(started.audio_format.rate_hz, rate)  # type: ignore[union-attr]
        for bad in ("audio/pcmu;rate=8000", "audio/l16", 16000, None):
            self.violation(self.make(), text(self.dialect.opening(**{"content-type": bad})), "unsupported_format")

    def test_call_id_without_uuid_header(self) -> None:
        s = vonage.VonageSession(new_id=lambda: "generated")
        opening = self.dialect.opening()
        del opening["uuid"]
        [started] = s.receive_text(text(opening))
        self.assertEqual(started.call_id, "generated")  # type: ignore[union-attr]

    def test_nested_dtmf_and_acks(self) -> None:
        s = self.started()
        self.assertEqual(s.receive_text(text({"event": "websocket:dtmf", "dtmf": {"digit": "#"}})),
                         [DtmfReceived("#")])
        self.assertEqual(s.receive_text(text({"event": "websocket:cleared"})), [])

    def test_outbound_frames_are_exact(self) -> None:
        s = self.started()
        size = self.dialect.fmt.bytes_for_ms(20)
        s.play(b"\x01\x02" * (size // 2 + 10))  # a frame and a bit: split, tail padded
        first, second = s.take_output()
        self.assertEqual((len(first), len(second)), (size, size))
        self.assertEqual(second, b"\x01\x02" * 10 + bytes(size - 20))


class Vonage8kTests(VonageSessionTests):
    dialect = VONAGE_8K


class JambonzSessionTests(BinarySessionContract, SynchronousTestCase):
    dialect = JAMBONZ_8K

    def make(self) -> PlatformSession:
        return jambonz.new_session(jambonz.JambonzOptions())

    def test_any_whole_sample_frame_size(self) -> None:
        s = self.started()
        for ms in (10, 20, 100):
            f = frame(self.dialect.fmt, ms, ms=ms)
            self.assertEqual(s.receive_binary(f), [CallerAudio(f)])

    def test_oversize_frame(self) -> None:
        self.violation(self.started(), frame(self.dialect.fmt, 1, ms=600), "oversize_frame")

    def test_metadata_needs_a_call_sid(self) -> None:
        self.violation(self.make(), text(self.dialect.opening(callSid="")), "bad_message")
        self.violation(self.make(), text({"event": "dtmf", "dtmf": "1"}), "bad_message")

    def test_stereo_is_refused(self) -> None:
        self.violation(self.make(), text(self.dialect.opening(mixType="stereo")), "unsupported_format")
        self.violation(self.make(), text(self.dialect.opening(sampleRate="8000")), "unsupported_format")

    def test_defaults_and_mixed(self) -> None:
        opening = self.dialect.opening(mixType="mixed")
        del opening["sampleRate"]
        [started] = self.make().receive_text(text(opening))
        self.assertEqual(started.audio_format.rate_hz, 8000)  # type: ignore[union-attr]

    def test_cleared_marks_and_play_done(self) -> None:
        s = self.started()
        cleared = {"type": "mark", "data": {"name": "1:40", "event": "cleared"}}
        self.assertEqual(s.receive_text(text(cleared)), [MarkPlayed("1:40")])
        self.assertEqual(s.receive_text(text({"type": "playDone", "data": {}})), [])

    def test_hangup_and_transfer_send_disconnect(self) -> None:
        for end in (lambda s: s.hangup(Outcome.BOT_HANGUP), lambda s: s.transfer("sip:a@b", "")):
            s = self.started()
            end(s)
            self.assertEqual([json.loads(m) for m in s.take_output()], [{"type": "disconnect"}])
        s = self.make()
        s.hangup(Outcome.DRAINED)
        self.assertEqual(s.take_output(), [])

    def test_subprotocol(self) -> None:
        self.assertEqual(jambonz.JAMBONZ.subprotocols, ("audio.jambonz.org",))


class Jambonz16kTests(JambonzSessionTests):
    dialect = JAMBONZ_16K


# --- upgrade checks -----------------------------------------------------------------------------

NOW = 1_700_000_000.0


def request(**headers: str) -> UpgradeRequest:
    return UpgradeRequest(target="/vonage", host="proxy.example.com", headers=headers)


def jwt(secret: str, claims: dict[str, Any], alg: str = "HS256") -> str:
    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing = f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}"
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


class VonageUpgradeTests(SynchronousTestCase):
    options = vonage.VonageOptions(signature_secret="s3cret", application_id="app-1")

    def refused(self, options: vonage.VonageOptions, **headers: str) -> None:
        self.assertRaises(UpgradeRefused, vonage.check_upgrade, request(**headers), options, NOW)

    def test_jwt_pass(self) -> None:
        token = jwt("s3cret", {"iat": NOW - 5, "exp": NOW + 60, "application_id": "app-1"})
        vonage.check_upgrade(request(authorization=f"Bearer {token}"), self.options, NOW)

    def test_jwt_fail(self) -> None:
        good = {"iat": NOW - 5, "application_id": "app-1"}
        for token in (jwt("wrong", good), jwt("s3cret", {**good, "application_id": "other"}),
                      jwt("s3cret", {**good, "iat": NOW - 3600}), jwt("s3cret", {**good, "exp": NOW - 120}),
                      jwt("s3cret", {**good, "iat": "now"}), jwt("s3cret", good, alg="none"),
                      "a.b", "a.b.c", "!!.??.**"):
            self.refused(self.options, authorization=f"Bearer {token}")
        self.refused(self.options)
        self.refused(self.options, authorization="Basic " + jwt("s3cret", good))

    def test_custom_authorization_value(self) -> None:
        options = vonage.VonageOptions(authorization="Token abc")
        vonage.check_upgrade(request(authorization="Token abc"), options, NOW)
        self.refused(options, authorization="Token abd")
        self.refused(options)

    def test_no_credentials_allow_anything(self) -> None:
        vonage.check_upgrade(request(), vonage.VonageOptions(), NOW)

    def test_application_id_needs_the_secret(self) -> None:
        self.assertRaises(OptionError, vonage.validate, vonage.VonageOptions(application_id="a"), "")


class JambonzUpgradeTests(SynchronousTestCase):
    options = jambonz.JambonzOptions(username="jb", password="pw")

    def test_basic_auth(self) -> None:
        good = "Basic " + base64.b64encode(b"jb:pw").decode()
        jambonz.check_upgrade(request(authorization=good), self.options, NOW)
        for bad in ("", "Basic " + base64.b64encode(b"jb:px").decode(), "Bearer x"):
            headers = {"authorization": bad} if bad else {}
            self.assertRaises(UpgradeRefused, jambonz.check_upgrade, request(**headers), self.options, NOW)

    def test_no_credentials_allow_anything(self) -> None:
        jambonz.check_upgrade(request(), jambonz.JambonzOptions(), NOW)

    def test_both_halves_required(self) -> None:
        self.assertRaises(OptionError, jambonz.validate, jambonz.JambonzOptions(username="jb"), "")
