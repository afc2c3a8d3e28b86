"""Clock-driven tests of :meth:`Playout.when_heard` (mediaproxy/playout/heard.py): a point of the
bot's audio is reported heard when the played position reaches it, unheard when a clear flushed
it, and never before its audio has played."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from tests.test_playout import NO_FLUSH, TWILIO, PlayoutTestCase, tone


class HeardTests(PlayoutTestCase):
    def fired(self, d: Deferred[bool]) -> list[object]:
        results: list[object] = []
        d.addBoth(results.append)
        return results

    def test_fires_at_once_when_nothing_was_written(self) -> None:
        playout = self.make()
        self.assertEqual(self.fired(playout.when_heard()), [True])

    def test_fires_when_the_audio_before_it_has_played(self) -> None:
        for capabilities in (NO_FLUSH, TWILIO):  # by the clock, and by the estimate between echoes
            playout = self.make(capabilities)
            start = self.clock.seconds()
            playout.write("r1", tone(1000))
            results = self.fired(playout.when_heard())
            self.run_for(0.98)
            self.assertEqual(results, [])
            self.clock.advance(0.0205)
            self.assertEqual(results, [True])
            self.assertLessEqual(abs(self.clock.seconds() - start - 1.0), 0.021)

    def test_points_mid_stream_fire_in_order_at_their_positions(self) -> None:
        playout = self.make(NO_FLUSH)
        start = self.clock.seconds()
        playout.write("r1", tone(300))
        first = playout.when_heard()
        playout.write("r1", tone(500))
        second = playout.when_heard()
        times: list[tuple[str, float]] = []
        first.addCallback(lambda heard: times.append(("first", self.clock.seconds() - start)))
        second.addCallback(lambda heard: times.append(("second", self.clock.seconds() - start)))
        self.run_for(1.0, step=0.005)
        self.assertEqual([name for name, _ in times], ["first", "second"])
        self.assertLessEqual(abs(times[0][1] - 0.3), 0.0051)
        self.assertLessEqual(abs(times[1][1] - 0.8), 0.0051)

    def test_a_clear_answers_the_flushed_points_unheard(self) -> None:
        playout = self.make()
        playout.write("r1", tone(100))
        heard = self.fired(playout.when_heard())
        playout.write("r1", tone(900))
        flushed = self.fired(playout.when_heard())
        self.run_for(0.3)
        self.assertEqual(heard, [True])
        self.assertEqual(flushed, [])
        playout.clear()
        self.assertEqual(flushed, [False])
        # After the clear a new point is measured from what is sent from now on.
        playout.write("r2", tone(200))
        later = self.fired(playout.when_heard())
        self.run_for(0.18)
        self.assertEqual(later, [])
        self.run_for(0.04)
        self.assertEqual(later, [True])

    def test_the_partial_packet_of_an_open_response_is_not_waited_for(self) -> None:
        playout = self.make(NO_FLUSH)
        start = self.clock.seconds()
        playout.write("r1", tone(1010))  # 50 packets and 10 ms the queue keeps for more audio
        open_response = self.fired(playout.when_heard())
        self.run_for(0.98)
        self.assertEqual(open_response, [])
        self.run_for(0.04)
        self.assertEqual(open_response, [True])
        self.assertLessEqual(abs(self.clock.seconds() - start - 1.0), 0.021)
        # Once the response is finished its padded tail counts: it is sent and heard.
        playout.finish("r1")
        finished = self.fired(playout.when_heard())
        self.assertEqual(finished, [])
        self.run_for(0.04)
        self.assertEqual(finished, [True])

    def test_stop_cancels_and_leaves_no_timer(self) -> None:
        playout = self.make(NO_FLUSH)
        playout.write("r1", tone(400))
        results = self.fired(playout.when_heard())
        self.run_for(0.1)
        playout.stop()
        [failure] = results
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(CancelledError))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        after = self.fired(playout.when_heard())
        assert isinstance(after[0], Failure)
        after[0].trap(CancelledError)

    def test_no_timer_is_left_once_heard(self) -> None:
        playout = self.make(NO_FLUSH)
        playout.write("r1", tone(200))
        playout.finish("r1")
        results = self.fired(playout.when_heard())
        self.run_for(0.5)
        self.assertEqual(results, [True])
        self.assertEqual(self.clock.getDelayedCalls(), [])
