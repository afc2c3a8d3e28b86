"""Clock-driven tests of the shared playout clock and the pacing jitter buffer."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.config import PlayoutSettings
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.base import PlatformCapabilities
from mediaproxy.playout import Playout, PlayoutClock

TWILIO = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=20)
NO_FLUSH = PlatformCapabilities(can_flush=False, has_marks=False, max_lead_ms=20, packet_ms=20)
BIG_PACKETS = PlatformCapabilities(can_flush=True, has_marks=False, max_lead_ms=200, packet_ms=200)
FRAME = 160  # 20 ms of µ-law


class RecordingSink:
    """Records what the playout sends, with the reactor time of each send."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.packets: list[tuple[float, bytes]] = []
        self.marks: list[str] = []
        self.finished = 0
        self.flushes = 0

    def play(self, packet: bytes) -> None:
        self.packets.append((self.clock.seconds(), packet))

    def mark(self, name: str) -> None:
        self.marks.append(name)

    def playback_finished(self) -> None:
        self.finished += 1

    def flush(self) -> None:
        self.flushes += 1


class RecordingProducer:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


def tone(ms: int, value: int = 0x10) -> bytes:
    return bytes([value]) * (8 * ms)


def sample_value(metric_sample) -> float:
    return metric_sample


class PlayoutTestCase(SynchronousTestCase):
    def make(self, capabilities=TWILIO, **settings) -> Playout:
        self.clock = Clock()
        self.clock.advance(1000.0)  # arbitrary, non-zero epoch
        self.metrics = Metrics()
        self.pacer = PlayoutClock(self.clock, 20, self.metrics)
        self.sink = RecordingSink(self.clock)
        defaults = dict(frame_ms=20, lead_ms=60, prefill_ms=0, max_buffer_ms=30000, mark_interval_ms=100)
        defaults.update(settings)
        self.playout = Playout(
            self.pacer, MULAW_8K, capabilities, PlayoutSettings(**defaults), self.sink, self.metrics, "twilio"
        )
        return self.playout

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def run_for(self, seconds: float, step: float = 0.02) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def send_times(self) -> list[float]:
        return [t for t, _ in self.sink.packets]


class SteadyStateTests(PlayoutTestCase):
    def test_ten_minutes_without_drift(self) -> None:
        """Every packet of a 10-minute response leaves exactly at anchor + n*20 ms - lead."""
        playout = self.make(max_buffer_ms=600000)
        start = self.clock.seconds()
        playout.write("r1", tone(600_000))
        playout.finish("r1")
        self.run_for(600.0)
        times = self.send_times()
        self.assertEqual(len(times), 30000)
        lead_frames = 3
        for n, sent_at in enumerate(times):
            expected = max(start, start + (n - lead_frames) * 0.020)
            self.assertAlmostEqual(sent_at, expected, delta=1e-6, msg=f"packet {n}")
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 0)
        self.assertEqual(self.pacer.running, False)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clock_grid_does_not_drift_with_late_reactor(self) -> None:
        """Ticks that fire late do not push the schedule: the grid stays start + k*frame."""
        playout = self.make(max_buffer_ms=600000)
        start = self.clock.seconds()
        playout.write("r1", tone(10_000))
        for _ in range(400):
            self.clock.advance(0.0213)  # always late relative to the 20 ms grid
        # After 8.52 s with 60 ms lead, the playout has sent exactly what is due: no drift.
        elapsed_ms = (self.clock.seconds() - start) * 1000
        sent_ms = len(self.sink.packets) * 20
        self.assertTrue(elapsed_ms + 60 - 20 < sent_ms <= elapsed_ms + 60 + 20 + 1e-6, (elapsed_ms, sent_ms))

    def test_burst_of_five_seconds_is_paced(self) -> None:
        """5 s of audio arriving within 10 ms leaves at real time, never more than lead ahead."""
        playout = self.make()
        start = self.clock.seconds()
        for _ in range(50):
            playout.write("r1", tone(100))
            self.clock.advance(0.0002)
        playout.finish("r1")
        self.assertEqual(len(self.sink.packets), 4)  # frames 0..3 are within the 60 ms lead
        self.run_for(6.0)
        self.assertEqual(len(self.sink.packets), 250)
        for n, (sent_at, packet) in enumerate(self.sink.packets):
            self.assertEqual(len(packet), FRAME)
            ahead_ms = (n + 1) * 20 - (sent_at - start) * 1000
            self.assertLessEqual(ahead_ms, 60 + 20 + 1e-6)
        self.assertEqual(self.sink.finished, 1)

    def test_trailing_partial_frame_padded_with_ulaw_silence(self) -> None:
        playout = self.make()
        playout.write("r1", b"\x10" * 200)  # 25 ms
        playout.finish("r1")
        self.run_for(0.1)
        packets = [p for _, p in self.sink.packets]
        self.assertEqual(packets, [b"\x10" * 160, b"\x10" * 40 + b"\xff" * 120])
        self.assertEqual(self.sink.finished, 1)

    def test_big_packets_for_platforms_that_want_them(self) -> None:
        playout = self.make(BIG_PACKETS, lead_ms=200)
        start = self.clock.seconds()
        playout.write("r1", tone(1000))
        playout.finish("r1")
        self.run_for(1.2)
        self.assertEqual([len(p) for _, p in self.sink.packets], [1600] * 5)
        # Never faster than real time beyond one packet of lead.
        for n, sent_at in enumerate(self.send_times()):
            self.assertGreaterEqual(sent_at - start + 1e-9, max(0, (n - 1) * 0.2))

    def test_prefill_holds_the_first_frame(self) -> None:
        playout = self.make(prefill_ms=100)
        playout.write("r1", tone(60))
        self.assertEqual(self.sink.packets, [])
        playout.write("r1", tone(40))
        self.assertEqual(len(self.sink.packets), 4)

    def test_prefill_released_by_finished_response(self) -> None:
        playout = self.make(prefill_ms=100)
        playout.write("r1", tone(40))
        playout.finish("r1")
        self.assertEqual(len(self.sink.packets), 2)


class UnderrunTests(PlayoutTestCase):
    def test_underrun_then_more_audio(self) -> None:
        """A response that stalls mid-way counts one underrun and restarts on a new anchor,
        without bursting its backlog."""
        playout = self.make()
        playout.write("r1", tone(100))
        self.run_for(0.5)
        self.assertEqual(len(self.sink.packets), 5)
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 0)
        resumed_at = self.clock.seconds()
        playout.write("r1", tone(1000))
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 1)
        # Re-anchored: only the lead goes out at once.
        self.assertEqual(len(self.sink.packets), 5 + 4)
        self.run_for(1.2)
        self.assertEqual(len(self.sink.packets), 55)
        for n, sent_at in enumerate(self.send_times()[5:]):
            self.assertLessEqual((n + 1) * 20 - (sent_at - resumed_at) * 1000, 80 + 1e-6)
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 1)

    def test_slow_done_is_not_an_underrun(self) -> None:
        playout = self.make()
        playout.write("r1", tone(100))
        self.run_for(0.5)
        playout.finish("r1")
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 0)
        self.assertEqual(self.sink.finished, 1)

    def test_late_tick_sends_what_was_due_within_lead(self) -> None:
        """A 40 ms reactor stall (less than the 60 ms lead): the due frames go out at once and
        the schedule continues unchanged."""
        playout = self.make()
        start = self.clock.seconds()
        playout.write("r1", tone(2000))
        self.run_for(0.2)
        before = len(self.sink.packets)
        self.clock.advance(0.04)
        self.assertEqual(len(self.sink.packets), before + 2)
        self.run_for(0.5)
        for n, sent_at in enumerate(self.send_times()):
            self.assertLessEqual(sent_at, max(start, start + (n - 3) * 0.02) + 0.04 + 1e-6)
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 0)

    def test_stall_longer_than_lead_reanchors_without_burst(self) -> None:
        playout = self.make()
        playout.write("r1", tone(5000))
        self.run_for(0.2)
        before = len(self.sink.packets)
        self.clock.advance(0.5)  # the platform ran dry 440 ms ago
        burst = len(self.sink.packets) - before
        self.assertLessEqual(burst, 4)  # one lead's worth, not the 25 missed frames
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 1)
        # The first packet after the stall is recorded as late as it was against its old schedule.
        self.assertGreaterEqual(self.metric("mediaproxy_playout_late_seconds_bucket", {"le": "0.5"})
                                - self.metric("mediaproxy_playout_late_seconds_bucket", {"le": "0.25"}), 1)

    def test_clock_stepping_backwards_does_not_hold_audio(self) -> None:
        """After a wall-clock step backwards, new audio starts a fresh spurt at once instead of
        waiting for the old anchor's time to come round again."""
        playout = self.make()
        playout.write("r1", tone(100))
        playout.finish("r1")
        self.run_for(0.2)
        # task.Clock cannot go backwards; emulate a wall-clock step by rewinding its time.
        self.clock.rightNow -= 5.0
        before = len(self.sink.packets)
        playout.write("r2", tone(1000))
        self.assertEqual(len(self.sink.packets), before + 4)
        self.run_for(0.4)
        self.assertEqual(len(self.sink.packets), before + 24)


class BargeInTests(PlayoutTestCase):
    def test_clear_mid_response_ignores_stale_marks_and_late_audio(self) -> None:
        playout = self.make()
        playout.write("r1", tone(3000))
        self.run_for(0.5)
        marks_before_clear = list(self.sink.marks)
        self.assertTrue(marks_before_clear)
        # The platform echoes the first mark: it played up to there.
        first = marks_before_clear[0]
        self.assertTrue(playout.mark_echoed(first))
        heard = playout.clear()
        assert heard is not None
        self.assertEqual(heard.response_id, "r1")
        self.assertFalse(heard.done)
        echo_pos = float(first.split(":")[1])
        self.assertGreaterEqual(heard.played_ms, echo_pos)
        self.assertLessEqual(heard.played_ms, len(self.sink.packets) * 20)
        self.assertGreater(self.metric("mediaproxy_frames_dropped_total", {"direction": "out", "reason": "bargein"}), 0)
        # Twilio echoes every pending mark after a clear: none of them counts.
        for name in marks_before_clear:
            self.assertFalse(playout.mark_echoed(name))
        # Late deltas of the interrupted response are dropped.
        sent = len(self.sink.packets)
        playout.write("r1", tone(500))
        self.run_for(0.5)
        self.assertEqual(len(self.sink.packets), sent)
        # The next response plays at once, marks in the new generation.
        playout.write("r2", tone(200))
        playout.finish("r2")
        self.run_for(0.5)
        self.assertEqual(len(self.sink.packets), sent + 10)
        self.assertTrue(self.sink.marks[-1].startswith("1:"))
        self.assertTrue(playout.mark_echoed(self.sink.marks[-1]))

    def test_played_position_from_clock_without_marks(self) -> None:
        playout = self.make(NO_FLUSH)
        playout.write("r1", tone(1000))
        self.run_for(0.3)
        # r1 started at position 0, so the call's played position is what r1 has played.
        self.assertEqual(round(playout.played_position_ms(self.clock.seconds())), 300)
        heard = playout.clear()
        assert heard is not None
        self.assertEqual(heard.played_ms, 300)

    def test_no_flush_platform_never_leads_more_than_a_frame(self) -> None:
        playout = self.make(NO_FLUSH, lead_ms=500)
        start = self.clock.seconds()
        playout.write("r1", tone(1000))
        self.assertEqual(len(self.sink.packets), 2)
        self.run_for(1.0)
        for n, sent_at in enumerate(self.send_times()):
            self.assertLessEqual((n + 1) * 20 - (sent_at - start) * 1000, 40 + 1e-6)

    def test_clear_when_idle_returns_nothing(self) -> None:
        playout = self.make()
        self.assertIsNone(playout.clear())

    def test_clear_after_finished_playback_reports_done(self) -> None:
        playout = self.make()
        playout.write("r1", tone(100))
        playout.finish("r1")
        self.run_for(1.0)
        heard = playout.clear()
        assert heard is not None
        self.assertEqual((heard.played_ms, heard.done), (100, True))


class SinkFlushTests(PlayoutTestCase):
    """The sink is flushed once per service pass that told it anything, after all of it."""

    def make_counting(self) -> tuple[Playout, list[int]]:
        playout = self.make()
        sent_at_flush: list[int] = []
        flush = self.sink.flush

        def counting_flush() -> None:
            flush()
            sent_at_flush.append(len(self.sink.packets))

        self.sink.flush = counting_flush  # type: ignore[method-assign]
        return playout, sent_at_flush

    def test_burst_then_ticks_flush_once_per_pass(self) -> None:
        playout, sent_at_flush = self.make_counting()
        for _ in range(50):  # 5 s arriving within 10 ms
            playout.write("r1", tone(100))
            self.clock.advance(0.0002)
        # The first write sent the lead (4 packets): one flush, after all of them; the other
        # writes sent nothing and flushed nothing.
        self.assertEqual(sent_at_flush, [4])
        self.run_for(0.1)
        # Each tick sent one packet (and sometimes a mark) and flushed once.
        self.assertEqual(sent_at_flush, [4, 5, 6, 7, 8, 9])
        playout.finish("r1")
        self.assertEqual(self.sink.flushes, 6)  # nothing was due at once
        self.run_for(6.0)
        self.assertEqual(len(self.sink.packets), 250)
        self.assertEqual(self.sink.finished, 1)
        distinct_send_times = len({round(t, 6) for t, _ in self.sink.packets})
        self.assertEqual(self.sink.flushes, distinct_send_times)

    def test_nothing_emitted_nothing_flushed(self) -> None:
        playout, sent_at_flush = self.make_counting()
        playout.write("r1", b"\x10" * 100)  # less than a packet of an unfinished response
        self.run_for(0.1)
        self.assertEqual((self.sink.packets, self.sink.flushes), ([], 0))
        playout.finish("r1")  # the padded tail goes out, the stream ends: one pass, one flush
        self.assertEqual((len(self.sink.packets), self.sink.finished, self.sink.flushes), (1, 1, 1))
        playout.write("r2", b"\x10" * 100)
        self.assertEqual(self.sink.flushes, 1)
        playout.clear()
        playout.write("r2", tone(100))  # cut: dropped, nothing sent
        self.run_for(0.1)
        self.assertEqual((len(self.sink.packets), self.sink.flushes), (1, 1))

    def test_stream_end_alone_is_flushed(self) -> None:
        """A response finished after its last packet went out: the pass that only tells the sink
        playback finished flushes too."""
        playout, sent_at_flush = self.make_counting()
        playout.write("r1", tone(40))
        self.assertEqual(sent_at_flush, [2])
        self.run_for(0.1)
        playout.finish("r1")
        self.assertEqual((self.sink.finished, self.sink.flushes), (1, 2))

    def test_resume_flushes_what_it_sent(self) -> None:
        playout, sent_at_flush = self.make_counting()
        playout.write("r1", tone(1000))
        playout.pauseProducing()
        self.run_for(0.3)
        self.assertEqual(sent_at_flush, [4])
        playout.resumeProducing()
        self.assertEqual(len(sent_at_flush), 2)
        self.assertEqual(sent_at_flush[-1], len(self.sink.packets))


class FlowControlTests(PlayoutTestCase):
    def test_is_a_push_producer(self) -> None:
        self.assertTrue(verifyObject(IPushProducer, self.make()))

    def test_backend_never_paused_queue_bounded_by_dropping_the_newest(self) -> None:
        playout = self.make(max_buffer_ms=2000)
        producer = RecordingProducer()
        playout.attach_producer(producer)  # kept for the bridge: a no-op
        playout.write("r1", tone(1500, 0x11))
        playout.write("r1", tone(1000, 0x22))
        self.assertEqual(producer.events, [])
        self.assertEqual(self.metric("mediaproxy_flow_pauses_total", {"leg": "backend"}), 0)
        self.assertLessEqual(playout.queued_ms, 2000)
        # The rest of the overflowing response is dropped even once there is room again, so
        # what plays is an exact prefix of what the backend sent.
        self.run_for(1.0)
        playout.write("r1", tone(500, 0x33))
        playout.finish("r1")
        self.run_for(3.0)
        heard = b"".join(p for _, p in self.sink.packets)
        sent = tone(1500, 0x11) + tone(1000, 0x22)
        self.assertEqual(heard, sent[: len(heard)])
        self.assertGreaterEqual(len(heard), 8 * 2000)
        self.assertLess(len(heard), 8 * 2100)
        # 60 ms dropped of the first overflow + all 500 ms of the later write: 28 frames.
        dropped = self.metric("mediaproxy_frames_dropped_total", {"direction": "out", "reason": "overflow"})
        self.assertEqual(dropped, (len(sent) + 8 * 500 - len(heard)) // FRAME)
        self.assertEqual(producer.events, [])
        # The next response is not affected.
        playout.write("r2", tone(200, 0x44))
        playout.finish("r2")
        self.run_for(0.5)
        self.assertTrue(b"".join(p for _, p in self.sink.packets).endswith(tone(200, 0x44)))

    def test_played_position_exact_after_overflow(self) -> None:
        playout = self.make(NO_FLUSH, max_buffer_ms=1000)
        playout.write("r1", tone(3000))
        self.assertLessEqual(playout.queued_ms, 1000)
        self.run_for(0.5)
        heard = playout.clear()
        assert heard is not None
        self.assertEqual(heard.played_ms, 500)
        self.assertEqual(self.metric("mediaproxy_frames_dropped_total", {"direction": "out", "reason": "overflow"}),
                         (3000 - 1000) // 20)

    def test_transport_pause_holds_packets(self) -> None:
        playout = self.make()
        playout.write("r1", tone(1000))
        playout.pauseProducing()
        sent = len(self.sink.packets)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # a paused playout arms no timer
        self.run_for(0.3)
        self.assertEqual(len(self.sink.packets), sent)
        playout.resumeProducing()
        self.assertGreater(len(self.sink.packets), sent)
        self.assertLessEqual(len(self.sink.packets), sent + 4)


class LifecycleTests(PlayoutTestCase):
    def test_stop_leaves_no_delayed_calls(self) -> None:
        playout = self.make()
        playout.write("r1", tone(5000))
        self.run_for(0.2)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        playout.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        playout.write("r1", tone(100))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_clock_arms_no_timer(self) -> None:
        playout = self.make()
        playout.write("r1", tone(100))
        playout.finish("r1")
        self.run_for(0.5)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_shared_clock_serves_many_playouts_with_one_timer(self) -> None:
        self.make()
        sinks = []
        playouts = []
        for _ in range(50):
            sink = RecordingSink(self.clock)
            sinks.append(sink)
            playouts.append(Playout(self.pacer, MULAW_8K, TWILIO, PlayoutSettings(), sink, self.metrics, "twilio"))
        for playout in playouts:
            playout.write("r", tone(1000))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.run_for(1.2)
        self.assertEqual({len(s.packets) for s in sinks}, {50})


class PlayedOutTests(PlayoutTestCase):
    def fired(self, d) -> list[object]:  # type: ignore[no-untyped-def]
        results: list[object] = []
        d.addBoth(results.append)
        return results

    def test_fires_at_once_when_idle(self) -> None:
        playout = self.make()
        self.assertEqual(self.fired(playout.when_played_out()), [None])

    def test_clock_without_marks_fires_when_the_last_packet_has_played(self) -> None:
        playout = self.make(NO_FLUSH)
        start = self.clock.seconds()
        playout.write("r1", tone(1000))
        results = self.fired(playout.when_played_out())
        self.run_for(0.98)
        self.assertEqual(results, [])  # all sent, but the response is still open
        playout.finish("r1")
        self.assertEqual(results, [])  # sent, not yet played
        self.clock.advance(0.01)
        self.assertEqual(results, [])
        self.clock.advance(0.0101)
        self.assertEqual(results, [None])
        self.assertAlmostEqual(self.clock.seconds() - start, 1.0, places=3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_more_audio_moves_the_end(self) -> None:
        playout = self.make(NO_FLUSH)
        playout.write("r1", tone(200))
        playout.finish("r1")
        results = self.fired(playout.when_played_out())
        self.run_for(0.1)
        playout.write("r2", tone(200))
        playout.finish("r2")
        self.run_for(0.28)
        self.assertEqual(results, [])
        self.clock.advance(0.021)
        self.assertEqual(results, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_with_marks_waits_for_the_echo_of_the_last_mark(self) -> None:
        playout = self.make()
        playout.write("r1", tone(500))
        playout.finish("r1")
        results = self.fired(playout.when_played_out())
        self.run_for(2.0)  # all sent long ago: the clock alone does not count, the echo does
        self.assertEqual(results, [])
        for name in self.sink.marks[:-1]:
            playout.mark_echoed(name)
        self.assertEqual(results, [])
        playout.mark_echoed(self.sink.marks[-1])
        self.assertEqual(results, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clear_counts_as_played_out(self) -> None:
        playout = self.make()
        playout.write("r1", tone(2000))
        results = self.fired(playout.when_played_out())
        self.run_for(0.2)
        playout.clear()
        self.assertEqual(results, [None])

    def test_stop_cancels_and_leaves_no_timer(self) -> None:
        playout = self.make(NO_FLUSH)
        playout.write("r1", tone(300))
        playout.finish("r1")
        self.run_for(0.28)  # everything sent; the timer for its end is armed
        results = self.fired(playout.when_played_out())
        playout.stop()
        self.assertEqual(len(results), 1)
        self.assertIsInstance(results[0], Failure)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        after = self.fired(playout.when_played_out())
        self.assertIsInstance(after[0], Failure)
        self.flushLoggedErrors(CancelledError)

    def test_cancelling_the_wait_disarms_its_timer(self) -> None:
        playout = self.make(NO_FLUSH)
        playout.write("r1", tone(300))
        playout.finish("r1")
        self.run_for(0.28)
        d = playout.when_played_out()
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        d.addErrback(lambda f: f.trap(CancelledError))
        d.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BackOffTests(PlayoutTestCase):
    def test_back_off_sends_nothing_then_restarts_without_burst(self) -> None:
        """A platform's 'slow down' (Genesys 429 retryAfter) stops sending for that long."""
        playout = self.make()
        playout.write("r1", tone(2000))
        self.run_for(0.2)
        sent = len(self.sink.packets)
        playout.back_off(500)
        self.run_for(0.48)
        self.assertEqual(len(self.sink.packets), sent)
        self.run_for(0.04)
        self.assertGreater(len(self.sink.packets), sent)
        self.assertLessEqual(len(self.sink.packets), sent + 4)
        self.run_for(2.0)
        self.assertEqual(len(self.sink.packets), 100)


LONG_MESSAGES = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=20,
                                     any_message_length=True)


class MessageLengthTests(PlayoutTestCase):
    """``[playout] message_ms``: several 20 ms packets per message to a platform that plays any
    length (Twilio); the schedule, the marks and the heard position stay exact."""

    def test_messages_of_message_ms_on_the_same_schedule(self) -> None:
        playout = self.make(LONG_MESSAGES, message_ms=60)
        start = self.clock.seconds()
        playout.write("r1", tone(2000))
        playout.finish("r1")
        self.run_for(3.0)
        sizes = [len(p) for _, p in self.sink.packets]
        self.assertEqual(sum(sizes), 2000 * 8)
        self.assertEqual(sizes, [480] * 33 + [160])  # 33 x 60 ms, the finished rest in one
        position_ms = 0
        for sent_at, packet in self.sink.packets:
            # A message goes when its first frame is due (start + position - lead), never later
            # than one tick after, so the platform holds at most lead + one message.
            due = max(start, start + (position_ms - 60) / 1000)
            self.assertAlmostEqual(sent_at, due, delta=1e-6)
            position_ms += len(packet) // 8
        self.assertEqual(self.metric("mediaproxy_playout_underruns_total"), 0)
        self.assertEqual(self.metric("mediaproxy_frames_total", {"platform": "twilio", "direction": "out"}), 34)

    def test_a_platform_without_any_length_keeps_its_packets(self) -> None:
        playout = self.make(TWILIO, message_ms=100)
        playout.write("r1", tone(200))
        playout.finish("r1")
        self.run_for(1.0)
        self.assertEqual({len(p) for _, p in self.sink.packets}, {FRAME})
        self.assertEqual(playout.message_ms, 20)

    def test_marks_name_message_ends_and_barge_in_reports_what_was_heard(self) -> None:
        playout = self.make(LONG_MESSAGES, message_ms=100, mark_interval_ms=100)
        playout.write("r1", tone(3000))
        self.run_for(0.5)
        # Every mark sits at the end of a message: the position the platform echoes is exact.
        ends, position = set(), 0
        for _, packet in self.sink.packets:
            position += len(packet) // 8
            ends.add(position)
        self.assertTrue(self.sink.marks)
        self.assertTrue(all(float(name.split(":")[1]) in ends for name in self.sink.marks))
        self.assertTrue(playout.mark_echoed(self.sink.marks[1]))  # the platform played to 200 ms
        self.clock.advance(0.013)
        heard = playout.clear()
        assert heard is not None
        self.assertEqual(heard.played_ms, 200 + 13)
        # The flushed marks' echoes do not count; the next response starts a new generation.
        self.assertFalse(playout.mark_echoed(self.sink.marks[0]))
        playout.write("r2", tone(100))
        self.assertEqual(len(self.sink.packets[-1][1]), 800)


class PhasedClockTests(SynchronousTestCase):
    """A clock of four phases: each playout paced on its own 5 ms sub-tick, exactly, for life."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.metrics = Metrics()
        self.pacer = PlayoutClock(self.clock, 20, self.metrics, phases=4)
        self.sinks: list[RecordingSink] = []

    def playout(self) -> Playout:
        sink = RecordingSink(self.clock)
        self.sinks.append(sink)
        settings = PlayoutSettings(frame_ms=20, lead_ms=60, prefill_ms=0, max_buffer_ms=30000, mark_interval_ms=100)
        return Playout(self.pacer, MULAW_8K, TWILIO, settings, sink, self.metrics, "twilio")

    def test_phases_are_assigned_round_robin(self) -> None:
        self.assertEqual([self.playout().phase for _ in range(6)], [0, 1, 2, 3, 0, 1])

    def test_each_playout_paced_on_its_own_sub_tick(self) -> None:
        """Four calls writing at once: the first packets go at once (within the lead), then each
        call's packets leave exactly 20 ms apart, the calls 5 ms apart from one another, and no
        tick serves two calls."""
        playouts = [self.playout() for _ in range(4)]
        start = self.clock.seconds()
        for playout in playouts:
            playout.write("r1", tone(2000))
        for _ in range(1000):
            self.clock.advance(0.0025)
        for phase, sink in enumerate(self.sinks):
            times = [t - start for t, _ in sink.packets]
            self.assertEqual(len(times), 2000 // 20)
            self.assertEqual(times[:4], [0.0] * 4)  # the lead and the current frame at once
            paced = times[4:]
            first = phase * 0.005 if phase else 0.020
            for n, sent_at in enumerate(paced):
                self.assertAlmostEqual(sent_at, first + n * 0.020, delta=1e-6, msg=f"phase {phase} packet {n}")
        send_times = sorted(t for sink in self.sinks for t, _ in sink.packets[4:])
        self.assertEqual(len(send_times), len(set(round(t, 6) for t in send_times)))
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_playout_underruns_total"), 0)
        self.assertFalse(self.pacer.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_wakes_only_for_phases_with_playouts(self) -> None:
        """One call on phase 2 arms one timer per frame, not four; the grid is laid so that its
        phase ticks when it started, as a single-phase clock's would."""
        for _ in range(2):
            self.playout()
        playout = self.playout()
        self.assertEqual(playout.phase, 2)
        start = self.clock.seconds()
        playout.write("r1", tone(1000))
        wakeups = []
        while self.clock.getDelayedCalls():
            call = self.clock.getDelayedCalls()[0]
            wakeups.append(round(call.getTime() - start, 6))
            self.clock.advance(call.getTime() - self.clock.seconds())
        self.assertEqual(wakeups[:3], [0.02, 0.04, 0.06])

    def test_a_late_phase_added_to_a_running_clock_is_served_on_its_sub_tick(self) -> None:
        """The timer is armed for phase 3 when a phase-1 call starts: it is re-armed, so the new
        call's second paced packet leaves on its own sub-tick, not at phase 3's."""
        playouts = [self.playout() for _ in range(4)]
        start = self.clock.seconds()
        playouts[3].write("r1", tone(2000))
        self.clock.advance(0.001)
        playouts[1].write("r1", tone(2000))
        while self.clock.seconds() < start + 0.1:  # wake exactly when the timer is due
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
        times = [round(t - start, 6) for t, _ in self.sinks[1].packets]
        self.assertEqual(times[:4], [0.001] * 4)
        # Phase 3 ticks at start + 20 ms (the grid was laid for it); phase 1 ten ms earlier.
        self.assertEqual(times[4:7], [0.01, 0.03, 0.05])

    def test_missed_sub_ticks_are_folded_into_the_next(self) -> None:
        """A reactor that wakes only every 13 ms misses sub-ticks: every phase that came due is
        served at the next wake-up, so each call still sends exactly what is due, none starves."""
        playouts = [self.playout() for _ in range(4)]
        start = self.clock.seconds()
        for playout in playouts:
            playout.write("r1", tone(4000))
        for _ in range(200):
            self.clock.advance(0.013)
        elapsed_ms = (self.clock.seconds() - start) * 1000
        for phase, sink in enumerate(self.sinks):
            sent_ms = len(sink.packets) * 20
            # Due: the lead plus the elapsed time, on this phase's grid (up to one frame early).
            self.assertTrue(elapsed_ms + 60 - 20 < sent_ms <= elapsed_ms + 60 + 20 + 1e-6, (phase, sent_ms))
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_playout_underruns_total"), 0)

    def test_phases_must_divide_the_frame(self) -> None:
        with self.assertRaises(ValueError):
            PlayoutClock(self.clock, 20, None, phases=3)
