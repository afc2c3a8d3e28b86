"""Realistic messages of the Twilio-dialect cousins (Telnyx, Plivo, Exotel), shared by their
session, bridge and loopback tests: each :class:`Dialect` builds what its vendor sends and reads
what it is sent back."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import L16_8K, MULAW_8K, AudioFormat

CALL_ID = "v3:call-1"
STREAM_ID = "stream-1"
PARAMS = {"tenant": "acme", "agent": "sales"}


@dataclass(frozen=True)
class Dialect:
    """One vendor's wire shapes. ``fmt`` is the stream's audio format; ``media_key`` the outbound
    media event; ``flush`` the outbound clear event."""

    name: str
    fmt: AudioFormat
    media_event: str
    flush_event: str

    def start(self, **overrides: Any) -> dict[str, Any]:
        if self.name == "telnyx":
            enc = {"pcmu": "PCMU", "pcma": "PCMA", "l16": "L16"}[self.fmt.encoding]
            body = {"call_control_id": CALL_ID, "call_session_id": "s-1", "from": "+1", "to": "+2",
                    "client_state": "", "custom_parameters": dict(PARAMS),
                    "media_format": {"encoding": enc, "sample_rate": self.fmt.rate_hz, "channels": 1}}
            body.update(overrides)
            return {"event": "start", "sequence_number": "1", "stream_id": STREAM_ID, "start": body}
        if self.name == "plivo":
            enc = "audio/x-mulaw" if self.fmt.encoding == "pcmu" else "audio/x-l16"
            body = {"callId": CALL_ID, "streamId": STREAM_ID, "accountId": "MA1", "tracks": ["inbound"],
                    "mediaFormat": {"encoding": enc, "sampleRate": self.fmt.rate_hz}}
            body.update(overrides)
            return {"event": "start", "sequenceNumber": 1, "start": body,
                    "extra_headers": "tenant=acme;agent=sales"}
        body = {"stream_sid": STREAM_ID, "call_sid": CALL_ID, "account_sid": "AC1", "from": "+1", "to": "+2",
                "custom_parameters": dict(PARAMS),
                "media_format": {"encoding": "audio/x-raw", "sample_rate": str(self.fmt.rate_hz), "bit_rate": "16"}}
        body.update(overrides)
        return {"event": "start", "sequence_number": "1", "stream_sid": STREAM_ID, "start": body}

    def opening(self) -> list[dict[str, Any]]:
        """What the vendor sends first (Plivo has no ``connected``)."""
        first = [] if self.name == "plivo" else [{"event": "connected", "version": "1.0.0"}]
        return [*first, self.start()]

    def media(self, payload: bytes | str, seq: int = 2) -> dict[str, Any]:
        encoded = payload if isinstance(payload, str) else base64.b64encode(payload).decode("ascii")
        media = {"chunk": str(seq), "timestamp": str(seq * 20), "payload": encoded}
        if self.name != "exotel":
            media["track"] = "inbound"
        return {"event": "media", "sequence_number": str(seq), "streamId": STREAM_ID, "media": media}

    def dtmf(self, digit: Any) -> dict[str, Any]:
        return {"event": "dtmf", "dtmf": {"digit": digit, "duration": "100"}}

    def mark_echo(self, name: Any) -> dict[str, Any]:
        if self.name == "plivo":
            return {"event": "playedStream", "streamId": STREAM_ID, "name": name}
        return {"event": "mark", "mark": {"name": name}}

    def stop(self) -> dict[str, Any] | None:
        """The vendor's end-of-stream message (Plivo has none: the socket closes)."""
        return None if self.name == "plivo" else {"event": "stop", "stop": {"reason": "callended"}}

    # what the proxy sends
    def payload_of(self, message: dict[str, Any]) -> bytes:
        return base64.b64decode(message["media"]["payload"])

    def mark_name(self, message: dict[str, Any]) -> str:
        return str(message["name"] if self.name == "plivo" else message["mark"]["name"])

    @property
    def mark_event(self) -> str:
        return "checkpoint" if self.name == "plivo" else "mark"


TELNYX = Dialect("telnyx", MULAW_8K, "media", "clear")
PLIVO = Dialect("plivo", MULAW_8K, "playAudio", "clearAudio")
EXOTEL = Dialect("exotel", L16_8K, "media", "clear")


def text(message: Any) -> str:
    return json.dumps(message)


# --- the session tests every cousin passes --------------------------------------------------------

from collections.abc import Callable  # noqa: E402

from mediaproxy.outcome import Outcome  # noqa: E402
from mediaproxy.platforms.base import (  # noqa: E402
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformEvent,
    PlatformSession,
    ProtocolViolation,
)
from mediaproxy.platforms.jsonmedia import MAX_MESSAGE_CHARS  # noqa: E402


def frame(fmt: AudioFormat, seed: int, ms: int = 20) -> bytes:
    return bytes((seed * 37 + i * 11) % 251 for i in range(fmt.bytes_for_ms(ms)))


class SessionContract:
    """Mixed into a ``SynchronousTestCase``: ``dialect`` and ``make`` (a fresh session) set."""

    dialect: Dialect
    make: Callable[[], PlatformSession]

    # trial's assertion methods, provided by the TestCase this is mixed into
    assertEqual: Any
    assertIsInstance: Any
    assertTrue: Any

    def feed(self, session: PlatformSession, messages: list[Any]) -> list[PlatformEvent]:
        events: list[PlatformEvent] = []
        for m in messages:
            events.extend(session.receive_text(m if isinstance(m, str) else text(m)))
        return events

    def started(self) -> PlatformSession:
        s = self.make()
        self.feed(s, self.dialect.opening())
        return s

    def violation(self, messages: list[Any], kind: str, session: PlatformSession | None = None) -> None:
        s = session if session is not None else self.make()
        events = self.feed(s, messages)
        self.assertEqual([type(e) for e in events if not isinstance(e, CallStarted)], [ProtocolViolation], events)
        self.assertEqual(events[-1].kind, kind)  # type: ignore[union-attr]
        # Silence afterwards: nothing is parsed, nothing is sent.
        self.assertEqual(s.receive_text(text(self.dialect.media(frame(self.dialect.fmt, 1)))), [])
        s.play(frame(self.dialect.fmt, 2))
        self.assertEqual(s.take_output(), [])

    def test_whole_session(self) -> None:
        d = self.dialect
        frames = [frame(d.fmt, i) for i in range(30)]
        messages: list[Any] = list(d.opening())
        expected: list[PlatformEvent] = [CallStarted(CALL_ID, d.fmt, PARAMS)]
        for i, f in enumerate(frames):
            messages.append(d.media(f, i + 2))
            expected.append(CallerAudio(f))
            if i == 10:
                messages.append(d.dtmf("5"))
                expected.append(DtmfReceived("5"))
            if i == 20:
                messages.append(d.mark_echo("3:400"))
                expected.append(MarkPlayed("3:400"))
                messages.append({"event": "futureThing", "x": 1})
                expected.append(MessageIgnored("unknown_event"))
        stop = d.stop()
        if stop is not None:
            messages.append(stop)
            expected.append(CallEnded("stop"))
        s = self.make()
        self.assertEqual(self.feed(s, messages), expected)
        self.assertEqual(s.take_output(), [])  # nothing is owed to the vendor
        if stop is not None:
            self.assertEqual(s.receive_text(text(d.media(frames[0]))), [])

    def test_outbound(self) -> None:
        d = self.dialect
        s = self.started()
        packet = frame(d.fmt, 9, ms=s.capabilities.packet_ms)
        s.play(packet)
        s.mark("1:20")
        s.clear()
        play, mark, clear = (json.loads(m) for m in s.take_output())
        self.assertEqual(play["event"], d.media_event)
        self.assertEqual(d.payload_of(play), packet)
        self.assertEqual(mark["event"], d.mark_event)
        self.assertEqual(d.mark_name(mark), "1:20")
        self.assertEqual(clear["event"], d.flush_event)

    def test_escaping(self) -> None:
        s = self.started()
        s.mark('we"ird\\name\u00e9')
        [mark] = (json.loads(m) for m in s.take_output())
        self.assertEqual(self.dialect.mark_name(mark), 'we"ird\\name\u00e9')

    def test_nothing_before_start_or_after_hangup(self) -> None:
        s = self.make()
        s.play(frame(self.dialect.fmt, 1))
        s.clear()
        self.assertEqual(s.take_output(), [])
        s = self.started()
        s.hangup(Outcome.COMPLETED)
        s.play(frame(self.dialect.fmt, 1))
        s.clear()
        self.assertEqual(s.take_output(), [])

    def test_transfer_ends_the_stream(self) -> None:
        self.assertEqual(self.make().transfer("sip:a@b", ""), False)
        s = self.started()
        self.assertTrue(s.capabilities.can_transfer)
        self.assertEqual(s.transfer("sip:a@b", "summary"), True)
        self.assertEqual(s.receive_text(text(self.dialect.media(frame(self.dialect.fmt, 1)))), [])

    # every malformed kind
    def test_bad_json(self) -> None:
        self.violation(["{nope"], "bad_json")
        self.violation(["[1, 2]"], "bad_json")
        self.violation(["[" * 100000 + "]" * 100000], "oversize")

    def test_deep_nesting(self) -> None:
        self.violation(["[" * 30000 + "]" * 30000], "bad_json")

    def test_oversize(self) -> None:
        self.violation(['{"event":"x","p":"' + "x" * MAX_MESSAGE_CHARS + '"}'], "oversize")

    def test_binary_frame(self) -> None:
        s = self.started()
        [event] = s.receive_binary(b"\x00\x01")
        self.assertIsInstance(event, ProtocolViolation)
        self.assertEqual(event.kind, "binary_frame")  # type: ignore[union-attr]
        self.assertEqual(s.receive_binary(b"\x00"), [])

    def test_no_event_name(self) -> None:
        self.violation([{"media": {}}], "bad_message")
        self.violation([{"event": 5}], "bad_message")

    def test_start_without_start_object(self) -> None:
        self.violation([{"event": "start", "start": "x"}], "bad_message")

    def test_start_without_ids(self) -> None:
        ids = {"telnyx": "call_control_id", "plivo": "callId", "exotel": "call_sid"}[self.dialect.name]
        self.violation([self.dialect.start(**{ids: ""})], "bad_message")

    def test_duplicate_start(self) -> None:
        self.violation([self.dialect.start(), self.dialect.start()], "duplicate_start")

    def test_unsupported_format(self) -> None:
        key = {"telnyx": "media_format", "plivo": "mediaFormat", "exotel": "media_format"}[self.dialect.name]
        bad = {"encoding": "OPUS", "sample_rate": 48000, "sampleRate": 48000}
        self.violation([self.dialect.start(**{key: bad})], "unsupported_format")

    def test_media_before_start(self) -> None:
        self.violation([self.dialect.media(frame(self.dialect.fmt, 1))], "media_before_start")

    def test_dtmf_before_start(self) -> None:
        self.violation([self.dialect.dtmf("1")], "dtmf_before_start")

    def test_media_wrong_type(self) -> None:
        self.violation([*self.dialect.opening(), {"event": "media", "media": {"payload": 5}}], "wrong_type")
        self.violation([*self.dialect.opening(), {"event": "media", "media": "x"}], "wrong_type")

    def test_bad_base64(self) -> None:
        self.violation([*self.dialect.opening(), self.dialect.media("not base64!")], "bad_base64")

    def test_oversize_frame(self) -> None:
        self.violation([*self.dialect.opening(), self.dialect.media(frame(self.dialect.fmt, 1, ms=600))],
                       "oversize_frame")

    def test_odd_sample_count(self) -> None:
        if self.dialect.fmt.sample_bytes == 2:
            self.violation([*self.dialect.opening(), self.dialect.media(b"\x00" * 161)], "bad_payload")

    def test_bad_dtmf(self) -> None:
        for digit in ("", "x", 5, None):
            self.violation([*self.dialect.opening(), self.dialect.dtmf(digit)], "wrong_type")

    def test_mark_without_name(self) -> None:
        self.violation([*self.dialect.opening(), self.dialect.mark_echo(7)], "wrong_type")

    def test_empty_payload_ignored(self) -> None:
        s = self.started()
        self.assertEqual(s.receive_text(text(self.dialect.media(b""))), [])

    def test_unknown_events_are_counted_and_the_call_goes_on(self) -> None:
        s = self.started()
        events = self.feed(s, [{"event": "streamPaused"}, {"event": "whatever", "whatever": {}}])
        self.assertEqual(events, [MessageIgnored("unknown_event")] * 2)
        f = frame(self.dialect.fmt, 3)
        self.assertEqual(s.receive_text(text(self.dialect.media(f))), [CallerAudio(f)])
