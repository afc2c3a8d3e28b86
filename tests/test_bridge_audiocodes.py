"""CallBridge + AudioCodesSession + the playout on a ``task.Clock``: how bot audio leaves for
VoiceAI Connect in time.

VAIC stops and discards a play stream on ``playStream.stop`` (barge-in), so play-stream chunks
leave at real time plus the ``[playout] lead_ms`` cushion (60 ms here): the frame that starts
playing plus at most three frames of lead, never a burst beyond that.
A fake backend delivers each response in one burst (as real backends do); a fake platform leg
records every message the session queued with the clock time it was flushed.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import L16_16K, L16_24K, AudioFormat
from mediaproxy.calls import Outcome
from mediaproxy.config import PlayoutSettings
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.audiocodes import AudioCodesSession
from mediaproxy.platforms.base import CallStarted
from tests.jitter import advance_late, gaps, max_ahead
from tests.support import RecordingBackend, RecordingLeg, make_bridge
from tests.test_audiocodes import check_play_streams

FRAME_MS = 20
LEAD_MS = 60
T0 = 100.0  # the clock does not start at zero: nothing may assume it does


class AudioCodesLeg(RecordingLeg):
    """The platform connection, with queries for what VoiceAI Connect received."""

    def messages(self, since: int = 0) -> list[dict[str, Any]]:
        return [m for _, m in self.sent[since:]]

    def chunks(self, stream_id: str | None = None) -> list[tuple[float, bytes]]:
        return [(t, base64.b64decode(m["audioChunk"])) for t, m in self.sent
                if m["type"] == "playStream.chunk" and stream_id in (None, m["streamId"])]


def audio(ms: int, fmt: AudioFormat, seed: int = 1) -> bytes:
    """Recognisable audio: each byte differs from its neighbours, so a lost or repeated byte
    shows."""
    return bytes((seed * 31 + i * 7 + (i >> 9)) % 251 for i in range(fmt.bytes_for_ms(ms)))


class BridgeTestCase(SynchronousTestCase):
    platform_format = L16_16K
    format_name = "raw/lpcm16"
    backend_format = L16_16K

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.metrics = Metrics()
        self.backend = RecordingBackend(self.backend_format)
        self.session = AudioCodesSession(self.backend.format_preference)
        self.leg = AudioCodesLeg(self.clock, self.session)
        self.bridge = make_bridge(self.leg, self.backend, self.clock, platform="audiocodes",
                                  settings=PlayoutSettings(lead_ms=LEAD_MS), metrics=self.metrics, frame_ms=FRAME_MS)
        self.receive({"type": "session.initiate", "conversationId": "conv-1", "caller": "+1",
                      "supportedMediaFormats": [self.format_name]})
        (started,) = self.receive({"type": "activities", "conversationId": "conv-1", "activities": [
            {"type": "event", "name": "start", "parameters": {"callee": "bot"}}]})
        assert isinstance(started, CallStarted)
        self.bridge.start(started)
        self.leg.flush()
        self.assertEqual(self.leg.messages(), [{"type": "session.accepted", "mediaFormat": self.format_name}])
        self.leg.sent.clear()
        self.backend_session = self.backend.sessions[0]

    def receive(self, message: dict[str, Any]) -> list[Any]:
        events = self.session.receive_text(json.dumps(message))
        for event in events:
            if not isinstance(event, CallStarted):
                self.bridge.handle([event])
        self.leg.flush()
        return events

    def burst(self, response_id: str, data: bytes, done: bool = True) -> None:
        """The backend delivers a whole response at once (far faster than real time)."""
        self.bridge.backend_audio(response_id, data)
        if done:
            self.bridge.backend_response_done(response_id)

    def run_ms(self, ms: int, step_ms: int = 1) -> None:
        """Let ``ms`` pass in small steps, as a reactor would (a tick is never early or late)."""
        for _ in range(ms // step_ms):
            self.clock.advance(step_ms / 1000.0)

    @property
    def packet_bytes(self) -> int:
        return self.platform_format.bytes_for_ms(FRAME_MS)


class PacingTests(BridgeTestCase):
    def test_chunks_leave_at_real_time(self) -> None:
        reply = audio(1000, self.platform_format)
        start = self.clock.seconds()
        self.burst("r1", reply)
        self.run_ms(1200)
        messages = self.leg.messages()
        self.assertEqual(messages[0], {"type": "playStream.start", "streamId": "play-1", "mediaFormat": "raw/lpcm16"})
        self.assertEqual(messages[-1], {"type": "playStream.stop", "streamId": "play-1"})
        chunks = self.leg.chunks("play-1")
        self.assertEqual(len(chunks), 50)
        self.assertEqual({len(c) for _, c in chunks}, {self.packet_bytes})
        self.assertEqual(b"".join(c for _, c in chunks), reply)
        # Chunk k (from 0) leaves at start + k * 20 ms - 60 ms: the first starts playing at
        # once with three frames of lead (four chunks at once), then one per frame on the grid.
        times_ms = [round((t - start) * 1000, 6) for t, _ in chunks]
        self.assertEqual(times_ms, [float(max(0, FRAME_MS * k - LEAD_MS)) for k in range(50)])
        # So, at every instant, what was sent is at most the frame playing plus the lead ahead
        # of real time, and never behind it.
        for k, t in enumerate(times_ms):
            sent_ms = (k + 1) * FRAME_MS
            self.assertLessEqual(sent_ms - t, FRAME_MS + LEAD_MS)
            self.assertGreaterEqual(sent_ms - t, FRAME_MS)
        # The stop leaves with the last chunk: the stream never stays open past its audio.
        stop_time = next(t for t, m in self.leg.sent if m["type"] == "playStream.stop")
        self.assertEqual(stop_time, chunks[-1][0])
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_playout_underruns_total"), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # idle: the shared clock stopped

    def test_audio_trickling_in_is_never_sent_ahead(self) -> None:
        # A backend delivering slower than real time at first, then a burst: the burst is
        # paced too, not sent to catch up.
        start = self.clock.seconds()
        self.bridge.backend_audio("r1", audio(20, self.platform_format))
        self.run_ms(100)
        self.bridge.backend_audio("r1", audio(980, self.platform_format, seed=2))
        self.bridge.backend_response_done("r1")
        self.run_ms(1200)
        chunks = self.leg.chunks()
        per_instant: dict[float, int] = {}
        for t, _ in chunks:
            per_instant[t] = per_instant.get(t, 0) + 1
        # One chunk per instant, except at the start of a spurt (playing + 60 ms of lead).
        self.assertLessEqual(max(per_instant.values()), 1 + LEAD_MS // FRAME_MS)
        self.assertEqual(sum(1 for n in per_instant.values() if n > 1), 1)
        self.assertEqual(len(chunks), 50)
        self.assertEqual(round(chunks[1][0] - start, 6), 0.1)  # the burst restarts the pacing
        # One stream throughout (the gap is inside one response), and the gap is counted.
        self.assertEqual(check_play_streams(self.leg.messages()), ["play-1"])
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_playout_underruns_total"), 1)

    def test_stop_at_end_of_each_utterance(self) -> None:
        self.burst("r1", audio(300, self.platform_format))
        self.run_ms(500)
        # The second utterance arrives with a 10 ms tail: padded with silence to a whole chunk.
        second = audio(210, self.platform_format, seed=3)
        self.burst("r2", second)
        self.run_ms(400)
        messages = self.leg.messages()
        self.assertEqual(check_play_streams(messages), ["play-1", "play-2"])
        self.assertEqual([m["type"] for m in messages if m["type"] != "playStream.chunk"],
                         ["playStream.start", "playStream.stop", "playStream.start", "playStream.stop"])
        self.assertEqual(len(self.leg.chunks("play-1")), 15)
        tail = self.leg.chunks("play-2")
        self.assertEqual(len(tail), 11)
        self.assertEqual({len(c) for _, c in tail}, {self.packet_bytes})
        self.assertEqual(b"".join(c for _, c in tail), second + self.platform_format.silence(self.packet_bytes // 2))

    def test_back_to_back_utterances_keep_the_pace(self) -> None:
        # Two responses in one burst: the first stream closes and the next opens at the
        # boundary, with no overlap and no change of rate.
        start = self.clock.seconds()
        self.bridge.backend_audio("r1", audio(200, self.platform_format))
        self.burst("r2", audio(200, self.platform_format, seed=4))
        self.run_ms(600)
        messages = self.leg.messages()
        self.assertEqual(check_play_streams(messages), ["play-1", "play-2"])
        times_ms = [round((t - start) * 1000, 6) for t, _ in self.leg.chunks()]
        self.assertEqual(times_ms, [float(max(0, FRAME_MS * k - LEAD_MS)) for k in range(20)])

    def test_stream_stays_open_until_the_backend_says_done(self) -> None:
        # All audio sent but the response not finished: more may come, so the stream stays
        # open; the stop follows the backend's "done".
        self.burst("r1", audio(100, self.platform_format), done=False)
        self.run_ms(300)
        self.assertNotIn("playStream.stop", [m["type"] for m in self.leg.messages()])
        self.bridge.backend_response_done("r1")
        self.assertEqual(self.leg.messages()[-1], {"type": "playStream.stop", "streamId": "play-1"})

    def test_call_end_closes_the_stream_and_every_timer(self) -> None:
        self.burst("r1", audio(1000, self.platform_format))
        self.run_ms(200)
        self.receive({"type": "session.end", "conversationId": "conv-1", "reasonCode": "client-disconnected"})
        self.assertEqual(self.leg.messages()[-1], {"type": "playStream.stop", "streamId": "play-1"})
        self.assertEqual(self.bridge.outcome, Outcome.COMPLETED)
        self.assertTrue(self.backend_session.closed)
        sent = len(self.leg.sent)
        self.run_ms(500)
        self.assertEqual(len(self.leg.sent), sent)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TranscodedPacingTests(BridgeTestCase):
    """A 24 kHz backend on a 16 kHz call: chunks are still 20 ms of the call's format."""

    backend_format = L16_24K

    def test_resampled_chunks(self) -> None:
        self.burst("r1", b"\x00\x10" * 24000)  # 1 s at 24 kHz
        self.run_ms(1200)
        chunks = self.leg.chunks("play-1")
        self.assertEqual({len(c) for _, c in chunks}, {self.packet_bytes})
        self.assertIn(len(chunks), (50, 51))
        check_play_streams(self.leg.messages())


class BargeInTests(BridgeTestCase):
    def test_barge_in_stops_the_stream_at_once(self) -> None:
        start = self.clock.seconds()
        self.burst("r1", audio(2000, self.platform_format))
        self.run_ms(307)
        before = len(self.leg.sent)
        self.bridge.backend_speech_started()
        # At the same instant: VAIC hears the caller started speaking, then the stream stops.
        barge = self.leg.sent[before:]
        self.assertEqual({round(t - start, 6) for t, _ in barge}, {0.307})
        self.assertEqual([m for _, m in barge], [{"type": "userStream.speech.started"},
                                                {"type": "playStream.stop", "streamId": "play-1"}])
        # The queued audio is gone; nothing more of it leaves, however long we wait.
        assert self.bridge.playout is not None
        self.assertEqual(self.bridge.playout.queued_ms, 0)
        self.run_ms(2000)
        self.assertEqual(len(self.leg.sent), before + 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The backend is truncated where the caller was, by the clock: 307 ms into the stream,
        # although 380 ms (19 chunks: the one playing and 60 ms of lead) had been sent; the
        # stop discards the rest at VAIC.
        self.assertEqual(len(self.leg.chunks("play-1")), 19)
        self.assertEqual(self.backend_session.interrupts, [("r1", 307)])
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_bargein_seconds_count"), 1)
        self.assertEqual(
            self.metrics.registry.get_sample_value("mediaproxy_frames_dropped_total",
                                                   {"direction": "out", "reason": "bargein"}),
            (2000 - 380) / FRAME_MS)

    def test_late_audio_of_the_interrupted_response_is_dropped(self) -> None:
        self.burst("r1", audio(1000, self.platform_format), done=False)
        self.run_ms(100)
        self.bridge.backend_speech_started()
        before = len(self.leg.sent)
        self.burst("r1", audio(500, self.platform_format, seed=5))  # in flight at the barge-in
        self.run_ms(500)
        self.assertEqual(len(self.leg.sent), before)
        # The next response opens a new stream, paced from its own start.
        self.bridge.backend_speech_stopped()
        self.assertEqual(self.leg.messages(before), [{"type": "userStream.speech.stopped"},
                                                     {"type": "userStream.speech.committed"}])
        start = self.clock.seconds()
        self.burst("r2", audio(200, self.platform_format, seed=6))
        self.run_ms(300)
        self.assertEqual(check_play_streams(self.leg.messages()), ["play-1", "play-2"])
        times_ms = [round((t - start) * 1000, 6) for t, _ in self.leg.chunks("play-2")]
        self.assertEqual(times_ms, [float(max(0, FRAME_MS * k - LEAD_MS)) for k in range(10)])

    def test_speech_with_nothing_playing(self) -> None:
        self.bridge.backend_speech_started()
        self.assertEqual(self.leg.messages(), [{"type": "userStream.speech.started"}])
        self.assertEqual(self.backend_session.interrupts, [])

    def test_barge_in_after_the_stream_ended(self) -> None:
        # The utterance was all played: nothing to stop, and the backend is told the caller
        # heard all of it.
        self.burst("r1", audio(200, self.platform_format))
        self.run_ms(400)
        before = len(self.leg.sent)
        self.bridge.backend_speech_started()
        self.assertEqual(self.leg.messages(before), [{"type": "userStream.speech.started"}])
        self.assertEqual(self.backend_session.interrupts, [("r1", 200)])


class JitterTests(BridgeTestCase):
    def test_no_gap_with_ten_ms_of_reactor_jitter(self) -> None:
        """Ticks delivered up to 10 ms late (seeded): VAIC never runs dry mid-response, and the
        playout never runs further ahead than the lead (no burst)."""
        rng = random.Random(4711)
        for response in range(5):
            self.burst(f"r{response}", audio(1500, self.platform_format, seed=response))
            advance_late(self.clock, 2.0, rng)
            sends = [t for t, _ in self.leg.chunks(f"play-{response + 1}")]
            self.assertEqual(len(sends), 75)
            self.assertEqual(gaps(sends, FRAME_MS / 1000), [], f"response {response}")
            self.assertLessEqual(max_ahead(sends, FRAME_MS / 1000), (FRAME_MS + LEAD_MS) / 1000 + 1e-9)
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_playout_underruns_total"), 0)
