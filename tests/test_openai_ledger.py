"""Unit tests of the OpenAI Realtime per-item bookkeeping (no wire events: the dialect's tests
cover how the ledger's answers become messages)."""

from __future__ import annotations

from twisted.trial import unittest

from mediaproxy.backends.openai_ledger import Cut, RealtimeLedger, Truncation

MULAW_BYTES_PER_MS = 8


class AudioTests(unittest.TestCase):
    def test_audio_is_counted_and_played(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        self.assertTrue(ledger.audio_arrived("i1", "r1", 0, 800))
        self.assertTrue(ledger.audio_arrived("i1", "r1", 0, 800))
        self.assertEqual(ledger.unfinished_items(), ["i1"])
        self.assertEqual(ledger.cut_item("i1", 5000), Cut("r1", Truncation("i1", 0, 200)))

    def test_done_once_and_not_for_unknown_items(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 8)
        self.assertTrue(ledger.audio_done("i1"))
        self.assertFalse(ledger.audio_done("i1"))
        self.assertFalse(ledger.audio_done("never_seen"))
        self.assertEqual(ledger.unfinished_items(), [])

    def test_response_finished_closes_its_unfinished_items_only(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        for item, response in (("a", "r1"), ("b", "r1"), ("c", "r2")):
            ledger.audio_arrived(item, response, 0, 8)
        ledger.audio_done("a")
        self.assertEqual(ledger.response_finished("r1"), ["b"])
        self.assertEqual(ledger.unfinished_items(), ["c"])
        self.assertEqual(ledger.response_finished("r1"), [])

    def test_memory_is_bounded(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS, remember=3)
        for n in range(10):
            ledger.audio_arrived(f"i{n}", f"r{n}", 0, 8)
            ledger.cut_response(f"x{n}")
        self.assertEqual(ledger.unfinished_items(), ["i7", "i8", "i9"])
        self.assertIsNone(ledger.cut_item("i0", 1))  # forgotten: like an earlier connection's
        self.assertTrue(ledger.cut_response("x0"))  # forgotten too, so cut afresh
        self.assertFalse(ledger.cut_response("x9"))


class BargeInTests(unittest.TestCase):
    def test_truncate_at_min_of_played_and_received(self) -> None:
        for played, expected in ((420.7, 420), (1000, 1000), (1500, 1000)):
            ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
            ledger.audio_arrived("i1", "r1", 2, 8000)  # 1000 ms
            self.assertEqual(ledger.cut_item("i1", played), Cut("r1", Truncation("i1", 2, expected)), played)

    def test_no_truncate_when_nothing_heard(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 8000)
        self.assertEqual(ledger.cut_item("i1", 0.6), Cut("r1", None))

    def test_no_truncate_when_the_whole_finished_item_was_heard(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 4000)
        ledger.audio_done("i1")
        self.assertEqual(ledger.cut_item("i1", 500), Cut("r1", None))

    def test_all_received_heard_but_more_coming_truncates(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 4000)
        self.assertEqual(ledger.cut_item("i1", 500), Cut("r1", Truncation("i1", 0, 500)))

    def test_cut_once_and_unknown_items_ignored(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 800)
        self.assertIsNotNone(ledger.cut_item("i1", 50))
        self.assertIsNone(ledger.cut_item("i1", 60))
        self.assertIsNone(ledger.cut_item("other", 60))

    def test_late_audio_of_cut_item_and_response_dropped_and_counted(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 800)
        ledger.cut_item("i1", 50)
        self.assertFalse(ledger.audio_arrived("i1", "r1", 0, 160))
        self.assertTrue(ledger.cut_response("r1"))
        self.assertFalse(ledger.audio_arrived("i2", "r1", 0, 160))  # a later item of the cut response
        self.assertTrue(ledger.audio_arrived("i3", "r2", 0, 8))
        self.assertEqual(ledger.late_audio_bytes_dropped, 320)
        self.assertEqual(ledger.unfinished_items(), ["i3"])  # i2 was never remembered

    def test_is_dropped(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 800)
        ledger.audio_arrived("i2", "r2", 0, 800)
        ledger.cut_item("i1", 50)
        ledger.cut_response("r3")
        self.assertTrue(ledger.is_dropped("i1", "r1"))
        self.assertTrue(ledger.is_dropped("unknown", "r3"))
        self.assertFalse(ledger.is_dropped("i2", "r2"))
        self.assertFalse(ledger.is_dropped("unknown", None))

    def test_interrupted_item_is_not_reported_finished(self) -> None:
        ledger = RealtimeLedger(MULAW_BYTES_PER_MS)
        ledger.audio_arrived("i1", "r1", 0, 800)
        ledger.cut_item("i1", 50)
        self.assertFalse(ledger.audio_done("i1"))
        self.assertEqual(ledger.response_finished("r1"), [])
        self.assertEqual(ledger.unfinished_items(), [])
