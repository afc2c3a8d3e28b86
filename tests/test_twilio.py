"""Tests for the Twilio Media Streams session (mediaproxy.platforms.twilio): a whole-session
transcript, outbound JSON, malformed input (one violation, then silence), fuzzed input, isolation
between sessions, and the X-Twilio-Signature check on the upgrade."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.outcome import Outcome
from mediaproxy.platforms import base, twilio
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformEvent,
    ProtocolViolation,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.twilio import TwilioOptions, TwilioSession
from mediaproxy.transcripts import Transcript

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
ACCOUNT_SID = "AC25e16e9a716a4a1786a7c83f58e30482"
CALL_SID = "CA8f1e5e2d0e8b4c1e9a0b3c2d1e0f9a8b"
PARAMS = {"tenant": "acme", "agent": "sales", "note": "caf\u00e9 \"quoted\""}
FRAME_BYTES = 160  # 20 ms of µ-law at 8 kHz, what Twilio sends per media message
MAX_FRAME_BYTES = MULAW_8K.bytes_for_ms(200)

BASE_EVENT_TYPES = (
    base.CallStarted,
    base.CallerAudio,
    base.DtmfReceived,
    base.MarkPlayed,
    base.PlaybackFlowChanged,
    base.CallerStreamPaused,
    base.CallEnded,
    base.ResumeRequested,
    base.MessageIgnored,
    base.ProtocolViolation,
)
VIOLATION_KINDS = frozenset({
    "binary_frame", "oversize", "bad_json", "bad_message", "duplicate_start",
    "wrong_type", "unsupported_format", "media_before_start", "oversize_frame", "bad_base64",
    "dtmf_before_start",
})


def settings(auth_token: str = "", max_frame_ms: int = 200) -> TwilioOptions:
    return TwilioOptions(auth_token=auth_token, max_frame_ms=max_frame_ms)


def session() -> TwilioSession:
    s = twilio.new_session(settings())
    assert isinstance(s, TwilioSession)
    return s


# --- realistic Twilio messages ------------------------------------------------------------------


def mulaw_frame(seed: int) -> bytes:
    """160 bytes of plausible µ-law: mostly near-silence (0xFF/0x7F region) with some speech."""
    rng = random.Random(seed)
    return bytes(rng.choice((0xFF, 0x7F, 0xFE, 0x7E)) if rng.random() < 0.5 else rng.randrange(256)
                 for _ in range(FRAME_BYTES))


def connected() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(stream_sid: str = STREAM_SID, params: dict[str, Any] | None = None,
          **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "streamSid": stream_sid,
        "accountSid": ACCOUNT_SID,
        "callSid": CALL_SID,
        "tracks": ["inbound"],
        "customParameters": dict(PARAMS) if params is None else params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    body.update(overrides)
    return {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": body}


def media(payload: bytes | str, seq: int = 2, track: str = "inbound") -> dict[str, Any]:
    encoded = payload if isinstance(payload, str) else base64.b64encode(payload).decode("ascii")
    return {"event": "media", "sequenceNumber": str(seq), "streamSid": STREAM_SID,
            "media": {"track": track, "chunk": str(seq - 1), "timestamp": str((seq - 2) * 20),
                      "payload": encoded}}


def dtmf(digit: Any, seq: int = 50) -> dict[str, Any]:
    return {"event": "dtmf", "sequenceNumber": str(seq), "streamSid": STREAM_SID,
            "dtmf": {"track": "inbound_track", "digit": digit}}


def mark(name: str, seq: int = 60) -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": str(seq), "streamSid": STREAM_SID,
            "mark": {"name": name}}


def stop(seq: int = 100) -> dict[str, Any]:
    return {"event": "stop", "sequenceNumber": str(seq), "streamSid": STREAM_SID,
            "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID}}


def text(message: Any) -> str:
    return json.dumps(message)


def started() -> TwilioSession:
    s = session()
    s.receive_text(text(connected()))
    s.receive_text(text(start()))
    return s


def feed(s: TwilioSession, messages: list[str]) -> list[PlatformEvent]:
    events: list[PlatformEvent] = []
    for m in messages:
        events.extend(s.receive_text(m))
    return events


# --- 1. a whole session -------------------------------------------------------------------------


class TranscriptTests(SynchronousTestCase):
    def test_whole_session(self) -> None:
        frames = [mulaw_frame(i) for i in range(50)]
        messages = [connected(), start()]
        expected: list[PlatformEvent] = [CallStarted(CALL_SID, MULAW_8K, PARAMS)]
        seq = 2
        for i, frame in enumerate(frames):
            messages.append(media(frame, seq))
            expected.append(CallerAudio(frame))
            seq += 1
            if i == 20:
                messages.append(dtmf("5", seq))
                expected.append(DtmfReceived("5"))
                seq += 1
            if i in (30, 40):
                messages.append(mark(f"resp_7:{i * 20}", seq))
                expected.append(MarkPlayed(f"resp_7:{i * 20}"))
                seq += 1
        messages.append(stop(seq))
        expected.append(CallEnded("stop"))

        s = session()
        events = feed(s, [text(m) for m in messages])

        self.assertEqual(events, expected)
        audio = b"".join(e.data for e in events if isinstance(e, CallerAudio))
        self.assertEqual(audio, b"".join(frames))
        self.assertTrue(all(e.channel == "external" for e in events if isinstance(e, CallerAudio)))
        self.assertEqual((s.stream_sid, s.call_sid, s.account_sid), (STREAM_SID, CALL_SID, ACCOUNT_SID))
        self.assertEqual(s.custom_parameters, PARAMS)
        self.assertEqual(s.take_output(), [])  # Twilio is never answered

    def test_connected_yields_nothing(self) -> None:
        self.assertEqual(session().receive_text(text(connected())), [])

    def test_call_started_metadata(self) -> None:
        [event] = session().receive_text(text(start()))
        assert isinstance(event, CallStarted)
        self.assertEqual(event.call_id, CALL_SID)
        self.assertEqual(event.audio_format, MULAW_8K)
        self.assertEqual(dict(event.metadata), PARAMS)

    def test_start_without_custom_parameters(self) -> None:
        message = start()
        del message["start"]["customParameters"]
        s = session()
        self.assertEqual(s.receive_text(text(message)), [CallStarted(CALL_SID, MULAW_8K, {})])
        self.assertEqual(s.custom_parameters, {})

    def test_stream_sid_only_at_top_level(self) -> None:
        message = start()
        del message["start"]["streamSid"]
        s = session()
        self.assertEqual(s.receive_text(text(message)), [CallStarted(CALL_SID, MULAW_8K, PARAMS)])
        self.assertEqual(s.stream_sid, STREAM_SID)

    def test_parameters_copied(self) -> None:
        params = {"tenant": "acme"}
        s = session()
        [event] = s.receive_text(text(start(params=params)))
        assert isinstance(event, CallStarted)
        s.custom_parameters["tenant"] = "changed"
        self.assertEqual(dict(event.metadata), {"tenant": "acme"})

    def test_other_track_ignored(self) -> None:
        s = started()
        self.assertEqual(s.receive_text(text(media(mulaw_frame(1), track="outbound"))), [])
        frame = mulaw_frame(2)
        self.assertEqual(s.receive_text(text(media(frame))), [CallerAudio(frame)])

    def test_media_frame_at_limit_accepted(self) -> None:
        frame = b"\xff" * MAX_FRAME_BYTES
        self.assertEqual(started().receive_text(text(media(frame))), [CallerAudio(frame)])

    def test_nothing_after_stop(self) -> None:
        s = started()
        self.assertEqual(s.receive_text(text(stop())), [CallEnded("stop")])
        self.assertEqual(s.receive_text(text(media(mulaw_frame(1)))), [])
        self.assertEqual(s.receive_text(text(mark("late"))), [])
        self.assertEqual(s.receive_text("not json"), [])


# --- 2. outbound --------------------------------------------------------------------------------


def parsed(s: TwilioSession) -> list[Any]:
    out = s.take_output()
    for item in out:
        assert isinstance(item, str), item
    return [json.loads(item) for item in out]


class OutboundTests(SynchronousTestCase):
    def test_play_mark_clear(self) -> None:
        s = started()
        packet = mulaw_frame(9)
        s.play(packet)
        s.mark("resp_7:1200")
        s.clear()
        self.assertEqual(parsed(s), [
            {"event": "media", "streamSid": STREAM_SID,
             "media": {"payload": base64.b64encode(packet).decode("ascii")}},
            {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "resp_7:1200"}},
            {"event": "clear", "streamSid": STREAM_SID},
        ])
        self.assertEqual(s.take_output(), [])

    def test_payload_round_trips(self) -> None:
        s = started()
        packets = [bytes(range(256)), b"", b"\xff" * 400, mulaw_frame(3)]
        for p in packets:
            s.play(p)
        decoded = [base64.b64decode(m["media"]["payload"], validate=True) for m in parsed(s)]
        self.assertEqual(decoded, packets)

    def test_escaping(self) -> None:
        sid = 'MZ"q\\uo\u2603\n\t\x00\U0001f600'
        name = 'a"b\\c</mark>\u00e9\U0001f600\r'
        s = session()
        s.receive_text(text(start(stream_sid=sid)))
        self.assertEqual(s.stream_sid, sid)
        s.play(b"\x7f\xff")
        s.mark(name)
        s.clear()
        self.assertEqual(parsed(s), [
            {"event": "media", "streamSid": sid, "media": {"payload": "f/8="}},
            {"event": "mark", "streamSid": sid, "mark": {"name": name}},
            {"event": "clear", "streamSid": sid},
        ])

    def assertSilent(self, s: TwilioSession) -> None:
        s.play(mulaw_frame(1))
        s.mark("m")
        s.clear()
        self.assertEqual(s.take_output(), [])

    def test_nothing_before_start(self) -> None:
        s = session()
        self.assertSilent(s)
        s.receive_text(text(connected()))
        self.assertSilent(s)

    def test_nothing_after_hangup(self) -> None:
        s = started()
        s.hangup(Outcome.BOT_HANGUP, "bot hung up")
        self.assertSilent(s)

    def test_nothing_after_stop(self) -> None:
        s = started()
        s.receive_text(text(stop()))
        self.assertSilent(s)

    def test_nothing_after_violation(self) -> None:
        s = started()
        s.receive_text("{")
        self.assertSilent(s)

    def test_no_op_commands(self) -> None:
        s = started()
        s.playback_finished()
        s.caller_speech(True)
        s.transcript(Transcript("bot", "hi", True))
        s.send_dtmf("1")
        self.assertFalse(s.pause_caller_audio(True))
        self.assertEqual(s.take_output(), [])
        self.assertTrue(TwilioSession.capabilities.can_flush)
        self.assertTrue(TwilioSession.capabilities.has_marks)


# --- 3. malformed input -------------------------------------------------------------------------


def later_input() -> list[str]:
    """Valid input that must be ignored once a session has ended."""
    return [text(connected()), text(start()), text(media(mulaw_frame(5))), text(dtmf("1")),
            text(mark("m")), text(stop()), "{", "[]"]


class MalformedTests(SynchronousTestCase):
    def assertViolation(self, s: TwilioSession, message: str, kind: str) -> None:
        events = s.receive_text(message)
        self.assertEqual(len(events), 1, events)
        [event] = events
        if not isinstance(event, ProtocolViolation):
            self.fail(f"expected a ProtocolViolation, got {type(event).__name__}")
        self.assertEqual(event.kind, kind)
        self.assertEqual(s.take_output(), [])
        for later in later_input():
            self.assertEqual(s.receive_text(later), [], later)
        self.assertEqual(s.take_output(), [])

    def test_bad_json(self) -> None:
        self.assertViolation(started(), '{"event": "media",', "bad_json")

    def test_json_array(self) -> None:
        self.assertViolation(started(), text([mark("m")]), "bad_json")

    def test_json_number(self) -> None:
        self.assertViolation(started(), "42", "bad_json")

    def test_json_string_and_null(self) -> None:
        self.assertViolation(session(), '"start"', "bad_json")
        self.assertViolation(session(), "null", "bad_json")

    def test_missing_event(self) -> None:
        message = media(mulaw_frame(1))
        del message["event"]
        self.assertViolation(started(), text(message), "bad_message")

    def test_event_not_a_string(self) -> None:
        self.assertViolation(started(), text({"event": ["media"]}), "bad_message")

    def test_unknown_event_is_counted_and_the_call_goes_on(self) -> None:
        """Twilio adds events; one we do not know is ignored under a fixed kind, never fatal."""
        s = started()
        for name in ("pause", "x" * 10000, "media.v2"):
            self.assertEqual(s.receive_text(text({"event": name, "streamSid": STREAM_SID})),
                             [MessageIgnored("unknown_event")])
        self.assertEqual(s.take_output(), [])
        self.assertEqual(s.receive_text(text(media(mulaw_frame(3)))), [CallerAudio(mulaw_frame(3))])
        s.play(b"\xff" * FRAME_BYTES)
        self.assertEqual(len(s.take_output()), 1)
        # Before start too: it is not a message about the call.
        self.assertEqual(session().receive_text(text({"event": "hello"})), [MessageIgnored("unknown_event")])

    def test_malformed_known_events_are_still_violations(self) -> None:
        self.assertViolation(started(), text({"event": "media", "media": {"payload": 5}}), "wrong_type")
        self.assertViolation(started(), text({"event": "dtmf", "dtmf": {}}), "wrong_type")

    def test_media_before_start(self) -> None:
        s = session()
        s.receive_text(text(connected()))
        self.assertViolation(s, text(media(mulaw_frame(1))), "media_before_start")

    def test_bad_base64(self) -> None:
        self.assertViolation(started(), text(media("not base64!!")), "bad_base64")

    def test_bad_base64_padding(self) -> None:
        self.assertViolation(started(), text(media("/w")), "bad_base64")

    def test_payload_wrong_type(self) -> None:
        for payload in (None, 160, ["/w=="], {"data": "/w=="}):
            message = media(b"")
            message["media"]["payload"] = payload
            self.assertViolation(started(), text(message), "wrong_type")

    def test_media_not_an_object(self) -> None:
        message = media(b"")
        message["media"] = "/////w=="
        self.assertViolation(started(), text(message), "wrong_type")

    def test_oversized_media_frame(self) -> None:
        self.assertViolation(started(), text(media(b"\xff" * (2 * MAX_FRAME_BYTES))), "oversize_frame")

    def test_media_frame_one_byte_over_limit(self) -> None:
        # max_frame_ms=200 → 1600 bytes; 1601 bytes (2136 base64 characters) is above it.
        self.assertViolation(started(), text(media(b"\xff" * (MAX_FRAME_BYTES + 1))), "oversize_frame")


    def test_wrong_media_format(self) -> None:
        for fmt in ({"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1},
                    {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
                    {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
                    {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1},
                    {}):
            self.assertViolation(session(), text(start(mediaFormat=fmt)), "unsupported_format")

    def test_media_format_wrong_type(self) -> None:
        self.assertViolation(session(), text(start(mediaFormat="audio/x-mulaw")), "wrong_type")

    def test_start_missing_call_sid(self) -> None:
        message = start()
        del message["start"]["callSid"]
        self.assertViolation(session(), text(message), "bad_message")

    def test_start_empty_call_sid(self) -> None:
        self.assertViolation(session(), text(start(callSid="")), "bad_message")

    def test_start_missing_stream_sid(self) -> None:
        message = start()
        del message["start"]["streamSid"]
        del message["streamSid"]
        self.assertViolation(session(), text(message), "bad_message")

    def test_start_without_start_object(self) -> None:
        self.assertViolation(session(), text({"event": "start", "streamSid": STREAM_SID}),
                             "bad_message")

    def test_duplicate_start(self) -> None:
        s = started()
        self.assertViolation(s, text(start(callSid="CAother")), "duplicate_start")
        self.assertEqual(s.call_sid, CALL_SID)

    def test_custom_parameters_not_strings(self) -> None:
        for params in ({"tenant": 1}, {"tenant": None}, {"tenant": ["acme"]}, {"a": "b", "c": {}}):
            s = session()
            self.assertViolation(s, text(start(params=params)), "wrong_type")
            self.assertEqual(s.custom_parameters, {})

    def test_custom_parameters_not_an_object(self) -> None:
        self.assertViolation(session(), text(start(params=["tenant"])), "wrong_type")  # type: ignore[arg-type]

    def test_account_sid_wrong_type(self) -> None:
        self.assertViolation(session(), text(start(accountSid=7)), "wrong_type")

    def test_dtmf_invalid_digit(self) -> None:
        for digit in ("E", "", "5x", 5, None):
            self.assertViolation(started(), text(dtmf(digit)), "wrong_type")

    def test_dtmf_before_start(self) -> None:
        self.assertViolation(session(), text(dtmf("5")), "dtmf_before_start")

    def test_mark_without_name(self) -> None:
        self.assertViolation(started(), text({"event": "mark", "streamSid": STREAM_SID, "mark": {}}),
                             "wrong_type")
        self.assertViolation(started(), text({"event": "mark", "streamSid": STREAM_SID}), "wrong_type")
        self.assertViolation(started(), text(mark(7)), "wrong_type")  # type: ignore[arg-type]

    def test_binary_frame(self) -> None:
        s = started()
        events = s.receive_binary(base64.b64encode(mulaw_frame(1)))
        self.assertEqual([type(e) for e in events], [ProtocolViolation])
        self.assertEqual(events[0].kind, "binary_frame")  # type: ignore[union-attr]
        for later in later_input():
            self.assertEqual(s.receive_text(later), [], later)
        self.assertEqual(s.take_output(), [])

    def test_binary_frame_after_end_ignored(self) -> None:
        s = started()
        self.assertEqual(len(s.receive_binary(b"\x00")), 1)
        self.assertEqual(s.receive_binary(b"\x00"), [])
        stopped = started()
        stopped.receive_text(text(stop()))
        self.assertEqual(stopped.receive_binary(b"\x00"), [])


    def test_oversize_text(self) -> None:
        padded = start()
        padded["padding"] = "x" * (twilio.MAX_MESSAGE_CHARS + 1)
        self.assertViolation(session(), text(padded), "oversize")

    def test_text_at_limit_is_parsed(self) -> None:
        message = text(mark("m"))
        message = message[:-1] + " " * (twilio.MAX_MESSAGE_CHARS - len(message)) + "}"
        self.assertEqual(len(message), twilio.MAX_MESSAGE_CHARS)
        self.assertEqual(started().receive_text(message), [MarkPlayed("m")])

    def test_deeply_nested_json(self) -> None:
        # Well under 64 KiB, but deeper than the JSON parser's recursion limit.
        self.assertViolation(started(), "[" * 5000, "bad_json")
        self.assertViolation(started(), '{"event":"mark","mark":' + "[" * 5000, "bad_json")



# --- fuzz ---------------------------------------------------------------------------------------

_ODD_VALUES: list[Any] = [None, True, 0, -1, 1.5, "", "x", "\u2603", [], [1], {}, {"a": 1},
                          "x" * 3000, 10 ** 30]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, prefix + (i,)))
    return out


def _mutate(rng: random.Random, message: dict[str, Any]) -> str:
    choice = rng.randrange(6)
    if choice == 0:  # truncation
        t = text(message)
        return t[:rng.randrange(len(t))]
    if choice == 1:  # random bytes as text
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).decode("latin-1")
    if choice == 2:  # random bytes spliced into valid text
        t = text(message)
        at = rng.randrange(len(t))
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))).decode("latin-1")
        return t[:at] + junk + t[at:]
    m = copy.deepcopy(message)
    paths = [p for p in _paths(m) if p]
    path = rng.choice(paths)
    parent: Any = m
    for k in path[:-1]:
        parent = parent[k]
    if choice == 3:  # type swap
        parent[path[-1]] = rng.choice(_ODD_VALUES)
    elif choice == 4:  # deleted key (or list item)
        del parent[path[-1]]
    else:  # whole message replaced by another JSON type
        return text(rng.choice(_ODD_VALUES + [[m]]))
    return text(m)


class FuzzTests(SynchronousTestCase):
    def test_mutations_never_raise(self) -> None:
        rng = random.Random(20240517)
        kinds_seen: set[str] = set()
        for _ in range(600):
            transcript = [connected(), start()]
            transcript += [media(mulaw_frame(rng.randrange(1000)), seq) for seq in range(2, 8)]
            transcript += [dtmf(rng.choice("0123456789*#")), mark("resp_1:100"), stop()]
            messages = [_mutate(rng, m) if rng.random() < 0.3 else text(m) for m in transcript]
            s = session()
            ended = False
            for m in messages:
                events = s.receive_text(m)
                if ended:
                    self.assertEqual(events, [])
                for e in events:
                    self.assertIsInstance(e, BASE_EVENT_TYPES)
                    self.assertEqual(type(e).__module__, "mediaproxy.platforms.base")
                    if isinstance(e, ProtocolViolation):
                        self.assertEqual(events, [e])
                        self.assertIn(e.kind, VIOLATION_KINDS)
                        kinds_seen.add(e.kind)
                    if isinstance(e, CallerAudio):
                        self.assertLessEqual(len(e.data), MAX_FRAME_BYTES)
                    if isinstance(e, (ProtocolViolation, CallEnded)):
                        ended = True
                s.play(b"\xff" * FRAME_BYTES)
                s.mark("m")
                for out in s.take_output():
                    assert isinstance(out, str)
                    json.loads(out)
        # The mutations reach the interesting branches, not just bad_json.
        self.assertTrue({"bad_json", "wrong_type", "bad_message"} <= kinds_seen, kinds_seen)


# --- 4. isolation -------------------------------------------------------------------------------


class IsolationTests(SynchronousTestCase):
    def test_violation_in_one_session_leaves_other_alone(self) -> None:
        other_sid, other_call = "MZother", "CAother"
        b_messages = [text(connected()),
                      text(start(stream_sid=other_sid, params={"tenant": "globex"},
                                 callSid=other_call))]
        b_messages += [text(media(mulaw_frame(100 + i), 2 + i)) for i in range(10)]
        b_messages += [text(mark("b:1")), text(stop())]
        a_messages = [text(connected()), text(start())]
        a_messages += [text(media(mulaw_frame(i), 2 + i)) for i in range(4)]
        a_messages += [text(media("!!!bad!!!", 6))]
        a_messages += [text(media(mulaw_frame(i), 7 + i)) for i in range(7)]

        b_alone = feed(session(), b_messages)

        a, b = session(), session()
        a_events: list[PlatformEvent] = []
        b_events: list[PlatformEvent] = []
        for am, bm in zip(a_messages, b_messages, strict=True):
            a_events.extend(a.receive_text(am))
            b_events.extend(b.receive_text(bm))
            b.play(b"\x7f" * FRAME_BYTES)
            a.play(b"\xff" * FRAME_BYTES)

        self.assertEqual(b_events, b_alone)
        self.assertEqual(b_events[0], CallStarted(other_call, MULAW_8K, {"tenant": "globex"}))
        self.assertEqual(b_events[-1], CallEnded("stop"))
        self.assertEqual([type(e) for e in a_events],
                         [CallStarted] + [CallerAudio] * 4 + [ProtocolViolation])
        self.assertEqual((b.stream_sid, b.call_sid, b.custom_parameters),
                         (other_sid, other_call, {"tenant": "globex"}))
        self.assertEqual((a.stream_sid, a.call_sid), (STREAM_SID, CALL_SID))
        self.assertTrue(all(json.loads(o)["streamSid"] == other_sid for o in b.take_output()))
        self.assertTrue(all(json.loads(o)["streamSid"] == STREAM_SID for o in a.take_output()))


# --- 5. check_upgrade ---------------------------------------------------------------------------

TOKEN = "12345678901234567890123456789012"
PUBLIC_URL = "wss://proxy.example.com"


def sign(token: str, url: str) -> str:
    """Twilio's scheme, computed here independently of twilio.py."""
    digest = hmac.new(token.encode("utf-8"), url.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def upgrade(signature: str | None, public_url: str = PUBLIC_URL) -> UpgradeRequest:
    headers = {"host": "h", "upgrade": "websocket", "connection": "Upgrade",
               "user-agent": "Twilio.TmeWs/1.0"}
    if signature is not None:
        headers["x-twilio-signature"] = signature
    return UpgradeRequest(target="/twilio", host="h", headers=headers, public_url=public_url)


class CheckUpgradeTests(SynchronousTestCase):
    def check(self, request: UpgradeRequest, token: str = TOKEN) -> None:
        twilio.check_upgrade(request, settings(auth_token=token), 0.0)

    def assertRefused(self, request: UpgradeRequest, token: str = TOKEN) -> None:
        refused = self.assertRaises(UpgradeRefused, self.check, request, token)
        self.assertEqual(refused.code, 403)

    def test_known_vector(self) -> None:
        # Pins the helper above to a fixed value so both cannot drift together.
        self.assertEqual(sign("key", "The quick brown fox jumps over the lazy dog"),
                         base64.b64encode(bytes.fromhex("de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"))
                         .decode("ascii"))

    def test_correct_signature(self) -> None:
        self.check(upgrade(sign(TOKEN, "wss://proxy.example.com/twilio")))

    def test_signer_added_port(self) -> None:
        self.check(upgrade(sign(TOKEN, "wss://proxy.example.com:443/twilio")))

    def test_public_url_has_port_signer_did_not(self) -> None:
        public = "wss://proxy.example.com:443"
        self.check(upgrade(sign(TOKEN, "wss://proxy.example.com/twilio"), public))
        self.check(upgrade(sign(TOKEN, "wss://proxy.example.com:443/twilio"), public))

    def test_wrong_signature(self) -> None:
        self.assertRefused(upgrade(sign("another-token", "wss://proxy.example.com/twilio")))
        self.assertRefused(upgrade(sign(TOKEN, "https://proxy.example.com/twilio")))
        self.assertRefused(upgrade(sign(TOKEN, "wss://internal:8080/twilio")))
        self.assertRefused(upgrade(sign(TOKEN, "wss://proxy.example.com/other")))
        self.assertRefused(upgrade(sign(TOKEN, "wss://proxy.example.com:8443/twilio")))
        self.assertRefused(upgrade("garbage"))
        self.assertRefused(upgrade("\u00e9\u2603"))

    def test_missing_signature(self) -> None:
        self.assertRefused(upgrade(None))
        self.assertRefused(upgrade(""))

    def test_no_token_allows_anything(self) -> None:
        for signature in (None, "", "garbage", sign(TOKEN, "wss://proxy.example.com/twilio")):
            self.check(upgrade(signature), token="")

    def test_new_session_frame_limit(self) -> None:
        s = twilio.new_session(settings(max_frame_ms=20))
        assert isinstance(s, TwilioSession)
        self.assertEqual(s.max_frame_bytes, 160)



# --- 6. transfers -------------------------------------------------------------------------------


REST_TOKEN = "f00dfeedf00dfeedf00dfeedf00dfeed"


def rest_settings(**overrides: Any) -> TwilioOptions:
    values: dict[str, Any] = {"auth_token": REST_TOKEN, "account_sid": ACCOUNT_SID}
    values.update(overrides)
    return TwilioOptions(**values)


class TransferTests(SynchronousTestCase):
    def test_transfer_without_rest_ends_the_stream(self) -> None:
        """Closing the socket runs the TwiML after <Connect>, where the operator's <Dial> is."""
        s = started()
        self.assertTrue(s.capabilities.can_transfer)
        self.assertTrue(s.transfer("sip:queue@pbx.example.com", "billing question"))
        self.assertEqual(s.take_output(), [])
        s.play(b"\xff" * FRAME_BYTES)
        self.assertEqual(s.take_output(), [], "nothing after the transfer")
        self.assertEqual(s.receive_text(text(media(mulaw_frame(1)))), [])
        self.assertFalse(s.transfer("again", ""))
        self.assertFalse(session().transfer("+15550100", ""), "no stream to hand on yet")
        self.assertIsNone(twilio.transfer_request(settings(auth_token=REST_TOKEN), started(), "+15550100"),
                          "without account_sid the socket transfer is all there is")

    def test_rest_request_for_a_number_is_exact(self) -> None:
        request = twilio.TWILIO.transfer_request
        assert request is not None
        http = request(rest_settings(), started(), "+1 (415) 555-0100")
        assert http is not None
        self.assertEqual(http.method, "POST")
        self.assertEqual(http.url, f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json")
        auth = base64.b64encode(f"{ACCOUNT_SID}:{REST_TOKEN}".encode()).decode()
        self.assertEqual(dict(http.headers), {
            "Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(http.body, b"Twiml=%3CResponse%3E%3CDial%3E%3CNumber%3E%2B1+%28415%29+555-0100"
                                    b"%3C%2FNumber%3E%3C%2FDial%3E%3C%2FResponse%3E")

    def test_rest_request_for_a_sip_uri_is_escaped(self) -> None:
        http = twilio.transfer_request(rest_settings(api_url="http://127.0.0.1:8099/"), started(),
                                       "sip:agent@pbx.example.com?x-queue=a&b=<c>")
        assert http is not None
        self.assertEqual(http.url, f"http://127.0.0.1:8099/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json")
        from urllib.parse import parse_qs
        self.assertEqual(parse_qs(http.body.decode("ascii")), {"Twiml": [
            "<Response><Dial><Sip>sip:agent@pbx.example.com?x-queue=a&amp;b=&lt;c&gt;</Sip></Dial></Response>"]})
        self.assertEqual(twilio.dial_twiml("client:alice"), "<Response><Dial>client:alice</Dial></Response>")

    def test_rest_request_needs_a_started_stream_and_a_target(self) -> None:
        self.assertIsNone(twilio.transfer_request(rest_settings(), session(), "+15550100"))
        self.assertIsNone(twilio.transfer_request(rest_settings(), started(), "  "))
        self.assertIsNone(twilio.transfer_request(rest_settings(), started(), "1" * 1000))

    def test_account_sid_needs_the_auth_token(self) -> None:
        from mediaproxy.options import OptionError
        with self.assertRaises(OptionError) as raised:
            twilio.validate(TwilioOptions(account_sid=ACCOUNT_SID), "wss://proxy.example.com")
        self.assertEqual(raised.exception.key, "auth_token")
        twilio.validate(rest_settings(), "wss://proxy.example.com")
        with self.assertRaises(ValueError):
            twilio._api_url("ftp://api.twilio.com")
