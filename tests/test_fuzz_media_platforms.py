"""Property-based fuzzing of the media-stream platforms: Telnyx, Plivo and Exotel (JSON text frames,
Twilio-like, on :mod:`mediaproxy.platforms.jsonmedia`), Vonage and jambonz (binary L16 frames plus
JSON text) and the generic WebSocket platform (JSON control plus binary L16 or Opus).

Each example is a generated program (:mod:`tests.strategies`), as in
:mod:`tests.test_fuzz_platforms`: valid messages built from each protocol's real templates, in any
order (audio before the opening message, a second opening, DTMF before it), targeted malformations
whose violation ``kind`` the model predicts, random mutations of templates (whose verdict only the
session knows), binary frames of awkward sizes (empty, odd, one byte off a frame, oversize) and the
neutral commands the call bridge issues. Properties checked after every step:

- nothing raises out of the session (input or command);
- every event is of the neutral types; a :class:`ProtocolViolation` is the last event of its
  step and its ``kind`` is a short identifier from the platform's fixed set, the one the model
  predicts wherever the input's verdict is known;
- the protocol's own reply to a violation: nothing for the JSON platforms, Vonage and jambonz
  (they have no error message; the glue closes), an ``error`` naming the kind for the generic
  WebSocket;
- a well-formed message of an unknown type (and an empty binary frame where the protocol says so)
  is :class:`MessageIgnored` with a bounded kind, and the call goes on;
- every text frame is strict JSON that can be encoded as UTF-8, of the protocol's outbound types;
  every binary frame has the protocol's shape (one exact frame for Vonage);
- no caller event comes before ``CallStarted``, which comes at most once;
- nothing is accepted, and nothing queued, after a violation, the platform's end of stream, a
  hangup or a transfer.

Each test asserts it really ran :data:`~tests.strategies.FUZZ_EXAMPLES` cases.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.trial import unittest

from mediaproxy.audio.opus import OpusEncoder
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    MessageIgnored,
    PlaybackPaused,
)
from mediaproxy.platforms.exotel import ExotelSession
from mediaproxy.platforms.jambonz import JambonzSession
from mediaproxy.platforms.plivo import PlivoSession
from mediaproxy.platforms.telnyx import TelnyxSession
from mediaproxy.platforms.vonage import VonageSession
from mediaproxy.platforms.websocket_client import MAX_METADATA_ENTRIES, WebSocketClientSession
from tests.strategies import (
    binary_frame,
    dump,
    garbage_text,
    hostile_string,
    identifier,
    mutate,
    run_programs,
    steps,
    strict_json,
)
from tests.test_fuzz_platforms import (
    INVALID_UTF8,
    UNKNOWN,
    Trace,
    Verdict,
    b64,
    check_events,
    common_command,
    violation_kind,
)

JSON_KINDS = frozenset({
    "oversize", "bad_json", "bad_message", "duplicate_start", "wrong_type", "unsupported_format",
    "media_before_start", "dtmf_before_start", "oversize_frame", "bad_base64", "bad_payload", "binary_frame",
    "bad_utf8",
})
"""Every violation kind of the JSON media platforms (Telnyx, Plivo, Exotel)."""
VONAGE_KINDS = frozenset({
    "oversize", "bad_json", "bad_message", "duplicate_start", "wrong_type", "unsupported_format",
    "media_before_start", "dtmf_before_start", "bad_frame_size", "bad_utf8",
})
JAMBONZ_KINDS = frozenset({
    "oversize", "bad_json", "bad_message", "wrong_type", "unsupported_format", "media_before_start",
    "bad_payload", "oversize_frame", "bad_utf8",
})
WEBSOCKET_KINDS = frozenset({
    "oversize", "bad_json", "bad_message", "duplicate_start", "wrong_type", "unsupported_format",
    "media_before_start", "dtmf_before_start", "oversize_frame", "bad_payload", "bad_opus", "bad_utf8",
})
UNKNOWN_EVENT = frozenset({"unknown_event"})
BINARY_IGNORED = frozenset({"unknown_event", "empty_frame"})

BAD_DIGITS: tuple[Any, ...] = ("", "E", "1x", None, 5, "#\u0661", [], "\ud800")
BAD_NAMES: tuple[Any, ...] = (None, 1, [], {}, True)
ODD_RATES: tuple[Any, ...] = ("\u00b2", "9" * 5000, "8000 ", 8001, 44100, -8000, True, None, [8000])
"""Sample rates no platform accepts: a superscript digit and a 5000-digit number (``isdigit`` is
true, ``int()`` raises), near misses, other types."""


def b64_of(rng: random.Random, sizes: tuple[int, ...]) -> str:
    return b64(rng.randbytes(rng.choice(sizes)))


def oversize(event: str) -> str:
    return dump({"event": event, "pad": "x" * 65540})


# --- Telnyx, Plivo, Exotel --------------------------------------------------------------------

CousinSession = TelnyxSession | PlivoSession | ExotelSession


@dataclass(frozen=True)
class Cousin:
    """What differs between the Twilio-like JSON platforms: their templates, field names and
    outbound events. ``start(rng, fmt_ok)`` is a complete ``start`` whose format is usable (or not);
    ``bad_start`` a complete one with a field of the wrong type (``wrong_type``); ``strip`` drops
    the stream and call ids from a start (``bad_message``)."""

    name: str
    session: Callable[[], CousinSession]
    start: Callable[[random.Random, bool], dict[str, Any]]
    bad_start: Callable[[random.Random], dict[str, Any]]
    strip: Callable[[dict[str, Any]], None]
    media: Callable[[str, Any], dict[str, Any]]
    mark: Callable[[Any], dict[str, Any]]
    dtmf: Callable[[Any], dict[str, Any]]
    others: tuple[dict[str, Any], ...]
    outbound: frozenset[str]
    sid: Callable[[Any], str]
    sid_field: str | None
    """The outbound messages' stream id field, where they have one."""


def telnyx_format(rng: random.Random, ok: bool) -> dict[str, Any]:
    if ok:
        return rng.choice(({"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                           {"encoding": "PCMA", "sample_rate": 8000},
                           {"encoding": "L16", "sample_rate": rng.choice((8000, 16000, 24000, 48000)), "channels": 1}))
    return rng.choice(({"encoding": "G722", "sample_rate": 8000}, {"encoding": "L16", "sample_rate": 22050},
                       {"encoding": "PCMU", "sample_rate": 8000, "channels": 2},
                       {"encoding": "PCMU", "sample_rate": rng.choice(ODD_RATES)}, "PCMU", None, [],
                       {"encoding": ["PCMU"], "sample_rate": 8000}))


def telnyx_start(rng: random.Random, ok: bool) -> dict[str, Any]:
    sid = rng.choice(("st-1", "\ud800\"q", "é" * 40))
    return {"event": "start", "sequence_number": "1", "stream_id": sid,
            "start": {"call_control_id": "v3:" + str(rng.randrange(99)), "call_session_id": "s", "from": "+1555",
                      "to": "+1556", "client_state": hostile_string(rng),
                      "custom_parameters": rng.choice(({"tenant": "acme"}, {}, None, {"k": "\ud800"})),
                      "media_format": telnyx_format(rng, ok)}}


def telnyx_bad_start(rng: random.Random) -> dict[str, Any]:
    start = telnyx_start(rng, True)
    start["start"]["custom_parameters"] = rng.choice(({"a": 1}, [], "x", {"a": None}, {"a": {"b": "c"}}))
    return start


def telnyx_strip(start: dict[str, Any]) -> None:
    del start["stream_id"]
    start["start"]["call_control_id"] = ""


def plivo_start(rng: random.Random, ok: bool) -> dict[str, Any]:
    if ok:
        fmt: Any = rng.choice(({"encoding": "audio/x-mulaw", "sampleRate": 8000},
                               {"encoding": "audio/x-l16", "sampleRate": rng.choice((8000, 16000, "16000"))}))
    else:
        fmt = rng.choice(({"encoding": "audio/x-alaw", "sampleRate": 8000}, {"encoding": "audio/x-l16"},
                          {"encoding": "audio/x-mulaw", "sampleRate": rng.choice(ODD_RATES)},
                          {"encoding": 5, "sampleRate": 8000}, {"encoding": ["audio/x-mulaw"], "sampleRate": 8000}))
    return {"event": "start", "sequenceNumber": 1,
            "start": {"callId": "c-" + str(rng.randrange(99)), "streamId": rng.choice(("s-1", "\ud800", "é\"")),
                      "accountId": "MA1", "tracks": ["inbound"], "mediaFormat": fmt},
            "extra_headers": rng.choice(("a=1;b=2", "", 5, None, "x" * 2000, hostile_string(rng)))}


def plivo_bad_start(rng: random.Random) -> dict[str, Any]:
    start = plivo_start(rng, True)
    start["start"]["mediaFormat"] = rng.choice(("audio/x-mulaw", [], 8000, None))
    return start


def plivo_strip(start: dict[str, Any]) -> None:
    start["start"].pop("callId")


def exotel_start(rng: random.Random, ok: bool) -> dict[str, Any]:
    if ok:
        fmt: Any = rng.choice(({"encoding": "audio/x-raw", "sample_rate": rng.choice(("8000", "16000", 24000)),
                                "bit_rate": rng.choice(("16", 16))}, {}))
    else:
        fmt = rng.choice(({"encoding": "audio/x-mulaw", "sample_rate": "8000", "bit_rate": "16"},
                          {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "8"},
                          {"encoding": "audio/x-raw", "sample_rate": rng.choice(ODD_RATES), "bit_rate": "16"},
                          {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": [16]}))
    sid = rng.choice(("MZ1", "\ud800", "é\""))
    return {"event": "start", "sequence_number": "1", "stream_sid": sid,
            "start": {"stream_sid": sid, "call_sid": "CA" + str(rng.randrange(99)), "account_sid": "AC1",
                      "from": "+91", "to": "+91", "custom_parameters": rng.choice(({"k": "v"}, {}, None)),
                      "media_format": fmt}}


def exotel_bad_start(rng: random.Random) -> dict[str, Any]:
    start = exotel_start(rng, True)
    field, value = rng.choice((("custom_parameters", {"a": 1}), ("custom_parameters", []), ("account_sid", 5),
                               ("media_format", "audio/x-raw"), ("media_format", [])))
    start["start"][field] = value
    return start


def exotel_strip(start: dict[str, Any]) -> None:
    start["start"].pop("call_sid")


def named_mark(name: Any) -> dict[str, Any]:
    return {"event": "mark", "mark": {"name": name}}


def nested_dtmf(digit: Any) -> dict[str, Any]:
    return {"event": "dtmf", "dtmf": {"digit": digit, "duration": 200}}


COUSINS = {
    "telnyx": Cousin(
        "telnyx", TelnyxSession, telnyx_start, telnyx_bad_start, telnyx_strip,
        lambda payload, track: {"event": "media", "stream_id": "st-1", "sequence_number": "2",
                                "media": {"track": track, "chunk": "1", "timestamp": "20", "payload": payload}},
        named_mark, nested_dtmf,
        ({"event": "connected", "version": "1.0.0"},
         {"event": "error", "stream_id": "st-1", "payload": {"code": 100003, "title": "\ud800", "detail": "x"}},
         {"event": "stop", "stream_id": "st-1", "stop": {"call_control_id": "v3:1"}}),
        frozenset({"media", "mark", "clear"}), lambda s: s.stream_id, None),
    "plivo": Cousin(
        "plivo", PlivoSession, plivo_start, plivo_bad_start, plivo_strip,
        lambda payload, track: {"event": "media", "sequenceNumber": 2, "streamId": "s-1",
                                "media": {"track": track, "timestamp": "20", "chunk": 1, "payload": payload}},
        lambda name: {"event": "playedStream", "streamId": "s-1", "name": name},
        lambda digit: {"event": "dtmf", "streamId": "s-1", "dtmf": {"digit": digit}},
        ({"event": "clearedAudio", "streamId": "s-1"}, {"event": "stop"}),
        frozenset({"playAudio", "checkpoint", "clearAudio"}), lambda s: s.stream_id, "streamId"),
    "exotel": Cousin(
        "exotel", ExotelSession, exotel_start, exotel_bad_start, exotel_strip,
        lambda payload, track: {"event": "media", "sequence_number": "2", "stream_sid": "MZ1",
                                "media": {"chunk": "1", "timestamp": "100", "payload": payload}},
        named_mark, nested_dtmf,
        ({"event": "connected"},
         {"event": "stop", "stream_sid": "MZ1", "stop": {"call_sid": "CA1", "reason": "callended"}}),
        frozenset({"media", "mark", "clear"}), lambda s: s.stream_sid, "stream_sid"),
}
VALID_SIZES = (0, 2, 160, 320, 1600)
"""Payload sizes every format of every JSON platform accepts (whole 16-bit samples, short)."""


def cousin_valid(spec: Cousin, rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(12)
    if op <= 1:
        return spec.start(rng, True)
    if op <= 6:
        track = rng.choice(("inbound", "inbound", "inbound_track", "outbound", None))
        message = spec.media(b64_of(rng, VALID_SIZES), track)
        if track is None:
            message["media"].pop("track", None)
        return message
    if op == 7:
        return spec.mark(hostile_string(rng))
    if op == 8:
        return spec.dtmf(rng.choice(("1", "#", "*0", "ABCD", "5" * 20)))
    if op == 9:
        return {"event": identifier(rng, "x"), "payload": {"a": 1}}
    return rng.choice(spec.others)


def cousin_predict(message: dict[str, Any], started: bool) -> Verdict:
    event = message["event"]
    if event == "start":
        return "duplicate_start" if started else None
    if event == "media" and not started:
        return "media_before_start"
    if event == "dtmf" and not started:
        return "dtmf_before_start"
    return None


def cousin_targeted(spec: Cousin, session: CousinSession, rng: random.Random) -> tuple[str, str | None]:
    """(text, the violation it must give) for a session in its current state."""
    started = session.started
    op = rng.randrange(13)
    if op == 0:
        return garbage_text(rng), "bad_json"
    if op == 1:
        return dump(rng.choice(([], [1], "start", 3, None, True))), "bad_json"
    if op == 2:
        return oversize(rng.choice(("media", "start"))), "oversize"
    if op == 3:
        return dump({"event": rng.choice((None, 1, [], {}, True))}), "bad_message"
    before = None if started else "media_before_start"
    if op == 4:
        return dump(spec.media(rng.choice((None, 1, [], {}, True)), "inbound")), before or "wrong_type"
    if op == 5:
        payload = rng.choice(("!!!!", "AAA", "A===", "AAAA\n", "é", "AA=A", "\ud800"))
        return dump(spec.media(payload, "inbound")), before or "bad_base64"
    if op == 6:
        size = session.max_frame_bytes + rng.choice((2, 4, 1000))
        return dump(spec.media(b64(bytes(size)), "inbound")), before or "oversize_frame"
    if op == 7:
        whole = session.audio_format.frame_bytes == 1
        return dump(spec.media(b64_of(rng, (1, 3, 161)), "inbound")), before or (None if whole else "bad_payload")
    if op == 8:
        return dump(spec.mark(rng.choice(BAD_NAMES))), "wrong_type"
    if op == 9:
        return dump(spec.dtmf(rng.choice(BAD_DIGITS))), "wrong_type" if started else "dtmf_before_start"
    if op == 10:
        return dump(spec.start(rng, False)), "duplicate_start" if started else "unsupported_format"
    if op == 11:
        start = spec.start(rng, True)
        spec.strip(start)
        return dump(start), "duplicate_start" if started else "bad_message"
    return dump(spec.bad_start(rng)), "duplicate_start" if started else "wrong_type"


class CousinFuzzTests(unittest.TestCase):
    """The Twilio-like JSON platforms against generated hostile streams."""

    def run_program(self, spec: Cousin, program: bytes) -> None:
        session = spec.session()
        trace = Trace()
        for op, rng in steps(program):
            dead_before = trace.dead
            expected: Verdict = UNKNOWN
            message: dict[str, Any] | None = None
            if op < 100:
                message = cousin_valid(spec, rng)
                expected = cousin_predict(message, session.started)
                events = session.receive_text(dump(message))
            elif op < 150:
                text, expected = cousin_targeted(spec, session, rng)
                events = session.receive_text(text)
            elif op < 210:
                events = session.receive_text(mutate(cousin_valid(spec, rng), rng))
            elif op < 215:
                expected = "binary_frame"
                events = session.receive_binary(binary_frame(rng))
            elif op < 220:
                expected = "bad_utf8"
                events = session.invalid_text(rng.choice(INVALID_UTF8))
            else:
                common_command(session, rng)
                events, expected = [], None
            output = session.take_output()
            if dead_before:
                self.assertEqual((events, output), ([], []), "input accepted after the end")
                continue
            check_events(self, trace, events, JSON_KINDS, UNKNOWN_EVENT)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected, spec.name)
            if message is not None and kind is None and message["event"].startswith("x"):
                self.assertEqual(events, [MessageIgnored("unknown_event")], "an unknown event goes on")
            for item in output:
                out = strict_json(item)
                self.assertIn(out["event"], spec.outbound)
                if spec.sid_field is not None:
                    self.assertEqual(out.get(spec.sid_field, spec.sid(session)), spec.sid(session))
                media = out.get("media")
                if media is not None:
                    base64.b64decode(media["payload"], validate=True)
            if kind is not None:
                self.assertEqual(output, [], f"{spec.name} has no error message: the glue closes")
            if kind is not None or trace.call_over or session._ended:
                trace.dead = True

    def fuzz(self, name: str) -> None:
        spec = COUSINS[name]
        run_programs(self, lambda program: self.run_program(spec, program), cases_of="spec, program")

    def test_telnyx_hostile_streams(self) -> None:
        """Telnyx: never an exception; bounded kinds as predicted; nothing queued on a violation
        and nothing accepted after it, after ``stop`` or after a hangup; unknown events ignored."""
        self.fuzz("telnyx")

    def test_plivo_hostile_streams(self) -> None:
        """Plivo: the same properties; the checkpoint and clearAudio messages carry the stream id."""
        self.fuzz("plivo")

    def test_exotel_hostile_streams(self) -> None:
        """Exotel: the same properties; every outbound message carries the stream sid."""
        self.fuzz("exotel")


# --- Vonage ---------------------------------------------------------------------------------------


def vonage_connected(rng: random.Random, ok: bool) -> dict[str, Any]:
    if ok:
        content_type = rng.choice(("audio/l16;rate=16000", "audio/l16;rate=8000", "audio/L16; rate=24000"))
    else:
        content_type = rng.choice(("audio/l16;rate=44100", "audio/pcmu;rate=8000", "audio/l16", 5, None,
                                   "audio/l16;rate=" + rng.choice(("\u00b2", "9" * 5000, "-1", ""))))
    message: dict[str, Any] = {"event": "websocket:connected", "content-type": content_type}
    message.update(rng.choice(({"uuid": "u-1", "caller": "+1555"}, {}, {"conversation_uuid": "\ud800", "n": 5},
                               {"app": {"nested": [1, None, 1e308]}, "empty": None, "call_uuid": ""})))
    return message


def vonage_valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(8)
    if op <= 1:
        return vonage_connected(rng, True)
    if op == 2:
        return {"event": "websocket:dtmf", "digit": rng.choice(("5", "#", "12")), "duration": 260}
    if op == 3:
        return {"event": "websocket:dtmf", "dtmf": {"digit": "7", "duration": 100}}
    if op <= 5:
        return {"event": "websocket:notify", "payload": {"name": hostile_string(rng)}}
    if op == 6:
        return {"event": "websocket:cleared"}
    return {"event": "x" + identifier(rng), "payload": {}}


class VonageFuzzTests(unittest.TestCase):
    """VonageSession against generated hostile streams of text and binary frames."""

    def run_program(self, program: bytes) -> None:
        session = VonageSession(new_id=lambda: "generated")
        trace = Trace()
        for op, rng in steps(program):
            dead_before = trace.dead
            started = session.started
            expected: Verdict = UNKNOWN
            if op < 80:
                message = vonage_valid(rng)
                event = message["event"]
                expected = "duplicate_start" if event == "websocket:connected" and started else \
                    "dtmf_before_start" if event == "websocket:dtmf" and not started else None
                events = session.receive_text(dump(message))
                if expected is None and event.startswith("x") and not dead_before:
                    self.assertEqual(events, [MessageIgnored("unknown_event")])
            elif op < 125:
                text, expected = self._targeted(rng, started)
                events = session.receive_text(text)
            elif op < 165:
                events = session.receive_text(mutate(vonage_valid(rng), rng))
            elif op < 210:
                size = session.frame_bytes + rng.choice((0, 0, 0, 1, -1, -2, 2)) if rng.random() < 0.7 \
                    else len(binary_frame(rng))
                data = rng.randbytes(size)
                events = session.receive_binary(data)
                if not started:
                    expected = "media_before_start"
                elif not data or size == session.frame_bytes:
                    expected = None
                    if not dead_before:
                        self.assertEqual(events, [CallerAudio(data)] if data else [MessageIgnored("empty_frame")])
                else:
                    expected = "bad_frame_size"
            elif op < 215:
                expected = "bad_utf8"
                events = session.invalid_text(rng.choice(INVALID_UTF8))
            else:
                common_command(session, rng)
                events, expected = [], None
            output = session.take_output()
            if dead_before:
                self.assertEqual((events, output), ([], []), "input accepted after the end")
                continue
            check_events(self, trace, events, VONAGE_KINDS, BINARY_IGNORED)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected)
            for item in output:
                if isinstance(item, bytes):
                    self.assertEqual(len(item), session.frame_bytes, "exactly one frame per message")
                else:
                    self.assertIn(strict_json(item)["action"], ("notify", "clear"))
            if kind is not None:
                self.assertEqual(output, [], "Vonage has no error message: the glue closes")
            if kind is not None or session._ended:
                trace.dead = True

    @staticmethod
    def _targeted(rng: random.Random, started: bool) -> tuple[str, str]:
        op = rng.randrange(8)
        if op == 0:
            return garbage_text(rng), "bad_json"
        if op == 1:
            return dump(rng.choice(([], 1, "websocket:connected", None))), "bad_json"
        if op == 2:
            return oversize("websocket:notify"), "oversize"
        if op == 3:
            return dump({"event": rng.choice((None, 5, [], {}))}), "bad_message"
        if op == 4:
            return dump({"event": "websocket:notify", "payload": rng.choice(({"name": 1}, {}, None, "n"))}), \
                "wrong_type"
        if op == 5:
            digit = rng.choice(BAD_DIGITS[1:])  # a null digit looks for the nested shape: still no digit
            return dump({"event": "websocket:dtmf", "digit": digit}), "wrong_type" if started else "dtmf_before_start"
        return dump(vonage_connected(rng, op == 6)), "duplicate_start" if started else \
            None if op == 6 else "unsupported_format"

    def test_hostile_streams(self) -> None:
        """Vonage: never an exception; bounded kinds as predicted; exact frames pass, empty ones
        are ignored, any other size before or after the opening is a violation; binary output is
        always exactly one frame; nothing queued on a violation, nothing accepted after it."""
        run_programs(self, self.run_program)


# --- jambonz --------------------------------------------------------------------------------------


def jambonz_metadata(rng: random.Random, ok: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"callSid": "cs-" + str(rng.randrange(99)), "from": "+1555", "to": "+1556",
                               "direction": "inbound", "callId": "x@y", "accountSid": "a", "applicationSid": "b"}
    if ok:
        message.update(rng.choice(({"sampleRate": rng.choice((8000, 16000, 24000, 48000, 64000)), "mixType": "mono"},
                                   {"sampleRate": 16000, "mixType": "mixed"}, {})))
        message.update(rng.choice(({}, {"metadata": {"tenant": "\ud800", "n": [1, 2]}}, {"x": None, "y": 1e308})))
    else:
        message.update(rng.choice(({"sampleRate": rng.choice(ODD_RATES)}, {"mixType": "stereo"},
                                   {"mixType": ["mono"]}, {"sampleRate": 16000.0})))
    return message


def jambonz_valid(rng: random.Random, started: bool) -> dict[str, Any]:
    op = rng.randrange(8)
    if op == 0 or (not started and op <= 4):
        return jambonz_metadata(rng, True)
    if op <= 3:
        return {"type": "mark", "data": {"name": hostile_string(rng), "event": rng.choice(("playout", "cleared"))}}
    if op == 4:
        return {"event": "dtmf", "dtmf": rng.choice(("5", "#", "0123")), "duration": 120}
    if op == 5:
        return {"type": "playDone", "id": "p"}
    return rng.choice(({"type": identifier(rng, "x")}, {"event": identifier(rng, "x"), "data": [1]}))


class JambonzFuzzTests(unittest.TestCase):
    """JambonzSession against generated hostile streams of text and binary frames."""

    def run_program(self, program: bytes) -> None:
        session = JambonzSession()
        trace = Trace()
        for op, rng in steps(program):
            dead_before = trace.dead
            started = session.started
            expected: Verdict = UNKNOWN
            if op < 80:
                message = jambonz_valid(rng, started)
                # The first text frame is the call metadata; a second one has neither a type nor
                # an event name.
                expected = None if started != ("callSid" in message) else "bad_message"
                events = session.receive_text(dump(message))
                unknown = str(message.get("type", message.get("event", ""))).startswith("x")
                if started and unknown and not dead_before:
                    self.assertEqual(events, [MessageIgnored("unknown_event")])
            elif op < 125:
                text, expected = self._targeted(rng, started)
                events = session.receive_text(text)
            elif op < 165:
                events = session.receive_text(mutate(jambonz_valid(rng, started), rng))
            elif op < 210:
                size = rng.choice((0, 1, 2, 3, 160, 319, 320, 640, session.max_frame_bytes,
                                   session.max_frame_bytes + 1, session.max_frame_bytes + 2))
                data = rng.randbytes(size)
                events = session.receive_binary(data)
                expected = ("media_before_start" if not started else None if not size or size % 2 == 0
                            and size <= session.max_frame_bytes else "bad_payload" if size % 2 else "oversize_frame")
                if started and expected is None and not dead_before:
                    self.assertEqual(events, [CallerAudio(data)] if size else [MessageIgnored("empty_frame")])
            elif op < 215:
                expected = "bad_utf8"
                events = session.invalid_text(rng.choice(INVALID_UTF8))
            else:
                common_command(session, rng)
                events, expected = [], None
            output = session.take_output()
            if dead_before:
                self.assertEqual((events, output), ([], []), "input accepted after the end")
                continue
            check_events(self, trace, events, JAMBONZ_KINDS, BINARY_IGNORED)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected)
            types = [strict_json(item)["type"] for item in output if isinstance(item, str)]
            self.assertTrue(set(types) <= {"mark", "killAudio", "disconnect"}, types)
            if kind is not None:
                self.assertEqual(output, [], "jambonz has no error message: the glue closes")
            if kind is not None or session._ended:
                self.assertNotIn("disconnect", types[:-1])
                trace.dead = True

    @staticmethod
    def _targeted(rng: random.Random, started: bool) -> tuple[str, str]:
        op = rng.randrange(8)
        if op == 0:
            return garbage_text(rng), "bad_json"
        if op == 1:
            return dump(rng.choice(([], 1, "mark", None))), "bad_json"
        if op == 2:
            return oversize("mark"), "oversize"
        if not started:
            if op <= 4:
                return dump({**jambonz_metadata(rng, True), "callSid": rng.choice(("", None, 5, []))}), "bad_message"
            return dump(jambonz_metadata(rng, False)), "unsupported_format"
        if op == 3:
            return dump({"type": rng.choice((None, 5, [], {}))}), "bad_message"
        if op <= 5:
            return dump({"type": "mark", "data": rng.choice(({"name": 1}, {}, None, "n", []))}), "wrong_type"
        return dump({"event": "dtmf", "dtmf": rng.choice(BAD_DIGITS)}), "wrong_type"

    def test_hostile_streams(self) -> None:
        """jambonz: never an exception; bounded kinds as predicted; the first text frame is the
        call metadata, audio before it a violation; whole-sample frames pass, empty ones are
        ignored; nothing queued on a violation, nothing accepted after it or after disconnect."""
        run_programs(self, self.run_program)


# --- the generic WebSocket platform ---------------------------------------------------------------

OPUS_PACKETS = tuple(OpusEncoder(48000, 1, 20).encode(bytes([i, 0]) * 960) for i in range(0, 256, 64))
"""Real Opus packets (20 ms at 48 kHz), made once."""


def websocket_start(rng: random.Random) -> dict[str, Any]:
    fmt = rng.choice(({"encoding": "l16", "rate_hz": rng.choice((8000, 16000, 24000, 48000))},
                      {"encoding": "opus", "rate_hz": 48000}))
    message: dict[str, Any] = {"type": "start", "call_id": rng.choice(("c-1", "\ud800", "é" * 256)), "format": fmt}
    message.update(rng.choice(({"metadata": {"k": hostile_string(rng)}}, {}, {"metadata": None})))
    return message


def websocket_valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(10)
    if op <= 1:
        return websocket_start(rng)
    if op <= 3:
        return {"type": "mark", "name": hostile_string(rng)}
    if op == 4:
        return {"type": "dtmf", "digits": rng.choice(("1", "12#", "*0ABCD"))}
    if op <= 6:
        return {"type": rng.choice(("pause", "resume"))}
    if op == 7:
        return {"type": "stop", "reason": hostile_string(rng)}
    return {"type": identifier(rng, "x"), "data": {"a": [1]}}


def websocket_bad_start(rng: random.Random) -> tuple[dict[str, Any], str]:
    """A ``start`` the session refuses, and why."""
    message = websocket_start(rng)
    op = rng.randrange(5)
    if op == 0:
        field = rng.choice(("call_id", "format"))
        message[field] = rng.choice(("", None, 5, [], "l16" if field == "format" else {}))
        return message, "bad_message"
    if op == 1:
        message["call_id"] = "c" * 257
        return message, "bad_message"
    if op == 2:
        message["metadata"] = rng.choice(({"a": 1}, [], "x", {"a": None}))
        return message, "wrong_type"
    if op == 3:
        message["metadata"] = {str(i): "v" for i in range(MAX_METADATA_ENTRIES + 1)}
        return message, "bad_message"
    message["format"] = rng.choice(({"encoding": "pcmu", "rate_hz": 8000}, {"encoding": "l16", "rate_hz": 44100},
                                    {"encoding": "l16", "rate_hz": 7000}, {"encoding": "l16", "rate_hz": "8000"},
                                    {"encoding": "opus", "rate_hz": 16000}, {"encoding": ["l16"], "rate_hz": 8000},
                                    {"encoding": "l16", "rate_hz": True}))
    return message, "unsupported_format"


class WebSocketClientFuzzTests(unittest.TestCase):
    """WebSocketClientSession (L16 and Opus) against generated hostile streams."""

    def run_program(self, program: bytes) -> None:
        session = WebSocketClientSession(encodings=("l16", "opus"))
        trace = Trace()
        paused = False
        for op, rng in steps(program):
            dead_before = trace.dead
            started = session._started
            expected: Verdict = UNKNOWN
            if op < 90:
                message = websocket_valid(rng)
                mtype = message["type"]
                expected = ("duplicate_start" if mtype == "start" and started
                            else "dtmf_before_start" if mtype == "dtmf" and not started else None)
                events = session.receive_text(dump(message))
                if not dead_before and expected is None:
                    if mtype.startswith("x"):
                        self.assertEqual(events, [MessageIgnored("unknown_type")])
                    elif mtype in ("pause", "resume"):
                        now = mtype == "pause"
                        self.assertEqual(events, [PlaybackPaused(now)] if started and now != paused else [])
                        paused = now
                    elif mtype == "start":
                        self.assertIsInstance(events[0], CallStarted)
                        self.assertEqual(events[1:], [PlaybackPaused(True)] if paused else [])
            elif op < 140:
                text, expected = self._targeted(rng, started)
                events = session.receive_text(text)
            elif op < 175:
                events = session.receive_text(mutate(websocket_valid(rng), rng))
            elif op < 215:
                data, expected = self._frame(session, rng)
                events = session.receive_binary(data)
            elif op < 220:
                expected = "bad_utf8"
                events = session.invalid_text(rng.choice(INVALID_UTF8))
            else:
                common_command(session, rng)
                events, expected = [], None
            output = session.take_output()
            if dead_before:
                self.assertEqual((events, output), ([], []), "input accepted after the end")
                continue
            check_events(self, trace, events, WEBSOCKET_KINDS, frozenset({"unknown_type"}))
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected)
            texts = [strict_json(item) for item in output if isinstance(item, str)]
            types = [m["type"] for m in texts]
            self.assertTrue(set(types) <= {"mark", "clear", "stop", "error"}, types)
            if kind is not None:
                self.assertEqual(types[-1:], ["error"], "a violation is answered with error")
                self.assertEqual(texts[-1]["reason"], kind)
                self.assertIsInstance(output[-1], str)
            self.assertNotIn("stop", types[:-1])
            if kind is not None or session.finished:
                trace.dead = True

    @staticmethod
    def _frame(session: WebSocketClientSession, rng: random.Random) -> tuple[bytes, Verdict]:
        """A binary frame and its verdict (unknown for random bytes in Opus)."""
        if not session._started:
            return binary_frame(rng), "media_before_start"
        if session.wire_encoding == "opus":
            op = rng.randrange(4)
            if op == 0:
                return rng.choice(OPUS_PACKETS), None
            if op == 1:
                return b"", None  # a lost packet: concealed
            if op == 2:
                return rng.randbytes(rng.choice((4001, 70000))), "oversize_frame"
            return binary_frame(rng)[:4000], UNKNOWN
        limit = session._max_frame_bytes
        size = rng.choice((0, 1, 3, 160, 320, limit, limit + 1, limit + 2))
        verdict = "oversize_frame" if size > limit else "bad_payload" if size % 2 else None
        return rng.randbytes(size), verdict

    @staticmethod
    def _targeted(rng: random.Random, started: bool) -> tuple[str, str]:
        op = rng.randrange(8)
        if op == 0:
            return garbage_text(rng), "bad_json"
        if op == 1:
            return dump(rng.choice(([], 1, "start", None))), "bad_json"
        if op == 2:
            return dump({"type": "mark", "name": "x" * 65540}), "oversize"
        if op == 3:
            return dump({"type": rng.choice((None, 5, [], {}))}), "bad_message"
        if op == 4:
            return dump({"type": "mark", "name": rng.choice(BAD_NAMES)}), "wrong_type"
        if op == 5:
            digits = rng.choice(BAD_DIGITS)
            return dump({"type": "dtmf", "digits": digits}), "wrong_type" if started else "dtmf_before_start"
        message, kind = websocket_bad_start(rng)
        return dump(message), "duplicate_start" if started else kind

    def test_hostile_streams(self) -> None:
        """The generic WebSocket platform: never an exception; bounded kinds as predicted, each
        answered with ``error`` naming it; pause/resume reported once per change and only after
        start; real Opus packets and lost ones (empty frames) pass; nothing after the end."""
        run_programs(self, self.run_program)

