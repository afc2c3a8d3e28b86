"""TwilioPlayer on a task.Clock: marks echoed when playback reaches them, clear, underrun."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mediaproxy.sim.twilio_player import TwilioPlayer

FRAME = bytes(range(160))  # 20 ms of µ-law


class TwilioPlayerTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.echoes: list[tuple[float, str]] = []
        self.player = TwilioPlayer(self.clock, lambda name: self.echoes.append((self.clock.seconds(), name)),
                                   keep_audio=True)

    def test_mark_echoed_when_playback_reaches_it(self) -> None:
        self.player.media(FRAME)
        self.player.media(FRAME)
        self.player.mark("a")
        self.player.media(FRAME)
        self.player.mark("b")
        self.clock.advance(0.039)
        self.assertEqual(self.echoes, [])
        self.assertAlmostEqual(self.player.played_ms, 39.0)
        self.clock.advance(0.001)
        self.assertEqual([name for _, name in self.echoes], ["a"])
        self.clock.advance(0.020)
        self.assertEqual(self.echoes, [(0.040, "a"), (0.060, "b")])
        self.assertEqual(self.player.heard(), FRAME * 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_mark_with_nothing_queued_is_echoed_at_once(self) -> None:
        self.player.mark("now")
        self.assertEqual(self.echoes, [(0.0, "now")])

    def test_clear_echoes_every_pending_mark_at_once(self) -> None:
        for name in ("a", "b", "c"):
            self.player.media(FRAME)
            self.player.mark(name)
        self.clock.advance(0.020)
        self.clock.advance(0.010)
        self.assertEqual([name for _, name in self.echoes], ["a"])
        self.player.clear()
        self.assertEqual(self.echoes, [(0.020, "a"), (0.030, "b"), (0.030, "c")])
        self.assertEqual(self.player.queued_ms, 0.0)
        self.assertAlmostEqual(self.player.played_ms, 30.0)
        self.assertAlmostEqual(self.player.cleared_ms, 30.0)
        self.assertAlmostEqual(self.player.position_ms, 60.0)
        self.assertEqual(self.player.heard(), (FRAME * 3)[:240])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # What comes after the clear plays from now.
        self.player.media(FRAME)
        self.player.mark("d")
        self.clock.advance(0.020)
        self.assertEqual(self.echoes[-1], (0.050, "d"))

    def test_underrun_when_nothing_is_queued(self) -> None:
        self.player.media(FRAME)
        self.clock.advance(0.020)
        self.assertEqual(self.player.underruns, 0)
        self.player.media(FRAME)  # just in time: no gap
        self.assertEqual(self.player.underruns, 0)
        self.clock.advance(0.025)
        self.assertEqual(self.player.queued_ms, 0.0)
        self.player.media(FRAME)  # 5 ms late: the caller heard a gap
        self.assertEqual(self.player.underruns, 1)
        self.assertAlmostEqual(self.player.queued_ms, 20.0)

    def test_stop_cancels_pending_echoes(self) -> None:
        self.player.media(FRAME)
        self.player.mark("never")
        self.player.stop()
        self.clock.advance(1)
        self.assertEqual(self.echoes, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
