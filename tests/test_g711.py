"""G.711 µ-law / A-law tables: byte-exact against the reference (Python 3.11's audioop)."""

from __future__ import annotations

import hashlib

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.g711 import (
    ALAW_TO_LINEAR,
    ULAW_TO_LINEAR,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ReferenceHashTests(SynchronousTestCase):
    """The whole tables, hashed. The hashes were taken from audioop.lin2ulaw / ulaw2lin etc."""

    def test_ulaw_encode_every_sample(self) -> None:
        self.assertEqual(
            sha256(ulaw_encode(ALL_SAMPLES)), "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a"
        )

    def test_alaw_encode_every_sample(self) -> None:
        self.assertEqual(
            sha256(alaw_encode(ALL_SAMPLES)), "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b"
        )

    def test_ulaw_decode_table(self) -> None:
        self.assertEqual(
            sha256(ULAW_TO_LINEAR.tobytes()), "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
        )
        self.assertEqual(ulaw_decode(ALL_CODES).tobytes(), ULAW_TO_LINEAR.tobytes())

    def test_alaw_decode_table(self) -> None:
        self.assertEqual(
            sha256(ALAW_TO_LINEAR.tobytes()), "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174"
        )
        self.assertEqual(alaw_decode(ALL_CODES).tobytes(), ALAW_TO_LINEAR.tobytes())


class KnownValueTests(SynchronousTestCase):
    """Values fixed by G.711 itself."""

    def test_ulaw_silence(self) -> None:
        # 0xFF is +0 and 0x7F is -0; both decode to 0, and 0 encodes to 0xFF.
        self.assertEqual(ulaw_decode(b"\xff\x7f").tolist(), [0, 0])
        self.assertEqual(ulaw_encode(np.zeros(3, dtype=np.int16)), b"\xff\xff\xff")

    def test_alaw_silence(self) -> None:
        # A-law has no zero code: 0xD5 and 0x55 are +8 and -8, the smallest magnitudes.
        self.assertEqual(alaw_decode(b"\xd5\x55").tolist(), [8, -8])
        self.assertEqual(alaw_encode(np.zeros(3, dtype=np.int16)), b"\xd5\xd5\xd5")

    def test_ulaw_extremes(self) -> None:
        self.assertEqual(ulaw_decode(b"\x80\x00").tolist(), [32124, -32124])
        self.assertEqual(ulaw_encode(np.array([32767, -32768], dtype=np.int16)), b"\x80\x00")

    def test_alaw_extremes(self) -> None:
        self.assertEqual(alaw_decode(b"\xaa\x2a").tolist(), [32256, -32256])
        self.assertEqual(alaw_encode(np.array([32767, -32768], dtype=np.int16)), b"\xaa\x2a")

    def test_ulaw_first_segments(self) -> None:
        # Segment 0 steps by 8 from 0 (0xFF) to 120 (0xF0); segment 1 starts at 132 (0xEF).
        self.assertEqual(ulaw_decode(b"\xfe\xf0\xef").tolist(), [8, 120, 132])
        self.assertEqual(ulaw_decode(b"\x7e").tolist(), [-8])

    def test_alaw_first_segment(self) -> None:
        # 0xD4 = 0x81 ^ 0x55: positive, segment 0, step 1 -> 16 + 8.
        self.assertEqual(alaw_decode(b"\xd4").tolist(), [24])
        self.assertEqual(alaw_encode(np.array([-1], dtype=np.int16)), b"\x55")

    def test_encode_accepts_other_integer_arrays(self) -> None:
        self.assertEqual(ulaw_encode(np.array([0, 32767], dtype=np.int64)), b"\xff\x80")


class RoundTripTests(SynchronousTestCase):
    def test_ulaw_codes_round_trip(self) -> None:
        # Every code survives decode -> encode except -0 (0x7F), which comes back as +0 (0xFF).
        expected = bytearray(ALL_CODES)
        expected[0x7F] = 0xFF
        self.assertEqual(ulaw_encode(ulaw_decode(ALL_CODES)), bytes(expected))

    def test_alaw_codes_round_trip(self) -> None:
        self.assertEqual(alaw_encode(alaw_decode(ALL_CODES)), ALL_CODES)

    def _check_quantiser(self, encode, decode, max_error: int) -> None:  # type: ignore[no-untyped-def]
        x = ALL_SAMPLES.astype(np.int32)
        y = decode(encode(ALL_SAMPLES)).astype(np.int32)
        # Monotonic: a louder input never decodes quieter.
        self.assertTrue(np.all(np.diff(y) >= 0))
        error = np.abs(y - x)
        self.assertLessEqual(int(error.max()), max_error)
        # Companding: the error grows with the level; small signals are nearly exact.
        self.assertLessEqual(int(error[np.abs(x) < 64].max()), 8)

    def test_ulaw_quantisation_error(self) -> None:
        # Largest step is 1024; beyond 32124 the code saturates (32767 -> 32124).
        self._check_quantiser(ulaw_encode, ulaw_decode, 644)

    def test_alaw_quantisation_error(self) -> None:
        self._check_quantiser(alaw_encode, alaw_decode, 512)
