"""Whole-session tests for the AudioHook sans-IO session (mediaproxy.platforms.audiohook).

Each test plays Genesys with :class:`Genesys`, which numbers its messages like the real client and
checks every message the session sends: version "2", the session id, a server message type,
``seq`` going up by exactly one, ``clientseq`` present and never ahead of what was sent,
``parameters`` present, and no client-only fields.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import L16_8K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.options import option_keys
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.audiohook import (
    AudioHookOptions,
    AudioHookSession,
    PlatformError,
    new_session,
)
from mediaproxy.platforms.audiohook_messages import SERVER_TYPES, format_duration, parse_duration
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallerStreamPaused,
    CallStarted,
    DtmfReceived,
    LanguageChanged,
    PlaybackFlowChanged,
    ProtocolViolation,
    UpgradeRequest,
)
from mediaproxy.transcripts import Transcript

SESSION = "c2d8f4a1-7e39-4b6a-8f20-5a1b9c3d6e77"
ORG = "6f1c2a9e-3b7d-4c21-9a55-0d2e8b4f7a10"
CONVERSATION = "5e0b7c1d-2a3f-4d6e-8b9a-0c1d2e3f4a5b"
PARTICIPANT = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
NULL = "00000000-0000-0000-0000-000000000000"

STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
STEREO_SWAPPED = {"type": "audio", "format": "PCMU", "channels": ["internal", "external"], "rate": 8000}
EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
INTERNAL = {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}
L16_EXTERNAL = {"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000}
MONITOR_OFFER = [STEREO, EXTERNAL, INTERNAL]


def FakeBackend(pick: AudioFormat | None = None) -> FormatPreference:
    """A backend's format preference: ``pick`` first (or indifferent to format)."""
    return () if pick is None else (pick,)


def open_parameters(media: list[dict[str, Any]] | None = None, conversation: str = CONVERSATION,
                    participant: str = PARTICIPANT, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "organizationId": ORG,
        "conversationId": conversation,
        "participant": {"id": participant, "ani": "+15550100", "aniName": "Pat", "dnis": "+18005550199"},
        "media": MONITOR_OFFER if media is None else media,
        "language": "en-US",
    }
    params.update(extra)
    return params


KEYS = option_keys(AudioHookOptions)
# What open_parameters() adds to every call's metadata: the participant and the language.
OPEN_METADATA = {"audiohook.participant.ani": "+15550100", "audiohook.participant.aniName": "Pat",
                 "audiohook.participant.dnis": "+18005550199", "audiohook.language": "en-US"}


class Genesys:
    """Plays the AudioHook client against a session and checks everything the session sends."""

    def __init__(self, test: SynchronousTestCase, session: AudioHookSession, session_id: str = SESSION) -> None:
        self.test = test
        self.session = session
        self.session_id = session_id
        self.seq = 0  # last seq we (Genesys) used
        self.serverseq = 0  # last server seq we saw
        self.position = "PT0S"
        self.messages: list[dict[str, Any]] = []
        self.audio: list[bytes] = []

    def send(self, mtype: str, params: dict[str, Any] | None = None, /, **override: Any) -> list[Any]:
        self.seq += 1
        message: dict[str, Any] = {
            "version": "2", "id": self.session_id, "type": mtype, "seq": self.seq,
            "serverseq": self.serverseq, "position": self.position,
            "parameters": {} if params is None else params,
        }
        for key, value in override.items():
            if value is _DROP:
                message.pop(key)
            else:
                message[key] = value
        return self.raw(json.dumps(message), counted=False)

    def raw(self, text: str, counted: bool = True) -> list[Any]:
        """Feed a text frame as is; ``counted``: the client numbered it (a seq was used)."""
        if counted:
            self.seq += 1
        events = self.session.receive_text(text)
        self._drain()
        return events

    def binary(self, data: bytes) -> list[Any]:
        events = self.session.receive_binary(data)
        self._drain()
        return events

    def drain(self) -> None:
        """Collect what a command queued."""
        self._drain()

    def _drain(self) -> None:
        for item in self.session.take_output():
            if isinstance(item, bytes):
                self.audio.append(item)
                continue
            message = json.loads(item)
            t = self.test
            t.assertIsInstance(message, dict)
            t.assertEqual(message.get("version"), "2")
            t.assertEqual(message.get("id"), self.session_id)
            t.assertIn(message.get("type"), SERVER_TYPES)
            t.assertEqual(message.get("seq"), self.serverseq + 1, f"seq skipped or repeated in {message}")
            t.assertIsInstance(message.get("clientseq"), int)
            t.assertLessEqual(message["clientseq"], self.seq)
            t.assertIsInstance(message.get("parameters"), dict)
            t.assertNotIn("position", message)
            t.assertNotIn("serverseq", message)
            t.assertEqual(set(message), {"version", "id", "type", "seq", "clientseq", "parameters"})
            self.serverseq = message["seq"]
            self.messages.append(message)

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def last(self, mtype: str | None = None) -> dict[str, Any]:
        for message in reversed(self.messages):
            if mtype is None or message["type"] == mtype:
                return message
        raise AssertionError(f"no {mtype} message was sent (sent: {self.types()})")


_DROP = object()


class SessionTestCase(SynchronousTestCase):
    def make(self, mode: str = "monitor", backend: FormatPreference | None = None, bind: bool = True,
             **options: Any) -> tuple[AudioHookSession, Genesys, FormatPreference]:
        backend = backend or FakeBackend()
        ids = iter(f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 1000))
        session = AudioHookSession(mode, backend, new_id=lambda: next(ids), **options)
        if bind:
            session.bind_upgrade(UpgradeRequest("/audiohook", "proxy.example.net", {
                "audiohook-organization-id": ORG,
                "audiohook-session-id": SESSION,
                "audiohook-correlation-id": "91ab0c3e-2f4d-4e8a-b7c6-1d2e3f4a5b6c",
                "x-api-key": "bXlBcGlLZXk=",
            }))
        return session, Genesys(self, session), backend

    def opened(self, mode: str = "monitor", media: list[dict[str, Any]] | None = None, **options: Any
               ) -> tuple[AudioHookSession, Genesys, list[Any]]:
        session, genesys, _ = self.make(mode, **options)
        if media is None:
            media = MONITOR_OFFER if mode == "monitor" else [EXTERNAL]
        events = genesys.send("open", open_parameters(media))
        self.assertEqual(genesys.types(), ["opened"])
        return session, genesys, events

    def assertViolation(self, events: list[Any], kind: str) -> ProtocolViolation:
        violations = [e for e in events if isinstance(e, ProtocolViolation)]
        self.assertEqual([v.kind for v in violations], [kind], events)
        return violations[0]

    def assertCloseTransaction(self, session: AudioHookSession, genesys: Genesys,
                               expect_call_ended: bool = True) -> None:
        """Genesys answers our disconnect with close; we answer closed, and nothing after."""
        self.assertTrue(session.awaits_close)
        events = genesys.send("close", {"reason": "disconnect"})
        closed = genesys.last()
        self.assertEqual(closed["type"], "closed")
        self.assertEqual(closed["clientseq"], genesys.seq)
        self.assertEqual(closed["parameters"], {})
        self.assertFalse(session.awaits_close)
        self.assertEqual(events, [CallEnded("disconnect")] if expect_call_ended else [])
        count = len(genesys.messages)
        self.assertEqual(genesys.send("ping"), [])
        self.assertEqual(genesys.binary(b"\xff" * 160), [])
        self.assertEqual(len(genesys.messages), count)


class MonitorSessionTests(SessionTestCase):
    def test_whole_stereo_session(self) -> None:
        """open → opened (stereo, unchanged), audio per party, ping/pong, transcripts, close."""
        session, genesys, backend = self.make()
        events = genesys.send("open", open_parameters())
        opened = genesys.last("opened")
        self.assertEqual(opened["seq"], 1)
        self.assertEqual(opened["clientseq"], 1)
        self.assertEqual(opened["parameters"], {"startPaused": False, "media": [STEREO]})
        self.assertEqual(events, [CallStarted(CONVERSATION, MULAW_8K, OPEN_METADATA)])
        self.assertFalse(session.awaits_close)

        # 200 ms of stereo: external bytes 0x11, internal bytes 0x22.
        events = genesys.binary(b"\x11\x22" * 1600)
        self.assertEqual(events, [CallerAudio(b"\x11" * 1600, "external"), CallerAudio(b"\x22" * 1600, "internal")])

        genesys.position = "PT1.0S"
        self.assertEqual(genesys.send("ping", {"rtt": "PT0.012S"}), [])
        pong = genesys.last()
        self.assertEqual((pong["type"], pong["clientseq"], pong["parameters"]), ("pong", genesys.seq, {}))

        session.caller_speech(True)  # at 0.2 s
        genesys.binary(b"\x11\x22" * 4000)  # to 0.7 s
        session.transcript(Transcript("caller", "I need", False))
        self.assertEqual(genesys.types(), ["opened", "pong"], "partials are not sent")
        genesys.binary(b"\x11\x22" * 800)  # to 0.8 s
        session.transcript(Transcript("caller", "I need help", True))
        session.transcript(Transcript("bot", "How can I help?", True))
        genesys.drain()
        caller, agent = genesys.messages[-2:]
        self.assertEqual(caller["type"], "event")
        self.assertEqual(caller["clientseq"], genesys.seq)
        entity = caller["parameters"]["entities"][0]
        self.assertEqual(entity["type"], "transcript")
        data = entity["data"]
        self.assertEqual(data["channelId"], 0)
        self.assertNotIn("channel", data)
        self.assertIs(data["isFinal"], True)
        self.assertEqual((data["offset"], data["duration"]), ("PT0.2S", "PT0.6S"))
        (interpretation,) = data["alternatives"][0]["interpretations"]
        self.assertEqual((interpretation["type"], interpretation["transcript"]), ("display", "I need help"))
        # No word timings: the words are spread over the utterance by length (1 + 4 + 4 chars).
        self.assertEqual([(t["type"], t["value"], t["offset"], t["duration"], t["confidence"], t["language"])
                          for t in interpretation["tokens"]],
                         [("word", "I", "PT0.2S", "PT0.067S", 1.0, "en-US"),
                          ("word", "need", "PT0.267S", "PT0.267S", 1.0, "en-US"),
                          ("word", "help", "PT0.533S", "PT0.267S", 1.0, "en-US")])
        self.assertEqual(data["alternatives"][0]["languages"], ["en-US"])
        self.assertEqual(agent["parameters"]["entities"][0]["data"]["channelId"], 1)
        self.assertEqual(agent["parameters"]["entities"][0]["data"]["offset"], "PT0S")
        self.assertNotEqual(data["id"], agent["parameters"]["entities"][0]["data"]["id"])

        genesys.position = "PT0.8S"
        events = genesys.send("close", {"reason": "end"})
        closed = genesys.last()
        self.assertEqual((closed["type"], closed["clientseq"], closed["parameters"]), ("closed", genesys.seq, {}))
        self.assertEqual(events, [CallEnded("end")])
        self.assertFalse(session.awaits_close)
        # Nothing more after closed, whatever arrives or is commanded.
        self.assertEqual(genesys.binary(b"\x11\x22"), [])
        session.transcript(Transcript("caller", "late", True))
        genesys.drain()
        self.assertEqual(genesys.types()[-1], "closed")

    def test_swapped_channel_order_is_kept(self) -> None:
        """internal-first stereo is echoed in that order and split by it, not by 'left = caller'."""
        session, genesys, events = self.opened(media=[STEREO_SWAPPED, EXTERNAL])
        self.assertEqual(genesys.last()["parameters"]["media"], [STEREO_SWAPPED])
        events = genesys.binary(b"\x22\x11" * 4)
        self.assertEqual(events, [CallerAudio(b"\x22" * 4, "internal"), CallerAudio(b"\x11" * 4, "external")])
        session.transcript(Transcript("caller", "hello", True))
        genesys.drain()
        self.assertEqual(genesys.last()["parameters"]["entities"][0]["data"]["channelId"], 1)

    def test_backend_preference_chooses_format(self) -> None:
        """The backend's preferred format wins over the client's first choice."""
        session, genesys, backend = self.make("connector", backend=FakeBackend(pick=L16_8K))
        events = genesys.send("open", open_parameters([EXTERNAL, L16_EXTERNAL]))
        self.assertEqual(genesys.last()["parameters"]["media"], [L16_EXTERNAL])
        self.assertEqual(events[0].audio_format, L16_8K)
        # L16 mono: 2 bytes per sample; an odd byte is carried.
        self.assertEqual(genesys.binary(b"\x01\x02\x03"), [CallerAudio(b"\x01\x02")])
        self.assertEqual(session.position_us, 125)

    def test_unusable_entries_are_skipped(self) -> None:
        odd = [{"type": "audio", "format": "OPUS", "channels": ["external"], "rate": 48000},
               {"type": "audio", "format": "PCMU", "channels": ["external", "external"], "rate": 8000},
               {"type": "audio", "format": "PCMU", "channels": ["left"], "rate": 8000},
               "junk", EXTERNAL]
        session, genesys, events = self.opened(media=odd)
        self.assertEqual(genesys.last()["parameters"]["media"], [EXTERNAL])

    def test_zero_byte_frames_and_timeline(self) -> None:
        session, genesys, _ = self.opened()
        self.assertEqual(genesys.binary(b""), [])
        genesys.binary(b"\x11\x22" * 8000)
        self.assertEqual(session.position_us, 1_000_000)

    def test_monitor_ignores_bot_audio_and_barge_in(self) -> None:
        session, genesys, _ = self.opened()
        session.play(b"\xff" * 1600)
        session.clear()
        genesys.drain()
        self.assertEqual((genesys.audio, genesys.types()), ([], ["opened"]))
        self.assertFalse(session.capabilities.can_flush)

    def test_update_is_acknowledged(self) -> None:
        session, genesys, _ = self.opened()
        self.assertEqual(genesys.send("update", {"language": "de-DE"}), [LanguageChanged("de-DE")])
        updated = genesys.last()
        self.assertEqual((updated["type"], updated["clientseq"], updated["parameters"]), ("updated", genesys.seq, {}))
        self.assertEqual(session.language, "de-DE")

    def test_supported_languages_on_request_only(self) -> None:
        session, genesys, _ = self.make(languages=("en-US", "de-DE"))
        genesys.send("open", open_parameters(supportedLanguages=True))
        self.assertEqual(genesys.last()["parameters"]["supportedLanguages"], ["en-US", "de-DE"])
        session, genesys, _ = self.make(languages=("en-US",))
        genesys.send("open", open_parameters())
        self.assertNotIn("supportedLanguages", genesys.last()["parameters"])

    def test_input_is_not_mutated_into_media(self) -> None:
        """The echoed entry carries exactly the offered keys, nothing added."""
        entry = dict(STEREO, extra="kept")
        session, genesys, _ = self.opened(media=[entry])
        self.assertEqual(genesys.last()["parameters"]["media"], [entry])


class ConnectorSessionTests(SessionTestCase):
    def test_whole_connector_session(self) -> None:
        """Audio Connector: variables in, paced bot audio, barge-in, dtmf, outputVariables out."""
        session, genesys, backend = self.make("connector")
        events = genesys.send("open", open_parameters([EXTERNAL], inputVariables={"Lang": "en", "Tries": 2}))
        self.assertEqual(genesys.last()["parameters"]["media"], [EXTERNAL])
        self.assertEqual(events, [CallStarted(CONVERSATION, MULAW_8K, {"Lang": "en", "Tries": "2", **OPEN_METADATA})])
        caps = session.capabilities
        self.assertEqual((caps.can_flush, caps.has_marks, caps.packet_ms), (True, False, 200))
        # barge_in discards what Genesys holds: [playout] lead_ms applies (bounded, no burst).
        self.assertIsNone(caps.max_lead_ms)
        self.assertTrue(caps.can_transfer)

        self.assertEqual(genesys.binary(b"\x7f" * 1600), [CallerAudio(b"\x7f" * 1600, "external")])
        session.play(b"\x01" * 1600)
        session.play(b"\x02" * 1600)
        genesys.drain()
        self.assertEqual(genesys.audio, [b"\x01" * 1600, b"\x02" * 1600])
        self.assertEqual(genesys.send("playback_started"), [])
        self.assertTrue(session.playback_active)

        session.clear()
        genesys.drain()
        barge = genesys.last()
        self.assertEqual(barge["type"], "event")
        self.assertEqual(barge["parameters"], {"entities": [{"type": "barge_in", "data": {}}]})
        count = len(genesys.messages)
        session.clear()  # nothing played since: no second barge_in
        genesys.drain()
        self.assertEqual(len(genesys.messages), count)

        self.assertEqual(genesys.send("playback_completed"), [])
        self.assertFalse(session.playback_active)
        self.assertEqual(genesys.send("dtmf", {"digit": "5"}), [DtmfReceived("5")])

        session.hangup(Outcome.BOT_HANGUP, "caller asked for agent", {"Intent": "billing", "Escalate": "true"})
        genesys.drain()
        disconnect = genesys.last()
        self.assertEqual(disconnect["type"], "disconnect")
        self.assertEqual(disconnect["clientseq"], genesys.seq)
        self.assertEqual(disconnect["parameters"], {
            "reason": "completed", "info": "caller asked for agent",
            "outputVariables": {"Intent": "billing", "Escalate": "true"},
        })
        session.play(b"\x03" * 1600)  # the playout may still tick: nothing goes out
        session.hangup(Outcome.BOT_HANGUP, "again")
        genesys.drain()
        self.assertEqual(len(genesys.audio), 2)
        self.assertEqual(genesys.last()["seq"], disconnect["seq"])
        self.assertEqual(genesys.binary(b"\x7f" * 160), [], "audio in flight is dropped")
        self.assertCloseTransaction(session, genesys)

    def test_connector_takes_mono_even_when_stereo_comes_first(self) -> None:
        session, genesys, events = self.opened("connector", media=[STEREO, INTERNAL, EXTERNAL])
        self.assertEqual(genesys.last()["parameters"]["media"], [EXTERNAL])

    def test_large_packets_are_split(self) -> None:
        session, genesys, _ = self.opened("connector")
        session.play(b"\x01" * 150000)
        genesys.drain()
        self.assertEqual([len(a) for a in genesys.audio], [64000, 64000, 22000])

    def test_packet_size_is_configurable(self) -> None:
        session, genesys, _ = self.make("connector", packet_ms=250)
        self.assertEqual(session.capabilities.packet_ms, 250)
        self.assertIsNone(session.capabilities.max_lead_ms)

    def test_error_hangup_and_variables_as_strings(self) -> None:
        session, genesys, _ = self.opened("connector")
        session.hangup(Outcome.BACKEND_FAILED, "backend failed", {"Count": 3})  # type: ignore[dict-item]
        genesys.drain()
        params = genesys.last()["parameters"]
        self.assertEqual((params["reason"], params["outputVariables"]), ("error", {"Count": "3"}))
        self.assertCloseTransaction(session, genesys)

    def test_monitor_hangup_has_no_output_variables(self) -> None:
        session, genesys, _ = self.opened()
        session.hangup(Outcome.DRAINED, "draining", {"x": "y"})
        genesys.drain()
        # A drain is not a finished conversation: Architect must not take the success path.
        self.assertEqual(genesys.last()["parameters"], {"reason": "error", "info": "draining"})

    def test_rate_limit_slows_the_sender(self) -> None:
        session, genesys, _ = self.opened("connector")
        events = genesys.send("error", {"code": 429, "message": "Too many requests", "retryAfter": "PT1.5S"})
        self.assertEqual(events, [PlatformError("429", "Too many requests"), PlaybackFlowChanged(1500)])
        events = genesys.send("error", {"code": 429, "message": "slow down"})
        self.assertEqual(events[1], PlaybackFlowChanged(1000))
        self.assertEqual(genesys.send("error", {"code": 777, "message": "?"}),
                         [PlatformError("other", "?")])
        self.assertEqual(genesys.types(), ["opened"], "errors are not answered")

    def test_transcripts_are_not_sent_to_a_connector(self) -> None:
        session, genesys, _ = self.opened("connector")
        session.transcript(Transcript("caller", "hi", True))
        genesys.drain()
        self.assertEqual(genesys.types(), ["opened"])


class OpenTimingTests(SessionTestCase):
    def test_opened_never_waits_for_the_backend(self) -> None:
        """opened is queued by the very call that delivered open: the format is chosen from the
        backend's preference as plain data, the backend itself is never consulted."""
        session = AudioHookSession("connector", FakeBackend(L16_8K))
        message = {"version": "2", "id": SESSION, "type": "open", "seq": 1, "serverseq": 0,
                   "position": "PT0S", "parameters": open_parameters([EXTERNAL])}
        events = session.receive_text(json.dumps(message))
        output = session.take_output()
        self.assertEqual([json.loads(o)["type"] for o in output], ["opened"])  # type: ignore[arg-type]
        self.assertEqual(json.loads(output[0])["parameters"]["media"], [EXTERNAL])  # type: ignore[arg-type]
        self.assertEqual(events, [CallStarted(CONVERSATION, MULAW_8K, OPEN_METADATA)])

    def test_hangup_before_open(self) -> None:
        """A drain before open still ends the session properly (the id is known from the header)."""
        session, genesys, _ = self.make()
        session.hangup(Outcome.DRAINED, "draining")
        genesys.drain()
        self.assertEqual(genesys.types(), ["disconnect"])
        self.assertEqual(genesys.send("open", open_parameters()), [])
        self.assertNotIn("opened", genesys.types())
        self.assertCloseTransaction(session, genesys, expect_call_ended=False)

    def test_hangup_before_open_without_an_id_sends_nothing(self) -> None:
        session, genesys, _ = self.make(bind=False)
        session.hangup(Outcome.DRAINED, "draining")
        genesys.drain()
        self.assertEqual((genesys.types(), session.awaits_close), ([], False))


class ProbeTests(SessionTestCase):
    def test_probe_never_becomes_a_call(self) -> None:
        """Null conversation and participant: opened, closed, and nothing else."""
        session, genesys, backend = self.make("connector")
        params = open_parameters([EXTERNAL], conversation=NULL, participant=NULL)
        params["participant"].update(ani="", aniName="", dnis="")
        self.assertEqual(genesys.send("open", params), [])
        self.assertEqual(genesys.last()["parameters"]["media"], [EXTERNAL])
        self.assertTrue(session.is_probe)
        self.assertEqual(genesys.binary(b""), [])
        self.assertEqual(genesys.binary(b"\xff" * 160), [])
        self.assertFalse(session.finished)
        self.assertEqual(genesys.send("close", {"reason": "end"}), [])
        self.assertEqual(genesys.types(), ["opened", "closed"])
        self.assertEqual(genesys.last()["clientseq"], 2)
        # No call ended (none began), yet the glue must close the socket: the session is done.
        self.assertTrue(session.finished)
        self.assertFalse(session.awaits_close)

    def test_probe_without_usable_media_still_succeeds(self) -> None:
        session, genesys, _ = self.make()
        genesys.send("open", open_parameters([], conversation=NULL, participant=NULL))
        self.assertEqual(genesys.last()["parameters"]["media"], [])
        self.assertEqual(genesys.binary(b""), [])
        genesys.send("close", {"reason": "end"})
        self.assertEqual(genesys.types(), ["opened", "closed"])


class FlowControlTests(SessionTestCase):
    def test_server_pause_and_resume(self) -> None:
        session, genesys, _ = self.opened()
        genesys.binary(b"\x11\x22" * 8000)  # 1 s
        self.assertTrue(session.pause_caller_audio(True))
        self.assertTrue(session.pause_caller_audio(True))  # idempotent: one message
        genesys.drain()
        self.assertEqual(genesys.types(), ["opened", "pause"])
        self.assertEqual(genesys.last()["parameters"], {})
        self.assertEqual(genesys.send("paused"), [], "our own pause confirmed is not news")
        self.assertTrue(session.pause_caller_audio(False))
        genesys.drain()
        self.assertEqual(genesys.types()[-1], "resume")
        self.assertEqual(genesys.send("resumed", {"start": "PT1S", "discarded": "PT1.4S"}), [])
        self.assertEqual(session.position_us, 2_400_000)
        genesys.binary(b"\x11\x22" * 4800)  # 0.6 s more
        session.transcript(Transcript("caller", "after the pause", True))
        genesys.drain()
        data = genesys.last()["parameters"]["entities"][0]["data"]
        self.assertEqual((data["offset"], data["duration"]), ("PT0S", "PT3S"))

    def test_client_pause_is_reported(self) -> None:
        """Hold or secure pause from Genesys stops and restarts forwarding."""
        session, genesys, _ = self.opened()
        self.assertEqual(genesys.send("paused"), [CallerStreamPaused(True)])
        self.assertEqual(genesys.send("paused"), [], "repeated paused is one pause")
        self.assertEqual(genesys.send("resumed", {"start": "PT0S", "discarded": "PT2S"}), [CallerStreamPaused(False)])
        self.assertEqual(session.position_us, 2_000_000)
        self.assertEqual(genesys.types(), ["opened"])

    def test_start_paused(self) -> None:
        session, genesys, _ = self.opened(start_paused=True)
        self.assertIs(genesys.last()["parameters"]["startPaused"], True)
        session.pause_caller_audio(False)
        genesys.drain()
        self.assertEqual(genesys.types(), ["opened", "resume"])

    def test_discard_to(self) -> None:
        """opened{discardTo} → discarded{start, discarded} moves the timeline; offsets follow."""
        session, genesys, _ = self.opened(discard_to_ms=1200)
        self.assertEqual(genesys.last()["parameters"]["discardTo"], "PT1.2S")
        self.assertEqual(genesys.send("discarded", {"start": "PT0S", "discarded": "PT1.2S"}), [])
        genesys.binary(b"\x11\x22" * 800)
        self.assertEqual(session.position_us, 1_300_000)
        session.caller_speech(True)
        genesys.binary(b"\x11\x22" * 800)
        session.transcript(Transcript("caller", "hi", True))
        genesys.drain()
        data = genesys.last()["parameters"]["entities"][0]["data"]
        self.assertEqual((data["offset"], data["duration"]), ("PT1.3S", "PT0.1S"))


class ViolationTests(SessionTestCase):
    def _disconnect(self, genesys: Genesys, info_fragment: str) -> dict[str, Any]:
        disconnect = genesys.last()
        self.assertEqual(disconnect["type"], "disconnect")
        self.assertEqual(disconnect["parameters"]["reason"], "error")
        self.assertIn(info_fragment, disconnect["parameters"]["info"])
        return disconnect

    def test_bad_seq(self) -> None:
        session, genesys, _ = self.opened()
        genesys.seq += 1  # skip one
        events = genesys.send("ping")
        self.assertViolation(events, "bad_seq")
        disconnect = self._disconnect(genesys, "seq")
        self.assertEqual(disconnect["clientseq"], 1, "clientseq is the last message processed")
        self.assertNotIn("pong", genesys.types())
        # While we wait for close: pings answered, a racing open is not, audio dropped.
        self.assertEqual(genesys.send("ping"), [])
        self.assertEqual(genesys.last()["type"], "pong")
        self.assertEqual(genesys.last()["clientseq"], genesys.seq)
        self.assertEqual(genesys.send("open", open_parameters()), [])
        self.assertEqual(genesys.types().count("opened"), 1)
        self.assertEqual(genesys.send("bogus"), [], "a second fault is not reported again")
        self.assertCloseTransaction(session, genesys)

    def test_repeated_seq(self) -> None:
        session, genesys, _ = self.opened()
        genesys.seq -= 1
        self.assertViolation(genesys.send("ping"), "bad_seq")
        self.assertCloseTransaction(session, genesys)

    def test_wrong_direction(self) -> None:
        for mtype in ("pause", "resume", "opened", "pong", "closed", "disconnect", "event", "updated", "reconnect"):
            session, genesys, _ = self.opened()
            self.assertViolation(genesys.send(mtype), "wrong_direction")
            self._disconnect(genesys, mtype)
            self.assertCloseTransaction(session, genesys)

    def test_unknown_type(self) -> None:
        session, genesys, _ = self.opened()
        self.assertViolation(genesys.send("hello"), "unknown_type")
        self._disconnect(genesys, "hello")
        self.assertCloseTransaction(session, genesys)

    def test_bad_json(self) -> None:
        session, genesys, _ = self.opened()
        self.assertViolation(genesys.raw("{not json"), "bad_json")
        self._disconnect(genesys, "JSON")
        self.assertCloseTransaction(session, genesys)

    def test_not_an_object(self) -> None:
        session, genesys, _ = self.opened()
        self.assertViolation(genesys.raw("[1, 2]"), "bad_envelope")
        self.assertCloseTransaction(session, genesys)

    def test_binary_before_opened(self) -> None:
        """Audio before opened is an error, and the open that follows is not answered (§10 #6)."""
        session, genesys, _ = self.make()
        self.assertViolation(genesys.binary(b"\xff" * 160), "unexpected_binary")
        self._disconnect(genesys, "before opened")
        self.assertEqual(genesys.send("open", open_parameters()), [])
        self.assertNotIn("opened", genesys.types())
        self.assertCloseTransaction(session, genesys, expect_call_ended=False)

    def test_oversize_text(self) -> None:
        session, genesys, _ = self.opened()
        big = json.dumps({"version": "2", "id": SESSION, "type": "ping", "seq": genesys.seq + 1,
                          "serverseq": 1, "position": "PT0S", "parameters": {"pad": "x" * 70000}})
        self.assertViolation(genesys.raw(big), "too_large")
        self._disconnect(genesys, "too large")
        self.assertCloseTransaction(session, genesys)

    def test_version_as_number(self) -> None:
        session, genesys, _ = self.opened()
        self.assertViolation(genesys.send("ping", version=2), "bad_envelope")
        self._disconnect(genesys, "version")
        self.assertCloseTransaction(session, genesys)

    def test_version_as_number_on_open(self) -> None:
        session, genesys, _ = self.make()
        events = genesys.send("open", open_parameters(), version=2)
        self.assertViolation(events, "bad_envelope")
        self.assertEqual(genesys.types(), ["disconnect"])
        self.assertEqual(genesys.last()["clientseq"], 1)
        self.assertCloseTransaction(session, genesys, expect_call_ended=False)

    def test_envelope_fields_required(self) -> None:
        cases: list[dict[str, Any]] = [
            {"parameters": _DROP}, {"parameters": []}, {"position": _DROP}, {"position": "1.5"},
            {"serverseq": _DROP}, {"serverseq": -1}, {"seq": "2"}, {"seq": True}, {"id": "not-a-uuid"},
            {"type": 7}, {"version": _DROP},
        ]
        for override in cases:
            session, genesys, _ = self.opened()
            self.assertViolation(genesys.send("ping", **override), "bad_envelope")
            self.assertCloseTransaction(session, genesys)

    def test_serverseq_ahead_of_ours(self) -> None:
        session, genesys, _ = self.opened()
        self.assertViolation(genesys.send("ping", serverseq=5), "bad_serverseq")
        self.assertCloseTransaction(session, genesys)

    def test_session_id_mismatch(self) -> None:
        session, genesys, _ = self.opened()
        self.assertViolation(genesys.send("ping", id="11111111-2222-4333-8444-555555555555"), "bad_id")
        self.assertCloseTransaction(session, genesys)

    def test_open_id_must_match_header(self) -> None:
        session, genesys, _ = self.make()
        self.assertViolation(genesys.send("open", open_parameters(), id=CONVERSATION), "bad_id")
        self.assertNotIn("opened", genesys.types())

    def test_organization_mismatch(self) -> None:
        session, genesys, _ = self.make()
        params = open_parameters()
        params["organizationId"] = "11111111-2222-4333-8444-555555555555"
        self.assertViolation(genesys.send("open", params), "organization_mismatch")
        self.assertEqual(genesys.types(), ["disconnect"])
        self.assertEqual(genesys.last()["parameters"]["reason"], "unauthorized")
        self.assertCloseTransaction(session, genesys, expect_call_ended=False)

    def test_invalid_open_parameters(self) -> None:
        broken: list[dict[str, Any]] = [
            dict(open_parameters(), conversationId="nope"),
            dict(open_parameters(), participant=None),
            dict(open_parameters(), media={"type": "audio"}),
            dict(open_parameters(), supportedLanguages="yes"),
            dict(open_parameters(), inputVariables={"a": {"nested": 1}}),
        ]
        for params in broken:
            session, genesys, _ = self.make()
            self.assertViolation(genesys.send("open", params), "invalid_parameters")
            self.assertEqual(genesys.types(), ["disconnect"])
            self.assertCloseTransaction(session, genesys, expect_call_ended=False)

    def test_no_usable_media_for_a_real_call(self) -> None:
        session, genesys, _ = self.make("connector")
        self.assertViolation(genesys.send("open", open_parameters([STEREO])), "unsupported_media")
        self.assertEqual(genesys.types(), ["disconnect"])
        self.assertCloseTransaction(session, genesys, expect_call_ended=False)

    def test_message_before_open(self) -> None:
        session, genesys, _ = self.make()
        self.assertViolation(genesys.send("ping"), "unexpected_message")
        self.assertCloseTransaction(session, genesys, expect_call_ended=False)

    def test_second_open(self) -> None:
        session, genesys, _ = self.opened()
        self.assertViolation(genesys.send("open", open_parameters()), "unexpected_message")
        self.assertCloseTransaction(session, genesys)

    def test_bad_dtmf_and_durations(self) -> None:
        for mtype, params in [("dtmf", {"digit": "x"}), ("discarded", {"start": "PT0S", "discarded": "2s"}),
                              ("resumed", {"start": "PT0S"}), ("error", {"code": "429"}),
                              ("ping", {"rtt": 5})]:
            session, genesys, _ = self.opened("connector")
            self.assertViolation(genesys.send(mtype, params), "invalid_parameters")
            self.assertCloseTransaction(session, genesys)

    def test_malformed_close_still_closes(self) -> None:
        """A close we can read only in part is still answered after the disconnect."""
        session, genesys, _ = self.opened()
        events = genesys.send("close", {"reason": "end"}, version=2)
        self.assertViolation(events, "bad_envelope")
        self.assertEqual(events[-1], CallEnded("error"))
        self.assertEqual(genesys.types(), ["opened", "disconnect", "closed"])
        self.assertEqual(genesys.last()["clientseq"], genesys.seq)
        self.assertFalse(session.awaits_close)

    def test_close_with_bad_seq_still_closes(self) -> None:
        session, genesys, _ = self.opened()
        genesys.seq += 3
        events = genesys.send("close", {"reason": "end"})
        self.assertViolation(events, "bad_seq")
        self.assertEqual(genesys.types(), ["opened", "disconnect", "closed"])
        self.assertFalse(session.awaits_close)

    def test_close_before_open(self) -> None:
        session, genesys, _ = self.make()
        self.assertEqual(genesys.send("close", {"reason": "error"}), [])
        self.assertEqual(genesys.types(), ["closed"])

    def test_without_bound_headers_the_id_comes_from_open(self) -> None:
        session, genesys, _ = self.make(bind=False)
        genesys.send("open", open_parameters())
        self.assertEqual(session.session_id, SESSION)

    def test_garbage_never_raises(self) -> None:
        """Every kind of junk yields at most one violation and well-formed replies."""
        junk = ["", " ", "null", "1", "\"s\"", "{}", "[]", "{\"version\":\"2\"}", "\x00", "{" * 5000,
                json.dumps({"version": "2", "id": SESSION, "type": "open", "seq": 1, "serverseq": 0,
                            "position": "PT0S", "parameters": {"media": [None, 1, {}]}}),
                json.dumps({"version": "2", "id": SESSION, "type": None, "seq": 10 ** 30})]
        for text in junk:
            for opened_first in (False, True):
                if opened_first:
                    session, genesys, _ = self.opened()
                else:
                    session, genesys, _ = self.make()
                events = genesys.raw(text)
                self.assertEqual(len([e for e in events if isinstance(e, ProtocolViolation)]), 1, text[:40])
                self.assertTrue(session.awaits_close)
                genesys.binary(b"\x00\x01\x02")
                genesys.raw(text)
                self.assertCloseTransaction(session, genesys, expect_call_ended=opened_first)


class DurationTests(SynchronousTestCase):
    def test_parse(self) -> None:
        for text, us in [("PT0S", 0), ("PT0.0S", 0), ("PT1.6S", 1_600_000), ("PT.5S", 500_000),
                         ("PT0.001872993S", 1872), ("PT42S", 42_000_000), ("PT5.S", 5_000_000)]:
            self.assertEqual(parse_duration(text), us, text)
        for bad in ("P1S", "PT1.5", "PT-1S", "PT1e3S", "", None, 1.5, "PT1.5.5S"):
            self.assertIsNone(parse_duration(bad), bad)

    def test_format(self) -> None:
        for us, text in [(0, "PT0S"), (1_200_000, "PT1.2S"), (10, "PT0S"), (1_872, "PT0.002S"),
                         (3_000_000_000_000, "PT3000000S"), (5_000_000, "PT5S")]:
            self.assertEqual(format_duration(us), text)
            self.assertIsNotNone(parse_duration(text))


class TypeHookTests(SynchronousTestCase):
    def test_new_session_from_settings(self) -> None:
        session = new_session(AudioHookOptions(mode="connector", packet_ms=400), FakeBackend())
        self.assertEqual((session.mode, session.capabilities.packet_ms), ("connector", 400))

    def test_config_keys(self) -> None:
        self.assertEqual(KEYS["mode"].parse("connector"), "connector")
        self.assertRaises(ValueError, KEYS["mode"].parse, "bot")
        self.assertEqual(KEYS["packet_ms"].default, 200)
        self.assertEqual(KEYS["packet_ms"].parse("8000"), 8000)
        self.assertRaises(ValueError, KEYS["packet_ms"].parse, "8010")  # > 64000 bytes
        self.assertRaises(ValueError, KEYS["packet_ms"].parse, "205")
        self.assertEqual(KEYS["client_secret"].parse("TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="),
                         b"MySuperSecretKeyTellNo-1!2@3#4$5")
        self.assertRaises(ValueError, KEYS["client_secret"].parse, "not base64!")
        self.assertRaises(ValueError, KEYS["api_key"].parse, "has space")
        self.assertEqual(KEYS["languages"].parse("en-US, de-DE"), ("en-US", "de-DE"))
