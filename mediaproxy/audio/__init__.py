"""Audio formats, codecs and the per-call transcoder.

Opus lives in `mediaproxy.audio.opus` and is not imported here: it needs the system library
libopus, which only Opus users should have to install.
"""

from mediaproxy.audio.channels import deinterleave
from mediaproxy.audio.format import ALAW_8K, L16_8K, L16_16K, L16_24K, MULAW_8K, AudioFormat
from mediaproxy.audio.resample import StreamResampler
from mediaproxy.audio.transcode import Transcoder

__all__ = [
    "AudioFormat",
    "MULAW_8K",
    "ALAW_8K",
    "L16_8K",
    "L16_16K",
    "L16_24K",
    "StreamResampler",
    "Transcoder",
    "deinterleave",
]
