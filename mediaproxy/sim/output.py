"""What ``mediaproxy-sim`` shows and writes: the progress bar, the summary table and report, the
JSON file, the recordings and the plot.

The JSON file (``--json``) is what benchmarks read: ``stats`` (:class:`CallStats` summed),
``samples`` (:class:`Samples`, raw seconds), ``sim_cpu_s``, ``platform``, ``url``, ``summary``
(the figures of the table, in ms) and ``calls``: per call ``index``, ``call_id``,
``close_reason`` (``stop`` when the simulator ended it as scripted), ``close_code``, its
:class:`CallStats` fields, ``errors`` (the first protocol errors), ``figures`` (per-call
percentiles in ms), ``recording`` (its WAV, if any), and with ``--arrivals`` ``script_start``,
``arrivals`` (one time per 20 ms of bot audio), ``media`` (``[time, ms]`` per message),
``clears`` and ``stalls``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mediaproxy.sim.call_record import CallRecord
from mediaproxy.sim.report import CallSeries, CallStats, Samples, analyse_call, format_summary, percentiles_ms
from mediaproxy.sim.script import CallScript, Reply

__all__ = ["Progress", "CallResult", "RunReport", "recorded_indexes", "summarize", "analyse_run"]

_TABLE_ROWS = 20  # calls listed in the table; the rest are in the totals


class Progress:
    """A progress bar of calls finished (rich), on stderr; does nothing when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None
        self._done = 0
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # Refreshed from the reactor (refresh()), not by rich's own thread: the simulator's
        # timing must not compete with a second thread.
        self._bar = Progress(TextColumn("calls"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=Console(stderr=True), auto_refresh=False, transient=True)
        self._task = self._bar.add_task("calls", total=total)
        self._bar.start()

    def advance(self) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.update(self._task, completed=self._done)

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def recorded_indexes(target: str | None, calls: int, first_index: int) -> set[int]:
    """The calls ``--record`` keeps audio of: none, the first, or (a directory) every one."""
    if not target:
        return set()
    if record_to_directory(target):
        return set(range(first_index, first_index + calls))
    return {first_index}


def record_to_directory(target: str) -> bool:
    """``--record DIR/`` or an existing directory: one file per call."""
    return target.endswith(os.sep) or target.endswith("/") or os.path.isdir(target)


@dataclass
class CallResult:
    """One call's record and figures."""

    record: CallRecord
    stats: CallStats
    samples: Samples
    series: CallSeries
    recording: str | None = None

    def figures(self) -> dict[str, Any]:
        """Per-call percentiles, in ms (None when there is no sample)."""
        s = self.samples
        return {
            "connect_ms": _one(s.connect), "first_audio_ms": _one(s.first_audio),
            "reply_latency_ms": percentiles_ms(s.reply_latency), "lateness_ms": percentiles_ms(s.lateness_grid),
            "lead_ms": percentiles_ms(s.lead, (1, 50)),
            "inter_arrival_ms": percentiles_ms(s.inter_arrival, (1, 50, 99)),
            "bargein_ms": percentiles_ms(s.bargein),
        }


@dataclass
class RunReport:
    """Every call's results and their totals."""

    calls: list[CallResult] = field(default_factory=list)
    total: CallStats = field(default_factory=CallStats)
    samples: Samples = field(default_factory=Samples)
    cpu_s: float = 0.0


def _one(values: list[float]) -> float | None:
    return round(values[0] * 1000.0, 3) if values else None


def analyse_run(records: list[CallRecord], replies: list[Reply], lead_ms: int) -> RunReport:
    """Figures of every call (:func:`~mediaproxy.sim.report.analyse_call`) and their totals."""
    report = RunReport()
    for record in records:
        stats, samples, series = analyse_call(record, replies, lead_ms)
        report.total.add(stats)
        report.samples.extend(samples)
        report.calls.append(CallResult(record, stats, samples, series))
    return report


def summarize(args: argparse.Namespace, script: CallScript, replies: list[Reply], records: list[CallRecord],
              cpu_s: float, out: Any = None) -> RunReport:
    """Analyse the calls, then print the table and report to ``out`` (stdout) and write what
    ``--json``, ``--record`` and ``--plot`` ask for."""
    out = sys.stdout if out is None else out
    report = analyse_run(records, replies, args.lead_ms)
    report.cpu_s = cpu_s
    if args.record:
        from mediaproxy.sim.record import write_recordings

        write_recordings(args.record, report.calls, record_to_directory(args.record))
    print_table(report, args, out)
    if args.per_call:
        for r in report.calls:
            out.write(per_call_line(r) + "\n")
    out.write(f"{args.sim_mode.name} {args.url}: script {script.duration_s:.1f} s per call, "
              f"{len(replies)} replies expected per call\n")
    out.write(format_summary(report.total, report.samples) + "\n")
    received: Counter[str] = Counter()
    for r in report.calls:
        received.update(r.record.received)
    out.write("messages from the proxy: " + (", ".join(f"{k} {v}" for k, v in sorted(received.items())) or "none")
              + "\n")
    out.write(f"simulator CPU {cpu_s:.1f} s\n")
    for r in report.calls:
        for error in r.record.errors[:3]:
            out.write(f"call {r.record.index}: protocol error: {error}\n")
        if r.recording:
            out.write(f"call {r.record.index}: recording {r.recording}\n")
    if args.plot:
        from mediaproxy.sim.plot import write_plot

        write_plot(args.plot, report, f"{args.sim_mode.name} {args.url}", args.lead_ms)
        out.write(f"plot {args.plot}\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(report, args), f)
    return report


def to_json(report: RunReport, args: argparse.Namespace) -> dict[str, Any]:
    """The ``--json`` document (see the module docstring)."""
    calls = []
    for r in report.calls:
        record = r.record
        entry: dict[str, Any] = {"index": record.index, "call_id": record.call_id,
                                 "close_reason": record.close_reason, "close_code": record.close_code,
                                 **r.stats.to_json(), "errors": record.errors, "received": dict(record.received),
                                 "figures": r.figures(), "recording": r.recording}
        if args.arrivals:
            entry.update(script_start=record.script_start,
                         arrivals=[round(t, 4) for t in record.frame_arrivals()],
                         media=[[round(t, 4), ms] for t, ms in zip(record.arrivals, record.arrival_ms, strict=True)],
                         clears=[round(t, 4) for t in record.clears], stalls=record.stalls)
        calls.append(entry)
    s = report.samples
    summary = {"reply_latency_ms": percentiles_ms(s.reply_latency), "lateness_ms": percentiles_ms(s.lateness_grid),
               "lead_ms": percentiles_ms(s.lead, (1, 50)), "bargein_ms": percentiles_ms(s.bargein),
               "first_audio_ms": percentiles_ms(s.first_audio), "connect_ms": percentiles_ms(s.connect)}
    return {"platform": args.sim_mode.name, "url": args.url, "stats": report.total.to_json(),
            "samples": s.to_json(), "summary": summary, "calls": calls, "sim_cpu_s": report.cpu_s}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def per_call_line(r: CallResult) -> str:
    record, stats = r.record, r.stats
    p99 = percentiles_ms(r.samples.lateness_grid)["p99"]
    return (f"call {record.index:4d} {record.call_id}: received {stats.frames_received} expected "
            f"{stats.frames_expected} lost {stats.frames_lost} heard-gaps {stats.late_frames} grid-lateness p99 "
            f"{_ms(p99)} ms; protocol errors {stats.protocol_errors}; {record.close_reason or 'not closed'}")


def print_table(report: RunReport, args: argparse.Namespace, out: Any) -> None:
    """One row per call (the first few), then the totals, as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mediaproxy-sim {args.sim_mode.name}: {len(report.calls)} call(s)", title_justify="left")
    for name in ("call", "ended", "replies", "1st audio ms", "reply ms p50", "late ms p50/p99/max", "lead ms p50",
                 "heard gaps", "barge-in ms", "errors"):
        table.add_column(name, justify="left" if name in ("call", "ended") else "right")
    rows = report.calls[:_TABLE_ROWS]
    for r in rows:
        table.add_row(*_row(str(r.record.index), r.record.close_reason or "not closed", r.stats, r.samples))
    if len(report.calls) > 1:
        ended = f"{report.total.completed}/{report.total.calls} stop"
        table.add_row(*_row("all", ended, report.total, report.samples), style="bold")
    console = Console(file=out, width=max(120, Console(file=out).width), highlight=False)
    console.print(table)
    if len(report.calls) > len(rows):
        console.print(f"({len(report.calls) - len(rows)} more calls in the totals; --per-call lists them all)")


def _row(name: str, ended: str, stats: CallStats, samples: Samples) -> list[str]:
    late = percentiles_ms(samples.lateness_grid)
    first = percentiles_ms(samples.first_audio)["p50"]
    return [
        name, ended[:28], f"{stats.replies_received}/{stats.replies_expected}", _ms(first),
        _ms(percentiles_ms(samples.reply_latency)["p50"]),
        f"{_ms(late['p50'])}/{_ms(late['p99'])}/{_ms(late['max'])}",
        _ms(percentiles_ms(samples.lead, (50,))["p50"]), str(stats.late_frames),
        _ms(percentiles_ms(samples.bargein)["p50"]), str(stats.protocol_errors),
    ]
