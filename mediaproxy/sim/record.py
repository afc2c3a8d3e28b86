"""``--record``: what the caller heard, as a 16-bit mono WAV at the platform's rate.

The platform's playout (:class:`~mediaproxy.sim.playout.Playout`) keeps each piece of bot audio
with the time it started playing; a clear cut what was still queued. Here the pieces are decoded
and laid on a timeline that starts with the caller's script (time 0 is when the caller's first
frame was sent) and ends when the call closed: silence wherever nothing played.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mediaproxy.audio.format import AudioFormat
from mediaproxy.audio.transcode import Transcoder
from mediaproxy.sim.call_record import CallRecord

if TYPE_CHECKING:
    from mediaproxy.sim.output import CallResult

__all__ = ["heard_samples", "write_wav", "write_recordings"]


def heard_samples(record: CallRecord) -> np.ndarray:
    """The caller's side of the call as int16 samples at the platform's rate (empty when the
    call was not recorded)."""
    fmt = record.heard_format
    pieces = record.heard or []
    rate = fmt.rate_hz
    origin = record.script_start
    end_s = max([record.closed_at or origin] + [t + fmt.ms_for_bytes(len(d)) / 1000.0 for t, d in pieces]) - origin
    out = np.zeros(max(0, round(end_s * rate)), dtype=np.int16)
    decode = Transcoder(fmt, AudioFormat("l16", rate)) if fmt.encoding != "l16" else None
    for start, data in pieces:
        raw = decode.convert(data) if decode is not None else data
        samples = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2")
        at = max(0, round((start - origin) * rate))
        n = min(len(samples), len(out) - at)
        if n > 0:
            out[at:at + n] = samples[:n]
    return out


def write_wav(path: str, samples: np.ndarray, rate_hz: int) -> None:
    """A mono 16-bit PCM WAV file."""
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(samples.astype("<i2").tobytes())


def write_recordings(target: str, calls: Sequence[CallResult], per_call: bool) -> list[str]:
    """Write the recorded calls: ``target`` itself (the first recorded call) or, with
    ``per_call``, ``target/call-NNNN.wav`` each. Sets each result's ``recording``."""
    written = []
    if per_call:
        os.makedirs(target, exist_ok=True)
    for result in calls:
        record = result.record
        if record.heard is None:
            continue
        path = os.path.join(target, f"call-{record.index:04d}.wav") if per_call else target
        write_wav(path, heard_samples(record), record.heard_format.rate_hz)
        result.recording = path
        written.append(path)
        if not per_call:
            break
    return written
