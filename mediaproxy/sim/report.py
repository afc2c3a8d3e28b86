"""Turns simulated calls' records into pacing, loss and latency figures.

Each reply the script provokes (:func:`~mediaproxy.sim.script.expected_replies`) owns a window of
arrival time: from when the parrot could first decide the utterance was over (the send time of
the frame that ends it) to the next such moment. Every received frame falls in one window.

Within a reply, with arrival times ``a[k]`` and lead ``L``:

* *lateness vs first frame* (the caller's view): frame ``k`` is due at ``a[0] + max(0, k*20ms -
  L)``; lateness is how much later it came (0 when early). A frame later than ``a[0] + k*20ms``
  would have reached the caller after its play time: a heard gap (``late_frames``).
* *lateness vs proxy grid*: the proxy anchors a reply on its clock grid, up to one frame before
  the first frame leaves, so the first-frame view hides up to 20 ms. Here the grid's phase is the
  earliest ``a[k] - k*20ms`` over the paced frames (``k*20ms > L``) and lateness is measured from
  it: the proxy's own schedule error plus loopback and client delay.
* *inter-arrival*: gaps between consecutive paced frames (ideal: 20 ms).
* *reply latency*: first reply frame minus the send time of the caller's last loud frame
  (includes the parrot's ``silence_ms`` end-of-speech wait).
* *speech -> clear*: the parrot reports every speech onset and the proxy answers each with a
  ``clear``; this is its arrival minus the send time of the frame that made the parrot detect the
  speech (its second loud frame). A reply is *interrupted* when such a clear arrives before its
  last frame would have played.

Frames lost are the expected reply frames minus those received, for replies not interrupted.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mediaproxy.sim.script import FRAME_MS, Reply
from mediaproxy.sim.twilio import CallRecord

_FRAME_S = FRAME_MS / 1000.0
_HEARD_GAP_TOLERANCE_S = 0.001


@dataclass
class Samples:
    """Raw per-frame and per-reply samples, in seconds (merged across calls and processes)."""

    lateness_first: list[float] = field(default_factory=list)
    lateness_grid: list[float] = field(default_factory=list)
    inter_arrival: list[float] = field(default_factory=list)
    reply_latency: list[float] = field(default_factory=list)
    bargein: list[float] = field(default_factory=list)

    def extend(self, other: Samples) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def to_json(self) -> dict[str, list[float]]:
        return {name: [round(v, 6) for v in getattr(self, name)] for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> Samples:
        return cls(**{name: list(data.get(name, [])) for name in cls.__dataclass_fields__})


@dataclass
class CallStats:
    """Counts for one call (or, summed, for many: see :meth:`add`)."""

    calls: int = 0
    completed: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_expected: int = 0
    frames_lost: int = 0
    frames_extra: int = 0
    frames_unexpected: int = 0
    frames_after_clear: int = 0
    odd_frames: int = 0
    late_frames: int = 0
    replies_expected: int = 0
    replies_received: int = 0
    replies_interrupted: int = 0
    clears: int = 0
    marks_received: int = 0
    marks_echoed: int = 0
    send_late_max_s: float = 0.0

    def add(self, other: CallStats) -> None:
        for name in self.__dataclass_fields__:
            if name == "send_late_max_s":
                self.send_late_max_s = max(self.send_late_max_s, other.send_late_max_s)
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallStats:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def analyse_call(record: CallRecord, replies: list[Reply], lead_ms: int) -> tuple[CallStats, Samples]:
    """Figures for one call; see the module docstring."""
    stats = CallStats(calls=1, completed=int(record.completed), frames_sent=record.frames_sent,
                      frames_received=len(record.arrivals), odd_frames=record.odd_frames,
                      replies_expected=len(replies), clears=len(record.clears),
                      marks_received=record.marks_received, marks_echoed=record.marks_echoed,
                      send_late_max_s=record.send_late_max_s)
    samples = Samples()
    start = record.script_start
    lead_s = lead_ms / 1000.0
    lead_frames = lead_ms // FRAME_MS
    arrivals = list(record.arrivals)
    clears = list(record.clears)
    bounds = [start + r.end_frame * _FRAME_S for r in replies]
    first = bisect.bisect_left(arrivals, bounds[0]) if bounds else len(arrivals)
    stats.frames_unexpected += first
    for reply in replies:
        # Speech onset (the parrot's second loud frame) to the clear the proxy sends for it.
        detected = start + (reply.utterance_start_frame + 1) * _FRAME_S
        k = bisect.bisect_left(clears, detected)
        if k < len(clears) and clears[k] - detected < 1.0:
            samples.bargein.append(clears[k] - detected)
    for j, reply in enumerate(replies):
        lo = bounds[j]
        hi = bounds[j + 1] if j + 1 < len(bounds) else float("inf")
        a = arrivals[bisect.bisect_left(arrivals, lo) : bisect.bisect_left(arrivals, hi)]
        t_first = a[0] if a else lo
        # The parrot answers every utterance onset with a clear; it interrupts this reply only
        # if it came before the reply's last frame would have played.
        cutting = [c for c in clears[bisect.bisect_left(clears, lo) : bisect.bisect_left(clears, hi)]
                   if c < t_first + reply.frames * _FRAME_S]
        if cutting:
            stats.replies_interrupted += 1
            cleared = cutting[0]
            stats.frames_after_clear += sum(1 for t in a if t > cleared)
            a = [t for t in a if t <= cleared]
        else:
            stats.frames_expected += reply.frames
            stats.frames_lost += max(0, reply.frames - len(a))
            stats.frames_extra += max(0, len(a) - reply.frames)
        if not a:
            continue
        stats.replies_received += 1
        t0 = a[0]
        samples.reply_latency.append(t0 - (start + (reply.speech_end_frame - 1) * _FRAME_S))
        paced = [a[k] - k * _FRAME_S for k in range(len(a)) if k > lead_frames]
        phase = min(paced) if paced else t0
        for k, t in enumerate(a):
            samples.lateness_first.append(max(0.0, t - (t0 + max(0.0, k * _FRAME_S - lead_s))))
            if t > t0 + k * _FRAME_S + _HEARD_GAP_TOLERANCE_S:
                stats.late_frames += 1
            if k > lead_frames:
                samples.lateness_grid.append(t - k * _FRAME_S - phase)
                if k > lead_frames + 1:
                    samples.inter_arrival.append(t - a[k - 1])
    return stats, samples


def percentiles_ms(values: list[float], points: tuple[float, ...] = (50, 99)) -> dict[str, float | None]:
    """``{"p50": .., "p99": .., "max": ..}`` in milliseconds (None when there are no samples)."""
    if not values:
        return {**{f"p{p:g}": None for p in points}, "max": None}
    arr = np.asarray(values) * 1000.0
    out: dict[str, float | None] = {f"p{p:g}": float(np.percentile(arr, p)) for p in points}
    out["max"] = float(arr.max())
    return out


def _fmt(figures: dict[str, float | None]) -> str:
    return " ".join(f"{k}={'-' if v is None else f'{v:.2f}'}" for k, v in figures.items())


def format_summary(stats: CallStats, samples: Samples) -> str:
    """A human-readable multi-line summary of ``stats`` and ``samples``."""
    lines = [
        f"calls {stats.calls} (completed {stats.completed}); frames sent {stats.frames_sent}, "
        f"received {stats.frames_received} (odd-sized {stats.odd_frames}, outside any reply "
        f"{stats.frames_unexpected})",
        f"replies expected {stats.replies_expected}, received {stats.replies_received}, "
        f"interrupted {stats.replies_interrupted} (clears {stats.clears}, frames after clear "
        f"{stats.frames_after_clear})",
        f"frames expected {stats.frames_expected} (uninterrupted replies), lost {stats.frames_lost}, "
        f"extra {stats.frames_extra}",
        f"heard gaps (frame after its play time) {stats.late_frames}",
        f"lateness vs first-frame grid, ms: {_fmt(percentiles_ms(samples.lateness_first))}",
        f"lateness vs proxy grid phase, ms: {_fmt(percentiles_ms(samples.lateness_grid))}",
        f"inter-arrival, ms: {_fmt(percentiles_ms(samples.inter_arrival, (1, 50, 99)))}",
        f"reply latency after end of speech, ms: {_fmt(percentiles_ms(samples.reply_latency))}",
        f"speech onset -> clear (barge-in path), ms: {_fmt(percentiles_ms(samples.bargein))}",
        f"marks received {stats.marks_received}, echoed {stats.marks_echoed}; "
        f"simulator worst send lateness {stats.send_late_max_s * 1000:.1f} ms",
    ]
    return "\n".join(lines)
