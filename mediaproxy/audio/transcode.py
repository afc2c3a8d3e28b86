"""`Transcoder`: converts one direction of a call's audio from one `AudioFormat` to another.

decode (G.711 table or l16 view) -> resample (`StreamResampler`) -> encode. Equal formats are a
pass-through that returns the caller's object untouched: Twilio µ-law to OpenAI ``audio/pcmu``
costs nothing. µ-law <-> A-law at one rate is a single 256-byte `bytes.translate`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mediaproxy.audio.chunks import FrameCarry
from mediaproxy.audio.format import AudioFormat
from mediaproxy.audio.g711 import ALAW_TO_LINEAR, ULAW_TO_LINEAR, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from mediaproxy.audio.resample import StreamResampler

__all__ = ["Transcoder"]

# bytes.translate tables for the G.711 laws at equal rates: the same result as decode + encode,
# without the numpy round trip.
_ULAW_TO_ALAW = alaw_encode(ULAW_TO_LINEAR)
_ALAW_TO_ULAW = ulaw_encode(ALAW_TO_LINEAR)

_DECODERS: dict[str, Callable[[bytes], np.ndarray]] = {"pcmu": ulaw_decode, "pcma": alaw_decode}
_ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {
    "pcmu": ulaw_encode,
    "pcma": alaw_encode,
    # Little-endian whatever the host: l16 on the wire is little-endian.
    "l16": lambda samples: samples.astype("<i2", copy=False).tobytes(),
}


class Transcoder:
    """Converts a byte stream of ``src`` audio to ``dst`` audio, one chunk at a time.

    Chunks may be any size: resampler state is carried across calls, and so is a trailing odd
    byte of l16 input (half a sample), which is completed by the next chunk. Output for a stream
    does not depend on how it was chunked. Mono only, except that equal formats of any channel
    count pass through.
    """

    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self.src = src
        self.dst = dst
        #: True when ``convert`` returns its argument unchanged (same object, no work).
        self.passthrough: bool = src == dst
        self._resampler: StreamResampler | None = None
        self._translate: bytes | None = None
        self._samples = FrameCarry(2)  # half an l16 sample, completed by the next chunk
        if self.passthrough:
            return
        if src.channels != 1 or dst.channels != 1:
            raise ValueError(f"cannot transcode {src} to {dst}: only mono audio is converted")
        if src.rate_hz != dst.rate_hz:
            self._resampler = StreamResampler(src.rate_hz, dst.rate_hz)
        elif (src.encoding, dst.encoding) == ("pcmu", "pcma"):
            self._translate = _ULAW_TO_ALAW
        elif (src.encoding, dst.encoding) == ("pcma", "pcmu"):
            self._translate = _ALAW_TO_ULAW
        self._encode = _ENCODERS[dst.encoding]

    @property
    def delay_ms(self) -> float:
        """Delay this conversion adds, in milliseconds (the resampler's group delay, else 0)."""
        return self._resampler.delay_ms if self._resampler is not None else 0.0

    def convert(self, data: bytes) -> bytes:
        """Converts one chunk of ``src`` bytes to the ``dst`` bytes now due (may be empty)."""
        if self.passthrough:
            return data
        if self._translate is not None:
            return data.translate(self._translate)
        samples = self._decode(data)
        if self._resampler is not None:
            samples = self._resampler.process(samples)
        return self._encode(samples)

    def _decode(self, data: bytes) -> np.ndarray:
        """``src`` bytes -> int16 samples, keeping half an l16 sample for the next call."""
        decode = _DECODERS.get(self.src.encoding)
        if decode is not None:
            return decode(data)
        # A view of the whole samples: the input is not copied.
        samples = np.frombuffer(self._samples.whole(data), dtype="<i2")
        return samples.astype(np.int16, copy=False)

    def reset(self) -> None:
        """Drops carried state (resampler history, a pending odd byte): a new stream starts."""
        self._samples.reset()
        if self._resampler is not None:
            self._resampler.reset()

    def __repr__(self) -> str:
        return f"Transcoder({self.src} -> {self.dst}{', passthrough' if self.passthrough else ''})"
