"""StreamResampler: chunk-split invariance, delay, passband, stopband, length bookkeeping."""

from __future__ import annotations

import itertools

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.resample import SUPPORTED_RATES_HZ, StreamResampler

PAIRS = [(a, b) for a, b in itertools.product(SUPPORTED_RATES_HZ, repeat=2) if a != b]
DOWN_PAIRS = [(a, b) for a, b in PAIRS if b < a]
UP_PAIRS = [(a, b) for a, b in PAIRS if b > a]


def noise(n: int, seed: int = 1, scale: float = 9000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(n) * scale, -32768, 32767).astype(np.int16)


def tone(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = 16000.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def amplitude_at(samples: np.ndarray, freq_hz: float, rate_hz: int) -> float:
    """Amplitude of the sinusoid at freq_hz in samples (least squares fit of sin and cos)."""
    t = np.arange(len(samples)) / rate_hz
    basis = np.stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, samples.astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def run_in_chunks(resampler: StreamResampler, samples: np.ndarray, cuts: list[int]) -> np.ndarray:
    return np.concatenate([resampler.process(part) for part in np.split(samples, cuts)])


class ChunkSplitTests(SynchronousTestCase):
    """Any split of a stream resamples to the same bytes as one call on the whole stream."""

    def test_random_splits_every_pair(self) -> None:
        rng = np.random.default_rng(7)
        for src, dst in PAIRS:
            x = noise(src // 4 + 37, seed=src + dst)  # 250 ms and a ragged tail
            whole = StreamResampler(src, dst).process(x).tobytes()
            for _ in range(4):
                cuts = sorted(rng.integers(0, len(x), size=rng.integers(1, 40)).tolist())
                got = run_in_chunks(StreamResampler(src, dst), x, cuts).tobytes()
                self.assertEqual(got, whole, f"{src}->{dst} split at {cuts}")

    def test_sample_by_sample(self) -> None:
        for src, dst in [(8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]:
            x = noise(300, seed=3)
            whole = StreamResampler(src, dst).process(x).tobytes()
            got = run_in_chunks(StreamResampler(src, dst), x, list(range(1, len(x))))
            self.assertEqual(got.tobytes(), whole, f"{src}->{dst}")

    def test_chunks_larger_than_the_internal_block(self) -> None:
        # Large bursts (a backend's audio delta) are filtered in internal blocks.
        for src, dst in [(24000, 8000), (8000, 48000), (48000, 16000)]:
            x = noise(5000, seed=5)
            whole = StreamResampler(src, dst).process(x).tobytes()
            got = run_in_chunks(StreamResampler(src, dst), x, [1, 1500, 1501, 4000])
            self.assertEqual(got.tobytes(), whole, f"{src}->{dst}")

    def test_empty_chunk_changes_nothing(self) -> None:
        x = noise(200)
        whole = StreamResampler(16000, 24000).process(x).tobytes()
        r = StreamResampler(16000, 24000)
        parts = [r.process(x[:77]), r.process(x[:0]), r.process(x[77:])]
        self.assertEqual(parts[1].size, 0)
        self.assertEqual(np.concatenate(parts).tobytes(), whole)


class LengthTests(SynchronousTestCase):
    def test_whole_milliseconds_give_exact_lengths(self) -> None:
        rng = np.random.default_rng(11)
        for src, dst in PAIRS:
            r = StreamResampler(src, dst)
            total_in = total_out = 0
            for _ in range(30):
                n = int(rng.integers(1, 80)) * src // 1000  # whole milliseconds
                total_out += len(r.process(noise(n)))
                total_in += n
                self.assertEqual(total_out, total_in * dst // src, f"{src}->{dst}")

    def test_ragged_chunks_never_lose_or_invent_samples(self) -> None:
        # After n inputs, ceil(n * dst / src) outputs, whatever the chunking.
        rng = np.random.default_rng(12)
        for src, dst in PAIRS:
            r = StreamResampler(src, dst)
            total_in = total_out = 0
            for _ in range(40):
                n = int(rng.integers(0, 123))
                total_out += len(r.process(noise(n)))
                total_in += n
                self.assertEqual(total_out, -(-total_in * dst // src), f"{src}->{dst} after {total_in}")

    def test_twenty_ms_frames(self) -> None:
        r = StreamResampler(8000, 24000)
        self.assertEqual([len(r.process(noise(160))) for _ in range(3)], [480, 480, 480])
        r = StreamResampler(24000, 8000)
        self.assertEqual([len(r.process(noise(480))) for _ in range(3)], [160, 160, 160])


class DelayTests(SynchronousTestCase):
    def test_impulse_peak_is_delay_ms_and_at_most_5ms(self) -> None:
        for src, dst in PAIRS:
            r = StreamResampler(src, dst)
            self.assertGreater(r.delay_ms, 0.0)
            self.assertLessEqual(r.delay_ms, 5.0)
            x = np.zeros(src // 20, dtype=np.int16)  # 50 ms
            at = src // 100  # impulse at 10 ms
            x[at] = 20000
            y = r.process(x)
            peak_ms = np.argmax(np.abs(y)) * 1000 / dst - at * 1000 / src
            self.assertAlmostEqual(peak_ms, r.delay_ms, places=9, msg=f"{src}->{dst}")

    def test_step_crosses_half_at_delay_ms(self) -> None:
        for src, dst in PAIRS:
            r = StreamResampler(src, dst)
            # A smooth step (raised cosine from 8 to 12 ms, half-way at 10 ms): it lies in every
            # passband, so its shape survives and the half-way point is well defined at any rate.
            t_ms = np.arange(src // 20) * 1000 / src
            ramp = np.clip((t_ms - 8.0) / 4.0, 0.0, 1.0)
            x = np.rint(10000 * (1 - np.cos(np.pi * ramp))).astype(np.int16)
            y = r.process(x).astype(np.float64)
            crossing = int(np.argmax(y >= 10000))
            frac = (10000 - y[crossing - 1]) / (y[crossing] - y[crossing - 1])
            crossing_ms = (crossing - 1 + frac) * 1000 / dst - 10.0
            # (trial's assertAlmostEqual ignores delta=, hence the explicit bound.)
            self.assertLess(abs(crossing_ms - r.delay_ms), 0.1 * 1000 / dst, f"{src}->{dst}: {crossing_ms} ms")

    def test_delays(self) -> None:
        # The figures the module documents; a change here changes end-to-end latency.
        self.assertEqual(StreamResampler(8000, 24000).delay_ms, 2.125)
        self.assertEqual(StreamResampler(24000, 8000).delay_ms, 2.125)
        self.assertEqual(StreamResampler(16000, 24000).delay_ms, 1.125)
        self.assertEqual(StreamResampler(24000, 24000).delay_ms, 0.0)


class FrequencyResponseTests(SynchronousTestCase):
    def test_passband_within_half_a_db(self) -> None:
        for src, dst in PAIRS:
            low = min(src, dst)
            for freq in (300.0, 1000.0, 0.4 * low):
                r = StreamResampler(src, dst)
                y = r.process(tone(freq, src, 0.2))
                steady = y[len(y) // 4 :]  # past the filter's start-up
                gain_db = 20 * np.log10(amplitude_at(steady, freq, dst) / 16000.0)
                self.assertLess(abs(gain_db), 0.5, f"{src}->{dst} at {freq} Hz: {gain_db:.3f} dB")

    def test_downsampling_rejects_tones_above_target_nyquist(self) -> None:
        for src, dst in DOWN_PAIRS:
            # From the stopband edge (0.55 of the target rate, documented) to the source Nyquist.
            for freq in np.linspace(0.55 * dst, 0.49 * src, 5):
                y = StreamResampler(src, dst).process(tone(freq, src, 0.2))
                steady = y[len(y) // 4 :]
                # (An output rounded to all zeros is infinitely attenuated: floor the log.)
                attenuation_db = 20 * np.log10(max(rms(steady), 1e-6) / (16000.0 / np.sqrt(2)))
                self.assertLess(attenuation_db, -60.0, f"{src}->{dst} at {freq:.0f} Hz: {attenuation_db:.1f} dB")

    def test_tone_just_above_nyquist_is_attenuated(self) -> None:
        # Inside the transition band the filter still removes most of what would alias.
        y = StreamResampler(24000, 8000).process(tone(4200.0, 24000, 0.2))
        attenuation_db = 20 * np.log10(rms(y[len(y) // 4 :]) / (16000.0 / np.sqrt(2)))
        self.assertLess(attenuation_db, -10.0)

    def test_upsampling_rejects_images(self) -> None:
        for src, dst in UP_PAIRS:
            freq = 0.3 * src
            y = StreamResampler(src, dst).process(tone(freq, src, 0.2))
            steady = y[len(y) // 4 :]
            wanted = amplitude_at(steady, freq, dst)
            # Whatever is not the tone itself is image (and rounding) energy.
            t = np.arange(len(steady)) / dst
            fit = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
            coef, *_ = np.linalg.lstsq(fit, steady.astype(np.float64), rcond=None)
            residual = steady - fit @ coef
            image_db = 20 * np.log10(rms(residual) / (wanted / np.sqrt(2)))
            self.assertLess(image_db, -60.0, f"{src}->{dst}: images at {image_db:.1f} dB")

    def test_full_scale_clips_rather_than_wraps(self) -> None:
        # A full-scale square wave overshoots (Gibbs); int16 wrap-around would flip signs.
        x = np.where(np.sin(2 * np.pi * 100 * np.arange(2400) / 24000) >= 0, 32767, -32768).astype(np.int16)
        y = StreamResampler(24000, 8000).process(x)
        self.assertEqual(int(y.max()), 32767)
        self.assertEqual(int(y.min()), -32768)
        self.assertLess(int(np.abs(np.diff(y.astype(np.int32))).max()), 50000)


class StateTests(SynchronousTestCase):
    def test_reset_starts_a_new_stream(self) -> None:
        x = noise(500, seed=9)
        fresh = StreamResampler(16000, 24000).process(x[:211])
        r = StreamResampler(16000, 24000)
        r.process(x[:333])  # leaves history and a non-zero output phase
        r.reset()
        self.assertEqual(r.process(x[:211]).tobytes(), fresh.tobytes())

    def test_state_carries_across_calls(self) -> None:
        # Without reset the second call depends on the first (the filter history).
        x = noise(160, seed=4)
        r = StreamResampler(8000, 24000)
        r.process(noise(160, seed=5))
        self.assertNotEqual(r.process(x).tobytes(), StreamResampler(8000, 24000).process(x).tobytes())

    def test_equal_rates_are_the_identity(self) -> None:
        x = noise(100)
        r = StreamResampler(16000, 16000)
        self.assertIs(r.process(x), x)
        self.assertEqual(r.delay_ms, 0.0)
        r.reset()

    def test_unsupported_rate(self) -> None:
        self.assertRaises(ValueError, StreamResampler, 8000, 44100)
        self.assertRaises(ValueError, StreamResampler, 11025, 8000)

    def test_rejects_other_dtypes(self) -> None:
        self.assertRaises(TypeError, StreamResampler(8000, 16000).process, np.zeros(10, dtype=np.float32))
