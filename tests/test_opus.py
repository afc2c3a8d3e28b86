"""Opus wrappers: round trips through libopus, and the error when libopus is missing."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

import mediaproxy
from mediaproxy.audio import opus
from mediaproxy.audio.opus import OpusDecoder, OpusEncoder, OpusUnavailableError


def tones(rate_hz: int, seconds: float, freqs_hz: list[float], amplitude: float = 10000.0) -> np.ndarray:
    """One sine per channel, shape (samples, channels), int16."""
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return np.stack([np.rint(amplitude * np.sin(2 * np.pi * f * t)) for f in freqs_hz], axis=1).astype(np.int16)


def round_trip(pcm: np.ndarray, rate_hz: int, frame_ms: int = 20) -> tuple[np.ndarray, list[bytes]]:
    """Encodes pcm frame by frame and decodes each packet: (decoded samples, packets)."""
    channels = pcm.shape[1]
    encoder = OpusEncoder(rate_hz, channels, frame_ms)
    decoder = OpusDecoder(rate_hz, channels)
    data = pcm.astype("<i2").tobytes()
    packets = [encoder.encode(data[i : i + encoder.frame_bytes]) for i in range(0, len(data), encoder.frame_bytes)]
    decoded = b"".join(decoder.decode(packet) for packet in packets)
    return np.frombuffer(decoded, dtype="<i2").reshape(-1, channels), packets


def dominant_hz(samples: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate_hz / len(samples))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


class RoundTripTests(SynchronousTestCase):
    def test_mono_tone_48k(self) -> None:
        pcm = tones(48000, 1.0, [1000.0])
        decoded, packets = round_trip(pcm, 48000)
        self.assertEqual(decoded.shape, pcm.shape)
        # Compressed: a 20 ms packet at the default bitrate is far below 1920 bytes of PCM.
        self.assertLess(max(len(p) for p in packets), 200)
        steady = decoded[4800:, 0]  # past the codec's start-up
        self.assertLess(abs(dominant_hz(steady, 48000) - 1000.0), 5.0)
        self.assertLess(abs(20 * np.log10(rms(steady) / rms(pcm[4800:, 0]))), 1.5)

    def test_mono_tone_16k_10ms_frames(self) -> None:
        pcm = tones(16000, 0.5, [440.0])
        decoded, _ = round_trip(pcm, 16000, frame_ms=10)
        self.assertEqual(decoded.shape, pcm.shape)
        steady = decoded[1600:, 0]
        self.assertLess(abs(dominant_hz(steady, 16000) - 440.0), 5.0)
        self.assertLess(abs(20 * np.log10(rms(steady) / rms(pcm[1600:, 0]))), 1.5)

    def test_stereo_keeps_channel_order(self) -> None:
        pcm = tones(48000, 0.5, [500.0, 1500.0])
        decoded, _ = round_trip(pcm, 48000)
        self.assertLess(abs(dominant_hz(decoded[4800:, 0], 48000) - 500.0), 5.0)
        self.assertLess(abs(dominant_hz(decoded[4800:, 1], 48000) - 1500.0), 5.0)

    def test_conceal_gives_the_requested_duration(self) -> None:
        decoder = OpusDecoder(16000, 1)
        encoder = OpusEncoder(16000, 1, 20)
        decoder.decode(encoder.encode(tones(16000, 0.02, [300.0]).tobytes()))
        self.assertEqual(len(decoder.conceal(20)), 640)
        self.assertRaises(ValueError, decoder.conceal, 3)

    def test_reset(self) -> None:
        pcm = tones(16000, 0.06, [300.0]).astype("<i2").tobytes()
        encoder = OpusEncoder(16000, 1, 20)
        first = [encoder.encode(pcm[i : i + 640]) for i in range(0, len(pcm), 640)]
        encoder.reset()
        again = [encoder.encode(pcm[i : i + 640]) for i in range(0, len(pcm), 640)]
        self.assertEqual(again, first)
        OpusDecoder(16000, 1).reset()


class ValidationTests(SynchronousTestCase):
    def test_frame_size_enforced(self) -> None:
        encoder = OpusEncoder(48000, 1, 20)
        self.assertEqual(encoder.frame_bytes, 1920)
        self.assertRaises(ValueError, encoder.encode, b"\x00" * 1918)

    def test_bad_parameters(self) -> None:
        self.assertRaises(ValueError, OpusEncoder, 44100, 1, 20)
        self.assertRaises(ValueError, OpusEncoder, 48000, 3, 20)
        self.assertRaises(ValueError, OpusEncoder, 48000, 1, 30)
        self.assertRaises(ValueError, OpusDecoder, 22050, 1)

    def test_corrupt_and_empty_packets_are_value_errors(self) -> None:
        decoder = OpusDecoder(48000, 1)
        self.assertRaises(ValueError, decoder.decode, b"\xff\xff\xff")
        self.assertRaises(ValueError, decoder.decode, b"")


class LazyLoadingTests(SynchronousTestCase):
    def _forget_opuslib(self) -> None:
        """Makes the next Opus codec import opuslib afresh; restores the real one afterwards."""
        saved = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "opuslib"}

        def restore() -> None:
            for name in [n for n in sys.modules if n.split(".")[0] == "opuslib"]:
                del sys.modules[name]
            sys.modules.update(saved)

        for name in saved:
            del sys.modules[name]
        self.addCleanup(restore)
        self.patch(opus, "_opuslib", None)

    def test_missing_libopus_names_the_package(self) -> None:
        self._forget_opuslib()
        # What a host without libopus0 looks like to opuslib: ctypes finds no library.
        self.patch(ctypes.util, "find_library", lambda name: None)
        for make in (lambda: OpusEncoder(48000, 1, 20), lambda: OpusDecoder(48000, 1)):
            error = self.assertRaises(OpusUnavailableError, make)
            self.assertIn("libopus0", str(error))
            self.assertIn("Could not find Opus library", str(error))

    def test_missing_opuslib_package(self) -> None:
        self._forget_opuslib()
        sys.modules["opuslib"] = None  # type: ignore[assignment]  # makes `import opuslib` fail
        error = self.assertRaises(OpusUnavailableError, OpusDecoder, 48000, 1)
        self.assertIn("opuslib", str(error))

    def test_loads_again_once_available(self) -> None:
        # A failed load is not cached: once the library is there, codecs work.
        self._forget_opuslib()
        real_find_library = ctypes.util.find_library
        ctypes.util.find_library = lambda name: None
        try:
            self.assertRaises(OpusUnavailableError, OpusDecoder, 48000, 1)
        finally:
            ctypes.util.find_library = real_find_library
        self.assertEqual(len(OpusDecoder(8000, 1).conceal(10)), 160)

    def test_importing_the_package_does_not_load_opuslib(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(mediaproxy.__file__)))
        code = "import sys, mediaproxy.audio, mediaproxy.audio.opus; sys.exit(3 if 'opuslib' in sys.modules else 0)"
        self.assertEqual(subprocess.call([sys.executable, "-c", code], cwd=root), 0)
