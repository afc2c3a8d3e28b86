"""Property-based fuzzing of the PBX platforms: Asterisk ``chan_websocket`` (binary ulaw/alaw/slin
frames plus plain-text or JSON control messages) and FreeSWITCH ``mod_audio_stream`` (binary L16
in, JSON ``streamAudio`` out).

Each example is a generated program (:mod:`tests.strategies`), as in
:mod:`tests.test_fuzz_platforms`: valid control messages from each protocol's real templates in
any order (``DTMF_END`` or ``MEDIA_XOFF`` before ``MEDIA_START``, a second ``MEDIA_START``, marks
echoed that were never sent), targeted malformations whose violation ``kind`` the model predicts
(not JSON, wrong types, huge and odd numbers, unsupported formats, oversize messages), random
mutations of the JSON templates and of the plain-text lines (whose verdict only the session
knows), binary frames of awkward sizes (empty, one byte, odd, a frame, one byte over the bound),
invalid UTF-8 text frames, and the neutral commands the call bridge issues. Properties checked
after every step:

- nothing raises out of the session (input or command);
- every event is of the neutral types; a :class:`ProtocolViolation` is the last event of its
  step, its ``kind`` a short identifier from the platform's fixed set, the one the model
  predicts wherever the input's verdict is known;
- neither protocol has an error message: a violation queues nothing (the glue closes);
- a well-formed message of an unknown type, and an empty binary frame, is
  :class:`MessageIgnored` with a bounded kind, and the call goes on;
- Asterisk: every binary frame out is a whole number of ``optimal_frame_size`` frames; every
  text frame out is a command (``MARK_MEDIA``, ``FLUSH_MEDIA``, ``HANGUP``, ``ANSWER``) in the
  call's control format, strict JSON or one plain line, encodable as UTF-8; XOFF/XON reported on
  changes only;
- FreeSWITCH: every text frame out is strict JSON, ``streamAudio`` at the call's rate whose
  base64 audio is the packet played, or ``killAudio``;
- no caller event comes before ``CallStarted``, which comes at most once; nothing is accepted,
  and nothing queued, after a violation or a hangup.

Each test asserts it really ran :data:`~tests.strategies.FUZZ_EXAMPLES` cases.
"""

from __future__ import annotations

import base64
import random
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.trial import unittest

from mediaproxy.platforms.asterisk import FORMATS, AsteriskSession
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformError,
    PlaybackPaused,
    UpgradeRequest,
)
from mediaproxy.platforms.freeswitch import FreeswitchSession
from tests.strategies import (
    binary_frame,
    dump,
    garbage_text,
    hostile_string,
    hostile_value,
    identifier,
    mutate,
    run_programs,
    steps,
    strict_json,
)
from tests.test_fuzz_media_platforms import BAD_DIGITS
from tests.test_fuzz_platforms import (
    INVALID_UTF8,
    UNKNOWN,
    Trace,
    Verdict,
    check_events,
    common_command,
    violation_kind,
)

ASTERISK_KINDS = frozenset({
    "oversize", "bad_json", "bad_message", "event_before_start", "wrong_type", "duplicate_start",
    "unsupported_format", "media_before_start", "bad_payload", "oversize_frame", "bad_utf8",
})
FREESWITCH_KINDS = frozenset({
    "oversize", "bad_json", "bad_message", "wrong_type", "unsupported_format", "bad_payload", "oversize_frame",
    "bad_utf8",
})
PBX_IGNORED = frozenset({"unknown_event", "empty_frame"})

# --- Asterisk --------------------------------------------------------------------------------------

ASTERISK_KNOWN = ("MEDIA_START", "DTMF_END", "MEDIA_XOFF", "MEDIA_XON", "MEDIA_MARK_PROCESSED",
                  "MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED", "STATUS", "ERROR")
PLAIN_COMMAND = re.compile(r"(MARK_MEDIA \S+|FLUSH_MEDIA|HANGUP|ANSWER)\Z")
ODD_FRAME_SIZES: tuple[Any, ...] = (0, -320, 3, 7, 1000, 641, "\u00b2", "9" * 5000, "320 ", 2**63, 1e308, None, [320],
                                    True, "0x140")
"""``optimal_frame_size`` values no channel format accepts: zero, negative, not dividing a 20 ms
packet, superscript and 5000-digit strings (``isdigit`` is true, ``int()`` refuses them), other
types."""


def asterisk_line(name: str, fields: dict[str, Any], as_json: bool) -> str:
    """One control message in either format (plain text drops ``None`` fields, as Asterisk
    leaves out what it does not know)."""
    if as_json:
        return dump({"event": name, **fields})
    return " ".join([name] + [f"{k}:{v}" for k, v in fields.items() if v is not None])


def asterisk_start_fields(rng: random.Random, as_json: bool, ok: bool = True) -> dict[str, Any]:
    name = rng.choice(sorted(FORMATS))
    fmt = FORMATS[name]
    packet = fmt.bytes_for_ms(20)
    sizes = [s for s in (packet, packet // 2, packet // 4) if s % fmt.sample_bytes == 0 and s]
    fields: dict[str, Any] = {"connection_id": "e226e283", "channel": "WebSocket/media1-00000001",
                              "channel_id": rng.choice(("pbx1-1712345678.42", "c", "é" * 40)),
                              "format": name, "optimal_frame_size": rng.choice(sizes), "ptime": 20}
    if as_json:
        if rng.random() < 0.5:
            fields["optimal_frame_size"] = str(fields["optimal_frame_size"])
        fields["channel_variables"] = rng.choice(({"CALLERID": "+1555", "T": "\ud800"}, {}, {"n": [1, None, 1e308]}))
        if rng.random() < 0.3:
            del fields["channel_id"]  # older versions: the connection id names the call
    if not ok:
        if rng.random() < 0.5:
            fields["format"] = rng.choice(("g722", "slin44", "SLIN16", "", "opus", "ulaw "))
        else:
            fields["optimal_frame_size"] = rng.choice(ODD_FRAME_SIZES)
    return fields


def asterisk_valid(rng: random.Random, as_json: bool) -> tuple[str, str, dict[str, Any]]:
    """(text, event name, fields) of a well-formed control message."""
    op = rng.randrange(12)
    if op <= 1:
        name, fields = "MEDIA_START", asterisk_start_fields(rng, as_json)
    elif op <= 3:
        name, fields = "DTMF_END", {"digit": rng.choice("0123456789*#ABCD"), "channel_id": "c"}
    elif op <= 5:
        name, fields = rng.choice(("MEDIA_XOFF", "MEDIA_XON")), {}
    elif op == 6:
        mark = rng.choice(("m1", "0:20", "x" * 60))
        if as_json:
            return dump({"event": "MEDIA_MARK_PROCESSED", "correlation_id": mark}), "MEDIA_MARK_PROCESSED", \
                {"mark": mark}
        return f"MEDIA_MARK_PROCESSED {mark}", "MEDIA_MARK_PROCESSED", {"mark": mark}
    elif op == 7:
        name, fields = rng.choice(("MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED", "STATUS")), \
            rng.choice(({}, {"queue_length": 4}))
    elif op == 8:
        name = "ERROR"
        fields = {"error_text": rng.choice(("Unknown command", "x" * 500))}
        if not as_json:
            return f"ERROR error_text:{fields['error_text']}", name, fields
    else:
        name, fields = "X" + identifier(rng).upper().replace(".", "_"), {"a": "1"}
    return asterisk_line(name, fields, as_json), name, fields


def asterisk_plain_mutation(text: str, rng: random.Random) -> str:
    """A plain-text line corrupted: a token dropped, a value replaced, a separator lost, odd
    whitespace or characters, the line cut short."""
    tokens = text.split(" ")
    op = rng.randrange(6)
    if op == 0 and len(tokens) > 1:
        del tokens[rng.randrange(1, len(tokens))]
    elif op == 1 and len(tokens) > 1:
        index = rng.randrange(1, len(tokens))
        key = tokens[index].partition(":")[0]
        tokens[index] = key + ":" + rng.choice(("", "\u00b2", "9" * 5000, hostile_string(rng), ":::"))
    elif op == 2 and len(tokens) > 1:
        index = rng.randrange(1, len(tokens))
        tokens[index] = tokens[index].replace(":", "")
    elif op == 3:
        return rng.choice(("\t", "\n", "\x00", "\u2028", " " * 3)).join(tokens)
    elif op == 4:
        return text[: rng.randrange(len(text) + 1)]
    else:
        tokens.insert(rng.randrange(len(tokens) + 1), hostile_string(rng))
    return " ".join(tokens)


class AsteriskModel:
    """What the model knows of an Asterisk session: started, its control format, XOFF."""

    def __init__(self) -> None:
        self.json = False
        self.xoff = False

    def predict(self, session: AsteriskSession, name: str, fields: dict[str, Any], as_json: bool) -> Verdict:
        if name == "MEDIA_START":
            return "duplicate_start" if session.started else None
        if not session.started:
            return "event_before_start" if name in ASTERISK_KNOWN else None
        return None


class AsteriskFuzzTests(unittest.TestCase):
    """AsteriskSession (both control formats, every option) against generated hostile streams."""

    def run_program(self, program: bytes) -> None:
        marks = ("auto", "on", "off")[len(program) % 3]
        session = AsteriskSession(marks=marks, answer=len(program) % 2 == 1)
        session.bind_upgrade(UpgradeRequest(rng_target(program), "proxy", {}))
        trace = Trace()
        model = AsteriskModel()
        for op, rng in steps(program):
            dead_before = trace.dead
            started = session.started
            as_json = rng.random() < 0.5
            expected: Verdict = UNKNOWN
            valid: tuple[str, str, dict[str, Any]] | None = None
            if op < 90:
                valid = asterisk_valid(rng, as_json)
                text, name, fields = valid
                expected = model.predict(session, name, fields, as_json)
                events = session.receive_text(text)
            elif op < 135:
                text, expected = self._targeted(session, rng, as_json)
                events = session.receive_text(text)
            elif op < 170:
                text, name, fields = asterisk_valid(rng, as_json)
                events = session.receive_text(mutate({"event": name, **fields}, rng) if as_json
                                              else asterisk_plain_mutation(text, rng))
            elif op < 215:
                data, expected = self._frame(session, rng)
                events = session.receive_binary(data)
                if expected is None and not dead_before:
                    self.assertEqual(events, [CallerAudio(data)] if data else [MessageIgnored("empty_frame")])
            elif op < 220:
                events = session.invalid_text(rng.choice(INVALID_UTF8))
                expected = "bad_utf8"
            else:
                common_command(session, rng)
                events, expected = [], None
            output = session.take_output()
            if dead_before:
                self.assertEqual((events, output), ([], []), "input accepted after the end")
                continue
            check_events(self, trace, events, ASTERISK_KINDS, PBX_IGNORED)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected)
            if valid is not None and kind is None:
                self._check_valid(session, model, valid, events, started)
            if any(isinstance(e, CallStarted) for e in events):
                model.json = session.json
                self.assertIn(session.audio_format, FORMATS.values())
                self.assertEqual(session.frame_bytes % session.audio_format.sample_bytes, 0)
                self.assertEqual(session.audio_format.bytes_for_ms(20) % session.frame_bytes, 0)
            self._check_output(session, output)
            if kind is not None:
                self.assertEqual(output, [], "Asterisk has no error message: the glue closes")
            if kind is not None or session._ended:
                trace.dead = True
            model.xoff = session._xoff  # a mutated message may have changed it too

    def _check_valid(self, session: AsteriskSession, model: AsteriskModel, valid: tuple[str, str, dict[str, Any]],
                     events: list[Any], started: bool) -> None:
        """A well-formed message's exact events (once the call started)."""
        _, name, fields = valid
        if not started or name == "MEDIA_START":
            if name not in ASTERISK_KNOWN:
                self.assertEqual(events, [MessageIgnored("unknown_event")])
            return
        if name == "DTMF_END":
            self.assertEqual(events, [DtmfReceived(fields["digit"])])
        elif name in ("MEDIA_XOFF", "MEDIA_XON"):
            paused = name == "MEDIA_XOFF"
            self.assertEqual(events, [PlaybackPaused(paused)] if paused != model.xoff else [], "changes only")
            model.xoff = paused
        elif name == "MEDIA_MARK_PROCESSED":
            self.assertEqual(events, [MarkPlayed(fields["mark"])])
        elif name == "ERROR":
            self.assertEqual([type(e) for e in events], [PlatformError])
        elif name in ASTERISK_KNOWN:
            self.assertEqual(events, [])
        else:
            self.assertEqual(events, [MessageIgnored("unknown_event")])

    def _check_output(self, session: AsteriskSession, output: list[Any]) -> None:
        for item in output:
            if isinstance(item, bytes):
                self.assertTrue(item and len(item) % session.frame_bytes == 0, "whole frames only")
                continue
            item.encode("utf-8")
            if session.json:
                message = strict_json(item)
                self.assertIn(message["command"], ("MARK_MEDIA", "FLUSH_MEDIA", "HANGUP", "ANSWER"))
                if message["command"] == "MARK_MEDIA":
                    self.assertIsInstance(message["correlation_id"], str)
            else:
                self.assertRegex(item, PLAIN_COMMAND)

    @staticmethod
    def _frame(session: AsteriskSession, rng: random.Random) -> tuple[bytes, Verdict]:
        """A binary frame and its verdict."""
        if not session.started:
            return binary_frame(rng), "media_before_start"
        limit = session.max_frame_bytes
        size = rng.choice((0, 1, 3, 159, 160, 320, 640, session.frame_bytes, limit, limit + 1, limit + 2, 70000))
        if size == 0:
            return b"", None
        if size % session.audio_format.sample_bytes:
            return rng.randbytes(size), "bad_payload"
        return rng.randbytes(size), "oversize_frame" if size > limit else None

    @staticmethod
    def _targeted(session: AsteriskSession, rng: random.Random, as_json: bool) -> tuple[str, str]:
        started = session.started
        op = rng.randrange(11)
        if op == 0:
            return "{not json" + garbage_text(rng), "bad_json"
        if op == 1:
            return rng.choice(("{", "{}}", "{" * 3000 + "}" * 3000, '{"event": NaN}x')), "bad_json"
        if op == 2:
            pad = "x" * 65540
            return (dump({"event": "STATUS", "pad": pad}) if as_json else f"STATUS {pad}"), "oversize"
        if op == 3:
            if as_json:
                return dump({"event": rng.choice((None, 5, [], {}, "", True))}), "bad_message"
            return rng.choice(("media_start", "1MEDIA", "", "   ", "MEDIA-START x:y", "é", "\ud800")), "bad_message"
        if op == 4:
            # A plain DTMF_END or MEDIA_START field that is not key:value.
            name = rng.choice(("DTMF_END", "MEDIA_START"))
            return f"{name} {rng.choice(('digit', ':5', 'format slin'))}", "bad_message"
        if op == 5:
            fields = {"digit": rng.choice(BAD_DIGITS if as_json else ("", "E", "12", "x"))}
            return asterisk_line("DTMF_END", fields, as_json), "wrong_type" if started else "event_before_start"
        if op == 6 and as_json:
            correlation = rng.choice((None, 5, [], {}, True))
            return dump({"event": "MEDIA_MARK_PROCESSED", "correlation_id": correlation}), \
                "wrong_type" if started else "event_before_start"
        if op <= 7:
            fields = asterisk_start_fields(rng, as_json, ok=False)
            for key in ("format", "optimal_frame_size"):
                if not as_json and (not str(fields[key]).strip() or str(fields[key]) != str(fields[key]).strip()):
                    fields[key] = "x"  # plain text would drop the whitespace (or the field)
            return asterisk_line("MEDIA_START", fields, as_json), "duplicate_start" if started else "unsupported_format"
        if op == 8 and as_json:
            fields = asterisk_start_fields(rng, True)
            fields["format"] = rng.choice((["slin16"], {"name": "ulaw"}, 5, None))
            return asterisk_line("MEDIA_START", fields, True), "duplicate_start" if started else "unsupported_format"
        if op == 9:
            fields = asterisk_start_fields(rng, as_json)
            for key in ("channel_id", "connection_id", "channel"):
                fields[key] = rng.choice(("", None, 5, [])) if as_json else None
            return asterisk_line("MEDIA_START", fields, as_json), "duplicate_start" if started else "bad_message"
        fields = asterisk_start_fields(rng, True)
        fields["channel_variables"] = rng.choice(([], "x", 5, True))
        return asterisk_line("MEDIA_START", fields, True), "duplicate_start" if started else "wrong_type"

    def test_hostile_streams(self) -> None:
        """Asterisk, plain text and JSON: never an exception; bounded kinds as predicted; whole
        frames out, commands in the call's format; nothing queued on a violation and nothing
        accepted after it or after a hangup; unknown events and empty frames ignored."""
        run_programs(self, self.run_program)


def rng_target(program: bytes) -> str:
    """The upgrade's request target: the dial string's ``v(...)`` query, sometimes hostile."""
    return random.Random(program[:4]).choice((
        "/asterisk", "/asterisk?campaign=spring&lang=en", "/asterisk?" + "k=v&" * 100, "/asterisk?%ff=%00&a",
        "/freeswitch?uuid=u-1&sample_rate=16000", "/freeswitch?sample_rate=" + random.Random(program).choice(
            ("8k", "16000", "44100", "\u00b2", "9" * 5000, "", "-8000")),
    ))


# --- FreeSWITCH ------------------------------------------------------------------------------------


def freeswitch_valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(8)
    if op <= 1:
        return {"event": "dtmf", "digit": rng.choice(("5", "#", "12", "ABCD"))}
    if op == 2:
        return {"type": "dtmf", "digit": "9"}
    if op <= 4:
        return {"uuid": rng.choice(("6f1c2a9e", "", "\ud800")), "caller": "+1555", "campaign": {"id": 7},
                "n": rng.choice((None, 1e308, [1, 2]))}
    return rng.choice(({"type": identifier(rng, "x")}, {"event": identifier(rng, "x"), "data": [1]}))


class FreeswitchFuzzTests(unittest.TestCase):
    """FreeswitchSession against generated hostile streams of text and binary frames."""

    def run_program(self, program: bytes) -> None:
        session = FreeswitchSession(sample_rate=(8000, 16000)[len(program) % 2], packet_ms=(20, 200)[program[0] % 2],
                                    new_id=lambda: "generated")
        target = rng_target(program)
        session.bind_upgrade(UpgradeRequest(target, "proxy", {}))
        rate = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True)).get("sample_rate")
        bad_rate = rate is not None and rate.strip().lower() not in ("8k", "16k", "8000", "16000")
        trace = Trace()
        for op, rng in steps(program):
            dead_before = trace.dead
            started = session.started
            expected: Verdict = UNKNOWN
            if op < 80:
                message = freeswitch_valid(rng)
                text = dump(message)
                events = session.receive_text(text)
                if not started:
                    expected = "oversize" if len(text) > 65536 else (
                        "unsupported_format" if bad_rate else None)
                elif "digit" in message:
                    expected = None if set(message["digit"]) <= set("0123456789*#ABCD") else "wrong_type"
                    if not dead_before:
                        self.assertEqual(events, [DtmfReceived(message["digit"])])
                elif "uuid" in message:
                    expected = "bad_message"  # neither a type nor an event name
                else:
                    expected = None
                    if not dead_before:
                        self.assertEqual(events, [MessageIgnored("unknown_event")])
            elif op < 125:
                text, expected = self._targeted(session, rng, bad_rate)
                events = session.receive_text(text)
            elif op < 160:
                events = session.receive_text(mutate(freeswitch_valid(rng), rng))
            elif op < 215:
                data, expected = self._frame(session, rng, bad_rate)
                events = session.receive_binary(data)
            elif op < 220:
                events = session.invalid_text(rng.choice(INVALID_UTF8))
                expected = "bad_utf8"
            else:
                common_command(session, rng)
                events, expected = [], None
            output = session.take_output()
            if dead_before:
                self.assertEqual((events, output), ([], []), "input accepted after the end")
                continue
            check_events(self, trace, events, FREESWITCH_KINDS, PBX_IGNORED)
            kind = violation_kind(events)
            if expected != UNKNOWN:
                self.assertEqual(kind, expected)
            for item in output:
                message = strict_json(item)
                if message["type"] == "killAudio":
                    continue
                self.assertEqual(message["type"], "streamAudio")
                data = message["data"]
                self.assertEqual((data["audioDataType"], data["sampleRate"]), ("raw", session.audio_format.rate_hz))
                base64.b64decode(data["audioData"], validate=True)
            if kind is not None:
                self.assertEqual(output, [], "FreeSWITCH has no error message: the glue closes")
            if kind is not None or session._ended:
                trace.dead = True

    @staticmethod
    def _frame(session: FreeswitchSession, rng: random.Random, bad_rate: bool) -> tuple[bytes, Verdict]:
        limit = session.max_frame_bytes
        size = rng.choice((0, 1, 3, 160, 320, 640, limit, limit + 1, limit + 2, 70001))
        if not session.started and bad_rate:
            return rng.randbytes(size), "unsupported_format"  # the audio starts the call: refused
        verdict = None if not size else "bad_payload" if size % 2 else "oversize_frame" if size > limit else None
        return rng.randbytes(size), verdict

    @staticmethod
    def _targeted(session: FreeswitchSession, rng: random.Random, bad_rate: bool) -> tuple[str, Verdict]:
        if not session.started:
            op = rng.randrange(3)
            if op == 0:
                return "x" * 65537, "oversize"
            # Any text (JSON or not, deep nesting included) is the command's metadata.
            text = rng.choice((garbage_text(rng), "[" * 30000, dump({"uuid": hostile_value(rng)}), "\ud800"))
            return text, "unsupported_format" if bad_rate else None
        op = rng.randrange(6)
        if op == 0:
            return garbage_text(rng), "bad_json"
        if op == 1:
            return rng.choice((dump([]), "5", "null", "[" * 30000)), "bad_json"
        if op == 2:
            return dump({"event": "dtmf", "pad": "x" * 65540}), "oversize"
        if op == 3:
            return dump({"type": rng.choice((None, 5, [], {})), "event": rng.choice((None, 7, [1]))}), "bad_message"
        return dump({rng.choice(("event", "type")): "dtmf", "digit": rng.choice(BAD_DIGITS)}), "wrong_type"

    def test_hostile_streams(self) -> None:
        """FreeSWITCH: never an exception; bounded kinds as predicted; the first message of
        either kind starts the call (any text is metadata), a bad queried rate refuses it;
        whole-sample frames pass, empty ones ignored; strict JSON out at the call's rate."""
        run_programs(self, self.run_program)

