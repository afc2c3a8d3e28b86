"""What a simulated caller says: 20 ms µ-law frames, and which replies a parrot should send back.

A :class:`CallScript` is the whole call's caller audio, cut into 160-byte µ-law frames (8 kHz,
20 ms, the telephone audio every platform carries), with the base64 text of each frame computed
once and shared by every call that plays the same script (the simulator must not be the
bottleneck); :meth:`CallScript.frames_in` gives the same audio in another format (once per
format). It is built either from synthetic speech-like utterances (a 300 Hz tone with harmonics
at -12 dBFS, then silence) or from a WAV file (8 or 16 kHz mono, 16-bit PCM or µ-law; 16 kHz is
resampled to 8 kHz).

:func:`expected_replies` runs the echo backend's parrot detector
(:class:`~mediaproxy.audio.vad.EnergyDetector`, with the parrot's settings: speech is a frame
above ``threshold_dbfs``; two loud frames start an utterance; ``silence_ms`` of quiet ends it, the
quiet included) over the script, so the simulator knows how many reply frames to expect and when
each utterance ended.
"""

from __future__ import annotations

import base64
import wave
from dataclasses import dataclass, field

import numpy as np

from mediaproxy.audio.format import MULAW_8K, AudioFormat
from mediaproxy.audio.g711 import ulaw_decode, ulaw_encode
from mediaproxy.audio.resample import StreamResampler
from mediaproxy.audio.transcode import Transcoder
from mediaproxy.audio.vad import EnergyDetector

FRAME_MS = 20
FRAME_BYTES = 160
SAMPLE_RATE_HZ = 8000
WAV_RATES_HZ = (8000, 16000)
_SILENCE = b"\xff" * FRAME_BYTES
_ONSET_FRAMES = 2  # the echo backend's onset: 40 ms of energy before it calls it speech


@dataclass(frozen=True)
class Reply:
    """One parrot reply the script should provoke."""

    utterance_start_frame: int
    """Index of the first loud frame of the utterance (where a barge-in would be detected)."""
    end_frame: int
    """Index of the frame after which the parrot decides the utterance is over."""
    frames: int
    """Length of the reply, in 20 ms frames (speech plus the trailing quiet the parrot kept)."""
    speech_end_frame: int
    """Index of the first frame after the last loud one (the caller stopped talking here)."""


@dataclass(frozen=True)
class CallScript:
    """A caller's audio: ``frames[i]`` is sent at ``start + i * 20 ms``.

    ``payloads[i]`` is the base64 text of ``frames[i]`` (shared, computed once).
    ``talk_frames`` counts the frames of speech (the rest is silence).
    """

    frames: tuple[bytes, ...]
    payloads: tuple[str, ...] = field(repr=False)
    talk_frames: int
    _converted: dict[AudioFormat, tuple[bytes, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def duration_s(self) -> float:
        return len(self.frames) * FRAME_MS / 1000.0

    def frames_in(self, fmt: AudioFormat) -> tuple[bytes, ...]:
        """The script's frames in ``fmt`` (mono; 20 ms each), converted once and shared."""
        if fmt == MULAW_8K:
            return self.frames
        converted = self._converted.get(fmt)
        if converted is None:
            # One transcoder over the whole script: resampling keeps its state across frames, and
            # every 20 ms in gives exactly 20 ms out.
            transcoder = Transcoder(MULAW_8K, fmt)
            converted = self._converted[fmt] = tuple(transcoder.convert(frame) for frame in self.frames)
        return converted


def frames_to_script(frames: list[bytes]) -> CallScript:
    cache: dict[bytes, str] = {}
    payloads = []
    for frame in frames:
        text = cache.get(frame)
        if text is None:
            text = cache[frame] = base64.b64encode(frame).decode("ascii")
        payloads.append(text)
    talk = sum(1 for frame in frames if frame != _SILENCE)
    return CallScript(tuple(frames), tuple(payloads), talk)


def tone_frame(level_dbfs: float = -12.0, base_hz: float = 300.0) -> bytes:
    """One 20 ms µ-law frame of a vowel-like tone: ``base_hz`` and its 2nd and 3rd harmonics,
    peaking at ``level_dbfs``. At 300 Hz every partial is a whole number of cycles per frame, so
    every frame is identical and the tone has no clicks at frame edges."""
    t = np.arange(FRAME_BYTES) / SAMPLE_RATE_HZ
    wave_ = (np.sin(2 * np.pi * base_hz * t) + 0.5 * np.sin(2 * np.pi * 2 * base_hz * t)
             + 0.25 * np.sin(2 * np.pi * 3 * base_hz * t))
    peak = 32767.0 * 10 ** (level_dbfs / 20.0)
    samples = np.round(wave_ / np.max(np.abs(wave_)) * peak).astype(np.int16)
    return ulaw_encode(samples)


def synthetic_script(duration_s: float, talk_ms: int = 1200, gap_ms: int = 2800,
                     barge_in_ms: int | None = None, silence_ms: int = 600,
                     tail_ms: int = 0, level_dbfs: float = -12.0) -> CallScript:
    """Utterances of ``talk_ms`` separated by ``gap_ms`` of silence, for ``duration_s``.

    With ``barge_in_ms``, every second utterance starts ``barge_in_ms`` after the parrot's reply
    to the previous one is expected to start (``silence_ms`` after the utterance ended), so it
    talks over the reply. ``tail_ms`` of silence is appended so the last reply can finish.
    """
    talk = [tone_frame(level_dbfs)] * (talk_ms // FRAME_MS)
    frames: list[bytes] = []
    total = int(duration_s * 1000) // FRAME_MS
    n = 0
    while len(frames) + len(talk) <= total:
        frames.extend(talk)
        gap = gap_ms
        if barge_in_ms is not None and n % 2 == 0:
            gap = silence_ms + barge_in_ms
        frames.extend([_SILENCE] * (gap // FRAME_MS))
        n += 1
    frames = frames[:total] if len(frames) > total else frames
    frames.extend([_SILENCE] * (tail_ms // FRAME_MS))
    return frames_to_script(frames)


def wav_script(path: str, tail_ms: int = 0) -> CallScript:
    """The caller's audio from a WAV file: 8 or 16 kHz mono, 16-bit PCM or µ-law (G.711)."""
    with open(path, "rb") as f:
        header = f.read(64)
    fmt_tag = int.from_bytes(header[20:22], "little") if header[12:16] == b"fmt " else 1
    if fmt_tag == 7:  # WAVE_FORMAT_MULAW: the wave module refuses it, read the data chunk
        data = _wav_data_chunk(path)
        channels = int.from_bytes(header[22:24], "little")
        rate = int.from_bytes(header[24:28], "little")
        if channels != 1 or rate not in WAV_RATES_HZ:
            raise ValueError(f"{path}: need 8 or 16 kHz mono, got {rate} Hz x {channels}")
        pcm = ulaw_decode(data)
    else:
        with wave.open(path, "rb") as w:
            rate = w.getframerate()
            if w.getnchannels() != 1 or rate not in WAV_RATES_HZ or w.getsampwidth() != 2:
                raise ValueError(f"{path}: need 8 or 16 kHz mono 16-bit PCM or µ-law, got "
                                 f"{rate} Hz x {w.getnchannels()} x {8 * w.getsampwidth()} bit")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if rate != SAMPLE_RATE_HZ:
        pcm = StreamResampler(rate, SAMPLE_RATE_HZ).process(pcm.astype(np.int16))
    ulaw = ulaw_encode(pcm)
    ulaw += b"\xff" * (-len(ulaw) % FRAME_BYTES)
    frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
    frames.extend([_SILENCE] * (tail_ms // FRAME_MS))
    return frames_to_script(frames)


def _wav_data_chunk(path: str) -> bytes:
    with open(path, "rb") as f:
        blob = f.read()
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id, size = blob[pos : pos + 4], int.from_bytes(blob[pos + 4 : pos + 8], "little")
        if chunk_id == b"data":
            return blob[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def expected_replies(script: CallScript, threshold_dbfs: float = -40.0, silence_ms: int = 600,
                     max_utterance_ms: int = 30000) -> list[Reply]:
    """The replies the echo backend's parrot mode sends for ``script`` (its detector, replayed)."""
    detector = EnergyDetector(MULAW_8K, threshold_dbfs, _ONSET_FRAMES, silence_ms, FRAME_MS, max_utterance_ms)
    # A script repeats a few distinct frames: judge each once.
    loud_cache: dict[bytes, bool] = {}
    replies: list[Reply] = []
    for frame in script.frames:
        loud = loud_cache.get(frame)
        if loud is None:
            loud = loud_cache[frame] = detector.is_loud(frame)
        transition = detector.step(loud)
        if transition is not None and not transition.started:
            replies.append(Reply(transition.turn_start_frame, transition.frame, transition.turn_frames,
                                 transition.speech_end_frame))
    return replies
