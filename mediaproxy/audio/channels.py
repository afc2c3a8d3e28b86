"""Splitting interleaved multi-channel audio into one byte stream per channel.

Genesys AudioHook sends stereo (external party on channel 0, internal on channel 1) with
samples interleaved by sample frame; each channel is then transcoded on its own.
"""

from __future__ import annotations

import numpy as np

from mediaproxy.audio.format import AudioFormat

__all__ = ["deinterleave"]


def deinterleave(data: bytes, fmt: AudioFormat) -> list[bytes]:
    """Splits ``data`` into ``fmt.channels`` mono byte strings, channel 0 first.

    ``data`` must hold whole sample frames (``len(data) % fmt.frame_bytes == 0``); a caller
    reading from a stream keeps a trailing partial frame for its next call. Mono input comes
    back as ``[data]`` itself. Raises ``ValueError`` on a partial frame.
    """
    if len(data) % fmt.frame_bytes:
        raise ValueError(
            f"{len(data)} bytes is not a whole number of {fmt.frame_bytes}-byte sample frames of {fmt}"
        )
    if fmt.channels == 1:
        return [data]
    # A sample is 1 or 2 bytes; viewing it as one unsigned integer keeps the bytes intact
    # whatever the encoding, so l16 stays little-endian.
    dtype = np.uint8 if fmt.sample_bytes == 1 else np.uint16
    frames = np.frombuffer(data, dtype=dtype).reshape(-1, fmt.channels)
    return [frames[:, c].tobytes() for c in range(fmt.channels)]
