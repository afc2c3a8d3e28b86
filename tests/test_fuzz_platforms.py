"""Property-based fuzzing of every sans-IO platform session and of the OpenAI Realtime dialect.

Each example is a generated program (:mod:`tests.strategies`): a sequence of steps mixing valid
messages built from real templates (with correct sequence numbers where the protocol has them),
targeted malformations whose verdict is known, random mutations of templates, binary frames of
awkward sizes and the neutral commands the call bridge issues, in any order. A small model of each
protocol follows along and predicts, where it can, the violation ``kind`` and the replies; for
random mutations it only learns the new state from what the session did.

Properties checked after every step, for every platform:

- nothing raises out of the session (input or command);
- every output is a text frame holding strict JSON that can be encoded as UTF-8 (or a binary
  frame where the protocol has them), and events are of the neutral types;
- a :class:`ProtocolViolation` is the last event of its step, its ``kind`` is a short identifier
  from the platform's fixed set, and the step's output ends with the protocol's own error reply;
- after a violation the session accepts no more than its protocol allows;
- well-formed messages of unknown type are :class:`MessageIgnored` (Twilio, AudioCodes) and the
  call goes on;
- no caller event comes before ``CallStarted``, which comes at most once;
- AudioHook: the server ``seq`` starts at 1 and never skips.

Each test asserts it really ran :data:`~tests.strategies.FUZZ_EXAMPLES` cases.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from twisted.trial import unittest

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.backends.openai_dialect import IGNORED_EVENTS, RealtimeDialect
from mediaproxy.backends.openai_events import (
    ERROR_CODE_LABELS,
    AudioFinished,
    AudioReceived,
    RateLimitsReported,
    ResponseEnded,
    ResponseFailed,
    ServerError,
    SessionExpired,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    TranscriptReceived,
    UnknownEventReceived,
    UsageReported,
    error_code_label,
)
from mediaproxy.backends.openai_session_config import RealtimeOptions, session_config
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.audiocodes_session import AudioCodesSession
from mediaproxy.platforms.audiohook_messages import CLIENT_TYPES, SERVER_TYPES
from mediaproxy.platforms.audiohook_session import AudioHookSession
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallerStreamPaused,
    CallStarted,
    DtmfReceived,
    LanguageChanged,
    MarkPlayed,
    MessageIgnored,
    PlatformError,
    PlatformSession,
    PlaybackFlowChanged,
    PlaybackPaused,
    ProtocolViolation,
    ResumeRequested,
    UpgradeRequest,
)
from mediaproxy.platforms.twilio import TwilioSession
from mediaproxy.transcripts import Transcript, Word
from tests.strategies import (
    KIND,
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

INVALID_UTF8 = (b"\xff", b'{"event":"media","x":"\xc3"}', b'{"type":"\xed\xa0\x80"}', b"\x80" * 9)
"""Text frames that are not UTF-8 (for :meth:`PlatformSession.invalid_text`): a lone
continuation byte, a cut sequence, an encoded surrogate."""

PLATFORM_EVENTS = (
    CallStarted, CallerAudio, DtmfReceived, MarkPlayed, PlaybackFlowChanged, CallerStreamPaused, CallEnded,
    PlatformError, ResumeRequested, MessageIgnored, LanguageChanged, ProtocolViolation, PlaybackPaused,
)
CALLER_EVENTS = (CallerAudio, DtmfReceived, CallerStreamPaused, LanguageChanged)

TWILIO_KINDS = frozenset({
    "oversize", "bad_json", "bad_message", "duplicate_start", "wrong_type", "unsupported_format",
    "media_before_start", "dtmf_before_start", "oversize_frame", "bad_base64", "binary_frame", "bad_utf8",
})
AUDIOHOOK_KINDS = frozenset({
    "too_large", "bad_json", "bad_envelope", "bad_seq", "bad_serverseq", "bad_id", "wrong_direction",
    "unknown_type", "invalid_parameters", "unexpected_message", "organization_mismatch", "unsupported_media",
    "unexpected_binary", "bad_utf8",
})
AUDIOCODES_KINDS = frozenset({
    "bad_json", "bad_message", "out_of_order", "audio_not_expected", "no_media_format", "bad_base64",
    "binary_frame", "bad_utf8",
})
IGNORED_KINDS = frozenset({"unknown_event", "chunk_outside_stream", "other_participant"})

Verdict = str | None
"""What the model predicts for a step: a violation kind, ``None`` (no violation), or ``"?"``
(unknown: a random mutation, whose verdict only the session knows)."""
UNKNOWN = "?"


@dataclass
class Trace:
    """What a session did in one example: its events, and whether the call and the session are
    over. Shared by the platform checks."""

    started: bool = False
    call_over: bool = False
    dead: bool = False  # a violation or the protocol's end: only what the protocol allows
    events: list[Any] = field(default_factory=list)


def check_events(test: unittest.TestCase, trace: Trace, events: list[Any], kinds: frozenset[str],
                 ignored: frozenset[str] = IGNORED_KINDS) -> None:
    """The platform-neutral event properties: neutral types only; one violation at most, last,
    with a bounded kind; bounded ignored kinds (``ignored``: the platform's own set); CallStarted
    once, before any caller event."""
    for index, event in enumerate(events):
        test.assertIsInstance(event, PLATFORM_EVENTS)
        if isinstance(event, ProtocolViolation):
            test.assertIn(event.kind, kinds)
            test.assertRegex(event.kind, KIND)
            # Only the end of the call may follow (AudioHook completes a faulty close's transaction).
            test.assertTrue(all(isinstance(e, CallEnded) for e in events[index + 1:]), events)
        elif isinstance(event, MessageIgnored):
            test.assertIn(event.kind, ignored)
        elif isinstance(event, CallStarted):
            test.assertFalse(trace.started, "a second CallStarted")
            trace.started = True
        elif isinstance(event, CALLER_EVENTS):
            test.assertTrue(trace.started, f"{type(event).__name__} before CallStarted")
            test.assertFalse(trace.call_over, f"{type(event).__name__} after the call ended")
        elif isinstance(event, CallEnded):
            test.assertFalse(trace.call_over, "a second CallEnded")
            trace.call_over = True
    trace.events += events


def violation_kind(events: list[Any]) -> str | None:
    return next((e.kind for e in events if isinstance(e, ProtocolViolation)), None)


def random_transcript(rng: random.Random) -> Transcript:
    """A backend transcript with odd text and times (the bridge passes them on as they come)."""
    start = rng.choice((None, -5, 0, 40, 10**9))
    end = rng.choice((None, -1, 0, 80, 10**9))
    words = tuple(Word(hostile_string(rng) or "w", rng.randint(-10, 500), rng.randint(-10, 500))
                  for _ in range(rng.randint(0, 3)))
    return Transcript(rng.choice(("caller", "agent", "bot")), rng.choice(("hello there", "", " ", hostile_string(rng))),
                      rng.random() < 0.6, start, end, words, rng.choice((None, 0.5, 0.0)),
                      rng.choice((None, "en-US", hostile_string(rng))))


def common_command(session: PlatformSession, rng: random.Random) -> None:
    """One of the neutral commands the bridge may issue at any time, with odd arguments."""
    op = rng.randrange(12)
    if op <= 2:
        session.play(rng.randbytes(rng.choice((0, 1, 160, 161, 1600, 64001))))
    elif op == 3:
        session.mark(hostile_string(rng))
    elif op == 4:
        session.clear()
    elif op == 5:
        session.playback_finished()
    elif op == 6:
        session.caller_speech(rng.random() < 0.5)
    elif op == 7:
        session.transcript(random_transcript(rng))
    elif op == 8:
        session.send_dtmf(rng.choice(("1", "12#*", "x9", "", "1" * 45)))
    elif op == 9:
        session.pause_caller_audio(rng.random() < 0.5)
    elif op == 10:
        session.transfer(rng.choice(("sip:agent@example.com", "", " ", "q" * 2000, hostile_string(rng))),
                         hostile_string(rng), {"k": hostile_string(rng)})
    else:
        session.hangup(rng.choice(list(Outcome)), hostile_string(rng), {"k": "v"})


# --- Twilio ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def twilio_start(rng: random.Random) -> dict[str, Any]:
    sid = rng.choice(("MZ1", "MZ" + "x" * 40, "é\u2028\ud800", "\"quoted\""))
    return {"event": "start", "sequenceNumber": "1", "streamSid": sid,
            "start": {"streamSid": sid, "accountSid": "AC1", "callSid": "CA" + str(rng.randrange(99)),
                      "tracks": ["inbound"], "customParameters": {"tenant": rng.choice(("acme", "\ud800"))},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


def twilio_media(rng: random.Random) -> dict[str, Any]:
    media: dict[str, Any] = {"payload": b64(rng.randbytes(rng.choice((0, 1, 160, 800, 1600))))}
    track = rng.choice(("inbound", "inbound_track", "outbound", None))
    if track is not None:
        media["track"] = track
    return {"event": "media", "streamSid": "MZ1", "media": media}


def twilio_valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(10)
    if op == 0:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    if op == 1:
        return twilio_start(rng)
    if op <= 5:
        return twilio_media(rng)
    if op == 6:
        return {"event": "mark", "streamSid": "MZ1", "mark": {"name": hostile_string(rng)}}
    if op == 7:
        return {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track",
                                                               "digit": rng.choice("0123456789*#ABCD")}}
    if op == 8:
        return {"event": identifier(rng, "x"), "streamSid": "MZ1"}
    return {"event": "stop", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}}


def twilio_targeted(rng: random.Random, started: bool) -> tuple[str, str]:
    """(text, the violation kind it must give) for a Twilio session in the given state."""
    op = rng.randrange(12)
    if op == 0:
        return garbage_text(rng), "bad_json"
    if op == 1:
        return dump(rng.choice(([], [1], "start", 3, None, True))), "bad_json"
    if op == 2:
        return dump({"event": "media", "pad": "x" * 65540}), "oversize"
    if op == 3:
        return dump({"event": rng.choice((None, 1, [], {}, True)), "streamSid": "MZ1"}), "bad_message"
    if op == 4:
        bad = {"event": "media", "media": {"payload": rng.choice((None, 1, [], {}, True))}}
        return dump(bad), "wrong_type" if started else "media_before_start"
    if op == 5:
        payload = rng.choice(("!!!!", "AAA", "A===", "AAAA\n", "é", "AA=A", "\ud800"))
        return dump({"event": "media", "media": {"payload": payload}}), \
            "bad_base64" if started else "media_before_start"
    if op == 6:
        payload = b64(rng.randbytes(rng.choice((1601, 4000))))
        return dump({"event": "media", "media": {"payload": payload}}), \
            "oversize_frame" if started else "media_before_start"
    if op == 7:
        return dump({"event": "mark", "mark": rng.choice(({"name": 1}, {}, None, "m", {"name": None}))}), "wrong_type"
    if op == 8:
        digit = rng.choice(("", "E", "1x", None, 5, "#\u0661"))
        return dump({"event": "dtmf", "dtmf": {"digit": digit}}), "wrong_type" if started else "dtmf_before_start"
    if op == 9:
        if started:
            return dump(twilio_start(rng)), "duplicate_start"
        start = twilio_start(rng)
        start["start"]["mediaFormat"] = {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1}
        return dump(start), "unsupported_format"
    if op == 10:
        start = twilio_start(rng)
        del start["start"]["callSid"]
        return dump(start), "duplicate_start" if started else "bad_message"
    start = twilio_start(rng)
    start["start"]["customParameters"] = rng.choice(({"a": 1}, [], "x", {"a": None}))
    return dump(start), "duplicate_start" if started else "wrong_type"


class TwilioFuzzTests(unittest.TestCase):
    """TwilioSession against generated hostile streams."""

    def run_program(self, program: bytes) -> Trace:
        session = TwilioSession()
        trace = Trace()
        for op, rng in steps(program):
            dead_before = trace.dead
            expected: Verdict = UNKNOWN
            if op < 100:
                message = twilio_valid(rng)
                expected = self._predict(message, trace)
                events = session.receive_text(dump(message))
            elif op < 150:
                text, kind = twilio_targeted(rng, trace.started)
                expected = kind
                events = session.receive_text(text)
            elif op < 215:
                events = session.receive_text(mutate(twilio_valid(rng), rng))
            elif op < 220:
                expected = "binary_frame"
                events = session.receive_binary(binary_frame(rng))
            elif op < 225:
                expected = "bad_utf8"
                events = session.invalid_text(rng.choice(INVALID_UTF8))
            else:
                common_command(session, rng)
                events = []
                expected = None
            output = session.take_output()
            if dead_before:
                self.assertEqual((events, output), ([], []), "input accepted after the end")
                continue
            check_events(self, trace, events, TWILIO_KINDS)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected)
            for item in output:
                message = strict_json(item)
                self.assertIn(message["event"], ("media", "mark", "clear"))
                self.assertEqual(message["streamSid"], session.stream_sid)
            if kind is not None:
                self.assertEqual(output, [], "Twilio has no error message: the glue closes")
            if kind is not None or trace.call_over or session._ended:
                trace.dead = True
        return trace

    def _predict(self, message: dict[str, Any], trace: Trace) -> Verdict:
        event = message["event"]
        if event == "start" and trace.started:
            return "duplicate_start"
        if event == "media" and not trace.started:
            return "media_before_start"
        if event == "dtmf" and not trace.started:
            return "dtmf_before_start"
        return None

    def test_hostile_streams(self) -> None:
        """Any mix of valid and hostile Twilio input: never an exception, bounded kinds, nothing
        queued on a violation, nothing accepted after it, unknown events ignored."""
        run_programs(self, self.run_program)

    def test_unknown_event_goes_on(self) -> None:
        """An unknown event name mid-call is ignored and the call carries on."""
        session = TwilioSession()
        session.receive_text(json.dumps(twilio_start(random.Random(0))))
        self.assertEqual(session.receive_text('{"event":"streamPaused"}'), [MessageIgnored("unknown_event")])
        self.assertEqual(session.receive_text(json.dumps(twilio_media(random.Random(3)) | {"media": {
            "payload": b64(b"\xff" * 160)}})), [CallerAudio(b"\xff" * 160)])


# --- AudioHook ----------------------------------------------------------------------------------

ORG = "6f1c2a9e-3b7d-4c21-9a55-0d2e8b4f7a10"
SID = "5e0b7c1d-2a3f-4d6e-8b9a-0c1d2e3f4a5b"
CONVERSATION = "0b7c1d5e-2a3f-4d6e-8b9a-0c1d2e3f4a5b"
PARTICIPANT = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
NULL = "00000000-0000-0000-0000-000000000000"
STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
L16 = {"type": "audio", "format": "L16", "channels": ["external"], "rate": 16000}


@dataclass
class HookModel:
    """The client side of an AudioHook connection: its seq, the server seq it has seen, the
    session state it believes in (from what the session answered)."""

    mode: str
    seq: int = 0
    serverseq: int = 0
    state: str = "await_open"
    media: bool = False  # a media format was chosen (not `media: []`)

    def envelope(self, mtype: str, parameters: Any, rng: random.Random, **override: Any) -> dict[str, Any]:
        self.seq += 1
        message = {"version": "2", "id": rng.choice((SID, SID.upper())), "type": mtype, "seq": self.seq,
                   "serverseq": rng.randint(0, self.serverseq), "position": rng.choice(("PT0S", "PT1.5S", "PT.5S")),
                   "parameters": parameters}
        message.update(override)
        return message


def hook_open(rng: random.Random, mode: str) -> dict[str, Any]:
    offers = rng.choice(([STEREO, EXTERNAL], [EXTERNAL], [L16, EXTERNAL], [STEREO], [], [{"type": "video"}],
                         [{"type": "audio", "format": "OPUS", "channels": ["external"], "rate": 8000}]))
    return {"organizationId": rng.choice((ORG, ORG.upper())),
            "conversationId": NULL if rng.random() < 0.1 else CONVERSATION,
            "participant": {"id": PARTICIPANT, "ani": "+15550100", "aniName": hostile_string(rng), "dnis": ""},
            "media": offers, "language": rng.choice(("en-US", None)), "supportedLanguages": rng.random() < 0.5,
            "inputVariables": {"a": "1", "n": 3}, "customConfig": {"x": "y", "z": 1}}


def hook_valid(model: HookModel, rng: random.Random) -> tuple[dict[str, Any], bool]:
    """A well-formed client message for the current state (the seq is right); and whether its
    offer is usable for the session's mode (for ``open``)."""
    op = rng.randrange(14)
    if op <= 2 or (op <= 5 and model.state == "await_open" and rng.random() < 0.6):
        params = hook_open(rng, model.mode)
        return model.envelope("open", params, rng), _usable(params, model.mode)
    if op == 3:
        return model.envelope("ping", rng.choice(({}, {"rtt": "PT0.05S"})), rng), False
    if op == 4:
        return model.envelope("update", rng.choice(({}, {"language": "fr-FR"}, {"language": "en-US"})), rng), False
    if op == 5:
        return model.envelope(rng.choice(("paused", "playback_started", "playback_completed")), {}, rng), False
    if op == 6:
        span = {"start": "PT1S", "discarded": rng.choice(("PT0S", "PT2.5S", "PT9999999999S"))}
        return model.envelope(rng.choice(("resumed", "discarded")), span, rng), False
    if op == 7:
        return model.envelope("dtmf", {"digit": rng.choice(("1", "#", "12*a", "D" * 32))}, rng), False
    if op == 8:
        params: dict[str, Any] = {"code": rng.choice((429, 500, 1, 10**20, -3)), "message": hostile_string(rng)}
        if rng.random() < 0.5:
            params["retryAfter"] = rng.choice(("PT0S", "PT3S", "PT99999999999999999999S"))
        return model.envelope("error", params, rng), False
    if op == 9 and rng.random() < 0.4:
        return model.envelope("close", rng.choice(({"reason": "end"}, {}, {"reason": 5})), rng), False
    return model.envelope("ping", {}, rng), False


def _usable(params: dict[str, Any], mode: str) -> bool:
    offers = params["media"]
    if mode == "monitor":
        return any(o in (STEREO, EXTERNAL, L16) for o in offers)
    return any(o in (EXTERNAL, L16) for o in offers)


@dataclass(frozen=True)
class HookFault:
    """A targeted AudioHook malformation: its text, the kind it must give, and what of it the
    session can still read (its type when readable, whether its envelope is whole)."""

    text: str
    kind: str
    mtype: str | None
    envelope_ok: bool
    seq_readable: bool


def hook_targeted(model: HookModel, rng: random.Random) -> HookFault:
    op = rng.randrange(16)
    mtype = rng.choice(("ping", "close", "update", "paused"))
    if op == 0:
        model.seq += 1
        return HookFault(garbage_text(rng), "bad_json", None, False, False)
    if op == 1:
        model.seq += 1
        return HookFault(dump(rng.choice(([], 2, "open", None))), "bad_envelope", None, False, False)
    if op == 2:
        message = model.envelope(mtype, {"pad": "x" * 65540}, rng)
        return HookFault(dump(message), "too_large", None, False, False)
    if op <= 8:
        field_name, values = [
            ("version", (2, "1", None, [], "2 ")), ("id", ("x", 7, None, NULL[:-1])),
            ("seq", (0, -1, "1", 1.5, True, None)), ("serverseq", (-1, "0", None, 0.5, False)),
            ("position", ("1S", "PT1M", 5, None, "PT-1S", "PT" + "9" * 40 + "S")),
            ("parameters", ([], None, "x", 1)),
        ][op - 3]
        message = model.envelope(mtype, {}, rng)
        message[field_name] = rng.choice(values)
        if rng.random() < 0.3:
            del message[field_name]
        seq_ok = field_name != "seq"
        type_ok = True
        return HookFault(dump(message), "bad_envelope", mtype if type_ok else None, False, seq_ok)
    if op == 9:
        message = model.envelope(mtype, {}, rng, type=rng.choice((None, 5, [], "t" * 65)))
        return HookFault(dump(message), "bad_envelope", None, False, True)
    if op == 10:
        model.seq += rng.choice((1, 2, 10**6))
        return HookFault(dump(model.envelope(mtype, {}, rng)), "bad_seq", mtype, True, True)
    if op == 11:
        message = model.envelope(mtype, {}, rng, serverseq=model.serverseq + rng.choice((1, 2, 10**30)))
        return HookFault(dump(message), "bad_serverseq", mtype, True, True)
    if op == 12:
        return HookFault(dump(model.envelope(mtype, {}, rng, id=str(uuid.UUID(int=rng.getrandbits(128))))),
                         "bad_id", mtype, True, True)
    if op == 13:
        server_type = rng.choice(sorted(SERVER_TYPES))
        return HookFault(dump(model.envelope(server_type, {}, rng)), "wrong_direction", server_type, True, True)
    if op == 14:
        unknown = identifier(rng, "z")
        assert unknown not in CLIENT_TYPES
        return HookFault(dump(model.envelope(unknown, {}, rng)), "unknown_type", unknown, True, True)
    bad_type, params = rng.choice([
        ("dtmf", {"digit": "E"}), ("dtmf", {}), ("dtmf", {"digit": "1" * 33}), ("ping", {"rtt": "soon"}),
        ("discarded", {"discarded": 5}), ("resumed", {}), ("error", {"code": "429"}),
        ("error", {"code": 429, "retryAfter": "later"}), ("update", {"language": 1}),
        ("open", {"organizationId": "x"}), ("open", {**hook_open(rng, model.mode), "media": {}}),
        ("open", {**hook_open(rng, model.mode), "inputVariables": {"a": []}}),
        ("open", {**hook_open(rng, model.mode), "participant": {"id": None}}),
        ("open", {**hook_open(rng, model.mode), "supportedLanguages": "yes"}),
    ])
    return HookFault(dump(model.envelope(bad_type, params, rng)), "invalid_parameters", bad_type, True, True)


class AudioHookFuzzTests(unittest.TestCase):
    """AudioHookSession (Monitor and Audio Connector) against generated hostile streams."""

    def run_program(self, program: bytes, mode: str) -> Trace:
        session = AudioHookSession(mode, formats=())
        session.bind_upgrade(UpgradeRequest("/audiohook", "proxy", {
            "audiohook-session-id": SID, "audiohook-organization-id": ORG}))
        model = HookModel(mode)
        trace = Trace()
        for op, rng in steps(program):
            state = model.state
            expected: Verdict = UNKNOWN
            replies: list[str] | None = None
            if op < 110:
                message, usable = hook_valid(model, rng)
                if rng.random() < 0.1 and state == "await_open" and message["type"] == "open":
                    message["parameters"]["organizationId"] = str(uuid.UUID(int=rng.getrandbits(128)))
                    expected, replies = "organization_mismatch", ["disconnect"]
                else:
                    expected, replies = self._predict(model, message, usable)
                events = session.receive_text(dump(message))
            elif op < 154:
                fault = hook_targeted(model, rng)
                expected, replies = self._predict_fault(model, fault)
                events = session.receive_text(fault.text)
            elif op < 160:
                # Not UTF-8: unreadable, like text that is not JSON (the client counted its seq).
                model.seq += 1
                expected, replies = self._predict_fault(model, HookFault("", "bad_utf8", None, False, False))
                events = session.invalid_text(rng.choice(INVALID_UTF8))
            elif op < 205:
                message, _ = hook_valid(model, rng)
                events = session.receive_text(mutate(message, rng))
            elif op < 225:
                data = binary_frame(rng)
                if state == "await_open":
                    expected, replies = "unexpected_binary", ["disconnect"]
                elif state != "open" or (not data and not model.media):
                    expected, replies = None, []
                elif not model.media:
                    expected, replies = "unexpected_binary", ["disconnect"]
                events = session.receive_binary(data)
            else:
                common_command(session, rng)
                events = []
            output = session.take_output()
            if state == "closed":
                self.assertEqual((events, output), ([], []), "input accepted after closed")
                continue
            check_events(self, trace, events, AUDIOHOOK_KINDS)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected, (state, output))
            texts = [strict_json(item) for item in output if isinstance(item, str)]
            for item in output:
                if isinstance(item, bytes):
                    self.assertEqual(mode, "connector", "audio out on a Monitor session")
                    self.assertEqual(state, "open")
                    self.assertLessEqual(len(item), 64000)
            for message in texts:
                # The one writer numbers every message: seq never skips, never repeats.
                self.assertEqual(message["seq"], model.serverseq + 1, message)
                model.serverseq = message["seq"]
                self.assertEqual(message["id"], SID)
                self.assertEqual(message["version"], "2")
                self.assertIsInstance(message["parameters"], dict)
                self.assertIn(message["type"], SERVER_TYPES)
            types = [m["type"] for m in texts]
            if replies is not None and not (replies == [] and types and state != "disconnecting"
                                             and self._command_reply(types)):
                self.assertEqual(types, replies, (state, events))
            if kind is not None:
                tail = types[-2:] if types[-1:] == ["closed"] else types[-1:]
                self.assertEqual(tail[0], "disconnect", "a violation is answered with disconnect")
                reason = texts[len(types) - len(tail)]["parameters"]["reason"]
                self.assertEqual(reason, "unauthorized" if kind == "organization_mismatch" else "error")
            if "closed" in types:
                self.assertEqual(types[-1], "closed")
                model.state = "closed"
            elif kind is not None or "disconnect" in types:
                model.state = "disconnecting"
            elif "opened" in types:
                model.state = "open"
                opened = texts[types.index("opened")]
                model.media = bool(opened["parameters"]["media"])
            self.assertEqual(session.finished, model.state == "closed")
            self.assertEqual(session.awaits_close, model.state == "disconnecting")
        return trace

    @staticmethod
    def _command_reply(types: list[str]) -> bool:
        return all(t in ("event", "disconnect", "pause", "resume") for t in types)

    def _predict(self, model: HookModel, message: dict[str, Any], usable: bool) -> tuple[Verdict, list[str]]:
        mtype, state = message["type"], model.state
        if state == "disconnecting":
            return None, {"close": ["closed"], "ping": ["pong"]}.get(mtype, [])
        if mtype == "close":
            return None, ["closed"]
        if mtype == "error":
            return None, []
        if state == "await_open":
            if mtype != "open":
                return "unexpected_message", ["disconnect"]
            if not usable and message["parameters"]["conversationId"] != NULL:
                return "unsupported_media", ["disconnect"]
            return None, ["opened"]
        if mtype == "open":
            return "unexpected_message", ["disconnect"]
        return None, {"ping": ["pong"], "update": ["updated"]}.get(mtype, [])

    def _predict_fault(self, model: HookModel, fault: HookFault) -> tuple[Verdict, list[str]]:
        closes = fault.mtype == "close" and fault.seq_readable
        if model.state == "disconnecting":
            if closes:
                return None, ["closed"]
            return None, ["pong"] if fault.envelope_ok and fault.mtype == "ping" else []
        return fault.kind, ["disconnect", "closed"] if closes else ["disconnect"]

    def fuzz(self, mode: str) -> None:
        run_programs(self, lambda program: self.run_program(program, mode), cases_of="program, mode")

    def test_monitor_hostile_streams(self) -> None:
        """Monitor mode: never an exception; every fault answered with disconnect (then closed
        for a readable close); only close and ping acted on while disconnecting; nothing after
        closed; the server seq never skips."""
        self.fuzz("monitor")

    def test_connector_hostile_streams(self) -> None:
        """Audio Connector mode: the same properties, with bot audio and barge-in commands mixed
        in; binary frames out only while open."""
        self.fuzz("connector")


# --- AudioCodes ---------------------------------------------------------------------------------


@dataclass
class CodesModel:
    state: str = "new"
    conversation: str = "conv-1"
    caller_stream: bool = False
    start_seen: bool = False
    refused: bool = False  # a refusal before session.initiate becomes its answer


def codes_valid(model: CodesModel, rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(14)
    if op <= 1 or (op <= 4 and model.state == "new" and rng.random() < 0.7):
        if rng.random() < 0.15:
            return {"type": "session.resume", "conversationId": rng.choice((model.conversation, "other"))}
        message: dict[str, Any] = {"type": "session.initiate", "conversationId": model.conversation,
                                   "botName": hostile_string(rng), "caller": "+1555"}
        if rng.random() < 0.8:
            message["supportedMediaFormats"] = rng.choice((["raw/mulaw"], ["raw/lpcm16", "raw/mulaw"],
                                                          ["raw/lpcm16_24"], ["wav/mulaw", "raw/lpcm16_8"]))
        if rng.random() < 0.3:
            message["expectAudioMessages"] = True
        return message
    if op == 2:
        return {"type": "connection.validate"}
    if op == 3:
        return {"type": "userStream.start", **rng.choice(({}, {"participant": "caller"}, {"participant": "agent"}))}
    if op <= 6:
        return {"type": "userStream.chunk", "audioChunk": b64(rng.randbytes(rng.choice((0, 1, 3, 160, 640)))),
                **rng.choice(({}, {}, {"participant": "agent"}, {"participant": "nobody"}))}
    if op == 7:
        return {"type": "userStream.stop", **rng.choice(({}, {"participant": "agent"}))}
    if op == 8:
        activity = rng.choice(({"type": "event", "name": "start", "parameters": {"callee": "+1", "n": {"d": [1]}}},
                               {"type": "event", "name": "DTMF", "value": rng.choice(("1", "#*", "a"))},
                               {"type": "event", "name": "noUserInput"}, {"type": "message", "text": "hi"}))
        return {"type": "activities", "activities": [activity]}
    if op == 9:
        return {"type": identifier(rng, "q")}
    if op == 10 and rng.random() < 0.3:
        return {"type": "session.end", "reasonCode": rng.choice(("client-disconnected", 5, ""))}
    return {"type": "userStream.chunk", "audioChunk": b64(rng.randbytes(160))}


def codes_predict(model: CodesModel, message: dict[str, Any]) -> tuple[Verdict, list[str] | None]:
    """The violation and the replies (message types) a valid message gets, where the model knows."""
    kind, state = message["type"], model.state
    if kind not in ("session.initiate", "session.resume", "session.end", "connection.validate", "activities",
                    "userStream.start", "userStream.chunk", "userStream.stop"):
        return None, []
    if kind == "connection.validate":
        return None, ["connection.validated"]
    if kind == "session.end":
        return None, None  # a play stream may be closed first
    if state == "hanging_up":
        return None, []
    if kind == "session.initiate":
        if state != "new":
            return "out_of_order", None
        if model.refused:
            return None, ["session.error"]
        formats = message.get("supportedMediaFormats", ["raw/lpcm16"])
        if not any(f.startswith("raw/") for f in formats):
            return "no_media_format", None
        return None, ["session.accepted"]
    if kind == "session.resume":
        if state == "new":
            return None, []
        if state == "open" and message["conversationId"] == model.conversation:
            return None, ["session.accepted"]
        return "out_of_order", None
    if state != "open":
        return "out_of_order", None
    if kind == "userStream.start":
        return None, ["userStream.started"]
    if kind == "userStream.stop":
        return None, ["userStream.stopped"]
    if kind == "activities":
        return None, None  # the config activity may follow start
    return None, []


def codes_targeted(model: CodesModel, rng: random.Random) -> tuple[str, Verdict]:
    op = rng.randrange(10)
    state = model.state
    if op == 0:
        return garbage_text(rng), "bad_json"
    if op == 1:
        return dump(rng.choice(([], 1, "x", None, {"type": 5}, {"type": None}, {}))), "bad_message"
    if op == 2:
        message: dict[str, Any] = {"type": "session.initiate", "conversationId": rng.choice(("", None, 5))}
        expected: Verdict = "bad_message" if state == "new" else "out_of_order"
        return dump(message), None if state == "hanging_up" else expected
    if 3 <= op <= 5 and state == "new" and model.refused:
        return dump({"type": "session.initiate", "conversationId": "c", "supportedMediaFormats": 5}), None
    if op == 3:
        message = {"type": "session.initiate", "conversationId": "c", "supportedMediaFormats":
                   rng.choice(("raw/mulaw", 5, {"a": 1}, None))}
        return dump(message), None if state == "hanging_up" else "bad_message" if state == "new" else "out_of_order"
    if op == 4:
        message = {"type": "session.initiate", "conversationId": "c",
                   "supportedMediaFormats": rng.choice(([], ["wav/lpcm16"], [5, None], ["RAW/MULAW"]))}
        return dump(message), None if state == "hanging_up" else "no_media_format" if state == "new" else "out_of_order"
    if op == 5:
        message = {"type": "session.initiate", "conversationId": "c", "expectAudioMessages": False}
        return dump(message), None if state == "hanging_up" else "audio_not_expected" if state == "new" \
            else "out_of_order"
    if op == 6:
        activities = rng.choice(("x", None, {"a": 1}, [5], [{"type": "event", "name": "DTMF", "value": "E"}],
                                 [{"type": "event", "name": "DTMF", "value": 5}]))
        return dump({"type": "activities", "activities": activities}), \
            None if state == "hanging_up" else "bad_message" if state == "open" else "out_of_order"
    if op == 7:
        message = {"type": "userStream.chunk", "audioChunk": rng.choice((None, 5, [], {}))}
        return dump(message), None if state == "hanging_up" else "bad_message" if state == "open" else "out_of_order"
    if op == 8:
        message = {"type": "userStream.chunk", "audioChunk": rng.choice(("!!!!", "AAA", "é", "A=AA", "\ud800"))}
        if state == "hanging_up":
            return dump(message), None
        if state != "open":
            return dump(message), "out_of_order"
        return dump(message), "bad_base64" if model.caller_stream else None
    if op == 9 and not model.start_seen:
        message = {"type": "activities", "activities": [{"type": "event", "name": "start", "parameters": [1]}]}
        return dump(message), None if state == "hanging_up" else "bad_message" if state == "open" else "out_of_order"
    return dump({"type": "session.initiate"}), None if state == "hanging_up" else \
        "bad_message" if state == "new" else "out_of_order"


class AudioCodesFuzzTests(unittest.TestCase):
    """AudioCodesSession against generated hostile streams."""

    def run_program(self, program: bytes) -> Trace:
        session = AudioCodesSession(formats=(), barge_in=True)
        model = CodesModel()
        trace = Trace()
        for op, rng in steps(program):
            state = model.state
            expected: Verdict = UNKNOWN
            replies: list[str] | None = None
            if op < 110:
                message = codes_valid(model, rng)
                expected, replies = codes_predict(model, message)
                events = session.receive_text(dump(message))
            elif op < 154:
                text, expected = codes_targeted(model, rng)
                events = session.receive_text(text)
            elif op < 160:
                expected, replies = "bad_utf8", ["session.error"]
                events = session.invalid_text(rng.choice(INVALID_UTF8))
            elif op < 205:
                events = session.receive_text(mutate(codes_valid(model, rng), rng))
            elif op < 215:
                expected, replies = "binary_frame", ["session.error"]
                events = session.receive_binary(binary_frame(rng))
            elif op < 220:
                session.resume_rejected()
                events = []
                expected = None
            else:
                common_command(session, rng)
                events = []
                expected = None
            output = session.take_output()
            if state == "ended":
                self.assertEqual((events, output), ([], []), "input accepted after the session ended")
                continue
            check_events(self, trace, events, AUDIOCODES_KINDS)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected, (state, output))
            texts = [strict_json(item) for item in output]
            types = [m["type"] for m in texts]
            if replies is not None and kind is None and op < 110:
                self.assertEqual(types, replies, state)
            if kind is not None:
                self.assertEqual(types[-1], "session.error", "a violation is answered with session.error")
                self.assertTrue(set(types[:-1]) <= {"playStream.stop"}, types)
                if kind != "audio_not_expected":
                    self.assertTrue(texts[-1]["reason"].startswith("protocol error: "))
            for event in events:
                if isinstance(event, ResumeRequested):
                    model.state = "resuming"
            if any(isinstance(e, CallEnded) for e in events) or kind is not None or session.finished:
                model.state = "ended"
            elif "session.accepted" in types and model.state == "new":
                model.state = "open"
            elif any(t == "activities" and m["activities"][0]["name"] in ("hangup", "transfer")
                     for t, m in zip(types, texts, strict=True)):
                model.state = "hanging_up"
            self.assertEqual(session.finished, model.state == "ended")
            model.caller_stream = session._user_stream_open
            model.start_seen = session._start_seen
            model.refused = session._refusal is not None
            if model.state == "open":
                self.assertTrue(session.survives_disconnect)
        return trace

    def test_hostile_streams(self) -> None:
        """Any mix of valid and hostile Bot API input: never an exception; every violation
        answered with session.error (after closing any play stream) and the session ended;
        unknown types and stray chunks ignored and counted; nothing accepted after the end."""
        run_programs(self, self.run_program)


# --- OpenAI Realtime dialect ---------------------------------------------------------------------

OPTIONS = RealtimeOptions(api_key="k", instructions="Be brief.", greeting="Hello", transcription_model="whisper-1")
REALTIME_EVENTS = (
    SessionReady, AudioReceived, AudioFinished, ResponseEnded, ResponseFailed, SpeechStarted, SpeechStopped,
    TranscriptReceived, UsageReported, RateLimitsReported, ServerError, SessionExpired, UnknownEventReceived,
    ToolCalled,
)
HANDLED = frozenset({
    "response.output_audio.delta", "response.output_audio.done", "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped", "response.created", "response.done",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "conversation.item.input_audio_transcription.delta", "conversation.item.input_audio_transcription.completed",
    "response.output_item.done", "conversation.item.input_audio_transcription.failed", "rate_limits.updated",
    "session.created", "session.updated", "error",
})


def realtime_valid(rng: random.Random) -> dict[str, Any]:
    item, response = rng.choice(("item_1", "item_2")), rng.choice(("resp_1", "resp_2"))
    op = rng.randrange(16)
    if op == 0:
        return {"type": "session.created", "session": {"type": "realtime"}}
    if op == 1:
        return {"type": "session.updated", "session": session_config(OPTIONS, MULAW_8K, ())}
    if op == 2:
        return {"type": "response.created", "response": {"id": response, "status": "in_progress"}}
    if op <= 5:
        return {"type": "response.output_audio.delta", "item_id": item, "response_id": response, "output_index": 0,
                "content_index": 0, "delta": b64(rng.randbytes(rng.choice((0, 1, 160, 2400))))}
    if op == 6:
        return {"type": "response.output_audio.done", "item_id": item, "response_id": response}
    if op == 7:
        return {"type": "input_audio_buffer.speech_started", "audio_start_ms": rng.randint(0, 9000), "item_id": "u1"}
    if op == 8:
        return {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": rng.randint(0, 9000), "item_id": "u1"}
    if op == 9:
        return {"type": "response.done", "response": {
            "id": response, "status": rng.choice(("completed", "cancelled", "failed", "incomplete")),
            "status_details": {"reason": "turn_detected", "error": {"type": "server_error", "code": "x"}},
            "output": [{"type": "function_call", "status": "completed", "call_id": "c1", "name": "f",
                        "arguments": "{}"}],
            "usage": {"input_token_details": {"audio_tokens": 5}, "output_token_details": {"text_tokens": 2}}}}
    if op == 10:
        return {"type": rng.choice(("response.output_audio_transcript.delta",
                                    "conversation.item.input_audio_transcription.delta")),
                "item_id": item, "response_id": response, "delta": hostile_string(rng)}
    if op == 11:
        return {"type": rng.choice(("response.output_audio_transcript.done",
                                    "conversation.item.input_audio_transcription.completed")),
                "item_id": item, "transcript": "hello there"}
    if op == 12:
        return {"type": "rate_limits.updated", "rate_limits": [{"name": "requests", "remaining": 9},
                                                               {"name": hostile_string(rng), "remaining": 1}]}
    if op == 13:
        return {"type": "error", "error": {"type": "invalid_request_error", "code": rng.choice(
            ("invalid_value", "session_expired", "x" * 500, None)), "message": hostile_string(rng)}}
    if op == 14:
        return {"type": "response.output_item.done", "response_id": response, "item": {
            "type": "function_call", "status": "completed", "call_id": "c" + str(rng.randrange(3)), "name": "f",
            "arguments": '{"a":1}'}}
    return {"type": rng.choice((identifier(rng, "n"), *sorted(IGNORED_EVENTS)[:4]))}


def realtime_targeted(rng: random.Random) -> str:
    """A message the dialect must report as ``malformed_event``."""
    op = rng.randrange(6)
    if op == 0:
        return garbage_text(rng)
    if op == 1:
        return dump(rng.choice(([], 1, None, {}, {"type": 5}, {"type": None})))
    if op == 2:
        return dump({"type": "response.output_audio.delta", "item_id": "i", "response_id": "r",
                     "delta": rng.choice(("!!!!", "AAA", "é", "A=AA"))})
    if op == 3:
        return dump({"type": rng.choice(("response.output_audio.delta", "response.created", "response.done",
                                         "session.updated", "response.output_item.done"))})
    if op == 4:
        return dump({"type": "response.created", "response": rng.choice(([], "r", 5, None))})
    return dump({"type": "rate_limits.updated", "rate_limits": rng.choice((5, [5], [{"name": "a", "remaining": "x"}]))})


def realtime_command(dialect: RealtimeDialect, rng: random.Random) -> None:
    """One of the commands the backend session issues, with odd arguments."""
    op = rng.randrange(8)
    if op <= 1:
        dialect.send_audio(rng.randbytes(rng.choice((0, 1, 160, 800))))
    elif op == 2:
        dialect.interrupt(rng.choice(("item_1", "item_2", "nope")), rng.choice((0.0, 0.4, 20.0, 1e9, -5.0)))
    elif op == 3:
        dialect.create_response()
    elif op == 4:
        dialect.tool_result(rng.choice(("c0", "c1")), hostile_string(rng))
    elif op == 5:
        dialect.set_language(rng.choice(("fr", hostile_string(rng))))
    elif op == 6:
        dialect.send_dtmf(rng.choice(("1", "#")))
    else:
        dialect.flush_audio()


class RealtimeDialectFuzzTests(unittest.TestCase):
    """RealtimeDialect against a generated hostile server."""

    def run_program(self, program: bytes) -> None:
        dialect = RealtimeDialect(OPTIONS, MULAW_8K, event_prefix="c1", tools=())
        event_ids: set[str] = set()
        for op, rng in steps(program):
            malformed = False
            if op < 120:
                message = realtime_valid(rng)
                events = dialect.receive(dump(message))
                if message["type"] not in HANDLED and message["type"] not in IGNORED_EVENTS:
                    self.assertEqual(events, [UnknownEventReceived(message["type"])])
            elif op < 160:
                events = dialect.receive(realtime_targeted(rng))
                malformed = True
            elif op < 210:
                events = dialect.receive(mutate(realtime_valid(rng), rng))
            elif op < 215:
                events = dialect.receive(rng.randbytes(rng.choice((0, 1, 9, 300))))
            else:
                events = []
                realtime_command(dialect, rng)
            for event in events:
                self.assertIsInstance(event, REALTIME_EVENTS)
                if isinstance(event, ServerError | ResponseFailed):
                    self.assertIn(error_code_label(event.code), ERROR_CODE_LABELS | {"other"})
            if malformed:
                self.assertEqual([type(e) for e in events], [ServerError])
                self.assertEqual(events[0].code, "malformed_event")  # type: ignore[union-attr]
            for text in dialect.take_output():
                message = strict_json(text)
                self.assertIsInstance(message["type"], str)
                self.assertNotIn(message["event_id"], event_ids)
                event_ids.add(message["event_id"])
                if message["type"] == "conversation.item.truncate":
                    self.assertIsInstance(message["content_index"], int)
                    self.assertIsInstance(message["audio_end_ms"], int)
                    self.assertGreaterEqual(message["audio_end_ms"], 1)

    def test_hostile_server(self) -> None:
        """Any mix of valid and hostile server events: never an exception; malformed known
        events are ``malformed_event`` errors; unknown types are reported as unknown; every
        client message is strict, UTF-8-encodable JSON with a fresh event id."""
        run_programs(self, self.run_program)

