"""The bounded hold for caller audio before a backend is ready."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.backends.early_audio import EarlyAudio


class EarlyAudioTests(SynchronousTestCase):
    def test_keeps_everything_within_the_bound(self) -> None:
        held = EarlyAudio(480)
        self.assertEqual(held.append(b"a" * 160), 0)
        self.assertEqual(held.append(b"b" * 160), 0)
        self.assertEqual(len(held), 320)
        self.assertEqual(held.take(), b"a" * 160 + b"b" * 160)
        self.assertEqual(len(held), 0)
        self.assertEqual(held.take(), b"")

    def test_drops_the_oldest_and_reports_how_much(self) -> None:
        held = EarlyAudio(320)
        for chunk in (b"a" * 160, b"b" * 160, b"c" * 160):
            dropped = held.append(chunk)
        self.assertEqual(dropped, 160)
        self.assertEqual(held.take(), b"b" * 160 + b"c" * 160)

    def test_a_chunk_larger_than_the_bound_keeps_its_freshest_part(self) -> None:
        held = EarlyAudio(100)
        self.assertEqual(held.append(bytes(range(250))), 150)
        self.assertEqual(held.take(), bytes(range(150, 250)))
