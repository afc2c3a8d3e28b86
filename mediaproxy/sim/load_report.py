"""Figures of a load run, computed after it (numpy), from :class:`~mediaproxy.sim.load_calls.LoadRecord` s.

The definitions are :mod:`mediaproxy.sim.report`'s, per media *message* rather than per 20 ms
frame, since the proxy may send any multiple of 20 ms in one message. Each expected reply owns a
window of arrival time (from the send time of the frame that ends its utterance to the next
such time); within it, message ``m`` carries frames ``K[m] .. K[m] + f[m] - 1`` of the reply and
arrives at ``a[m]``; ``d`` is 20 ms and ``L`` the proxy's lead:

* *outbound lateness vs the proxy grid*: ``a[m] - K[m]*d - phase`` over the paced messages
  (``K[m]*d > L``), ``phase`` being the earliest ``a - K*d`` among them. With the *mirror*
  expectation (everything echoed as it comes: no server can send ahead of the caller), the
  reference of message ``m`` is instead the time its last frame ``K[m] + f[m] - 1`` was actually
  sent by the caller, so the generator's own send jitter is not counted as the server's:
  ``a[m] - sent[K[m] + f[m] - 1] - phase``;
* *lateness vs first frame*: ``max(0, a[m] - (a[0] + max(0, K[m]*d - L)))``;
* *heard gaps* (``late_frames``): messages that arrived after their first frame's play time
  ``a[0] + K[m]*d`` (+1 ms);
* *underruns*: the caller's playout, replayed (each message plays from ``max(arrival, end of the
  previous one)``), ran dry inside a reply for more than 1 ms before message ``m`` arrived;
  ``underrun_ms`` sums the silences;
* *lost*: expected frames of uninterrupted replies minus frames received (a reply is interrupted
  by a ``clear`` that comes before its last frame would have played).

Reply latency and speech onset -> clear are as in :mod:`mediaproxy.sim.report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mediaproxy.sim.load_calls import LoadRecord
from mediaproxy.sim.report import CallStats
from mediaproxy.sim.script import FRAME_BYTES, FRAME_MS, CallScript, Reply

_D = FRAME_MS / 1000.0
_TOLERANCE_S = 0.001
SAMPLE_NAMES = ("lateness_grid", "lateness_first", "reply_latency", "bargein", "underrun_gaps")

Samples = dict[str, npt.NDArray[np.float64]]


@dataclass
class LoadStats(CallStats):
    """:class:`~mediaproxy.sim.report.CallStats` plus what per-message accounting adds."""

    messages_received: int = 0
    underruns: int = 0
    other_messages: int = 0


def mirror_replies(script: CallScript) -> list[Reply]:
    """The expectation for a backend that echoes everything at once (no parrot): one reply, from
    frame 0, as long as the script's speech."""
    return [Reply(utterance_start_frame=0, end_frame=0, frames=script.talk_frames, speech_end_frame=1)]


def empty_samples() -> Samples:
    return {name: np.zeros(0) for name in SAMPLE_NAMES}


def analyse_record(record: LoadRecord, replies: list[Reply], lead_ms: int,
                   mirror: bool = False) -> tuple[LoadStats, Samples]:
    """Figures of one call; see the module docstring."""
    arrivals = np.frombuffer(record.arrivals, dtype=np.float64) if len(record.arrivals) else np.zeros(0)
    sizes = np.frombuffer(record.sizes, dtype=np.int32).astype(np.float64) if len(record.sizes) else np.zeros(0)
    sizes = np.maximum(sizes, 0.0)
    clears = np.frombuffer(record.clears, dtype=np.float64) if len(record.clears) else np.zeros(0)
    frames = sizes / FRAME_BYTES
    stats = LoadStats(calls=1, completed=int(record.completed), frames_sent=record.frames_sent,
                      frames_received=int(round(frames.sum())), messages_received=len(arrivals),
                      odd_frames=int(np.count_nonzero(sizes % FRAME_BYTES)), replies_expected=len(replies),
                      clears=len(clears), marks_received=record.marks_received, marks_echoed=record.marks_echoed,
                      other_messages=record.other_messages)
    out: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name in SAMPLE_NAMES}
    start, lead_s = record.script_start, lead_ms / 1000.0
    bounds = np.array([start + r.end_frame * _D for r in replies])
    edges = np.searchsorted(arrivals, np.append(bounds, np.inf))
    stats.frames_unexpected = int(round(frames[: edges[0]].sum())) if len(bounds) else stats.frames_received
    bargein = []
    for reply in replies:
        detected = start + (reply.utterance_start_frame + 1) * _D
        k = int(np.searchsorted(clears, detected))
        if k < len(clears) and clears[k] - detected < 1.0:
            bargein.append(clears[k] - detected)
    out["bargein"].append(np.array(bargein))
    for j, reply in enumerate(replies):
        a, f = arrivals[edges[j] : edges[j + 1]], frames[edges[j] : edges[j + 1]]
        lo, hi = bounds[j], (bounds[j + 1] if j + 1 < len(bounds) else np.inf)
        t_first = a[0] if len(a) else lo
        window_clears = clears[(clears >= lo) & (clears < hi)]
        cutting = window_clears[window_clears < t_first + reply.frames * _D]
        if len(cutting):
            stats.replies_interrupted += 1
            keep = a <= cutting[0]
            stats.frames_after_clear += int(round(f[~keep].sum()))
            a, f = a[keep], f[keep]
        else:
            got = int(round(f.sum()))
            stats.frames_expected += reply.frames
            stats.frames_lost += max(0, reply.frames - got)
            stats.frames_extra += max(0, got - reply.frames)
        if not len(a):
            continue
        stats.replies_received += 1
        a0 = a[0]
        out["reply_latency"].append(np.array([a0 - (start + (reply.speech_end_frame - 1) * _D)]))
        k_before = np.concatenate(([0.0], np.cumsum(f)[:-1]))
        due_first = a0 + np.maximum(0.0, k_before * _D - lead_s)
        out["lateness_first"].append(np.maximum(0.0, a - due_first))
        stats.late_frames += int(np.count_nonzero(a > a0 + k_before * _D + _TOLERANCE_S))
        paced = k_before * _D > lead_s + 1e-9
        if mirror:
            sent = np.frombuffer(record.send_times, dtype=np.float64) if len(record.send_times) else np.zeros(0)
            last = np.rint(k_before + f).astype(np.int64) - 1
            known = (last >= 0) & (last < len(sent))
            if known.any():
                offsets = a[known] - sent[last[known]]
                out["lateness_grid"].append(offsets - offsets.min())
        elif paced.any():
            offsets = a[paced] - k_before[paced] * _D
            out["lateness_grid"].append(offsets - offsets.min())
        # Playout replay: Q[m] = max(Q[m-1], a[m] - K[m]*d); message m finds the buffer dry
        # when a[m] - K[m]*d exceeds Q[m-1] (the previous message's end, in grid terms).
        q = np.maximum.accumulate(a - k_before * _D)
        gaps = (a[1:] - k_before[1:] * _D) - q[:-1]
        gaps = gaps[gaps > _TOLERANCE_S]
        stats.underruns += len(gaps)
        out["underrun_gaps"].append(gaps)
    return stats, {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in out.items()}


def analyse(records: list[LoadRecord], replies: list[Reply], lead_ms: int,
            mirror: bool = False) -> tuple[LoadStats, Samples]:
    """Summed counts and concatenated samples of every call."""
    total = LoadStats()
    parts: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name in SAMPLE_NAMES}
    for record in records:
        stats, samples = analyse_record(record, replies, lead_ms, mirror)
        total.add(stats)
        for name in SAMPLE_NAMES:
            parts[name].append(samples[name])
    return total, {name: np.concatenate(p) if p else np.zeros(0) for name, p in parts.items()}


def percentiles(values: npt.NDArray[np.float64], points: tuple[float, ...] = (50, 99)) -> dict[str, float | None]:
    """``{"p50": .., "p99": .., "max": ..}`` in milliseconds (None without samples)."""
    if not len(values):
        return {**{f"p{p:g}": None for p in points}, "max": None}
    ms = values * 1000.0
    found: dict[str, float | None] = {f"p{p:g}": round(float(np.percentile(ms, p)), 3) for p in points}
    found["max"] = round(float(ms.max()), 3)
    return found


def histogram_percentiles(hist: list[int] | Any, bin_s: float, max_s: float,
                          points: tuple[float, ...] = (50, 99)) -> dict[str, float | None]:
    """Percentiles (ms, upper edge of the bin) of a lateness histogram; ``max`` is exact."""
    counts = np.asarray(hist, dtype=np.int64)
    n = int(counts.sum())
    if not n:
        return {**{f"p{p:g}": None for p in points}, "max": None}
    cumulative = np.cumsum(counts)
    found: dict[str, float | None] = {}
    for p in points:
        b = int(np.searchsorted(cumulative, p / 100.0 * n))
        found[f"p{p:g}"] = round(min((b + 1) * bin_s, max_s) * 1000.0, 3)
    found["max"] = round(max_s * 1000.0, 3)
    return found


def samples_to_json(samples: Samples) -> dict[str, list[float]]:
    return {name: np.round(values, 6).tolist() for name, values in samples.items()}


def samples_from_json(data: dict[str, list[float]]) -> Samples:
    return {name: np.asarray(data.get(name, []), dtype=np.float64) for name in SAMPLE_NAMES}
