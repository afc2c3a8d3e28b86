#!/usr/bin/env python3
"""Benchmark: N concurrent simulated Twilio calls against one real proxy process (echo parrot).

    .venv/bin/python bench/bench_twilio.py --calls 150 --duration 40

Starts ``twistd -n mediaproxy`` (the project's real plugin) with a temporary config on free
loopback ports, runs ``mediaproxy-sim`` in one or two separate processes, samples the proxy's CPU
from /proc/<pid>/stat, scrapes /metrics at the end, stops the proxy and prints:

* proxy CPU (% of one core) over the run, and the machine's total busy share (other load on
  a shared machine shows there);
* outbound lateness p50/p99/max from ``mediaproxy_playout_late_seconds`` (bucket resolution:
  "<= upper bound of the bucket holding the quantile") and from the client side (exact);
* underruns, frames lost (expected parrot frames vs received, proxy frames_total{out} vs
  received, ``mediaproxy_frames_dropped_total``), the longest GC pause and the longest reactor
  stall (max non-empty bucket of ``gc_pause_seconds`` / ``clock_tick_late_seconds``).

Profiling: ``--profile out.prof`` (or ``MEDIAPROXY_BENCH_PROFILE=out.prof``) runs the proxy under
``python -m cProfile`` and prints its top functions afterwards. Bounded: everything stops by
itself; loopback only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pstats
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediaproxy.sim.report import CallStats, Samples, percentiles_ms  # noqa: E402

TARGET_P99_MS = 5.0


_PROFILE_WRAPPER = """\
import cProfile, sys
from twisted.application import app
from twisted.scripts import twistd
out = sys.argv[1]
sys.argv = ["twistd"] + sys.argv[2:]
app._exitWithSignal = lambda sig: None
profiler = cProfile.Profile()
profiler.enable()
try:
    twistd.run()
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, proxy_port: int, metrics_port: int, calls: int, workers: int = 1) -> Path:
    """The default config with loopback ports, room for ``calls`` and ``[proxy] workers``."""
    text = (ROOT / "etc" / "mediaproxy.ini").read_text()
    text = re.sub(r"(?m)^listen = tcp:8080.*$", f"listen = tcp:{proxy_port}:interface=127.0.0.1", text)
    text = re.sub(r"(?m)^listen = tcp:9090.*$", f"listen = tcp:{metrics_port}:interface=127.0.0.1", text)
    text = re.sub(r"(?m)^max_calls = .*$", f"max_calls = {max(1000, calls * 2)}", text)
    text = re.sub(r"(?m)^drain_seconds = .*$", f"drain_seconds = 2\nworkers = {workers}", text)
    path = directory / "bench.ini"
    path.write_text(text)
    return path


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid``, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_split_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of ``pid``, in clock ticks: the proxy's own code vs the kernel's socket
    and poll work done on its behalf."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor and its workers), from /proc/<pid>/task/*/children."""
    found = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            found.extend(process_tree(child))
    return found


def tree_ticks(pid: int) -> dict[int, int]:
    """:func:`cpu_ticks` of ``pid`` and of each live descendant, by pid."""
    ticks = {}
    for p in process_tree(pid):
        try:
            ticks[p] = cpu_ticks(p)
        except OSError:  # ended meanwhile
            pass
    return ticks


def runqueue_wait_s(pid: int) -> float:
    """Seconds ``pid`` has spent runnable but waiting for a CPU (/proc/<pid>/schedstat)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def wait_ready(url: str, proxy: subprocess.Popen[bytes], limit_s: float = 20.0, expect_ok: bool = False) -> None:
    """Until ``url`` answers (with 200 when ``expect_ok``)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise SystemExit(f"proxy exited with status {proxy.returncode}")
        try:
            http_get(url, timeout=1.0)
            return
        except urllib.error.HTTPError:
            if not expect_ok:
                return
            time.sleep(0.2)
        except OSError:
            time.sleep(0.2)
    raise SystemExit("proxy did not become ready")


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- /metrics ----------------------------------------------------------------------------------


def scrape(url: str, timeout: float = 5.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name: ``{sample_name: [(labels, value), ...]}``."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(http_get(url, timeout)):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def total(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in metrics.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def buckets(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` of histogram ``name``, summed over its label sets."""
    sums: dict[float, float] = {}
    for labels, value in metrics.get(name + "_bucket", []):
        le = float(labels["le"])
        sums[le] = sums.get(le, 0.0) + value
    return sorted(sums.items())


def bucket_quantile(cumulative: list[tuple[float, float]], q: float) -> str:
    """The bucket holding quantile ``q``, as "<= X ms" (bucket resolution)."""
    if not cumulative or cumulative[-1][1] == 0:
        return "-"
    count = cumulative[-1][1]
    previous = 0.0
    for le, c in cumulative:
        if c >= q * count and c > 0:
            if math.isinf(le):
                return f"> {previous * 1000:g} ms"
            return f"<= {le * 1000:g} ms"
        previous = le
    return "-"


def bucket_max(cumulative: list[tuple[float, float]]) -> str:
    """The upper bound of the highest non-empty bucket ("<= X ms")."""
    return bucket_quantile(cumulative, 1.0)


# --- run -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    profile = args.profile or os.environ.get("MEDIAPROXY_BENCH_PROFILE") or None
    procs = args.procs or (1 if args.calls <= 100 else 2)
    with tempfile.TemporaryDirectory(prefix="mediaproxy-bench-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        proxy_port, metrics_port = free_port(), free_port()
        config = write_config(work, proxy_port, metrics_port, args.calls, args.workers)
        twistd = str(Path(sys.executable).parent / "twistd")
        command = [twistd, "-n", "--pidfile=", "mediaproxy", "--config", str(config)]
        if profile:
            # twistd ends by re-sending itself the stop signal with the default handler, which
            # would kill cProfile before it writes: the wrapper turns that into a normal exit.
            wrapper = work / "profile_twistd.py"
            wrapper.write_text(_PROFILE_WRAPPER)
            command = [sys.executable, str(wrapper), str(Path(profile).resolve())] + command[1:]
        if args.proxy_nice:
            command = ["nice", "-n", str(args.proxy_nice)] + command
        log = open(work / "proxy.log", "wb")
        proxy = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        sims: list[subprocess.Popen[bytes]] = []
        try:
            metrics_url = f"http://127.0.0.1:{metrics_port}"
            wait_ready(metrics_url + "/ready", proxy)
            url = f"ws://127.0.0.1:{proxy_port}/twilio"
            share = [args.calls // procs + (1 if i < args.calls % procs else 0) for i in range(procs)]
            first = 0
            for i, n in enumerate(share):
                sim_cmd = [sys.executable, "-m", "mediaproxy.sim.cli", "twilio", url, "--no-progress",
                           "--calls", str(n),
                           "--duration", str(args.duration), "--ramp", str(args.ramp),
                           "--first-index", str(first), "--json", str(work / f"sim{i}.json")]
                if args.sim_nice:
                    sim_cmd = ["nice", "-n", str(args.sim_nice)] + sim_cmd
                if args.barge_in_ms is not None:
                    sim_cmd += ["--barge-in-ms", str(args.barge_in_ms)]
                sims.append(subprocess.Popen(sim_cmd, cwd=ROOT, stdout=open(work / f"sim{i}.log", "wb"),
                                             stderr=subprocess.STDOUT))
                first += n
            if args.workers > 1:  # the supervisor answers /ready once every worker does
                wait_ready(metrics_url + "/ready", proxy, expect_ok=True)
            wall0, tree0 = time.monotonic(), tree_ticks(proxy.pid)
            proxy0 = sum(tree0.values())
            busy0, all0 = machine_ticks()
            wait0 = sum(runqueue_wait_s(p) for p in tree0)
            peak_pct, last_t, last_ticks = 0.0, wall0, proxy0
            deadline = wall0 + args.ramp + args.duration + 120
            while any(s.poll() is None for s in sims):
                if time.monotonic() > deadline:
                    print("bench: simulator overran; stopping it", file=sys.stderr)
                    break
                time.sleep(1.0)
                now, ticks = time.monotonic(), sum(tree_ticks(proxy.pid).values())
                peak_pct = max(peak_pct, (ticks - last_ticks) / os.sysconf("SC_CLK_TCK") / (now - last_t) * 100)
                last_t, last_ticks = now, ticks
            hz = os.sysconf("SC_CLK_TCK")
            wall = time.monotonic() - wall0
            tree1 = tree_ticks(proxy.pid)
            proxy_cpu_s = (sum(tree1.values()) - proxy0) / hz
            per_process = {pid: (tree1[pid] - tree0.get(pid, 0)) / hz for pid in tree1}
            busy1, all1 = machine_ticks()
            proxy_wait_s = sum(runqueue_wait_s(p) for p in tree1) - wait0
            metrics = scrape(metrics_url + "/metrics")
        finally:
            for s in sims:
                stop_process(s, 5.0)
            stop_process(proxy)
            log.close()
        stats, samples, sim_cpu_s = CallStats(), Samples(), 0.0
        for i in range(procs):
            path = work / f"sim{i}.json"
            if not path.exists():
                print((work / f"sim{i}.log").read_text(), file=sys.stderr)
                raise SystemExit(f"simulator {i} wrote no results")
            data: dict[str, Any] = json.loads(path.read_text())
            stats.add(CallStats.from_json(data["stats"]))
            samples.extend(Samples.from_json(data["samples"]))
            sim_cpu_s += data["sim_cpu_s"]
        proxy_log = (work / "proxy.log").read_text(errors="replace")

    print_report(args, procs, wall, proxy_cpu_s, peak_pct, (busy1 - busy0) / max(all1 - all0, 1),
                 sim_cpu_s, stats, samples, metrics)
    if args.workers > 1:
        shares = ", ".join(f"pid {pid}: {cpu / wall * 100:.1f} %" for pid, cpu in per_process.items())
        print(f"proxy CPU by process  {shares}  (the first is the supervisor)")
    print(f"proxy waited for CPU  {proxy_wait_s:.2f} s runnable but not running over {wall:.1f} s "
          f"(/proc/<pid>/schedstat: time lost to other processes on this machine)")
    tracebacks = proxy_log.count("Traceback")
    if tracebacks:
        print(f"WARNING: {tracebacks} tracebacks in the proxy log")
    if profile:
        print_profile(profile, args.profile_top)
    return 0


def fmt(figures: dict[str, float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in figures.values())


def print_report(args: argparse.Namespace, procs: int, wall: float, proxy_cpu_s: float, peak_pct: float,
                 machine_busy: float, sim_cpu_s: float, stats: CallStats, samples: Samples,
                 metrics: dict[str, list[tuple[dict[str, str], float]]]) -> None:
    late = buckets(metrics, "mediaproxy_playout_late_seconds")
    gc_pause = buckets(metrics, "mediaproxy_gc_pause_seconds")
    stall = buckets(metrics, "mediaproxy_clock_tick_late_seconds")
    frames_out = total(metrics, "mediaproxy_frames_total", direction="out")
    frames_in = total(metrics, "mediaproxy_frames_total", direction="in")
    dropped = metrics.get("mediaproxy_frames_dropped_total", [])
    by_kind: dict[str, float] = {}  # summed over workers
    for lab, v in dropped:
        kind = f"{lab.get('direction')}/{lab.get('reason')}"
        by_kind[kind] = by_kind.get(kind, 0.0) + v
    dropped_text = ", ".join(f"{kind}={v:g}" for kind, v in by_kind.items()) or "0"
    underruns = total(metrics, "mediaproxy_playout_underruns_total")
    client_first = percentiles_ms(samples.lateness_first)
    client_grid = percentiles_ms(samples.lateness_grid)
    ncpu = os.cpu_count() or 1
    print(f"== mediaproxy Twilio benchmark: {args.calls} calls x {args.duration:g} s script, echo parrot, "
          f"{args.workers} worker(s), "
          f"{procs} simulator process(es), {ncpu} CPUs ==")
    print(f"calls                 {stats.calls} started, {stats.completed} completed with stop "
          f"(proxy calls_total {total(metrics, 'mediaproxy_calls_total'):g})")
    print(f"proxy CPU             {proxy_cpu_s / wall * 100:.1f} % of one core over {wall:.1f} s "
          f"(peak 1 s: {peak_pct:.1f} %); simulators {sim_cpu_s / wall * 100:.1f} %; "
          f"machine busy {machine_busy * 100:.1f} % of {ncpu} cores")
    print(f"lateness (server)     p50 {bucket_quantile(late, 0.5)}, p99 {bucket_quantile(late, 0.99)}, "
          f"max {bucket_max(late)}  [mediaproxy_playout_late_seconds, bucket resolution, "
          f"{late[-1][1] if late else 0:g} packets]")
    print(f"lateness (client)     p50/p99/max {fmt(client_first)} ms vs a 20 ms grid anchored at each "
          f"reply's first frame with {args.lead_ms} ms lead")
    print(f"                      p50/p99/max {fmt(client_grid)} ms vs the proxy's grid phase "
          f"(earliest frame; includes loopback + client delay)")
    print(f"inter-arrival         p1/p50/p99/max {fmt(percentiles_ms(samples.inter_arrival, (1, 50, 99)))} ms")
    print(f"heard gaps            {stats.late_frames} frames arrived after their play time")
    print(f"underruns             {underruns:g}  [mediaproxy_playout_underruns_total]")
    print(f"frames lost           {stats.frames_lost} of {stats.frames_expected} expected parrot frames "
          f"(extra {stats.frames_extra}); proxy sent {frames_out:g}, clients received "
          f"{stats.frames_received} (diff {frames_out - stats.frames_received:g}); frames_dropped_total: "
          f"{dropped_text}")
    print(f"frames in             clients sent {stats.frames_sent}, proxy counted {frames_in:g}")
    print(f"replies               {stats.replies_received} of {stats.replies_expected} "
          f"(interrupted {stats.replies_interrupted}); reply latency after speech p50/p99/max "
          f"{fmt(percentiles_ms(samples.reply_latency))} ms; speech->clear p50/p99/max "
          f"{fmt(percentiles_ms(samples.bargein))} ms")
    per_gen = {}
    for labels, _ in metrics.get("mediaproxy_gc_pause_seconds_count", []):
        gen = labels.get("generation", "?")
        per_gen[gen] = f"gen {gen}: {total(metrics, 'mediaproxy_gc_pause_seconds_count', generation=gen):g} " \
                       f"(sum {total(metrics, 'mediaproxy_gc_pause_seconds_sum', generation=gen) * 1000:.1f} ms)"
    print(f"longest GC pause      {bucket_max(gc_pause)}  [mediaproxy_gc_pause_seconds, "
          f"{gc_pause[-1][1] if gc_pause else 0:g} collections: {'; '.join(per_gen.values()) or 'none'}]")
    print(f"longest reactor stall {bucket_max(stall)}  [mediaproxy_clock_tick_late_seconds, "
          f"{stall[-1][1] if stall else 0:g} ticks; p99 {bucket_quantile(stall, 0.99)}]")
    print(f"simulator             worst own send lateness {stats.send_late_max_s * 1000:.1f} ms; "
          f"marks echoed {stats.marks_echoed}")
    p99 = client_grid["p99"]
    met = (p99 is not None and p99 <= TARGET_P99_MS and underruns == 0 and stats.frames_lost == 0
           and stats.completed == stats.calls)
    print(f"target (p99 <= {TARGET_P99_MS:g} ms client-side vs proxy grid, 0 underruns, 0 lost): "
          f"{'MET' if met else 'MISSED'}")


def print_profile(path: str, top: int) -> None:
    if not Path(path).exists():
        print(f"no profile written at {path}")
        return
    print(f"\n== proxy profile ({path}): top {top} by own time ==")
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(top)
    print(f"== top {top} by cumulative time ==")
    stats.sort_stats("cumulative").print_stats(top)


def main() -> int:
    p = argparse.ArgumentParser(description="N concurrent simulated Twilio calls against one proxy process.")
    p.add_argument("--calls", type=int, default=150, help="concurrent calls (default 150)")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of caller script per call (default 40)")
    p.add_argument("--ramp", type=float, default=4.0,
                   help="seconds over which calls start; one script cycle spreads their phases (default 4)")
    p.add_argument("--procs", type=int, default=0, help="simulator processes (default: 1 up to 100 calls, else 2)")
    p.add_argument("--barge-in-ms", type=int, default=None, help="barge in this far into every second reply")
    p.add_argument("--lead-ms", type=int, default=60, help="lead_ms of the default config (for the report)")
    p.add_argument("--profile", default="", help="run the proxy under cProfile, writing this file")
    p.add_argument("--proxy-nice", type=int, default=0,
                   help="run the proxy at this nice value (negative needs root; shields it from other load)")
    p.add_argument("--sim-nice", type=int, default=0, help="run the simulators at this nice value")
    p.add_argument("--workers", type=int, default=1,
                   help="[proxy] workers: proxy processes sharing the port (default 1; CPU is summed over all)")
    p.add_argument("--keep", default="", help="keep config, logs and simulator results in this directory")
    p.add_argument("--profile-top", type=int, default=30, help="functions shown from the profile")
    args = p.parse_args()
    if args.calls < 1 or args.duration <= 0:
        p.error("--calls and --duration must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
