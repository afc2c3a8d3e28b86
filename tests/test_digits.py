"""DigitCollector on a task.Clock: one entry per PIN, not one model turn per key."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.calls.digits import DigitCollector


class DigitCollectorTests(SynchronousTestCase):
    def make(self, **options: object) -> tuple[Clock, DigitCollector, list[str]]:
        clock, entries = Clock(), []
        return clock, DigitCollector(clock, entries.append, **options), entries  # type: ignore[arg-type]

    def test_terminator_ends_the_entry_and_is_not_passed_on(self) -> None:
        clock, digits, entries = self.make()
        for key in "1234":
            digits.feed(key)
            clock.advance(1.0)
        self.assertEqual(entries, [])
        digits.feed("#")
        self.assertEqual(entries, ["1234"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_inter_digit_timeout_counts_from_the_last_key(self) -> None:
        clock, digits, entries = self.make(timeout_ms=2000)
        digits.feed("4")
        clock.advance(1.9)
        digits.feed("2")
        clock.advance(1.9)
        self.assertEqual(entries, [])
        clock.advance(0.1)
        self.assertEqual(entries, ["42"])

    def test_max_digits(self) -> None:
        clock, digits, entries = self.make(max_digits=3)
        digits.feed("12345")
        self.assertEqual(entries, ["123"])
        self.assertEqual(digits.pending, "45")
        clock.advance(3.0)
        self.assertEqual(entries, ["123", "45"])

    def test_no_terminator_and_bad_keys(self) -> None:
        clock, digits, entries = self.make(terminator="")
        digits.feed("9#x*")
        clock.advance(3.0)
        self.assertEqual(entries, ["9#*"])

    def test_terminator_alone_delivers_nothing(self) -> None:
        clock, digits, entries = self.make()
        digits.feed("#")
        clock.advance(5.0)
        self.assertEqual(entries, [])

    def test_stop_leaves_no_timer(self) -> None:
        clock, digits, entries = self.make()
        digits.feed("12")
        digits.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(entries, [])
