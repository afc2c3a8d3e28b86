"""Transcoder (format conversion for one direction of a call) and deinterleave."""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.channels import deinterleave
from mediaproxy.audio.format import ALAW_8K, L16_8K, L16_16K, L16_24K, MULAW_8K, AudioFormat
from mediaproxy.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from mediaproxy.audio.transcode import Transcoder

L16_48K = AudioFormat("l16", 48000)
PCMA_16K = AudioFormat("pcma", 16000)
STEREO_L16_8K = AudioFormat("l16", 8000, 2)
FORMATS = [MULAW_8K, ALAW_8K, L16_8K, L16_16K, L16_24K, L16_48K, PCMA_16K]

_RNG = np.random.default_rng(2)
_FREQS = _RNG.uniform(200, 3000, 20)
_PHASES = _RNG.uniform(0, 2 * np.pi, 20)


def voice_band(rate_hz: int, seconds: float, delay_ms: float = 0.0) -> np.ndarray:
    """20 tones between 200 Hz and 3 kHz (a stand-in for speech), peak 20000, float."""
    t = np.arange(int(rate_hz * seconds)) / rate_hz - delay_ms / 1000
    x = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(_FREQS, _PHASES, strict=True))
    return x / 15.0 * 20000  # fixed scale, so signals at different rates match


def snr_db(reference: np.ndarray, got: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    error = got.astype(np.float64) - reference
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum(error**2), 1e-9)))


def l16(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def from_l16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


class PassthroughTests(SynchronousTestCase):
    def test_same_format_returns_the_same_object(self) -> None:
        t = Transcoder(MULAW_8K, MULAW_8K)
        self.assertTrue(t.passthrough)
        data = bytes(range(160))
        self.assertIs(t.convert(data), data)
        self.assertEqual(t.delay_ms, 0.0)

    def test_equal_but_distinct_format_objects(self) -> None:
        data = b"\x01\x02\x03"  # odd-length: pass-through does not interpret the bytes at all
        self.assertIs(Transcoder(AudioFormat("l16", 24000), L16_24K).convert(data), data)

    def test_stereo_passes_through(self) -> None:
        data = b"\x00" * 64
        self.assertIs(Transcoder(STEREO_L16_8K, STEREO_L16_8K).convert(data), data)

    def test_different_formats_are_not_passthrough(self) -> None:
        self.assertFalse(Transcoder(MULAW_8K, ALAW_8K).passthrough)
        self.assertFalse(Transcoder(L16_16K, L16_24K).passthrough)


class ConversionTests(SynchronousTestCase):
    def test_mulaw_8k_to_l16_24k_and_back(self) -> None:
        source = np.rint(voice_band(8000, 1.0)).astype(np.int16)
        mulaw = ulaw_encode(source)
        up = Transcoder(MULAW_8K, L16_24K)
        down = Transcoder(L16_24K, MULAW_8K)
        wide = up.convert(mulaw)
        back = down.convert(wide)
        self.assertEqual((len(wide), len(back)), (48000, 8000))

        # The 24 kHz leg is the same signal, delayed by the resampler: only µ-law's own
        # quantisation noise (about 38 dB below a loud signal) separates them.
        expected_wide = voice_band(24000, 1.0, delay_ms=up.delay_ms)
        self.assertGreater(snr_db(expected_wide[2400:-2400], from_l16(wide)[2400:-2400]), 30.0)

        # Back at 8 kHz, after both delays (34 samples), the codes decode to nearly the same audio.
        lag = round((up.delay_ms + down.delay_ms) * 8)
        self.assertEqual(lag, 34)
        reference = ulaw_decode(mulaw)[800:-800]
        got = ulaw_decode(back)[800 + lag : len(back) - 800 + lag]
        self.assertGreater(snr_db(reference, got), 45.0)

    def test_chunking_does_not_change_the_output(self) -> None:
        rng = np.random.default_rng(3)
        source = l16(voice_band(24000, 0.3))
        for dst in (MULAW_8K, ALAW_8K, L16_16K, L16_48K):
            whole = Transcoder(L16_24K, dst).convert(source)
            t = Transcoder(L16_24K, dst)
            cuts = sorted(rng.integers(0, len(source), 25).tolist())  # odd and even byte offsets
            pieces = [source[a:b] for a, b in zip([0, *cuts], [*cuts, len(source)], strict=True)]
            self.assertEqual(b"".join(t.convert(p) for p in pieces), whole, str(dst))

    def test_odd_trailing_byte_is_carried_over(self) -> None:
        t = Transcoder(L16_8K, MULAW_8K)
        sample = np.array([1000], dtype="<i2").tobytes()  # b"\xe8\x03"
        self.assertEqual(t.convert(sample[:1]), b"")
        self.assertEqual(t.convert(sample[1:]), ulaw_encode(np.array([1000], dtype=np.int16)))

    def test_odd_byte_carry_through_a_resampler(self) -> None:
        source = l16(voice_band(16000, 0.05))
        whole = Transcoder(L16_16K, L16_8K).convert(source)
        t = Transcoder(L16_16K, L16_8K)
        got = b"".join(t.convert(source[i : i + 3]) for i in range(0, len(source), 3))
        self.assertEqual(got, whole)

    def test_l16_is_little_endian(self) -> None:
        t = Transcoder(L16_8K, MULAW_8K)
        self.assertEqual(t.convert(b"\x00\x01"), ulaw_encode(np.array([256], dtype=np.int16)))
        back = Transcoder(MULAW_8K, L16_8K).convert(b"\x80")  # +32124 = 0x7D7C
        self.assertEqual(back, b"\x7c\x7d")

    def test_ulaw_alaw_same_rate_matches_decode_encode(self) -> None:
        codes = bytes(range(256))
        self.assertEqual(Transcoder(MULAW_8K, ALAW_8K).convert(codes), alaw_encode(ulaw_decode(codes)))
        self.assertEqual(Transcoder(ALAW_8K, MULAW_8K).convert(codes), ulaw_encode(alaw_decode(codes)))
        self.assertEqual(Transcoder(MULAW_8K, ALAW_8K).delay_ms, 0.0)

    def test_silence_stays_silence(self) -> None:
        self.assertEqual(Transcoder(MULAW_8K, ALAW_8K).convert(b"\xff" * 160), b"\xd5" * 160)
        self.assertEqual(Transcoder(MULAW_8K, L16_24K).convert(b"\xff" * 160), b"\x00" * 960)
        self.assertEqual(Transcoder(L16_24K, MULAW_8K).convert(b"\x00" * 960), b"\xff" * 160)

    def test_twenty_ms_in_twenty_ms_out_for_every_pair(self) -> None:
        for src in FORMATS:
            for dst in FORMATS:
                t = Transcoder(src, dst)
                for _ in range(3):
                    out = t.convert(src.silence(src.bytes_for_ms(20)))
                    self.assertEqual(len(out), dst.bytes_for_ms(20), f"{src} -> {dst}")

    def test_delay_is_the_resamplers(self) -> None:
        self.assertEqual(Transcoder(MULAW_8K, L16_24K).delay_ms, 2.125)
        self.assertEqual(Transcoder(MULAW_8K, L16_8K).delay_ms, 0.0)
        for src in FORMATS:
            for dst in FORMATS:
                self.assertLessEqual(Transcoder(src, dst).delay_ms, 5.0)

    def test_empty_input(self) -> None:
        for src, dst in ((MULAW_8K, L16_24K), (L16_24K, MULAW_8K), (MULAW_8K, ALAW_8K)):
            self.assertEqual(Transcoder(src, dst).convert(b""), b"")


class ChannelsAndStateTests(SynchronousTestCase):
    def test_stereo_rejected(self) -> None:
        self.assertRaises(ValueError, Transcoder, STEREO_L16_8K, L16_16K)
        self.assertRaises(ValueError, Transcoder, L16_8K, STEREO_L16_8K)
        self.assertRaises(ValueError, Transcoder, STEREO_L16_8K, AudioFormat("l16", 8000, 1))

    def test_reset_starts_a_new_stream(self) -> None:
        source = l16(voice_band(24000, 0.1))
        fresh = Transcoder(L16_24K, MULAW_8K).convert(source[:961])
        t = Transcoder(L16_24K, MULAW_8K)
        t.convert(source[:1001])  # leaves resampler history and an odd byte
        t.reset()
        self.assertEqual(t.convert(source[:961]), fresh)

    def test_reset_drops_a_carried_odd_byte(self) -> None:
        t = Transcoder(L16_8K, MULAW_8K)
        self.assertEqual(t.convert(b"\x00"), b"")
        t.reset()
        # Read alone, these two bytes are 16384; after the stale byte they would be 0 + half.
        self.assertEqual(t.convert(b"\x00\x40"), ulaw_encode(np.array([16384], dtype=np.int16)))


class DeinterleaveTests(SynchronousTestCase):
    def test_stereo_l16(self) -> None:
        frames = np.array([[1, -1], [2, -2], [300, -300]], dtype="<i2").tobytes()
        left, right = deinterleave(frames, 2, 2)
        self.assertEqual(left, np.array([1, 2, 300], dtype="<i2").tobytes())
        self.assertEqual(right, np.array([-1, -2, -300], dtype="<i2").tobytes())

    def test_stereo_mulaw(self) -> None:
        self.assertEqual(deinterleave(b"\x01\x02\x03\x04", 2, 1), [b"\x01\x03", b"\x02\x04"])

    def test_mono_is_returned_as_is(self) -> None:
        data = b"\x01\x02\x03"
        [only] = deinterleave(data, 1, 1)
        self.assertIs(only, data)

    def test_partial_frame_rejected(self) -> None:
        self.assertRaises(ValueError, deinterleave, b"\x00\x01\x02", 2, 2)
        self.assertRaises(ValueError, deinterleave, b"\x00", 1, 2)

    def test_empty(self) -> None:
        self.assertEqual(deinterleave(b"", 2, 2), [b"", b""])
