#!/usr/bin/env python3
"""Soak benchmark: N concurrent Twilio calls against the echo parrot through one real proxy
process for a long time; does memory grow, is a frame ever lost, does lateness creep?

    .venv/bin/python bench/soak.py                       # 100 calls, 30 minutes
    .venv/bin/python bench/soak.py --minutes 10 --interval 60

Starts ``twistd -n mediaproxy`` on a temporary copy of ``etc/mediaproxy.ini`` (echo backend,
parrot mode, loopback ports) and one ``mediaproxy-sim`` process whose N calls each play a script
of the whole duration (talk 1.2 s, pause 2.8 s) and write their arrivals (``--json
--arrivals``). Every ``--interval`` seconds after ``--warmup`` (the first sample is the RSS
baseline) it samples the proxy's RSS (``VmRSS``) and CPU and scrapes ``/metrics``. At the end
it prints one row per interval:

* RSS (MiB, and growth from the baseline), proxy CPU (% of one core);
* outbound lateness p99 / max of that interval, from the deltas of the
  ``mediaproxy_playout_late_seconds`` histogram (bucket resolution: "<= upper bound");
* underruns (``mediaproxy_playout_underruns_total`` delta), frames the proxy dropped
  (``mediaproxy_frames_dropped_total`` delta), frames sent (``frames_total{out}`` delta);
* frames lost: expected parrot reply frames minus those the callers received, for the replies
  whose window starts in that interval (the simulator's accounting, from its arrivals); and the
  callers' own heard gaps (a frame later than its play time) in that interval;

then the verdict against the targets: RSS growth < 5 % (last sample against the baseline) and 0
frames lost (all calls, whole run), and whether every call ended with its ``stop``. Bounded:
the simulator stops itself after its script; the bench gives up ``warmup + minutes + 3 min``
after the start. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_twilio import (  # noqa: E402
    bucket_max,
    bucket_quantile,
    buckets,
    free_port,
    scrape,
    stop_process,
    total,
    wait_ready,
    write_config,
)
from longrun import ProcSampler, delta_buckets, reply_accounting  # noqa: E402

from mediaproxy.sim.cli import build_script  # noqa: E402
from mediaproxy.sim.cli import parse_args as sim_parse_args  # noqa: E402
from mediaproxy.sim.script import FRAME_MS, expected_replies  # noqa: E402

TARGET_RSS_GROWTH = 0.05
_FRAME_S = FRAME_MS / 1000.0


def run(args: argparse.Namespace) -> int:
    duration_s = args.minutes * 60.0
    sim_argv = ["--calls", str(args.calls), "--duration", str(duration_s), "--ramp", str(args.ramp)]
    script = build_script(sim_parse_args(["twilio", *sim_argv]))
    replies = expected_replies(script, -40.0, 600)
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mediaproxy-soak-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        proxy_port, metrics_port = free_port(), free_port()
        config = write_config(work, proxy_port, metrics_port, args.calls)
        log = open(work / "proxy.log", "wb")
        proxy = subprocess.Popen([str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "mediaproxy",
                                  "--config", str(config)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        sim: subprocess.Popen[bytes] | None = None
        try:
            metrics_url = f"http://127.0.0.1:{metrics_port}"
            wait_ready(metrics_url + "/ready", proxy)
            sim = subprocess.Popen(
                [sys.executable, "-m", "mediaproxy.sim.cli", "twilio", f"ws://127.0.0.1:{proxy_port}/twilio",
                 *sim_argv, "--json", str(work / "sim.json"), "--arrivals", "--no-progress"],
                cwd=ROOT, stdout=open(work / "sim.log", "wb"), stderr=subprocess.STDOUT)
            start = time.monotonic()
            deadline = start + args.warmup + duration_s + 180
            sampler = ProcSampler(proxy.pid, start)
            next_at = start + args.warmup
            while sim.poll() is None and time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, next_at - time.monotonic())))
                now = time.monotonic()
                if now >= next_at:
                    cpu_pct, rss = sampler.sample(now)
                    # A generous timeout: on a machine shared with other work one scrape was seen
                    # answered 8 s late, and a lost sample must not end a 30-minute run.
                    asked = time.monotonic()
                    metrics = scrape(metrics_url + "/metrics", timeout=60.0)
                    samples.append({"t": time.time(), "elapsed": now - start, "rss_kib": rss, "cpu_pct": cpu_pct,
                                    "scrape_s": time.monotonic() - asked, "metrics": metrics})
                    next_at += args.interval
            if sim.poll() is None:
                print("soak: simulator overran; stopping it", file=sys.stderr)
        finally:
            if sim is not None:
                stop_process(sim, 10.0)
            stop_process(proxy)
            log.close()
        if not (work / "sim.json").exists():
            print((work / "sim.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit("the simulator wrote no results")
        sim_data = json.loads((work / "sim.json").read_text())
        tracebacks = (work / "proxy.log").read_text(errors="replace").count("Traceback")
    report(args, samples, sim_data, replies, tracebacks)
    return 0


def report(args: argparse.Namespace, samples: list[dict[str, Any]], sim: dict[str, Any], replies: list[Any],
           tracebacks: int) -> None:
    if len(samples) < 2:
        raise SystemExit("soak: too few samples (run longer than --warmup + --interval)")
    calls = sim["calls"]
    # Per-reply accounting of every call, and each call's heard gaps, placed in time.
    lost_at: list[tuple[float, int]] = []
    expected_at: list[tuple[float, int]] = []
    for call in calls:
        for r in reply_accounting(call, replies):
            if not r.interrupted:
                lost_at.append((r.window_start, r.lost))
                expected_at.append((r.window_start, r.expected))
    gaps_at: list[float] = []
    for call in calls:
        arrivals = call["arrivals"]
        k = 0
        for r in reply_accounting(call, replies):
            while k < len(arrivals) and arrivals[k] < r.window_start:
                k += 1
            first, j = r.first_arrival, 0
            while k < len(arrivals) and arrivals[k] < r.window_end:
                if first is not None and arrivals[k] > first + j * _FRAME_S + 0.001:
                    gaps_at.append(arrivals[k])
                j += 1
                k += 1

    def in_window(values: list[tuple[float, int]], lo: float, hi: float) -> int:
        return sum(v for t, v in values if lo <= t < hi)

    base = samples[0]
    base_rss = base["rss_kib"]
    print(f"== mediaproxy soak: {args.calls} Twilio calls x {args.minutes:g} min, echo parrot, one simulator process, "
          f"{os.cpu_count()} CPUs; baseline after {args.warmup:g} s warm-up, a row every {args.interval:g} s ==")
    print(f"{'elapsed':>8} {'RSS MiB':>8} {'growth':>7} {'CPU %':>6} {'late p99':>10} {'late max':>10} "
          f"{'underruns':>9} {'dropped':>7} {'frames out':>10} {'expected':>8} {'lost':>5} {'gaps':>5}")
    print(f"{base['elapsed']:8.0f} {base_rss / 1024:8.1f} {'-':>7} {base['cpu_pct']:6.1f} (baseline)")
    late_name, out_name = "mediaproxy_playout_late_seconds", "mediaproxy_frames_total"
    for prev, cur in zip(samples, samples[1:], strict=False):
        m0, m1 = prev["metrics"], cur["metrics"]
        late = delta_buckets(buckets(m1, late_name), buckets(m0, late_name))
        underruns = total(m1, "mediaproxy_playout_underruns_total") - total(m0, "mediaproxy_playout_underruns_total")
        dropped = total(m1, "mediaproxy_frames_dropped_total") - total(m0, "mediaproxy_frames_dropped_total")
        frames_out = total(m1, out_name, direction="out") - total(m0, out_name, direction="out")
        lo, hi = prev["t"], cur["t"]
        gaps = sum(1 for t in gaps_at if lo <= t < hi)
        growth = (cur["rss_kib"] - base_rss) / base_rss * 100
        print(f"{cur['elapsed']:8.0f} {cur['rss_kib'] / 1024:8.1f} {growth:6.1f}% {cur['cpu_pct']:6.1f} "
              f"{bucket_quantile(late, 0.99):>10} {bucket_max(late):>10} {underruns:9g} {dropped:7g} "
              f"{frames_out:10g} {in_window(expected_at, lo, hi):8d} {in_window(lost_at, lo, hi):5d} {gaps:5d}")
    last = samples[-1]
    growth = (last["rss_kib"] - base_rss) / base_rss
    lost = sum(v for _, v in lost_at)
    expected = sum(v for _, v in expected_at)
    m_last = last["metrics"]
    late_all = buckets(m_last, late_name)
    completed = sum(1 for c in calls if c["close_reason"] == "stop")
    print(f"whole run             {expected} reply frames expected, {lost} lost; heard gaps {len(gaps_at)}; "
          f"lateness p99/max (whole run, server) {bucket_quantile(late_all, 0.99)} / {bucket_max(late_all)}; "
          f"underruns {total(m_last, 'mediaproxy_playout_underruns_total'):g}; calls ended with stop "
          f"{completed} of {len(calls)}")
    slowest = max(s.get("scrape_s", 0.0) for s in samples)
    stall = buckets(m_last, "mediaproxy_clock_tick_late_seconds")
    print(f"slowest /metrics answer {slowest:.2f} s; longest reactor stall (buckets) {bucket_max(stall)}")
    if tracebacks:
        print(f"WARNING: {tracebacks} tracebacks in the proxy log")
    checks = {
        "RSS growth < 5 %": growth < TARGET_RSS_GROWTH,
        "0 frames lost": lost == 0,
        "every call ended with stop": completed == len(calls),
    }
    print(f"verdict               RSS {base_rss / 1024:.1f} -> {last['rss_kib'] / 1024:.1f} MiB "
          f"({growth * 100:+.1f} %); " + "; ".join(f"{k}: {'MET' if v else 'MISSED'}" for k, v in checks.items()))


def main() -> int:
    p = argparse.ArgumentParser(description="Long run of N Twilio calls through one proxy (echo parrot).")
    p.add_argument("--calls", type=int, default=100, help="concurrent calls (default 100)")
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of caller script per call (default 30)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60)")
    p.add_argument("--warmup", type=float, default=30.0,
                   help="seconds before the baseline sample (default 30: ramp and first replies done)")
    p.add_argument("--ramp", type=float, default=4.0, help="seconds over which calls start (default 4)")
    p.add_argument("--keep", default="", help="keep config, logs and results in this directory")
    args = p.parse_args()
    if args.calls < 1 or args.minutes * 60 < args.warmup + args.interval:
        p.error("--minutes must cover --warmup plus one --interval")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
