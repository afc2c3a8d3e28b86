"""Clock-driven tests of the shared redial policy (mediaproxy.backends.reconnect)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from mediaproxy.backends.reconnect import BackoffPolicy, HandshakeRejected, Redialer


class BackoffPolicyTests(unittest.TestCase):
    def test_exponential_with_cap(self) -> None:
        policy = BackoffPolicy(initial_s=0.5, max_s=3.0, multiplier=2.0, jitter=0.0)
        self.assertEqual([policy.delay_s(n, 0.5) for n in range(1, 6)], [0.5, 1.0, 2.0, 3.0, 3.0])

    def test_jitter_spreads_both_ways(self) -> None:
        policy = BackoffPolicy(initial_s=1.0, jitter=0.2)
        self.assertAlmostEqual(policy.delay_s(1, 0.0), 0.8)
        self.assertAlmostEqual(policy.delay_s(1, 0.5), 1.0)
        self.assertAlmostEqual(policy.delay_s(1, 0.999999), 1.2, places=5)


class DialScript:
    """A dial function whose attempts the test resolves by hand."""

    def __init__(self) -> None:
        self.attempts: list[Deferred[str]] = []
        self.cancelled = 0

    def __call__(self) -> Deferred[str]:
        def cancel(d: Deferred[str]) -> None:
            self.cancelled += 1

        d: Deferred[str] = Deferred(cancel)
        self.attempts.append(d)
        return d


class RedialerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dial = DialScript()
        self.up: list[str] = []
        self.gave_up: list[str] = []
        self.redials = 0

    def redialer(self, **policy: float) -> Redialer[str]:
        def count() -> None:
            self.redials += 1

        def fatal(failure: Failure) -> str | None:
            return "bad key" if failure.check(HandshakeRejected) else None

        defaults = {"initial_s": 1.0, "max_s": 4.0, "jitter": 0.0, "max_attempts": 3}
        defaults.update(policy)
        r: Redialer[str] = Redialer(
            self.clock, self.dial, BackoffPolicy(**defaults), timeout_s=10.0,  # type: ignore[arg-type]
            on_up=self.up.append, on_give_up=self.gave_up.append, is_fatal=fatal, on_redial=count,
            random=lambda: 0.5,
        )
        r.start()
        return r

    def test_first_dial_is_immediate(self) -> None:
        self.redialer()
        self.assertEqual(len(self.dial.attempts), 1)
        self.dial.attempts[0].callback("conn1")
        self.assertEqual(self.up, ["conn1"])
        self.assertEqual(self.redials, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backoff_after_failures_then_give_up(self) -> None:
        self.redialer()
        self.dial.attempts[0].errback(ConnectionRefusedError("refused"))
        self.clock.advance(0.999)
        self.assertEqual(len(self.dial.attempts), 1)
        self.clock.advance(0.001)
        self.assertEqual(len(self.dial.attempts), 2)
        self.dial.attempts[1].errback(ConnectionRefusedError("refused"))
        self.clock.advance(1.999)
        self.assertEqual(len(self.dial.attempts), 2)
        self.clock.advance(0.001)
        self.assertEqual(len(self.dial.attempts), 3)
        self.dial.attempts[2].errback(ConnectionRefusedError("refused"))
        self.clock.advance(4.0)
        self.dial.attempts[3].errback(ConnectionRefusedError("refused"))
        self.assertEqual(len(self.gave_up), 1)
        self.assertIn("after 3 attempts", self.gave_up[0])
        self.assertEqual(self.redials, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fatal_failure_gives_up_at_once(self) -> None:
        self.redialer()
        self.dial.attempts[0].errback(HandshakeRejected(401, "Unauthorized"))
        self.assertEqual(self.gave_up, ["bad key"])
        self.clock.advance(100)
        self.assertEqual(len(self.dial.attempts), 1)

    def test_attempt_timeout_cancels_and_retries(self) -> None:
        self.redialer()
        self.clock.advance(10.0)
        self.assertEqual(self.dial.cancelled, 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.dial.attempts), 2)
        self.dial.attempts[1].callback("conn2")
        self.assertEqual(self.up, ["conn2"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lost_connection_redials_with_backoff(self) -> None:
        r = self.redialer()
        self.dial.attempts[0].callback("conn1")
        r.lost("dropped")
        self.assertEqual(len(self.dial.attempts), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.dial.attempts), 2)
        self.dial.attempts[1].callback("conn2")
        self.assertEqual(self.up, ["conn1", "conn2"])
        self.assertEqual(self.redials, 1)

    def test_expected_end_redials_at_once(self) -> None:
        r = self.redialer()
        self.dial.attempts[0].callback("conn1")
        r.lost("session expired", expected=True)
        self.clock.advance(0)
        self.assertEqual(len(self.dial.attempts), 2)

    def test_flapping_connection_does_not_reset_the_count(self) -> None:
        r = self.redialer(max_attempts=2, stable_s=10.0)
        for n in range(2):
            self.dial.attempts[-1].callback(f"conn{n}")
            self.clock.advance(1.0)  # up only briefly
            r.lost("dropped")
            self.clock.advance(4.0)
        self.dial.attempts[-1].callback("conn2")
        r.lost("dropped")
        self.assertEqual(len(self.gave_up), 1)

    def test_stable_connection_resets_the_count(self) -> None:
        r = self.redialer(max_attempts=1, stable_s=10.0)
        for n in range(3):
            self.dial.attempts[-1].callback(f"conn{n}")
            self.clock.advance(11.0)
            r.lost("dropped")
            self.clock.advance(1.0)
        self.assertEqual(self.gave_up, [])
        self.assertEqual(len(self.dial.attempts), 4)

    def test_stop_cancels_pending_attempt_and_timers(self) -> None:
        r = self.redialer()
        r.stop()
        self.assertEqual(self.dial.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.gave_up, [])
        r.lost("late")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_during_backoff(self) -> None:
        r = self.redialer()
        self.dial.attempts[0].errback(ConnectionRefusedError("refused"))
        r.stop()
        self.clock.advance(100)
        self.assertEqual(len(self.dial.attempts), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
