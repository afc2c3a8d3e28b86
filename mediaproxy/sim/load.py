"""``mediaproxy-sim load``: hundreds of Twilio calls from one core, with the generator's own health.

    python -m mediaproxy.sim.load --url ws://127.0.0.1:8080/twilio --calls 500 --duration 20 --json out.json
    python -m mediaproxy.sim.load --calls 1000 --procs 2 --cpus 2,3 ...

Each call plays the speech-like script of :mod:`mediaproxy.sim.script` (``--expect parrot``: talk
and silence, the echo backend's parrot answers each utterance) or one continuous utterance
(``--expect mirror``: a backend that echoes everything, e.g. ``mode = stream`` or a plain echo
bot), then a silent tail and ``stop``. Frames are pre-built and pre-masked once
(:mod:`mediaproxy.sim.load_wire`), one timer drives every call
(:mod:`mediaproxy.sim.load_calls`), receipt only records times and sizes, and the figures are
computed after the run (:mod:`mediaproxy.sim.load_report`).

The output (``--json``, and a summary on stdout) has the proxy's figures (outbound lateness vs the
proxy's grid, underruns, lost frames, ...) and the generator's own: CPU from ``getrusage`` (total
and busiest second), its send lateness (p50/p99/max of every frame vs its ideal time) and the time
it waited for a CPU (``/proc/self/schedstat``); ``generator.saturated`` is true when its send
lateness p99 passed 2 ms or a second was over 90 % busy: then the figures judge the generator (or,
when it mostly waited for a CPU, its busy machine: ``generator.verdict`` says which), not the proxy.
``--procs N`` runs N generator processes (pinned with ``--cpus``) and merges them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from mediaproxy.sim import load_report as report
from mediaproxy.sim.load_calls import LATE_BIN_S, LoadRecord, start_calls
from mediaproxy.sim.load_wire import StreamFrames
from mediaproxy.sim.script import FRAME_MS, CallScript, Reply, expected_replies, synthetic_script

SATURATED_SEND_P99_MS = 2.0
SATURATED_CPU_PCT = 90.0
STARVED_WAIT_PCT = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mediaproxy-sim load", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:8080/twilio", help="the proxy's Twilio WebSocket URL (ws://)")
    p.add_argument("--calls", type=int, default=100, help="concurrent calls (default 100)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of caller script per call (default 20)")
    p.add_argument("--expect", choices=("parrot", "mirror"), default="parrot",
                   help="parrot: talk/silence, one reply per utterance (echo backend, fake Realtime); "
                        "mirror: one continuous utterance echoed as it comes (default parrot)")
    p.add_argument("--talk-ms", type=int, default=1200, help="parrot: utterance length (default 1200)")
    p.add_argument("--gap-ms", type=int, default=2800, help="parrot: silence after each utterance (default 2800)")
    p.add_argument("--ramp", type=float, default=2.0, help="seconds over which calls are dialled (default 2)")
    p.add_argument("--lead-ms", type=int, default=60, help="the proxy's [playout] lead_ms (default 60)")
    p.add_argument("--silence-ms", type=int, default=600, help="the backend's end-of-speech silence (default 600)")
    p.add_argument("--threshold-dbfs", type=float, default=-40.0, help="the parrot's speech threshold (default -40)")
    p.add_argument("--procs", type=int, default=1, help="generator processes, calls shared out (default 1)")
    p.add_argument("--cpus", default="", help="comma-separated CPUs to pin the processes to, one each")
    p.add_argument("--first-index", type=int, default=0, help="index of the first call (unique call ids)")
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--raw", default="", help=argparse.SUPPRESS)  # a child's full results, for its parent
    p.add_argument("--json", default="", help="write the figures here (JSON)")
    p.add_argument("--samples", action="store_true", help="with --json: also the raw per-message samples")
    p.add_argument("--quiet", action="store_true", help="no summary on stdout")
    args = p.parse_args(argv)
    if args.calls < 1 or args.duration <= 0 or args.procs < 1:
        p.error("--calls, --duration and --procs must be positive")
    if urlparse(args.url).scheme != "ws":
        p.error("--url must be ws:// (the generator does its own framing, without TLS)")
    return args


def build_script(args: argparse.Namespace) -> tuple[CallScript, list[Reply]]:
    """Every call's script (with a silent tail for the last reply) and the replies it provokes."""
    if args.expect == "mirror":
        talk_ms = int(args.duration * 1000) // FRAME_MS * FRAME_MS
        script = synthetic_script(args.duration, talk_ms, 0, None, args.silence_ms, args.silence_ms + 1000)
        return script, report.mirror_replies(script)
    bare = synthetic_script(args.duration, args.talk_ms, args.gap_ms, None, args.silence_ms)
    longest = max((r.frames for r in expected_replies(bare, args.threshold_dbfs, args.silence_ms)), default=0)
    tail_ms = args.silence_ms + longest * FRAME_MS + 1000
    script = synthetic_script(args.duration, args.talk_ms, args.gap_ms, None, args.silence_ms, tail_ms)
    return script, expected_replies(script, args.threshold_dbfs, args.silence_ms)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def runqueue_wait_s() -> float:
    """Seconds this process was runnable but not running (0 where /proc has no schedstat)."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def run_calls(args: argparse.Namespace, script: CallScript) -> tuple[list[LoadRecord], dict[str, Any]]:
    """Every call of this process on the real reactor; returns the records and the generator's figures."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    clock: Any = reactor
    url = urlparse(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    now = clock.seconds()
    base = max(args.start_at, now + 0.2)
    grid, records, done = start_calls(clock, lambda h, p, f: clock.connectTCP(h, p, f, 30), host, port,
                                      url.path or "/", StreamFrames(script.payloads), args.calls, args.first_index,
                                      base, args.ramp, f"{os.getpid() % 100000:05d}")

    def stop(_: object = None) -> None:
        if clock.running:
            clock.stop()

    done.addCallback(stop)

    busiest = [0.0]
    last = [time.monotonic(), cpu_seconds()]

    def sample_cpu() -> None:
        t, c = time.monotonic(), cpu_seconds()
        if t - last[0] > 0.5:
            busiest[0] = max(busiest[0], (c - last[1]) / (t - last[0]) * 100.0)
        last[0], last[1] = t, c

    sampler = LoopingCall(sample_cpu)
    limit = base - now + args.ramp + script.duration_s + 30.0
    watchdog = clock.callLater(limit, stop)
    # Long-lived objects out of the collector, rare young collections: our own pauses would look
    # like the proxy's lateness.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    wall0, cpu0, wait0 = time.monotonic(), cpu_seconds(), runqueue_wait_s()
    sampler.start(1.0, now=False)
    clock.run()
    wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
    if sampler.running:
        sampler.stop()
    if watchdog.active():
        watchdog.cancel()
    grid.stop()
    generator = {"pid": os.getpid(), "calls": args.calls, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                 "cpu_pct": round(cpu / wall * 100.0, 1) if wall else 0.0, "busiest_second_pct": round(busiest[0], 1),
                 "runqueue_wait_s": round(runqueue_wait_s() - wait0, 3), "sends": grid.sends, "ticks": grid.ticks,
                 "send_late_max_s": grid.late_max_s, "send_late_hist": list(grid.late_hist)}
    return records, generator


def figures(args: argparse.Namespace, script: CallScript, replies: list[Reply], stats: report.LoadStats,
            samples: report.Samples, generators: list[dict[str, Any]], call_seconds: float) -> dict[str, Any]:
    """The run's figures (see the module docstring)."""
    hist = np.sum([g["send_late_hist"] for g in generators], axis=0)
    late_max = max(g["send_late_max_s"] for g in generators)
    send_late = report.histogram_percentiles(hist, LATE_BIN_S, late_max)
    busiest = max(g["busiest_second_pct"] for g in generators)
    wait_share = max(g["runqueue_wait_s"] / g["wall_s"] * 100.0 if g["wall_s"] else 0.0 for g in generators)
    late = (send_late["p99"] or 0.0) > SATURATED_SEND_P99_MS
    saturated = late or busiest > SATURATED_CPU_PCT
    if not saturated:
        verdict = "ok"
    elif busiest > SATURATED_CPU_PCT:
        verdict = f"saturated: a second was {busiest:.0f} % busy"
    elif wait_share > STARVED_WAIT_PCT:
        verdict = (f"starved: send p99 {send_late['p99']:.1f} ms while waiting for a CPU {wait_share:.0f} % of the "
                   f"time (other processes on this core)")
    else:
        verdict = f"late: send p99 {send_late['p99']:.1f} ms"
    procs = [{k: v for k, v in g.items() if k != "send_late_hist"} for g in generators]
    for g, p in zip(generators, procs, strict=True):
        p["send_late_ms"] = report.histogram_percentiles(g["send_late_hist"], LATE_BIN_S, g["send_late_max_s"])
    return {
        "calls": stats.calls, "completed": stats.completed, "expect": args.expect,
        "script_s": script.duration_s, "replies_per_call": len(replies), "call_seconds": round(call_seconds, 3),
        "stats": stats.to_json(),
        "outbound_lateness_ms": report.percentiles(samples["lateness_grid"]),
        "lateness_first_ms": report.percentiles(samples["lateness_first"]),
        "reply_latency_ms": report.percentiles(samples["reply_latency"]),
        "bargein_ms": report.percentiles(samples["bargein"]),
        "underrun_gap_ms": report.percentiles(samples["underrun_gaps"]),
        "generator": {"cpu_s": round(sum(g["cpu_s"] for g in generators), 3),
                      "cpu_pct": round(sum(g["cpu_pct"] for g in generators), 1),
                      "busiest_second_pct": busiest, "send_late_ms": send_late, "sends": int(hist.sum()),
                      "runqueue_wait_pct": round(wait_share, 1), "saturated": saturated, "verdict": verdict,
                      "processes": procs},
    }


def summary(fig: dict[str, Any]) -> str:
    s, g = fig["stats"], fig["generator"]

    def ms(d: dict[str, float | None]) -> str:
        return " / ".join("-" if v is None else f"{v:.2f}" for v in d.values())

    return "\n".join([
        f"calls {fig['calls']} (completed {fig['completed']}), {fig['script_s']:.1f} s script, expect {fig['expect']}",
        f"frames sent {s['frames_sent']}, received {s['frames_received']} in {s['messages_received']} messages; "
        f"expected {s['frames_expected']}, lost {s['frames_lost']}, extra {s['frames_extra']}",
        f"replies {s['replies_received']} of {s['replies_expected']} (interrupted {s['replies_interrupted']}); "
        f"underruns {s['underruns']}; heard gaps {s['late_frames']}; marks {s['marks_received']} "
        f"(echoed {s['marks_echoed']}); clears {s['clears']}",
        f"outbound lateness vs proxy grid p50/p99/max {ms(fig['outbound_lateness_ms'])} ms; vs first frame "
        f"{ms(fig['lateness_first_ms'])} ms",
        f"reply latency p50/p99/max {ms(fig['reply_latency_ms'])} ms; speech -> clear {ms(fig['bargein_ms'])} ms",
        f"generator: CPU {g['cpu_pct']:.1f} % (busiest second {g['busiest_second_pct']:.1f} %), send lateness "
        f"p50/p99/max {ms(g['send_late_ms'])} ms over {g['sends']} sends; waited for a CPU "
        f"{g['runqueue_wait_pct']:.0f} % of the time; "
        + ("not saturated" if not g["saturated"] else f"NOT TRUSTWORTHY ({g['verdict']}): these figures judge "
           "the generator or its machine, not the proxy"),
    ])


def run_children(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    """``--procs`` children, each with its share of the calls and one CPU; their raw results."""
    cpus = [int(c) for c in args.cpus.split(",") if c.strip()] if args.cpus else []
    start_at = time.time() + 1.5  # reactor seconds are wall-clock seconds: one shared start
    shares = [args.calls // args.procs + (1 if i < args.calls % args.procs else 0) for i in range(args.procs)]
    children, outs, first = [], [], args.first_index
    with tempfile.TemporaryDirectory(prefix="mediaproxy-load-") as tmp:
        for i, n in enumerate(shares):
            out = Path(tmp) / f"child{i}.json"
            cmd = [sys.executable, "-m", "mediaproxy.sim.load", *argv, "--procs", "1", "--calls", str(n),
                   "--first-index", str(first), "--start-at", str(start_at), "--raw", str(out), "--quiet",
                   "--json", ""]
            cmd += ["--cpus", str(cpus[i % len(cpus)])] if cpus else ["--cpus", ""]
            children.append(subprocess.Popen(cmd))
            outs.append(out)
            first += n
        for child in children:
            child.wait()
        return [json.loads(out.read_text()) for out in outs if out.exists()]


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 0 when every call completed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    script, replies = build_script(args)
    if args.procs > 1:
        raws = run_children(args, argv)
        if len(raws) != args.procs:
            print("mediaproxy-sim load: a generator process wrote no results", file=sys.stderr)
            return 2
        stats = report.LoadStats()
        parts: dict[str, list[Any]] = {name: [] for name in report.SAMPLE_NAMES}
        for raw in raws:
            stats.add(report.LoadStats.from_json(raw["stats"]))
            for name, values in report.samples_from_json(raw["samples"]).items():
                parts[name].append(values)
        samples = {name: np.concatenate(p) for name, p in parts.items()}
        generators = [raw["generator"] for raw in raws]
        call_seconds = sum(raw["call_seconds"] for raw in raws)
    else:
        if args.cpus:
            os.sched_setaffinity(0, {int(args.cpus.split(",")[0])})
        records, generator = run_calls(args, script)
        stats, samples = report.analyse(records, replies, args.lead_ms, args.expect == "mirror")
        generators = [generator]
        call_seconds = sum((r.closed_at or r.opened_at or 0.0) - (r.opened_at or 0.0) for r in records)
        if args.raw:
            Path(args.raw).write_text(json.dumps({"stats": stats.to_json(), "samples": report.samples_to_json(samples),
                                                  "generator": generator, "call_seconds": call_seconds}))
    fig = figures(args, script, replies, stats, samples, generators, call_seconds)
    if args.json:
        if args.samples:
            fig["samples"] = report.samples_to_json(samples)
        Path(args.json).write_text(json.dumps(fig, indent=1))
    if not args.quiet:
        print(summary(fig))
    return 0 if stats.completed == stats.calls else 1


if __name__ == "__main__":
    sys.exit(main())
