"""Turns simulated calls' records into pacing, loss and latency figures, for every platform.

The input is platform-neutral (:class:`~mediaproxy.sim.caller.CallRecord`): each message of bot
audio as (arrival time, ms of audio, playout depth before it), the times of clears (whatever the
platform calls them), the script's start. A message may carry any whole number of 20 ms frames.

Each reply the script provokes (:func:`~mediaproxy.sim.script.expected_replies`) owns a window of
arrival time: from when the parrot could first decide the utterance was over (the send time of
the frame that ends it) to the next such moment. Every received message falls in one window.

Within a reply, with message arrival times ``a[k]``, ``o[k]`` the offset of message ``k``'s audio
in the reply (the ms of the messages before it) and lead ``L``:

* *lateness vs first message* (the caller's view): message ``k`` is due at ``a[0] + max(0, o[k] -
  L)``; lateness is how much later it came (0 when early). A message later than ``a[0] + o[k]``
  reached the caller after its play time: a heard gap (``late_frames`` counts its frames).
* *lateness vs proxy grid*: the proxy anchors a reply on its clock grid, up to one frame before
  the first message leaves, so the first-message view hides up to 20 ms. Here the grid's phase is
  the earliest ``a[k] - o[k]`` over the paced messages (``o[k] > L``) and lateness is measured
  from it: the proxy's own schedule error plus loopback and client delay.
* *lead*: how much audio the platform still held when a paced message arrived (ideal: ``L``).
* *inter-arrival*: gaps between consecutive paced messages (ideal: their length, 20 ms each).
* *reply latency*: the reply's first message minus the send time of the caller's last loud frame
  (includes the parrot's ``silence_ms`` end-of-speech wait).
* *time to first audio*: the first bot audio of the call minus the socket's opening.
* *speech -> clear*: the parrot reports every speech onset and the proxy answers one over a reply
  with a clear (Twilio answers every onset); this is its arrival minus the send time of the frame
  that made the parrot detect the speech (its second loud frame). A reply is *interrupted* when
  such a clear arrives before its last frame would have played.

Frames lost are the expected reply frames minus those received, for replies not interrupted.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mediaproxy.sim.call_record import CallRecord
from mediaproxy.sim.script import FRAME_MS, Reply

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
    lead: list[float] = field(default_factory=list)
    """How much audio the platform still held when each paced message arrived."""
    first_audio: list[float] = field(default_factory=list)
    """Per call: from the socket opening to the first bot audio."""
    connect: list[float] = field(default_factory=list)
    """Per call: from dialling to the WebSocket being open."""

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
    frames_withheld: int = 0
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
    protocol_errors: int = 0
    messages_received: int = 0
    """Messages of bot audio (``frames_received`` counts their 20 ms frames)."""

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


@dataclass
class CallSeries:
    """One call's figures over time, for the plot. Times are seconds from the script's start."""

    lateness: list[tuple[float, float]] = field(default_factory=list)
    """``(arrival, lateness vs the proxy grid)`` of every paced message."""
    depth: list[tuple[float, float]] = field(default_factory=list)
    """``(time, playout depth in ms)``: just before and just after every arrival, and at clears."""
    clears: list[float] = field(default_factory=list)
    barge_ins: list[float] = field(default_factory=list)
    """When the caller started talking over a reply (the script's barge-in onsets)."""


def depth_curve(arrivals: list[float], sizes: list[float], clears: list[float], origin: float
                ) -> list[tuple[float, float]]:
    """The playout's depth (ms) as a polyline: it rises by each message's length when it arrives,
    falls at real time while it plays, stays at 0 when empty and drops to 0 at a clear."""
    events = sorted([(t, s) for t, s in zip(arrivals, sizes, strict=True)] + [(c, -1.0) for c in clears])
    points: list[tuple[float, float]] = []
    empty_at = float("-inf")  # when the queue runs dry
    for t, size in events:
        depth = max(0.0, empty_at - t)
        if points and empty_at < t and points[-1][0] < empty_at:
            points.append((empty_at - origin, 0.0))
        points.append((t - origin, depth * 1000.0))
        if size < 0:  # a clear
            empty_at = t
            points.append((t - origin, 0.0))
        else:
            empty_at = max(empty_at, t) + size
            points.append((t - origin, (empty_at - t) * 1000.0))
    if points and empty_at > points[-1][0] + origin:
        points.append((empty_at - origin, 0.0))
    return points


def analyse_call(record: CallRecord, replies: list[Reply], lead_ms: int) -> tuple[CallStats, Samples, CallSeries]:
    """Figures for one call; see the module docstring."""
    stats = CallStats(calls=1, completed=int(record.completed), frames_sent=record.frames_sent,
                      frames_withheld=record.frames_withheld,
                      frames_received=round(sum(record.arrival_ms) / FRAME_MS), odd_frames=record.odd_messages,
                      replies_expected=len(replies), clears=len(record.clears),
                      marks_received=record.marks_received, marks_echoed=record.marks_echoed,
                      send_late_max_s=record.send_late_max_s, protocol_errors=record.protocol_errors,
                      messages_received=len(record.arrivals))
    samples = Samples()
    series = CallSeries()
    start = record.script_start
    if record.opened_at is not None and record.dialed_at is not None:
        samples.connect.append(record.opened_at - record.dialed_at)
    if record.opened_at is not None and record.arrivals:
        samples.first_audio.append(record.arrivals[0] - record.opened_at)
    lead_s = lead_ms / 1000.0
    arrivals = list(record.arrivals)
    sizes = [ms / 1000.0 for ms in record.arrival_ms]
    depths = list(record.depth_ms)
    clears = list(record.clears)
    series.depth = depth_curve(arrivals, sizes, clears, start)
    series.clears = [c - start for c in clears]
    bounds = [start + r.end_frame * _FRAME_S for r in replies]
    first = bisect.bisect_left(arrivals, bounds[0]) if bounds else len(arrivals)
    stats.frames_unexpected += round(sum(sizes[:first]) / _FRAME_S)
    # Speech onset (the parrot's second loud frame) to the clear the proxy sends for it: each
    # clear answers the latest onset before it (within a second), each onset at most once.
    onsets = [start + (reply.utterance_start_frame + 1) * _FRAME_S for reply in replies]
    answered: set[int] = set()
    for c in clears:
        k = bisect.bisect_right(onsets, c) - 1
        if k >= 0 and k not in answered and c - onsets[k] < 1.0:
            answered.add(k)
            samples.bargein.append(c - onsets[k])
    for j, reply in enumerate(replies):
        if j > 0 and reply.utterance_start_frame < replies[j - 1].end_frame + replies[j - 1].frames:
            series.barge_ins.append(onsets[j] - start)
    for j, reply in enumerate(replies):
        lo = bounds[j]
        hi = bounds[j + 1] if j + 1 < len(bounds) else float("inf")
        i0, i1 = bisect.bisect_left(arrivals, lo), bisect.bisect_left(arrivals, hi)
        a, ms = arrivals[i0:i1], sizes[i0:i1]
        t_first = a[0] if a else lo
        # The parrot answers every utterance onset with a clear; it interrupts this reply only
        # if it came before the reply's last frame would have played.
        cutting = [c for c in clears[bisect.bisect_left(clears, lo) : bisect.bisect_left(clears, hi)]
                   if c < t_first + reply.frames * _FRAME_S]
        if cutting:
            stats.replies_interrupted += 1
            cleared = cutting[0]
            kept = sum(1 for t in a if t <= cleared)
            stats.frames_after_clear += round(sum(ms[kept:]) / _FRAME_S)
            a, ms = a[:kept], ms[:kept]
        got = round(sum(ms) / _FRAME_S)
        if not cutting:
            stats.frames_expected += reply.frames
            stats.frames_lost += max(0, reply.frames - got)
            stats.frames_extra += max(0, got - reply.frames)
        if not a:
            continue
        stats.replies_received += 1
        t0 = a[0]
        samples.reply_latency.append(t0 - (start + (reply.speech_end_frame - 1) * _FRAME_S))
        # offsets[k]: where message k's audio starts within the reply.
        offsets = [0.0]
        for size in ms[:-1]:
            offsets.append(offsets[-1] + size)
        paced = [k for k, o in enumerate(offsets) if o > lead_s + 1e-9]
        phase = min(a[k] - offsets[k] for k in paced) if paced else t0
        for k, (t, o) in enumerate(zip(a, offsets, strict=True)):
            samples.lateness_first.append(max(0.0, t - (t0 + max(0.0, o - lead_s))))
            if t > t0 + o + _HEARD_GAP_TOLERANCE_S:
                stats.late_frames += max(1, round(ms[k] / _FRAME_S))
        previous = None
        for k in paced:
            late = a[k] - offsets[k] - phase
            samples.lateness_grid.append(late)
            samples.lead.append(depths[i0 + k] / 1000.0)
            series.lateness.append((a[k] - start, late))
            if previous is not None and previous == k - 1:
                samples.inter_arrival.append(a[k] - a[k - 1])
            previous = k
    return stats, samples, series


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
        f"received {stats.frames_received} in {stats.messages_received} messages (odd-sized "
        f"{stats.odd_frames}, outside any reply {stats.frames_unexpected}); protocol errors "
        f"{stats.protocol_errors}",
        f"replies expected {stats.replies_expected}, received {stats.replies_received}, "
        f"interrupted {stats.replies_interrupted} (clears {stats.clears}, frames after clear "
        f"{stats.frames_after_clear})",
        f"frames expected {stats.frames_expected} (uninterrupted replies), lost {stats.frames_lost}, "
        f"extra {stats.frames_extra}",
        f"heard gaps (frame after its play time) {stats.late_frames}",
        f"lateness vs first-frame grid, ms: {_fmt(percentiles_ms(samples.lateness_first))}",
        f"lateness vs proxy grid phase, ms: {_fmt(percentiles_ms(samples.lateness_grid))}",
        f"inter-arrival, ms: {_fmt(percentiles_ms(samples.inter_arrival, (1, 50, 99)))}",
        f"lead (audio the platform held at each arrival), ms: {_fmt(percentiles_ms(samples.lead, (1, 50)))}",
        f"connect, ms: {_fmt(percentiles_ms(samples.connect))}; "
        f"time to first audio, ms: {_fmt(percentiles_ms(samples.first_audio))}",
        f"reply latency after end of speech, ms: {_fmt(percentiles_ms(samples.reply_latency))}",
        f"speech onset -> clear (barge-in path), ms: {_fmt(percentiles_ms(samples.bargein))}",
        f"marks received {stats.marks_received}, echoed {stats.marks_echoed}; "
        f"simulator worst send lateness {stats.send_late_max_s * 1000:.1f} ms",
    ]
    return "\n".join(lines)
