"""The `AudioFormat` value type: what a stream of audio bytes means."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["pcmu", "pcma", "l16"]

_SAMPLE_BYTES = {"pcmu": 1, "pcma": 1, "l16": 2}
# The byte that encodes digital silence: µ-law 0xFF (+0), A-law 0xD5, linear PCM 0x00.
# µ-law 0x00/0x80 are full-scale values; padding with them clicks.
_SILENCE_BYTE = {"pcmu": 0xFF, "pcma": 0xD5, "l16": 0x00}


@dataclass(frozen=True)
class AudioFormat:
    """An uncompressed audio stream format.

    ``encoding`` is ``pcmu`` (G.711 µ-law), ``pcma`` (G.711 A-law) or ``l16`` (signed 16-bit
    little-endian linear PCM). ``rate_hz`` is the sample rate; ``channels`` are interleaved by
    sample frame.
    """

    encoding: Encoding
    rate_hz: int
    channels: int = 1

    def __post_init__(self) -> None:
        if self.encoding not in _SAMPLE_BYTES:
            raise ValueError(f"unknown audio encoding {self.encoding!r}")
        if self.rate_hz <= 0 or self.rate_hz % 1000:
            # Every rate we meet (8k, 16k, 24k, 48k) is a whole number of samples per ms, which
            # is what lets frames be cut at exact millisecond boundaries.
            raise ValueError(f"unsupported sample rate {self.rate_hz}")
        if self.channels < 1:
            raise ValueError("channels must be >= 1")

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample of one channel."""
        return _SAMPLE_BYTES[self.encoding]

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame (one sample of every channel)."""
        return _SAMPLE_BYTES[self.encoding] * self.channels

    @property
    def bytes_per_ms(self) -> int:
        """Bytes per millisecond of audio (exact for rates that are multiples of 1 kHz)."""
        return self.rate_hz // 1000 * self.frame_bytes

    def bytes_for_ms(self, ms: int) -> int:
        """Size in bytes of ``ms`` milliseconds of audio."""
        return ms * self.bytes_per_ms

    def ms_for_bytes(self, nbytes: int) -> float:
        """Duration in milliseconds of ``nbytes`` bytes of audio."""
        return nbytes / self.bytes_per_ms

    @property
    def silence_byte(self) -> int:
        """The byte value that encodes silence in this format."""
        return _SILENCE_BYTE[self.encoding]

    def silence(self, nbytes: int) -> bytes:
        """``nbytes`` bytes of digital silence."""
        return bytes((self.silence_byte,)) * nbytes

    def mono(self) -> AudioFormat:
        """The same format with one channel."""
        return AudioFormat(self.encoding, self.rate_hz, 1)

    def __str__(self) -> str:
        ch = "" if self.channels == 1 else f"x{self.channels}"
        return f"{self.encoding}/{self.rate_hz}{ch}"


MULAW_8K = AudioFormat("pcmu", 8000)
ALAW_8K = AudioFormat("pcma", 8000)
L16_8K = AudioFormat("l16", 8000)
L16_16K = AudioFormat("l16", 16000)
L16_24K = AudioFormat("l16", 24000)


FormatPreference = tuple[AudioFormat, ...]
"""A backend's formats, cheapest first, as plain data for the platforms that negotiate a format
(AudioCodes, AudioHook): a format not listed costs more than every listed one. Empty: every
format costs the same."""


def choose_format(offered: Sequence[AudioFormat], preference: FormatPreference) -> AudioFormat | None:
    """The offered format that ``preference`` ranks cheapest; ties (formats not listed) keep the
    platform's order. None when nothing is offered."""
    if not offered:
        return None
    rank = {fmt: i for i, fmt in enumerate(preference)}
    return min(offered, key=lambda fmt: rank.get(fmt, len(rank)))
