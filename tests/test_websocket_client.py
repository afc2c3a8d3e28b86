"""The generic WebSocket platform's sans-IO session: whole-session transcripts, every malformed
kind (each answered with an ``error`` message, then silence), unknown types counted and ignored,
pause/resume reported once per change, the upgrade's token and Origin checks, Opus coded inside
the session (when libopus is present) and the start-up check that names libopus0."""

from __future__ import annotations

import json
from array import array
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mediaproxy.audio import opus
from mediaproxy.audio.format import AudioFormat
from mediaproxy.options import OptionError
from mediaproxy.outcome import Outcome
from mediaproxy.platforms import websocket_client as ws
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformEvent,
    PlaybackPaused,
    ProtocolViolation,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MAX_MESSAGE_CHARS

L16_16K = AudioFormat("l16", 16000)
META = {"tenant": "acme"}


def start(encoding: str = "l16", rate_hz: Any = 16000, **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "start", "call_id": "call-1",
                               "format": {"encoding": encoding, "rate_hz": rate_hz}, "metadata": dict(META)}
    message.update(overrides)
    return message


def frame(seed: int, ms: int = 20, fmt: AudioFormat = L16_16K) -> bytes:
    return bytes((seed * 37 + i * 11) % 251 for i in range(fmt.bytes_for_ms(ms)))


def opus_available() -> bool:
    try:
        ws.OpusDecoder(48000, 1)
    except opus.OpusUnavailableError:
        return False
    return True


class SessionTests(SynchronousTestCase):
    def make(self, encodings: tuple[str, ...] = ("l16",)) -> ws.WebSocketClientSession:
        return ws.new_session(ws.WebSocketClientOptions(encodings=encodings))

    def feed(self, session: ws.WebSocketClientSession, messages: list[Any]) -> list[PlatformEvent]:
        events: list[PlatformEvent] = []
        for m in messages:
            if isinstance(m, bytes):
                events.extend(session.receive_binary(m))
            else:
                events.extend(session.receive_text(m if isinstance(m, str) else json.dumps(m)))
        return events

    def started(self) -> ws.WebSocketClientSession:
        s = self.make()
        self.feed(s, [start()])
        return s

    def violation(self, messages: list[Any], kind: str, session: ws.WebSocketClientSession | None = None) -> None:
        s = session if session is not None else self.make()
        events = self.feed(s, messages)
        self.assertEqual([type(e) for e in events if not isinstance(e, CallStarted)], [ProtocolViolation], events)
        self.assertEqual(events[-1].kind, kind)  # type: ignore[union-attr]
        [error] = (json.loads(m) for m in s.take_output())
        self.assertEqual((error["type"], error["reason"]), ("error", kind))
        self.assertTrue(s.finished)
        # Silence afterwards: nothing is parsed, nothing is sent.
        self.assertEqual(s.receive_binary(frame(1)), [])
        self.assertEqual(s.receive_text('{"type":"stop"}'), [])
        s.play(frame(2))
        s.mark("x")
        s.clear()
        self.assertEqual(s.take_output(), [])

    def test_whole_session(self) -> None:
        frames = [frame(i) for i in range(30)]
        messages: list[Any] = [start()]
        expected: list[PlatformEvent] = [CallStarted("call-1", L16_16K, META)]
        for i, f in enumerate(frames):
            messages.append(f)
            expected.append(CallerAudio(f))
            if i == 5:
                messages.append({"type": "dtmf", "digits": "12#"})
                expected.append(DtmfReceived("12#"))
            if i == 10:
                messages += [{"type": "pause"}, {"type": "pause"}, {"type": "resume"}, {"type": "resume"}]
                expected += [PlaybackPaused(True), PlaybackPaused(False)]
            if i == 20:
                messages += [{"type": "mark", "name": "3:400"}, {"type": "hello", "x": 1}]
                expected += [MarkPlayed("3:400"), MessageIgnored("unknown_type")]
        messages.append({"type": "stop", "reason": "bye"})
        expected.append(CallEnded("stop"))
        s = self.make()
        self.assertEqual(self.feed(s, messages), expected)
        self.assertEqual(s.take_output(), [])  # nothing is owed to the client
        self.assertTrue(s.finished)
        self.assertEqual(s.receive_binary(frames[0]), [])

    def test_rates_and_metadata(self) -> None:
        for rate in (8000, 24000, 44000, 48000):
            s = self.make()
            [event] = self.feed(s, [start(rate_hz=rate, metadata=None)])
            self.assertEqual(event, CallStarted("call-1", AudioFormat("l16", rate), {}))
        s = self.make()
        message = start()
        del message["metadata"]
        self.assertEqual(self.feed(s, [message]), [CallStarted("call-1", L16_16K, {})])

    def test_outbound(self) -> None:
        s = self.started()
        packet = frame(9)
        s.play(packet)
        s.mark('we"ird\u00e9')
        s.clear()
        s.hangup(Outcome.BOT_HANGUP, "goodbye")
        audio, mark, clear, stop = s.take_output()
        self.assertEqual(audio, packet)
        self.assertEqual(json.loads(mark), {"type": "mark", "name": 'we"ird\u00e9'})  # type: ignore[arg-type]
        self.assertEqual(json.loads(clear), {"type": "clear"})  # type: ignore[arg-type]
        self.assertEqual(json.loads(stop), {"type": "stop", "reason": "bot_hangup", "detail": "goodbye"})  # type: ignore[arg-type]
        self.assertTrue(s.finished)
        s.play(packet)
        s.hangup(Outcome.DRAINED)
        self.assertEqual(s.take_output(), [])

    def test_nothing_before_start(self) -> None:
        s = self.make()
        s.play(frame(1))
        s.mark("1")
        s.clear()
        self.assertEqual(s.take_output(), [])

    def test_pause_before_start_is_reported_with_start(self) -> None:
        s = self.make()
        self.assertEqual(self.feed(s, [{"type": "pause"}]), [])
        self.assertEqual(self.feed(s, [start()]), [CallStarted("call-1", L16_16K, META), PlaybackPaused(True)])
        self.assertEqual(self.feed(s, [{"type": "resume"}]), [PlaybackPaused(False)])
        s = self.make()
        self.assertEqual(self.feed(s, [{"type": "pause"}, {"type": "resume"}, start()]),
                         [CallStarted("call-1", L16_16K, META)])

    def test_unknown_types_are_counted_and_the_call_goes_on(self) -> None:
        s = self.started()
        events = self.feed(s, [{"type": "transcript"}, {"type": "whatever", "whatever": {}}])
        self.assertEqual(events, [MessageIgnored("unknown_type")] * 2)
        f = frame(3)
        self.assertEqual(s.receive_binary(f), [CallerAudio(f)])
        self.assertEqual(s.receive_binary(b""), [])  # an empty L16 frame carries nothing

    # every malformed kind
    def test_bad_json(self) -> None:
        self.violation(["{nope"], "bad_json")
        self.violation(["[1, 2]"], "bad_json")
        self.violation(["[" * 30000 + "]" * 30000], "bad_json")

    def test_oversize(self) -> None:
        self.violation(['{"type":"x","p":"' + "x" * MAX_MESSAGE_CHARS + '"}'], "oversize")

    def test_no_type(self) -> None:
        self.violation([{"call_id": "x"}], "bad_message")
        self.violation([{"type": 5}], "bad_message")

    def test_bad_start(self) -> None:
        self.violation([start(call_id="")], "bad_message")
        self.violation([start(call_id=7)], "bad_message")
        self.violation([start(call_id="x" * 300)], "bad_message")
        self.violation([start(format="l16")], "bad_message")
        self.violation([start(metadata={"a": 1})], "wrong_type")
        self.violation([start(metadata=[])], "wrong_type")
        self.violation([start(metadata={str(i): "v" for i in range(100)})], "bad_message")

    def test_unsupported_format(self) -> None:
        for message in (start("pcmu", 8000), start("l16", 4000), start("l16", 96000), start("l16", 44100),
                        start("l16", "16000"), start("l16", 16000.0), start("opus", 48000)):
            self.violation([message], "unsupported_format")  # opus is not in this platform's encodings
        if opus_available():
            self.violation([start("opus", 16000)], "unsupported_format", self.make(("l16", "opus")))
        self.violation([start("l16")], "unsupported_format", self.make(("opus",)))

    def test_duplicate_start(self) -> None:
        self.violation([start(), start()], "duplicate_start")

    def test_media_before_start(self) -> None:
        self.violation([frame(1)], "media_before_start")

    def test_dtmf(self) -> None:
        self.violation([{"type": "dtmf", "digits": "1"}], "dtmf_before_start")
        for digits in ("", "x", 5, None):
            self.violation([start(), {"type": "dtmf", "digits": digits}], "wrong_type")

    def test_mark_without_name(self) -> None:
        self.violation([start(), {"type": "mark", "name": 7}], "wrong_type")
        self.violation([start(), {"type": "mark"}], "wrong_type")

    def test_bad_audio_frames(self) -> None:
        self.violation([start(), b"\x00" * 321], "bad_payload")
        self.violation([start(), frame(1, ms=201)], "oversize_frame")


class UpgradeTests(SynchronousTestCase):
    def check(self, target: str = "/ws", headers: dict[str, str] | None = None, **options: Any) -> None:
        ws.check_upgrade(UpgradeRequest(target, "proxy", headers or {}), ws.WebSocketClientOptions(**options), 0.0)

    def refused(self, code: int, target: str = "/ws", headers: dict[str, str] | None = None, **options: Any) -> None:
        error = self.assertRaises(UpgradeRefused, self.check, target, headers, **options)
        self.assertEqual(error.code, code)

    def test_no_token_configured(self) -> None:
        self.check()

    def test_bearer_header_or_query(self) -> None:
        self.check(headers={"authorization": "Bearer s3cret"}, token="s3cret")
        self.check(headers={"authorization": "bearer  s3cret "}, token="s3cret")
        self.check("/ws?token=s3cret", token="s3cret")
        self.check("/ws?a=1&token=s%33cret", token="s3cret")  # URL-decoded
        self.refused(401, token="s3cret")
        self.refused(401, "/ws?token=nope", token="s3cret")
        self.refused(401, headers={"authorization": "Bearer nope"}, token="s3cret")
        self.refused(401, headers={"authorization": "Basic s3cret"}, token="s3cret")

    def test_origins(self) -> None:
        origins = ws._origins("https://app.example.com, http://127.0.0.1:8000/")
        self.check(headers={"origin": "https://APP.example.com"}, allowed_origins=origins)
        self.check(headers={"origin": "http://127.0.0.1:8000"}, allowed_origins=origins)
        self.refused(403, headers={"origin": "https://evil.example"}, allowed_origins=origins)
        self.refused(403, allowed_origins=origins)
        self.assertRaises(ValueError, ws._origins, "app.example.com")
        self.assertRaises(ValueError, ws._origins, "https://a.example/path")

    def test_encodings_option(self) -> None:
        self.assertEqual(ws._encodings("l16, opus"), ("l16", "opus"))
        self.assertRaises(ValueError, ws._encodings, "l16, g722")
        self.assertRaises(ValueError, ws._encodings, " , ")


class OpusTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not opus_available():
            raise SkipTest("libopus is not installed (scripts/setup-env.sh installs libopus0)")
        self.session = ws.new_session(ws.WebSocketClientOptions(encodings=("l16", "opus")))
        [started] = self.session.receive_text(json.dumps(start("opus", 48000)))
        self.started = started

    def tone(self, ms: int) -> bytes:
        import math

        return array("h", [int(8000 * math.sin(2 * math.pi * 440 * i / 48000)) for i in range(48 * ms)]).tobytes()

    def test_the_bridge_sees_l16_48k(self) -> None:
        self.assertEqual(self.started, CallStarted("call-1", AudioFormat("l16", 48000), META))
        self.assertEqual(self.session.wire_encoding, "opus")

    def test_round_trip(self) -> None:
        """Bot audio leaves as one Opus packet per 20 ms; a client decoding them (and sending them
        back) gets the tone again, and the session decodes caller packets to L16 48 kHz."""
        pcm = self.tone(400)
        for i in range(0, len(pcm), 1920):
            self.session.play(pcm[i : i + 1920])
        packets = self.session.take_output()
        self.assertEqual(len(packets), 20)
        self.assertTrue(all(isinstance(p, bytes) and 0 < len(p) < 400 for p in packets))
        decoded = b"".join(e.data for p in packets for e in self.session.receive_binary(p)  # type: ignore[union-attr, arg-type]
                           if isinstance(e, CallerAudio))
        self.assertEqual(len(decoded), len(pcm))
        samples = array("h", decoded)[4800:]
        self.assertGreater(max(samples), 4000)  # the tone survived the codec

    def test_lost_packet_is_concealed(self) -> None:
        encoder = ws.OpusEncoder(48000, 1, 10)
        pcm = self.tone(10)
        [audio] = self.session.receive_binary(encoder.encode(pcm))
        self.assertEqual(len(audio.data), 960)  # type: ignore[union-attr]
        [concealed] = self.session.receive_binary(b"")
        self.assertEqual(len(concealed.data), 960)  # type: ignore[union-attr]  # as long as the last packet

    def test_short_tail_is_padded(self) -> None:
        self.session.play(bytes(1000))
        [packet] = self.session.take_output()
        self.assertEqual(len(self.session.receive_binary(packet)[0].data), 1920)  # type: ignore[arg-type, union-attr]

    def test_corrupt_packet(self) -> None:
        [event] = self.session.receive_binary(b"\xff\xff\xff")
        self.assertIsInstance(event, ProtocolViolation)
        self.assertEqual(event.kind, "bad_opus")  # type: ignore[union-attr]
        self.assertEqual(json.loads(self.session.take_output()[0])["reason"], "bad_opus")

    def test_oversize_packet(self) -> None:
        [event] = self.session.receive_binary(b"\x00" * (ws.MAX_OPUS_PACKET_BYTES + 1))
        self.assertEqual(event.kind, "oversize_frame")  # type: ignore[union-attr]


class ValidateTests(SynchronousTestCase):
    def test_l16_needs_nothing(self) -> None:
        ws.validate(ws.WebSocketClientOptions(), "")

    def test_opus_without_libopus_names_the_package(self) -> None:
        def missing() -> Any:
            raise opus.OpusUnavailableError("Opus support needs the system library libopus (Debian/Ubuntu "
                                            "package libopus0: apt-get install libopus0); loading it failed: x")

        self.patch(opus, "_load_opuslib", missing)
        error = self.assertRaises(OptionError, ws.validate, ws.WebSocketClientOptions(encodings=("l16", "opus")), "")
        self.assertEqual(error.key, "encodings")
        self.assertIn("libopus0", str(error))
        ws.validate(ws.WebSocketClientOptions(encodings=("l16",)), "")  # l16 alone still starts

    def test_opus_with_libopus(self) -> None:
        if not opus_available():
            raise SkipTest("libopus is not installed")
        ws.validate(ws.WebSocketClientOptions(encodings=("opus",)), "")
