"""Audio formats, codecs and the per-call transcoder."""

from mediaproxy.audio.format import ALAW_8K, L16_8K, L16_16K, L16_24K, MULAW_8K, AudioFormat

__all__ = ["AudioFormat", "MULAW_8K", "ALAW_8K", "L16_8K", "L16_16K", "L16_24K"]
