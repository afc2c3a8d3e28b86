"""EnergyDetector, byte-exactly: onset, end of turn, maximum turn, chunk-split invariance."""

from __future__ import annotations

import random

import numpy as np
from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import ALAW_8K, L16_24K, MULAW_8K, AudioFormat
from mediaproxy.audio.g711 import alaw_encode, ulaw_encode
from mediaproxy.audio.vad import EnergyDetector, Transition


def tone(fmt: AudioFormat, rms_dbfs: float, ms: int = 20) -> bytes:
    """``ms`` of a full-period 400 Hz sine at ``rms_dbfs`` RMS in ``fmt``."""
    n = fmt.rate_hz * ms // 1000
    amplitude = 32768.0 * 10 ** (rms_dbfs / 20.0) * np.sqrt(2)
    samples = np.round(np.sin(2 * np.pi * 400 * np.arange(n) / fmt.rate_hz) * amplitude).astype(np.int16)
    if fmt.encoding == "pcmu":
        return ulaw_encode(samples)
    if fmt.encoding == "pcma":
        return alaw_encode(samples)
    return bytes(samples.astype("<i2").tobytes())


def kinds(transitions: list[Transition]) -> list[tuple[bool, int]]:
    return [(t.started, t.frame) for t in transitions]


class EnergyDetectorTests(TestCase):
    def test_threshold(self) -> None:
        for fmt in (MULAW_8K, ALAW_8K, L16_24K):
            detector = EnergyDetector(fmt, threshold_dbfs=-40.0)
            self.assertTrue(detector.is_loud(tone(fmt, -30.0)), fmt)
            self.assertFalse(detector.is_loud(tone(fmt, -50.0)), fmt)
            self.assertFalse(detector.is_loud(fmt.silence(detector.frame_bytes)), fmt)

    def test_energy_is_the_sum_of_squares(self) -> None:
        detector = EnergyDetector(L16_24K)
        frame = np.array([3, -4] * 240, dtype="<i2").tobytes()
        self.assertEqual(detector.energy(frame), 25 * 240)
        # µ-law 0x00/0x80 decode to -32124/+32124.
        self.assertEqual(EnergyDetector(MULAW_8K).energy(b"\x00\x80"), 2 * 32124**2)

    def test_onset_after_exactly_n_loud_frames(self) -> None:
        for onset in (1, 2, 3):
            detector = EnergyDetector(MULAW_8K, onset_frames=onset)
            loud, quiet = tone(MULAW_8K, -20.0), MULAW_8K.silence(160)
            # A run one frame short of the onset, broken by a quiet frame, is not speech.
            self.assertEqual(detector.feed(loud * (onset - 1) + quiet), [])
            [start] = detector.feed(loud * onset)
            self.assertEqual((start.started, start.frame, start.turn_start_frame), (True, 2 * onset - 1, onset))
            self.assertEqual(start.start_ms, onset * 20)
            self.assertTrue(detector.speaking)

    def test_stop_after_exactly_silence_ms_of_quiet(self) -> None:
        loud, quiet = tone(MULAW_8K, -20.0), MULAW_8K.silence(160)
        detector = EnergyDetector(MULAW_8K, onset_frames=2, silence_ms=600)
        self.assertEqual(kinds(detector.feed(loud * 5)), [(True, 1)])
        # 29 quiet frames, a loud one (the count restarts), then 29 more: still talking.
        self.assertEqual(detector.feed(quiet * 29 + loud + quiet * 29), [])
        [stop] = detector.feed(quiet)
        self.assertEqual((stop.started, stop.frame, stop.quiet_frames), (False, 64, 30))
        self.assertEqual(stop.turn_frames, 65)  # onset included
        self.assertEqual(stop.speech_end_frame, 35)
        self.assertEqual(stop.end_ms, 65 * 20)
        self.assertFalse(detector.speaking)
        self.assertFalse(detector.in_turn)

    def test_silence_rounds_down_to_whole_frames(self) -> None:
        self.assertEqual(EnergyDetector(MULAW_8K, silence_ms=250).silence_frames, 12)
        self.assertEqual(EnergyDetector(MULAW_8K, silence_ms=5).silence_frames, 1)

    def test_max_turn_cuts_a_long_turn(self) -> None:
        loud = tone(MULAW_8K, -20.0)
        detector = EnergyDetector(MULAW_8K, max_turn_ms=1010)  # rounded up: 51 frames
        transitions = detector.feed(loud * 103)
        self.assertEqual(kinds(transitions), [(True, 1), (False, 50), (True, 52), (False, 101)])
        self.assertEqual(transitions[1].quiet_frames, 0)
        self.assertEqual(transitions[1].turn_frames, 51)

    def test_in_turn_covers_the_onset(self) -> None:
        detector = EnergyDetector(MULAW_8K, onset_frames=3)
        loud, quiet = tone(MULAW_8K, -20.0), MULAW_8K.silence(160)
        detector.analyse(loud)
        self.assertTrue(detector.in_turn)
        self.assertFalse(detector.speaking)
        detector.analyse(quiet)
        self.assertFalse(detector.in_turn)

    def test_any_split_gives_the_same_transitions(self) -> None:
        rnd = random.Random(7)
        for fmt in (MULAW_8K, L16_24K):
            # Runs of one level, of 1 to 15 frames: turns, broken onsets and pauses of any length.
            frames = [frame for _ in range(80)
                      for frame in [tone(fmt, rnd.choice([-60.0, -45.0, -20.0, -10.0]))] * rnd.randint(1, 15)]
            audio = b"".join(frames)
            reference = EnergyDetector(fmt, silence_ms=200)
            expected = [t for f in frames for t in [reference.analyse(f)] if t is not None]
            self.assertGreater(len(expected), 10)
            for _ in range(5):
                detector = EnergyDetector(fmt, silence_ms=200)
                got: list[Transition] = []
                offset = 0
                while offset < len(audio):
                    size = rnd.randint(1, 3 * detector.frame_bytes)
                    got += detector.feed(audio[offset : offset + size])
                    offset += size
                self.assertEqual(got, expected, fmt)
                self.assertEqual(detector.frames, len(frames))
                self.assertEqual(detector.feed(b""), [])

    def test_reset_starts_a_new_stream(self) -> None:
        detector = EnergyDetector(MULAW_8K)
        detector.feed(tone(MULAW_8K, -20.0) * 3 + b"\x00")
        detector.reset()
        self.assertEqual((detector.frames, detector.speaking, detector.in_turn), (0, False, False))
        self.assertEqual(kinds(detector.feed(tone(MULAW_8K, -20.0) * 2)), [(True, 1)])
