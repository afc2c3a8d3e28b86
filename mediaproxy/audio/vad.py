"""`EnergyDetector`: the one energy voice-activity detector of the code base.

The echo backend's parrot, the simulator's model of that parrot and the fake Realtime service
all decide "the caller is talking" with it, so they agree frame for frame.

The audio is judged ``frame_ms`` (20) at a time. A frame is *loud* when its RMS level is above
``threshold_dbfs`` (relative to a full-scale 16-bit sample, 32768). ``onset_frames`` loud frames
in a row start a turn (a click is not speech): the start is reported at the last of them. Once
speaking, ``silence_ms`` of consecutive quiet frames end the turn (reported at the last quiet
frame, which belongs to the turn), as does a turn reaching ``max_turn_ms``.

Energy is the sum of squared sample values: for G.711 one lookup of a 256-entry table of squared
values and one sum, for l16 one int64 dot product. This runs for every caller frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mediaproxy.audio.chunks import FrameCarry
from mediaproxy.audio.format import AudioFormat
from mediaproxy.audio.g711 import ALAW_TO_LINEAR, ULAW_TO_LINEAR

__all__ = ["EnergyDetector", "Transition"]

#: Squared linear value of every G.711 code, by encoding.
_SQUARED: dict[str, np.ndarray] = {
    "pcmu": ULAW_TO_LINEAR.astype(np.int64) ** 2,
    "pcma": ALAW_TO_LINEAR.astype(np.int64) ** 2,
}


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state: the caller started (``started``) or stopped talking.

    Frame indexes count the detector's frames from 0 (frame ``n`` covers ``n * frame_ms`` to
    ``(n + 1) * frame_ms`` of the stream).
    """

    started: bool
    frame: int
    """The frame at which it was decided (the last onset frame, or the last frame of the turn)."""
    turn_start_frame: int
    """The first loud frame of the turn's onset."""
    quiet_frames: int
    """Quiet frames at the end of the turn (0 for a start; less than the silence for a turn cut
    at ``max_turn_ms``)."""
    frame_ms: int

    @property
    def turn_frames(self) -> int:
        """Frames of the turn so far, onset included."""
        return self.frame + 1 - self.turn_start_frame

    @property
    def speech_end_frame(self) -> int:
        """The frame after the turn's last loud one (the caller fell silent there)."""
        return self.frame + 1 - self.quiet_frames

    @property
    def start_ms(self) -> int:
        """Where the turn's first loud frame starts, ms into the stream."""
        return self.turn_start_frame * self.frame_ms

    @property
    def end_ms(self) -> int:
        """Where the deciding frame ends, ms into the stream."""
        return (self.frame + 1) * self.frame_ms


class EnergyDetector:
    """An energy detector over one stream of ``audio_format`` audio; see the module docstring.

    Feed chunks of any size to :meth:`feed` (a partial frame is carried to the next call), or
    exact frames to :meth:`analyse`, or your own loudness decisions to :meth:`step`.
    ``silence_ms`` and ``max_turn_ms`` are rounded to whole frames (silence down, at least one
    frame; the maximum up, so a turn is cut once it is at least that long).
    """

    def __init__(self, audio_format: AudioFormat, threshold_dbfs: float = -40.0, onset_frames: int = 2,
                 silence_ms: int = 600, frame_ms: int = 20, max_turn_ms: int | None = None) -> None:
        if onset_frames < 1:
            raise ValueError("onset_frames must be >= 1")
        self.audio_format = audio_format
        self.frame_ms = frame_ms
        #: Bytes per analysis frame.
        self.frame_bytes = audio_format.bytes_for_ms(frame_ms)
        self.onset_frames = onset_frames
        self.silence_frames = max(1, silence_ms // frame_ms)
        self.max_turn_frames = -(-max_turn_ms // frame_ms) if max_turn_ms is not None else 0
        level = 32768.0 * 10 ** (threshold_dbfs / 20.0)
        #: A frame is loud when its energy (sum of squared samples) is above this.
        self.threshold_energy = level * level * (self.frame_bytes // audio_format.sample_bytes)
        self._squared = _SQUARED.get(audio_format.encoding)
        self._carry = FrameCarry(self.frame_bytes)
        #: Frames analysed so far.
        self.frames = 0
        #: True from a start to the following stop.
        self.speaking = False
        self._onset = 0
        self._quiet = 0
        self._turn_start = 0

    @property
    def in_turn(self) -> bool:
        """True while the last frame belongs to a turn or to an onset that may become one (the
        echo parrot keeps exactly those frames)."""
        return self.speaking or self._onset > 0

    def energy(self, frame: bytes) -> int:
        """Sum of squared sample values of ``frame`` (any length; l16 an even number of bytes)."""
        if self._squared is not None:
            return int(self._squared[np.frombuffer(frame, dtype=np.uint8)].sum())
        samples = np.frombuffer(frame, dtype="<i2").astype(np.int64)
        return int(np.dot(samples, samples))

    def is_loud(self, frame: bytes) -> bool:
        """True when one analysis frame is above the threshold."""
        return self.energy(frame) > self.threshold_energy

    def feed(self, data: bytes) -> list[Transition]:
        """Analyses every frame completed by ``data``; the transitions they caused, in order."""
        found: list[Transition] = []
        for frame in self._carry.frames(data):
            transition = self.step(self.energy(frame) > self.threshold_energy)
            if transition is not None:
                found.append(transition)
        return found

    def analyse(self, frame: bytes) -> Transition | None:
        """Analyses exactly one frame (``frame_bytes`` long)."""
        return self.step(self.energy(frame) > self.threshold_energy)

    def step(self, loud: bool) -> Transition | None:
        """Advances the state machine by one frame that was ``loud`` or not."""
        index = self.frames
        self.frames = index + 1
        if not self.speaking:
            if not loud:
                self._onset = 0
                return None
            if self._onset == 0:
                self._turn_start = index
            self._onset += 1
            if self._onset < self.onset_frames:
                return None
            self.speaking = True
            self._quiet = 0
            return Transition(True, index, self._turn_start, 0, self.frame_ms)
        self._quiet = 0 if loud else self._quiet + 1
        if self._quiet >= self.silence_frames or (
                self.max_turn_frames and index + 1 - self._turn_start >= self.max_turn_frames):
            self.speaking = False
            self._onset = 0
            return Transition(False, index, self._turn_start, self._quiet, self.frame_ms)
        return None

    def reset(self) -> None:
        """Forgets everything (the carried partial frame too): a new stream starts at frame 0."""
        self._carry.reset()
        self.frames = 0
        self.speaking = False
        self._onset = self._quiet = self._turn_start = 0
