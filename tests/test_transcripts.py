"""Tests for the neutral transcript helpers (mediaproxy.transcripts): what of a bot line the
caller heard before a barge-in."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.transcripts import heard_part


class HeardPartTests(SynchronousTestCase):
    def test_cut_in_proportion_back_to_a_word_boundary(self) -> None:
        text = "Your order ships on Monday morning."
        self.assertEqual(heard_part(text, 500, 1000), "Your order ships")  # 17 of 35 chars: mid "on"
        self.assertEqual(heard_part(text, 100, 1000), "")  # inside the first word: nothing said
        self.assertEqual(heard_part("one two", 3, 7), "one")  # the cut falls on the space itself
        self.assertEqual(heard_part("one two", 2, 7), "")  # inside "one": not said yet

    def test_all_or_nothing_at_the_ends(self) -> None:
        self.assertEqual(heard_part("Hello there.", 1000, 1000), "Hello there.")
        self.assertEqual(heard_part("Hello there.", 5000, 1000), "Hello there.")
        self.assertEqual(heard_part("Hello there.", 0, 1000), "")
        self.assertEqual(heard_part("Hello there.", 500, 0), "")
