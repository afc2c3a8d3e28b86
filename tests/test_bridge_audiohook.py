"""CallBridge + AudioHookSession on a ``task.Clock``: what Genesys receives, and when.

A fake backend delivers bot audio in bursts (as real backends do), a fake platform leg collects
what the session queues with the clock time it left at, and a small Genesys stand-in feeds the
session and routes its events the way the Autobahn glue does. Time only moves when a test
advances the clock, so pacing is checked exactly: Audio Connector playback leaves as 1600-byte
packets, packet n never before t0 + (n - 1) * 200 ms; barge-in sends ``barge_in`` and nothing of
the old response after it; a 429 holds sending; Monitor transcripts come back per channel.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.calls import Outcome
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.audiohook import AudioHookSession
from mediaproxy.platforms.audiohook_messages import parse_duration
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    PlatformError,
    ProtocolViolation,
    UpgradeRequest,
)
from mediaproxy.playout import PlayoutClock
from mediaproxy.transcripts import Transcript
from tests.jitter import advance_late, gaps, max_ahead
from tests.support import RecordingBackend, RecordingBackendSession, RecordingLeg, make_bridge

SESSION = "c2d8f4a1-7e39-4b6a-8f20-5a1b9c3d6e77"
ORG = "6f1c2a9e-3b7d-4c21-9a55-0d2e8b4f7a10"
CONVERSATION = "5e0b7c1d-2a3f-4d6e-8b9a-0c1d2e3f4a5b"
STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
SWAPPED = {"type": "audio", "format": "PCMU", "channels": ["internal", "external"], "rate": 8000}
EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
PACKET = 1600  # 200 ms of PCMU/8000
LEAD_S = 0.06  # [playout] lead_ms, default
PARTY = {"audiohook.participant.ani": "", "audiohook.participant.aniName": "", "audiohook.participant.dnis": ""}


def bot_audio(ms: int, start: int = 0) -> bytes:
    """``ms`` of distinguishable µ-law (a byte ramp), so packets can be matched to their source."""
    return bytes((start + i) % 251 for i in range(ms * 8))


class FakeLeg(RecordingLeg):
    """The platform connection, with queries for what Genesys received."""

    def packets(self) -> list[tuple[float, bytes]]:
        return [(t, item) for t, item in self.sent if isinstance(item, bytes)]

    def messages(self, mtype: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        return [(t, item) for t, item in self.sent
                if isinstance(item, dict) and (mtype is None or item["type"] == mtype)]


class Call:
    """One AudioHook call through a real CallBridge, driven by a ``task.Clock``."""

    def __init__(self, test: SynchronousTestCase, mode: str, media: list[dict[str, Any]],
                 open_extra: Mapping[str, Any] | None = None, **session_options: Any) -> None:
        self.test = test
        self.clock = Clock()
        self.metrics = Metrics()
        self.backend = RecordingBackend()
        self.session = AudioHookSession(mode, self.backend.format_preference, **session_options)
        self.session.bind_upgrade(UpgradeRequest("/audiohook", "proxy.example.net", {
            "audiohook-organization-id": ORG, "audiohook-session-id": SESSION,
            "audiohook-correlation-id": "91ab0c3e-2f4d-4e8a-b7c6-1d2e3f4a5b6c", "x-api-key": "a2V5",
        }))
        self.leg = FakeLeg(self.clock, self.session)
        self.playout_clock = PlayoutClock(self.clock, 20, self.metrics)
        self.bridge = make_bridge(self.leg, self.backend, self.clock, platform="audiohook", metrics=self.metrics,
                                  pacing=self.playout_clock)
        self.seq = 0
        self.platform_errors: list[PlatformError] = []
        self.violations: list[ProtocolViolation] = []
        self.send("open", {
            "organizationId": ORG, "conversationId": CONVERSATION,
            "participant": {"id": "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d", "ani": "", "aniName": "", "dnis": ""},
            "media": media, "language": "en-US", **(open_extra or {}),
        })
        test.assertEqual(self.leg.messages()[0][1]["type"], "opened")

    @property
    def backend_session(self) -> RecordingBackendSession:
        return self.backend.sessions[0]

    def send(self, mtype: str, parameters: dict[str, Any] | None = None) -> None:
        """A Genesys text message, its events routed as the Autobahn glue routes them."""
        self.seq += 1
        serverseq = len(self.leg.messages())
        text = json.dumps({"version": "2", "id": SESSION, "type": mtype, "seq": self.seq,
                           "serverseq": serverseq, "position": "PT0S",
                           "parameters": parameters or {}})
        self._route(self.session.receive_text(text))

    def audio(self, data: bytes) -> None:
        self._route(self.session.receive_binary(data))

    def _route(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, CallStarted):
                self.bridge.start(event)
            elif isinstance(event, CallerAudio):
                self.bridge.caller_audio(event.data, event.channel)
            elif isinstance(event, PlatformError):
                self.platform_errors.append(event)
            elif isinstance(event, ProtocolViolation):
                self.violations.append(event)
            else:
                self.bridge.handle([event])
        self.leg.flush()

    def advance(self, seconds: float, step: float = 0.001) -> None:
        """Move time on in small steps, firing every timer that comes due."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def finish(self) -> None:
        """Genesys closes; afterwards no timer may be left behind."""
        if not self.bridge.ended:
            self.send("close", {"reason": "end"})
        self.test.assertTrue(self.bridge.ended)
        self.test.assertEqual(self.clock.getDelayedCalls(), [])
        self.test.assertEqual(self.violations, [])


class ConnectorPlaybackTests(SynchronousTestCase):
    def assertRealTime(self, packets: list[tuple[float, bytes]], t0: float) -> None:
        """Packet n (from 0) leaves at t0 + n * 200 ms - lead (60 ms; the first at t0): never
        sooner, and at most one playout tick later (the clock is exact here)."""
        for n, (sent_at, _) in enumerate(packets):
            due = t0 + max(0.0, n * 0.2 - LEAD_S)
            self.assertGreaterEqual(sent_at, due - 1e-9, f"packet {n + 1} early")
            self.assertLessEqual(sent_at, due + 0.02 + 1e-9, f"packet {n + 1} late")

    def test_burst_leaves_as_1600_byte_packets_at_real_time(self) -> None:
        call = Call(self, "connector", [EXTERNAL])
        self.assertEqual(call.backend_session.call.metadata, {**PARTY, "audiohook.language": "en-US"})
        call.advance(0.013)  # off the grid, so nothing lines up by accident
        t0 = call.clock.seconds()
        audio = bot_audio(2000)
        listener = call.backend_session.listener
        for start in range(0, len(audio), 3000):  # 2 s of audio in irregular chunks, all at once
            listener.backend_audio("r1", audio[start:start + 3000])
        listener.backend_response_done("r1")
        self.assertEqual(len(call.leg.packets()), 1)  # the first goes at once; no burst follows
        call.advance(3.0)
        packets = call.leg.packets()
        self.assertEqual([len(p) for _, p in packets], [PACKET] * 10)
        self.assertEqual(b"".join(p for _, p in packets), audio)
        self.assertRealTime(packets, t0)
        call.finish()

    def test_audio_arriving_during_playback_keeps_the_schedule(self) -> None:
        call = Call(self, "connector", [EXTERNAL])
        listener = call.backend_session.listener
        t0 = call.clock.seconds()
        listener.backend_audio("r1", bot_audio(600))
        call.advance(0.45)
        listener.backend_audio("r1", bot_audio(1400, 600 * 8))  # the backend catches up: a burst
        listener.backend_response_done("r1")
        call.advance(2.5)
        packets = call.leg.packets()
        self.assertEqual(len(packets), 10)
        self.assertRealTime(packets, t0)
        call.finish()

    def test_barge_in_sends_the_event_and_stops_the_old_response(self) -> None:
        call = Call(self, "connector", [EXTERNAL])
        listener = call.backend_session.listener
        t0 = call.clock.seconds()
        listener.backend_audio("r1", bot_audio(2000))
        call.advance(0.5)
        self.assertEqual(len(call.leg.packets()), 3)  # at 0, 0.2 and 0.4 s
        listener.backend_speech_started()
        (barge_at, barge_in), = call.leg.messages("event")
        self.assertEqual(barge_at, t0 + 0.5)
        self.assertEqual(barge_in["parameters"], {"entities": [{"type": "barge_in", "data": {}}]})
        # The backend is told what the caller heard: 500 ms of the 2 s it delivered.
        self.assertEqual(call.backend_session.interrupts, [("r1", 500)])
        # Late audio of the interrupted response is dropped; nothing of it follows the event.
        listener.backend_audio("r1", bot_audio(400))
        listener.backend_response_done("r1")
        call.advance(2.0)
        self.assertEqual([t for t, _ in call.leg.packets() if t >= barge_at], [])
        # A second VAD start with nothing playing sends no second barge_in.
        listener.backend_speech_started()
        self.assertEqual(len(call.leg.messages("event")), 1)
        # The next response plays normally, again at real time.
        t1 = call.clock.seconds()
        listener.backend_audio("r2", bot_audio(400))
        listener.backend_response_done("r2")
        call.advance(1.0)
        after = [(t, p) for t, p in call.leg.packets() if t >= t1]
        self.assertEqual(len(after), 2)
        self.assertRealTime(after, t1)
        self.assertEqual(call.metrics.registry.get_sample_value("mediaproxy_bargein_seconds_count"), 1)
        call.finish()

    def test_rate_limit_holds_sending(self) -> None:
        call = Call(self, "connector", [EXTERNAL])
        listener = call.backend_session.listener
        t0 = call.clock.seconds()
        listener.backend_audio("r1", bot_audio(2000))
        listener.backend_response_done("r1")
        call.advance(0.3)
        self.assertEqual(len(call.leg.packets()), 2)
        call.send("error", {"code": 429, "message": "Too many requests", "retryAfter": "PT1S"})
        self.assertEqual([e.code for e in call.platform_errors], ["429"])
        call.advance(0.99)
        self.assertEqual(len(call.leg.packets()), 2)  # held for retryAfter
        call.advance(3.0)
        packets = call.leg.packets()
        self.assertEqual(len(packets), 10)
        self.assertEqual(b"".join(p for _, p in packets), bot_audio(2000))
        resumed = packets[2:]
        self.assertGreaterEqual(resumed[0][0], t0 + 1.3 - 1e-9)
        # After the hold it restarts at real time; it never bursts to catch up.
        self.assertRealTime(resumed, resumed[0][0])
        call.finish()

    def test_rate_limit_without_retry_after_holds_a_second(self) -> None:
        call = Call(self, "connector", [EXTERNAL])
        listener = call.backend_session.listener
        listener.backend_audio("r1", bot_audio(1000))
        call.advance(0.1)
        call.send("error", {"code": 429, "message": "Too many requests"})
        call.advance(0.99)
        self.assertEqual(len(call.leg.packets()), 1)
        call.advance(0.02)
        self.assertEqual(len(call.leg.packets()), 2)
        call.finish()

    def test_bot_hangup_returns_output_variables(self) -> None:
        call = Call(self, "connector", [EXTERNAL], packet_ms=200)
        call.send("dtmf", {"digit": "7"})
        self.assertEqual(call.backend_session.dtmf, [], "keys are collected into one entry")
        call.advance(3.01)  # the inter-digit timeout: the entry is complete
        self.assertEqual(call.backend_session.dtmf, ["7"])
        call.backend_session.listener.backend_hangup("caller asked for agent", {"Intent": "billing"})
        (_, disconnect), = call.leg.messages("disconnect")
        self.assertEqual(disconnect["parameters"], {
            "reason": "completed", "info": "caller asked for agent", "outputVariables": {"Intent": "billing"}})
        self.assertTrue(call.leg.hung_up)
        self.assertEqual(call.bridge.outcome, Outcome.BOT_HANGUP)
        self.assertTrue(call.session.awaits_close)
        call.send("close", {"reason": "disconnect"})
        (_, closed), = call.leg.messages("closed")
        self.assertEqual(closed["clientseq"], call.seq)
        self.assertFalse(call.session.awaits_close)
        self.assertEqual(call.metrics.registry.get_sample_value(
            "mediaproxy_calls_total", {"platform": "audiohook", "outcome": Outcome.BOT_HANGUP}), 1)
        call.finish()

    def test_start_paused_resumes_once_the_backend_is_ready(self) -> None:
        """``start_paused``: Genesys holds the caller's audio until we ask for it, which we do
        as soon as the backend can hear it (before, the caller was never heard)."""
        call = Call(self, "connector", [EXTERNAL], start_paused=True)
        self.assertTrue(call.leg.messages("opened")[0][1]["parameters"]["startPaused"])
        self.assertEqual(call.leg.messages("resume"), [])
        call.backend_session.listener.backend_ready()
        (_, resume), = call.leg.messages("resume")
        self.assertEqual(resume["parameters"], {})
        call.backend_session.listener.backend_ready()  # a reconnect: nothing more to ask
        self.assertEqual(len(call.leg.messages("resume")), 1)
        call.send("resumed", {"start": "PT0S", "discarded": "PT0S"})
        call.audio(b"\x11" * 1600)
        self.assertEqual(len(call.backend_session.audio), 1600)
        call.finish()

    def test_input_variables_reach_the_backend_session(self) -> None:
        call = Call(self, "connector", [EXTERNAL], {"inputVariables": {"Lang": "en", "Tier": 2}})
        info = call.backend_session.call
        self.assertEqual(dict(info.metadata), {"Lang": "en", "Tier": "2", **PARTY, "audiohook.language": "en-US"})
        self.assertEqual((info.call_id, info.listen_only), (CONVERSATION, False))
        call.finish()


class ConnectorJitterTests(SynchronousTestCase):
    def test_no_gap_with_ten_ms_of_reactor_jitter(self) -> None:
        """Ticks delivered up to 10 ms late (seeded): with the lead, Genesys never runs dry
        mid-response (with no lead every late tick was a gap), and nothing is sent further
        ahead than the lead: no burst for Genesys to answer with 429."""
        call = Call(self, "connector", [EXTERNAL])
        rng = random.Random(20240611)
        listener = call.backend_session.listener
        sent = 0
        for response in range(4):
            listener.backend_audio(f"r{response}", bot_audio(3000, response))
            listener.backend_response_done(f"r{response}")
            advance_late(call.clock, 4.0, rng)
            packets = call.leg.packets()[sent:]
            sent += len(packets)
            sends = [t for t, _ in packets]
            self.assertEqual(len(sends), 15)
            self.assertEqual(gaps(sends, 0.2), [], f"response {response}")
            self.assertLessEqual(max_ahead(sends, 0.2), LEAD_S + 1e-9)
        self.assertEqual(call.metrics.registry.get_sample_value("mediaproxy_playout_underruns_total"), 0)
        call.finish()


class MonitorTests(SynchronousTestCase):
    def stereo_call(self, media: dict[str, Any]) -> Call:
        call = Call(self, "monitor", [media, EXTERNAL])
        (_, opened), = call.leg.messages("opened")
        self.assertEqual(opened["parameters"]["media"], [media])
        return call

    def test_transcripts_come_back_per_channel(self) -> None:
        call = self.stereo_call(STEREO)
        caller, agent = bytes([0x10]) * 1600, bytes([0x20]) * 1600
        frame = bytes(b for pair in zip(caller, agent, strict=True) for b in pair)
        call.audio(frame)
        self.assertEqual(len(call.backend.sessions), 2)
        external, internal = call.backend.sessions
        self.assertTrue(external.call.listen_only and internal.call.listen_only)
        self.assertEqual((bytes(external.audio), bytes(internal.audio)), (caller, agent))
        # The caller starts speaking at 0.2 s and finishes at 0.6 s of the stream.
        external.listener.backend_speech_started()
        call.audio(frame * 2)
        external.listener.backend_transcript(Transcript("caller", "I need help", False))
        external.listener.backend_transcript(Transcript("caller", "I need help", True))
        internal.listener.backend_transcript(Transcript("caller", "Sure", True))
        internal.listener.backend_transcript(Transcript("bot", "ignored: a listener never answers", True))
        events = [m for _, m in call.leg.messages("event")]
        self.assertEqual(len(events), 2)
        said = [e["parameters"]["entities"][0]["data"] for e in events]
        self.assertEqual([d["channelId"] for d in said], [0, 1])
        self.assertEqual([d["alternatives"][0]["interpretations"][0]["transcript"] for d in said],
                         ["I need help", "Sure"])
        self.assertEqual((said[0]["offset"], said[0]["duration"]), ("PT0.2S", "PT0.4S"))
        self.assertEqual(said[0]["alternatives"][0]["languages"], ["en-US"])
        # A listen-only call plays nothing back, whatever its backend produces.
        external.listener.backend_audio("r1", bot_audio(400))
        self.assertEqual(len(call.playout_clock), 0)  # nothing to pace
        call.advance(1.0)
        self.assertEqual(call.leg.packets(), [])
        self.assertEqual(call.metrics.registry.get_sample_value(
            "mediaproxy_frames_total", {"platform": "audiohook", "direction": "out"}), 0)
        call.finish()
        self.assertTrue(external.closed and internal.closed)
        self.assertEqual(call.metrics.registry.get_sample_value(
            "mediaproxy_calls_total", {"platform": "audiohook", "outcome": Outcome.COMPLETED}), 1)

    def test_swapped_channel_order(self) -> None:
        call = self.stereo_call(SWAPPED)
        agent, caller = bytes([0x20]) * 800, bytes([0x10]) * 800
        call.audio(bytes(b for pair in zip(agent, caller, strict=True) for b in pair))
        external, internal = call.backend.sessions
        self.assertEqual((bytes(external.audio), bytes(internal.audio)), (caller, agent))
        external.listener.backend_transcript(Transcript("caller", "hello", True))
        internal.listener.backend_transcript(Transcript("caller", "hi", True))
        said = [m["parameters"]["entities"][0]["data"] for _, m in call.leg.messages("event")]
        self.assertEqual([d["channelId"] for d in said], [1, 0])  # external is channel 1 here
        call.finish()

    def test_paused_stops_forwarding_until_resumed(self) -> None:
        call = self.stereo_call(STEREO)
        frame = bytes([0x10, 0x20]) * 800
        call.audio(frame)
        call.send("paused")
        call.audio(frame)
        external, internal = call.backend.sessions
        self.assertEqual((len(external.audio), len(internal.audio)), (800, 800))
        call.send("resumed", {"start": "PT0.2S", "discarded": "PT3S"})
        call.audio(frame)
        self.assertEqual((len(external.audio), len(internal.audio)), (1600, 1600))
        self.assertEqual(call.session.position_us, 3_300_000)  # 3 frames of 100 ms + 3 s discarded
        self.assertEqual(call.metrics.registry.get_sample_value(
            "mediaproxy_flow_pauses_total", {"leg": "platform"}), 1)
        call.finish()

    def test_transcript_offsets_on_the_stream_timeline_across_pause_and_discard(self) -> None:
        """The backend's times are ms of the audio the bridge forwarded on that channel; the
        transcript offsets Genesys receives are where the speech is on the stream, paused,
        held-back and discarded spans included, on both channels."""
        call = self.stereo_call(STEREO)

        def frames(ms: int) -> bytes:
            return bytes([0x10, 0x20]) * (ms * 8)

        call.audio(frames(1000))                                      # stream 0-1 s
        external, internal = call.backend.sessions
        call.send("paused")
        call.audio(frames(500))                                       # stream 1-1.5 s, held back
        call.send("resumed", {"start": "PT1.5S", "discarded": "PT2S"})  # stream 3.5 s
        call.audio(frames(1000))                                      # stream 3.5-4.5 s
        call.send("discarded", {"start": "PT4.5S", "discarded": "PT1S"})  # stream 5.5 s
        call.audio(frames(1000))                                      # stream 5.5-6.5 s
        self.assertEqual((len(external.audio) // 8, len(internal.audio) // 8), (3000, 3000))
        # Caller: backend 400-900 ms is stream 0.4-0.9 s; agent: backend 1200-1800 ms is stream
        # 3.7-4.3 s; caller again: backend 2100-2900 ms is stream 5.6-6.4 s.
        external.listener.backend_transcript(Transcript("caller", "hello", True, start_ms=400, end_ms=900))
        internal.listener.backend_transcript(Transcript("caller", "good morning", True, start_ms=1200, end_ms=1800))
        external.listener.backend_transcript(Transcript("caller", "my bill", True, start_ms=2100, end_ms=2900))
        said = [m["parameters"]["entities"][0]["data"] for _, m in call.leg.messages("event")]
        got = [(d["channelId"], parse_duration(d["offset"]), parse_duration(d["duration"])) for d in said]
        want = [(0, 400_000, 500_000), (1, 3_700_000, 600_000), (0, 5_600_000, 800_000)]
        for (channel, offset, duration), (want_channel, want_offset, want_duration) in zip(got, want, strict=True):
            assert offset is not None and duration is not None
            self.assertEqual(channel, want_channel)
            self.assertLessEqual(abs(offset - want_offset), 500_000)
            self.assertLessEqual(abs(duration - want_duration), 500_000)
        self.assertEqual(got, want)  # in fact exact
        call.finish()

