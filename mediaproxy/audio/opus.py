"""Opus encode/decode of int16 PCM through opuslib, loaded only when a codec object is made.

opuslib binds the system library libopus with ctypes when it is imported, and raises a bare
``Exception`` if the library is missing. Importing it here lazily keeps the proxy (and every
platform that never meets Opus) usable on a host without libopus; creating an Opus codec there
fails with an `OpusUnavailableError` that names the Debian package to install.
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

__all__ = ["OpusEncoder", "OpusDecoder", "OpusUnavailableError", "OPUS_RATES_HZ", "OPUS_FRAME_MS"]

#: Sample rates libopus encodes and decodes at.
OPUS_RATES_HZ: tuple[int, ...] = (8000, 12000, 16000, 24000, 48000)
#: Frame durations one Opus packet may carry when encoding.
OPUS_FRAME_MS: tuple[float, ...] = (2.5, 5, 10, 20, 40, 60)
# The longest audio one packet can decode to (RFC 6716 §3.2.5, code 3 packets).
_MAX_PACKET_MS = 120

_opuslib: ModuleType | None = None


class OpusUnavailableError(RuntimeError):
    """Opus cannot be used on this host: opuslib or the system library libopus is missing."""


def _load_opuslib() -> ModuleType:
    """Imports opuslib once; raises `OpusUnavailableError` saying what to install."""
    global _opuslib
    if _opuslib is None:
        try:
            import opuslib
        except ModuleNotFoundError as e:
            if e.name != "opuslib":
                raise
            raise OpusUnavailableError(
                "Opus support needs the Python package opuslib, which is not installed"
            ) from e
        except Exception as e:
            # opuslib raises a bare Exception when ctypes cannot find libopus and OSError when
            # the library is found but cannot be loaded.
            raise OpusUnavailableError(
                "Opus support needs the system library libopus (Debian/Ubuntu package libopus0: "
                f"apt-get install libopus0); loading it failed: {e}"
            ) from e
        _opuslib = opuslib
    return _opuslib


def _check(rate_hz: int, channels: int) -> None:
    if rate_hz not in OPUS_RATES_HZ:
        raise ValueError(f"Opus does not support {rate_hz} Hz (supported: {OPUS_RATES_HZ})")
    if channels not in (1, 2):
        raise ValueError(f"Opus supports 1 or 2 channels, not {channels}")


class OpusEncoder:
    """Encodes int16 little-endian PCM (interleaved if stereo) to Opus, one packet per frame.

    ``frame_ms`` is the duration of every frame given to `encode`; ``bitrate_bps`` leaves the
    libopus default (about 32 kb/s for mono speech) when None. ``application`` is libopus's
    tuning: ``voip`` for speech, ``audio`` for music, ``restricted_lowdelay`` for least delay.
    """

    def __init__(
        self,
        rate_hz: int = 48000,
        channels: int = 1,
        frame_ms: float = 20,
        application: Literal["voip", "audio", "restricted_lowdelay"] = "voip",
        bitrate_bps: int | None = None,
    ) -> None:
        _check(rate_hz, channels)
        if frame_ms not in OPUS_FRAME_MS:
            raise ValueError(f"Opus frames are {OPUS_FRAME_MS} ms, not {frame_ms}")
        opuslib = _load_opuslib()
        self.rate_hz = rate_hz
        self.channels = channels
        self.frame_ms = frame_ms
        #: Samples per channel in one frame.
        self.frame_samples = int(rate_hz * frame_ms) // 1000
        #: Bytes of PCM `encode` takes per call.
        self.frame_bytes = self.frame_samples * channels * 2
        self._encoder = opuslib.Encoder(rate_hz, channels, application)
        if bitrate_bps is not None:
            self._encoder.bitrate = bitrate_bps

    def encode(self, pcm: bytes) -> bytes:
        """Encodes exactly one frame (``frame_bytes`` of PCM) into one Opus packet."""
        if len(pcm) != self.frame_bytes:
            raise ValueError(f"Opus encoder takes {self.frame_bytes}-byte frames, got {len(pcm)} bytes")
        return bytes(self._encoder.encode(pcm, self.frame_samples))

    def reset(self) -> None:
        """Returns the encoder to its freshly created state (a new stream)."""
        self._encoder.reset_state()


class OpusDecoder:
    """Decodes Opus packets to int16 little-endian PCM (interleaved if stereo) at ``rate_hz``.

    Any packet decodes at any of the Opus rates: libopus resamples internally.
    """

    def __init__(self, rate_hz: int = 48000, channels: int = 1) -> None:
        _check(rate_hz, channels)
        opuslib = _load_opuslib()
        self.rate_hz = rate_hz
        self.channels = channels
        self._opus_error: type[Exception] = opuslib.OpusError
        self._max_samples = rate_hz * _MAX_PACKET_MS // 1000
        self._decoder = opuslib.Decoder(rate_hz, channels)

    def decode(self, packet: bytes) -> bytes:
        """Decodes one packet; raises ValueError if it is corrupt (a protocol error, not a bug)."""
        if not packet:
            raise ValueError("empty Opus packet (use conceal() for a lost packet)")
        try:
            return bytes(self._decoder.decode(packet, self._max_samples))
        except self._opus_error as e:
            raise ValueError(f"corrupt Opus packet: {e}") from e

    def conceal(self, duration_ms: float) -> bytes:
        """Packet-loss concealment: ``duration_ms`` (a multiple of 2.5 ms) of estimated audio."""
        samples = int(self.rate_hz * duration_ms) // 1000
        if samples <= 0 or (samples * 400) % self.rate_hz:
            raise ValueError(f"concealment must cover a multiple of 2.5 ms, not {duration_ms} ms")
        # libopus treats a zero-length packet as lost and extrapolates from its state.
        return bytes(self._decoder.decode(b"", samples))

    def reset(self) -> None:
        """Returns the decoder to its freshly created state (a new stream)."""
        self._decoder.reset_state()
