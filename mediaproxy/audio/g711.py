"""G.711 µ-law and A-law, table driven (ITU-T G.711, the same tables as Sun's g711.c).

Decoding is one 256-entry table lookup per sample; encoding one 65536-entry lookup indexed by the
16-bit sample reinterpreted as unsigned. Both tables are built once at import with numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ulaw_decode", "ulaw_encode", "alaw_decode", "alaw_encode", "ULAW_TO_LINEAR", "ALAW_TO_LINEAR"]

_BIAS = 0x84


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode_table() -> np.ndarray:
    # Sun's g711.c works on 14-bit magnitudes: arithmetic shift first, so -1 maps like +1.
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 2
    sign = np.where(pcm < 0, 0x00, 0x80)
    magnitude = np.minimum(np.abs(pcm), 8159) + 0x21
    exponent = np.zeros_like(magnitude)
    for e in range(1, 8):
        exponent = np.where(magnitude >= (0x40 << (e - 1)), e, exponent)
    # Past the last segment the code saturates at exponent 7, mantissa 15.
    mantissa = np.where(magnitude >= 0x2000, 0x0F, (magnitude >> (exponent + 1)) & 0x0F)
    table: np.ndarray = ((sign | (exponent << 4) | mantissa) ^ 0x7F).astype(np.uint8)
    return table


def _alaw_encode_table() -> np.ndarray:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm)
    # A-law works on 13-bit magnitudes; the sign bit set means positive.
    sign = np.where(pcm >= 0, 0x80, 0x00)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1) >> 3
    magnitude = np.minimum(magnitude, 0x0FFF)
    exponent = np.zeros_like(magnitude)
    for e in range(1, 8):
        exponent = np.where(magnitude >= (0x20 << (e - 1)), e, exponent)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    table: np.ndarray = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return table


ULAW_TO_LINEAR: np.ndarray = _ulaw_decode_table()
ALAW_TO_LINEAR: np.ndarray = _alaw_decode_table()
_LINEAR_TO_ULAW: np.ndarray = _ulaw_encode_table()
_LINEAR_TO_ALAW: np.ndarray = _alaw_encode_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    """µ-law bytes → int16 samples."""
    return ULAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes → int16 samples."""
    return ALAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples → µ-law bytes."""
    return _LINEAR_TO_ULAW[samples.astype(np.int16, copy=False).view(np.uint16)].tobytes()


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples → A-law bytes."""
    return _LINEAR_TO_ALAW[samples.astype(np.int16, copy=False).view(np.uint16)].tobytes()
