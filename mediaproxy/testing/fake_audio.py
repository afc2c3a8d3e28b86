"""Audio the fake services send and hear: recognisable bot audio, a loud caller frame, and the
voice activity settings their VADs judge caller audio by.

Shared by the fakes (:mod:`~mediaproxy.testing.fake_realtime`,
:mod:`~mediaproxy.testing.fake_deepgram`) and the tests that drive them: bot audio that differs
byte by byte shows any byte lost, duplicated or reordered on its way to the caller.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from mediaproxy.audio.format import ALAW_8K, L16_24K, MULAW_8K, AudioFormat

__all__ = ["BENCH_VAD", "FORMATS", "FORMAT_BYTES_PER_MS", "LOUD_FRAME", "TEST_VAD", "VadSettings", "pattern",
           "reply_audio"]

FORMATS: Mapping[str, AudioFormat] = {"audio/pcmu": MULAW_8K, "audio/pcma": ALAW_8K, "audio/pcm": L16_24K}
FORMAT_BYTES_PER_MS = {name: fmt.bytes_per_ms for name, fmt in FORMATS.items()}
LOUD_FRAME = {  # 20 ms of a full-scale square wave
    "audio/pcmu": bytes([0x00, 0x80] * 80),
    "audio/pcma": bytes([0xAA, 0x2A] * 80),
    "audio/pcm": np.array([12000, -12000] * 240, dtype="<i2").tobytes(),
}


def pattern(nbytes: int, seed: int) -> bytes:
    """Recognisable, non-silent bot audio: every byte differs from its neighbours, so a byte
    lost, duplicated or reordered anywhere shows up in a comparison."""
    return bytes((seed * 37 + i * 7 + (i >> 8)) % 251 for i in range(nbytes))


@functools.lru_cache(maxsize=256)
def reply_audio(ms: int, bytes_per_ms: int = 8) -> bytes:
    """``ms`` of recognisable, non-silent G.711: a 400 Hz-ish square wave of mid-level codes."""
    frame = bytes([0x20] * 10 + [0xA0] * 10) * 8
    nbytes = ms * bytes_per_ms
    return (frame * (nbytes // len(frame) + 1))[:nbytes]


class VadSettings:
    """The fake's notion of speech: RMS above ``threshold_dbfs`` for ``onset_frames`` frames
    of 20 ms. The end of a turn is the session's ``silence_duration_ms``."""

    __slots__ = ("threshold_dbfs", "onset_frames")

    def __init__(self, threshold_dbfs: float, onset_frames: int) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.onset_frames = onset_frames


#: For tests: any frame at RMS above 1000 (about -30 dBFS) is speech at once, as the service
#: reacts to clearly loud audio.
TEST_VAD = VadSettings(20 * math.log10(1000 / 32768), 1)
#: For benchmarks: the echo parrot's detector (-40 dBFS, two frames of onset), so that the
#: simulator's accounting of replies holds unchanged against either backend.
BENCH_VAD = VadSettings(-40.0, 2)
