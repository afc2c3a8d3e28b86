"""The simulator's platform-neutral pieces without sockets: the playout with messages of any
multiple of 20 ms (on a task.Clock), the report's figures from a hand-made record, the playout
depth curve, and the recording's timeline."""

from __future__ import annotations

from array import array

import numpy as np
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import L16_16K
from mediaproxy.audio.g711 import ulaw_encode
from mediaproxy.sim.call_record import COMPLETED, CallRecord
from mediaproxy.sim.playout import Playout
from mediaproxy.sim.record import heard_samples
from mediaproxy.sim.report import analyse_call, depth_curve
from mediaproxy.sim.script import Reply

MSG_60 = bytes(range(240)) * 2  # 60 ms of µ-law


class PlayoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.marks: list[tuple[float, str]] = []
        self.playout = Playout(self.clock, lambda name: self.marks.append((self.clock.seconds(), name)), True)

    def test_messages_of_several_frames_play_one_after_another(self) -> None:
        self.playout.media(MSG_60)
        self.playout.media(MSG_60[:160])  # 20 ms
        self.playout.mark("m")
        self.assertAlmostEqual(self.playout.queued_ms, 80.0)
        self.clock.advance(0.079)
        self.assertEqual(self.marks, [])
        self.clock.advance(0.001)
        self.assertEqual(self.marks, [(0.08, "m")])
        self.assertEqual(self.playout.segments(), [(0.0, MSG_60 + MSG_60[:160])])
        # After a gap the next message starts a new segment at its arrival.
        self.clock.advance(0.1)
        self.playout.media(MSG_60)
        self.clock.advance(0.06)
        self.assertEqual([t for t, _ in self.playout.segments()], [0.0, 0.18])
        self.assertEqual(self.playout.underruns, 1)

    def test_a_clear_cuts_the_message_playing_and_drops_the_rest(self) -> None:
        self.playout.media(MSG_60)
        self.playout.media(MSG_60)
        self.clock.advance(0.025)
        self.playout.clear()
        self.assertEqual(self.playout.heard(), MSG_60[:200])
        self.assertAlmostEqual(self.playout.cleared_ms, 95.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_l16_cuts_keep_whole_samples(self) -> None:
        playout = Playout(self.clock, lambda name: None, True, L16_16K.bytes_per_ms, L16_16K.frame_bytes)
        playout.media(bytes(1920))  # 60 ms
        self.clock.advance(0.0123)
        playout.clear()
        self.assertEqual(len(playout.heard()) % 2, 0)


def record_of(arrivals: list[float], sizes_ms: list[float], depths: list[float],
              clears: tuple[float, ...] = ()) -> CallRecord:
    record = CallRecord(index=0, call_id="c", platform="test", script_start=0.0, dialed_at=-0.01, opened_at=0.0,
                        closed_at=3.0, close_reason=COMPLETED)
    record.arrivals = array("d", arrivals)
    record.arrival_ms = array("d", sizes_ms)
    record.depth_ms = array("d", depths)
    record.clears = array("d", clears)
    return record


# One reply of 20 frames (400 ms): the caller spoke frames 0-19, the parrot decided at frame 30.
REPLY = Reply(utterance_start_frame=0, end_frame=30, frames=20, speech_end_frame=20)


class ReportTests(SynchronousTestCase):
    def paced(self, shift: dict[int, float] | None = None) -> CallRecord:
        """The reply as the proxy paces it with a 60 ms lead in 60 ms messages (the last 40 ms):
        message k at t0 + max(0, offset_k - lead)."""
        t0, sizes = 0.65, [60.0] * 6 + [40.0]
        offsets = [sum(sizes[:k]) for k in range(len(sizes))]
        arrivals = [t0 + max(0.0, o - 60.0) / 1000 + (shift or {}).get(k, 0.0) for k, o in enumerate(offsets)]
        return record_of(arrivals, sizes, [0.0] + [60.0] * 6)

    def test_a_reply_in_messages_of_60_ms_on_time(self) -> None:
        stats, samples, series = analyse_call(self.paced(), [REPLY], 60)
        self.assertEqual((stats.frames_received, stats.messages_received, stats.odd_frames), (20, 7, 0))
        self.assertEqual((stats.frames_expected, stats.frames_lost, stats.late_frames), (20, 0, 0))
        self.assertEqual(stats.replies_received, 1)
        self.assertEqual(len(samples.lateness_grid), 5)  # the messages starting past the lead
        self.assertAlmostEqual(max(samples.lateness_grid), 0.0)
        self.assertEqual([round(v, 6) for v in samples.inter_arrival], [0.06] * 4)
        self.assertEqual(samples.lead, [0.06] * 5)
        self.assertAlmostEqual(samples.reply_latency[0], 0.65 - 19 * 0.02)
        self.assertAlmostEqual(samples.first_audio[0], 0.65)
        self.assertAlmostEqual(samples.connect[0], 0.01)
        self.assertEqual(len(series.lateness), 5)

    def test_late_messages(self) -> None:
        stats, samples, _ = analyse_call(self.paced({3: 0.005}), [REPLY], 60)
        self.assertAlmostEqual(max(samples.lateness_grid), 0.005)
        self.assertEqual(stats.late_frames, 0)  # within the lead: not heard
        stats, samples, _ = analyse_call(self.paced({3: 0.070}), [REPLY], 60)
        self.assertEqual(stats.late_frames, 3)  # after its play time: its 3 frames were a gap

    def test_a_clear_interrupts_the_reply(self) -> None:
        record = self.paced()
        record.clears = array("d", [0.02, 0.76])  # an onset clear before the reply, then a barge-in
        stats, samples, series = analyse_call(record, [REPLY], 60)
        self.assertEqual((stats.replies_interrupted, stats.frames_expected), (1, 0))
        self.assertEqual(stats.frames_after_clear, 11)  # the messages after 0.76 s: 3 x 60 + 40 ms
        self.assertEqual(len(samples.bargein), 1)  # the clear answering the onset (frame 1)
        self.assertAlmostEqual(samples.bargein[0], 0.0)
        self.assertEqual(series.clears, [0.02, 0.76])

    def test_depth_curve(self) -> None:
        points = depth_curve([1.0, 1.02, 2.0], [0.06, 0.06, 0.02], [1.05], 0.0)
        self.assertEqual([(round(t, 3), round(d, 3)) for t, d in points], [
            (1.0, 0.0), (1.0, 60.0), (1.02, 40.0), (1.02, 100.0), (1.05, 70.0), (1.05, 0.0),
            (2.0, 0.0), (2.0, 20.0), (2.02, 0.0)])


class RecordingTests(SynchronousTestCase):
    def test_pieces_are_placed_at_their_play_time(self) -> None:
        tone = (np.sin(np.arange(160) * 2 * np.pi / 20) * 8000).astype(np.int16)
        record = CallRecord(index=0, call_id="c", platform="test", script_start=10.0, closed_at=10.5)
        record.heard = [(10.1, ulaw_encode(tone)), (10.3, ulaw_encode(tone[:80]))]
        samples = heard_samples(record)
        self.assertEqual(len(samples), 4000)  # 0.5 s at 8 kHz
        loud = np.flatnonzero(np.abs(samples) > 1000)
        self.assertEqual((loud.min() // 10, loud.max() // 10), (80, 247))  # 0.1 s .. 0.31 s
        self.assertEqual(int(np.abs(samples[960:2400]).max()), 0)  # silence between the pieces
