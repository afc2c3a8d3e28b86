"""Splitting interleaved multi-channel audio into one byte stream per channel.

Genesys AudioHook sends stereo (external party on channel 0, internal on channel 1) with
samples interleaved by sample frame; each channel is then transcoded on its own.
"""

from __future__ import annotations

import numpy as np

__all__ = ["deinterleave"]


def deinterleave(data: bytes | memoryview, channels: int, sample_bytes: int) -> list[bytes]:
    """Splits ``data``, interleaved by sample frame, into ``channels`` mono byte strings, channel 0
    first. A sample is ``sample_bytes`` (1 or 2) bytes.

    ``data`` must hold whole sample frames; a caller reading from a stream carries a trailing
    partial frame to its next call (:class:`~mediaproxy.audio.chunks.FrameCarry`). Mono input
    comes back as ``[data]`` itself (as ``bytes``). Raises ``ValueError`` on a partial frame.
    """
    frame_bytes = channels * sample_bytes
    if len(data) % frame_bytes:
        raise ValueError(f"{len(data)} bytes is not a whole number of {frame_bytes}-byte sample frames")
    if channels == 1:
        return [data if isinstance(data, bytes) else bytes(data)]
    if sample_bytes == 1:
        # Extended slices on bytes run in C: no per-sample Python work.
        whole = data if isinstance(data, bytes) else bytes(data)
        return [whole[k::channels] for k in range(channels)]
    # Viewing a 2-byte sample as one unsigned integer keeps its bytes intact whatever the
    # encoding, so l16 stays little-endian.
    frames = np.frombuffer(data, dtype=np.uint16).reshape(-1, channels)
    return [frames[:, c].tobytes() for c in range(channels)]
