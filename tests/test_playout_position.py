"""The played-position estimate: marks, echo acceptance, and the estimate capped at what was sent.

Times come from a ``task.Clock``; positions are milliseconds of audio."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.playout.position import PlayedPosition


class PositionTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)

    def send(self, position: PlayedPosition, ms: float) -> None:
        position.sent_ms += ms


class MarkTests(PositionTestCase):
    def test_a_mark_every_interval_and_at_the_end(self) -> None:
        position = PlayedPosition(True, 100)
        position.start_spurt(self.clock.seconds())
        names = []
        for _ in range(7):
            self.send(position, 20)
            names.append(position.next_mark(drained=False))
        self.assertEqual(names, [None, None, None, None, "0:100", None, None])
        self.assertEqual(position.next_mark(drained=True), "0:140")

    def test_no_marks_for_a_platform_without_them(self) -> None:
        position = PlayedPosition(False, 100)
        self.send(position, 500)
        self.assertIsNone(position.next_mark(drained=True))

    def test_echo_acceptance(self) -> None:
        position = PlayedPosition(True, 100)
        now = self.clock.seconds()
        self.send(position, 40)
        self.assertFalse(position.mark_echoed("0:40", now))  # no spurt playing
        position.start_spurt(now)
        self.send(position, 100)
        self.assertTrue(position.mark_echoed("0:140", now))
        self.assertFalse(position.mark_echoed("0:160", now))  # beyond what was sent
        self.assertFalse(position.mark_echoed("1:100", now))  # another generation
        for name in ("bogus", "0", "0:x", "x:1", ""):
            self.assertFalse(position.mark_echoed(name, now), name)

    def test_cut_starts_a_generation_and_refuses_old_echoes(self) -> None:
        position = PlayedPosition(True, 100)
        position.start_spurt(self.clock.seconds())
        self.send(position, 200)
        old = position.next_mark(drained=True)
        assert old is not None
        position.cut()
        self.assertEqual(position.generation, 1)
        position.start_spurt(self.clock.seconds())
        self.assertFalse(position.mark_echoed(old, self.clock.seconds()))
        self.send(position, 20)
        new = position.next_mark(drained=True)
        self.assertEqual(new, "1:220")
        assert new is not None
        self.assertTrue(position.mark_echoed(new, self.clock.seconds()))


class EstimateTests(PositionTestCase):
    def test_clock_only_estimate_without_marks(self) -> None:
        position = PlayedPosition(False, 100)
        position.start_spurt(self.clock.seconds())
        self.send(position, 1000)
        self.clock.advance(0.3)
        self.assertAlmostEqual(position.played_ms(self.clock.seconds()), 300)

    def test_estimate_capped_at_what_was_sent(self) -> None:
        position = PlayedPosition(False, 100)
        position.start_spurt(self.clock.seconds())
        self.send(position, 100)
        self.clock.advance(5.0)
        self.assertEqual(position.played_ms(self.clock.seconds()), 100)

    def test_estimate_from_the_last_echo_plus_elapsed_time(self) -> None:
        position = PlayedPosition(True, 100)
        position.start_spurt(self.clock.seconds())
        self.send(position, 2000)
        self.clock.advance(0.5)  # the platform is slower than the clock: it echoes 300 ms
        self.assertTrue(position.mark_echoed("0:300", self.clock.seconds()))
        self.assertAlmostEqual(position.played_ms(self.clock.seconds()), 300)
        self.clock.advance(0.2)
        self.assertAlmostEqual(position.played_ms(self.clock.seconds()), 500)
        # An older echo arriving late does not move the estimate back.
        self.assertTrue(position.mark_echoed("0:100", self.clock.seconds()))
        self.assertAlmostEqual(position.played_ms(self.clock.seconds()), 500)
        self.clock.advance(10.0)
        self.assertEqual(position.played_ms(self.clock.seconds()), 2000)

    def test_echo_from_before_the_spurt_is_accepted_but_not_used(self) -> None:
        position = PlayedPosition(True, 100)
        position.start_spurt(self.clock.seconds())
        self.send(position, 100)
        position.end_spurt()
        position.start_spurt(self.clock.seconds())  # the new spurt starts from 100 ms
        self.send(position, 500)
        self.clock.advance(0.2)
        self.assertTrue(position.mark_echoed("0:50", self.clock.seconds()))
        # Still reckoned from the spurt's start, not from the stale echo.
        self.assertAlmostEqual(position.played_ms(self.clock.seconds()), 300)

    def test_between_spurts_everything_sent_was_played(self) -> None:
        position = PlayedPosition(True, 100)
        self.assertEqual(position.played_ms(self.clock.seconds()), 0)
        position.start_spurt(self.clock.seconds())
        self.send(position, 400)
        self.assertEqual(position.played_ms(self.clock.seconds()), 0)
        position.end_spurt()
        self.assertEqual(position.played_ms(self.clock.seconds()), 400)
        position.cut()
        self.assertEqual(position.played_ms(self.clock.seconds()), 400)
