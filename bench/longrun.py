"""Helpers shared by the long-running benchmarks (``chaos.py``, ``soak.py``); not a benchmark.

* :class:`ProcSampler`: a process's CPU (from ``/proc/<pid>/stat``) and RSS (``VmRSS`` of
  ``/proc/<pid>/status``), sampled on demand;
* :func:`reply_windows` / :func:`reply_accounting`: the simulator's per-reply accounting
  (``mediaproxy.sim.report``) redone from one call's raw arrivals (``mediaproxy-sim --json
  --arrivals``), so that figures can be split by time or by what happened to a call;
* :func:`delta_buckets`: the difference of two cumulative histogram scrapes.
"""

from __future__ import annotations

import bisect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_twilio import cpu_ticks  # noqa: E402

from mediaproxy.sim.script import FRAME_MS, Reply  # noqa: E402

_FRAME_S = FRAME_MS / 1000.0


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcSampler:
    """CPU share and RSS of one process between :meth:`sample` calls."""

    def __init__(self, pid: int, now: float) -> None:
        self.pid = pid
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t0 = self.last_t = now
        self.ticks0 = self.last_ticks = cpu_ticks(pid)
        self.peak_pct = 0.0
        self.rss_first = self.rss_last = self.rss_max = rss_kib(pid)

    def sample(self, now: float) -> tuple[float, int]:
        """(% of one core since the previous sample, RSS KiB now)."""
        try:
            ticks = cpu_ticks(self.pid)
        except OSError:
            return 0.0, 0
        pct = (ticks - self.last_ticks) / self.hz / max(now - self.last_t, 1e-6) * 100
        self.peak_pct = max(self.peak_pct, pct)
        self.last_t, self.last_ticks = now, ticks
        rss = rss_kib(self.pid)
        if rss:
            self.rss_last = rss
            self.rss_max = max(self.rss_max, rss)
        return pct, rss

    def average_pct(self) -> float:
        return (self.last_ticks - self.ticks0) / self.hz / max(self.last_t - self.t0, 1e-6) * 100


@dataclass
class ReplyResult:
    """One expected reply of one call: its window (arrival time), frames expected and received."""

    window_start: float
    window_end: float
    expected: int
    received: int
    first_arrival: float | None
    interrupted: bool

    @property
    def lost(self) -> int:
        return 0 if self.interrupted else max(0, self.expected - self.received)


def reply_windows(script_start: float, replies: list[Reply]) -> list[tuple[float, float]]:
    """Each reply's window of arrival time, as ``mediaproxy.sim.report`` cuts them."""
    bounds = [script_start + r.end_frame * _FRAME_S for r in replies]
    return [(lo, bounds[j + 1] if j + 1 < len(bounds) else float("inf")) for j, lo in enumerate(bounds)]


def reply_accounting(call: dict[str, Any], replies: list[Reply]) -> list[ReplyResult]:
    """Per-reply figures of one call from ``mediaproxy-sim --json --arrivals`` output."""
    arrivals: list[float] = call.get("arrivals", [])
    clears: list[float] = call.get("clears", [])
    out: list[ReplyResult] = []
    for (lo, hi), reply in zip(reply_windows(call["script_start"], replies), replies, strict=True):
        a = arrivals[bisect.bisect_left(arrivals, lo): bisect.bisect_left(arrivals, hi)]
        t_first = a[0] if a else lo
        cut = [c for c in clears[bisect.bisect_left(clears, lo): bisect.bisect_left(clears, hi)]
               if c < t_first + reply.frames * _FRAME_S]
        out.append(ReplyResult(lo, hi, reply.frames, len(a), a[0] if a else None, bool(cut)))
    return out


def delta_buckets(after: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` buckets of ``after`` minus ``before`` (same bucket bounds)."""
    previous = dict(before)
    return [(le, count - previous.get(le, 0.0)) for le, count in after]
