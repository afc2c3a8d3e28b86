#!/usr/bin/env python3
"""Benchmark: N concurrent Twilio calls through one real proxy process to a fake OpenAI Realtime
service in another process (µ-law pass-through, pacing of 10× bursts, barge-in).

    .venv/bin/python bench/bench_openai.py --calls 150 --duration 30

Processes (all on 127.0.0.1, all stopped at the end, each bounded in time):

* ``python -m mediaproxy.testing.fake_realtime`` (the tests' fake, without validation or
  history): speaks the GA protocol; its VAD is the echo parrot's detector
  and each answer lasts as long as the caller's turn, so the simulator's accounting of replies
  (frames expected, lost, interrupted) holds unchanged; answers are delivered at ``--speed``
  (10) × real time in irregular delta sizes; speech during an answer still in generation cancels
  it; truncates are checked against the audio sent, as the service does;
* ``twistd -n mediaproxy`` with a temporary config: ``[platform:twilio]`` → ``[backend:openai]
  type = openai-realtime`` at the fake (``api_key = ${OPENAI_API_KEY}``, set to a dummy);
* one or two ``mediaproxy-sim`` processes (``mediaproxy/sim``, shared with bench_twilio.py): each
  call talks (1.2 s), waits for the answer, and every second turn talks again
  ``--barge-in-ms`` into the answer.

Printed: calls; proxy CPU; outbound lateness p50/p99/max from ``mediaproxy_playout_late_seconds``
(bucket resolution) and client-side (exact; see mediaproxy/sim/report.py); underruns; frames
lost; barge-in flush p50/p99/max from ``mediaproxy_bargein_seconds`` (bucket resolution) and the
client's speech onset → ``clear``; the fake's truncate/cancel counts; the longest GC pause and
reactor stall. ``MEDIAPROXY_BENCH_PROFILE=out.prof`` runs the proxy under cProfile.
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

# The process plumbing and /metrics helpers are bench_twilio's (one copy of them in bench/).
from bench_twilio import (  # noqa: E402
    _PROFILE_WRAPPER,
    bucket_max,
    bucket_quantile,
    buckets,
    cpu_split_ticks,
    cpu_ticks,
    free_port,
    machine_ticks,
    print_profile,
    runqueue_wait_s,
    scrape,
    stop_process,
    total,
    wait_ready,
)

from mediaproxy.sim.report import CallStats, Samples, percentiles_ms  # noqa: E402

TARGET_CALLS = 150
TARGET_LATE_P99_MS = 5.0
TARGET_BARGEIN_P99_MS = 5.0
API_KEY = "bench-dummy-key"  # the fake's; never a real key


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (/proc/<pid>/status VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def write_config(directory: Path, proxy_port: int, metrics_port: int, fake_port: int, args: argparse.Namespace) -> Path:
    path = directory / "bench_openai.ini"
    path.write_text(f"""\
[proxy]
listen = tcp:{proxy_port}:interface=127.0.0.1
max_calls = {max(1000, args.calls * 2)}
drain_seconds = 2

[metrics]
listen = tcp:{metrics_port}:interface=127.0.0.1

[playout]
frame_ms = 20
lead_ms = {args.lead_ms}
prefill_ms = 0
max_buffer_ms = 30000
mark_interval_ms = 100
message_ms = {args.message_ms}

[platform:twilio]
path = /twilio
backend = openai

[backend:openai]
type = openai-realtime
url = ws://127.0.0.1:{fake_port}/v1/realtime
model = gpt-realtime
api_key = ${{OPENAI_API_KEY}}
voice = marin
instructions = You are a benchmark.
transcription_model =
silence_duration_ms = {args.silence_ms}
interrupt_response = true
input_chunk_ms = {args.input_chunk_ms}
""")
    return path


def run(args: argparse.Namespace) -> int:
    procs = args.procs or (1 if args.calls <= 75 else 2)
    profile = os.environ.get("MEDIAPROXY_BENCH_PROFILE", "")
    nice = ["nice", "-n", str(args.harness_nice)] if args.harness_nice else []
    with tempfile.TemporaryDirectory(prefix="mediaproxy-bench-openai-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        proxy_port, metrics_port, fake_port = free_port(), free_port(), free_port()
        bound_s = args.ramp + args.duration + 120
        fake = subprocess.Popen(
            nice + [sys.executable, "-m", "mediaproxy.testing.fake_realtime", "--port", str(fake_port),
                    "--api-key", API_KEY, "--speed", str(args.speed), "--stats", str(work / "fake.json"),
                    "--max-seconds", str(bound_s)],
            cwd=ROOT, stdout=open(work / "fake.log", "wb"), stderr=subprocess.STDOUT)
        config = write_config(work, proxy_port, metrics_port, fake_port, args)
        command = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "mediaproxy",
                   "--config", str(config)]
        if profile:
            wrapper = work / "profile_twistd.py"
            wrapper.write_text(_PROFILE_WRAPPER)
            command = [sys.executable, str(wrapper), str(Path(profile).resolve())] + command[1:]
        proxy_log = open(work / "proxy.log", "wb")
        proxy = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, OPENAI_API_KEY=API_KEY),
                                 stdout=proxy_log, stderr=subprocess.STDOUT)
        sims: list[subprocess.Popen[bytes]] = []
        try:
            metrics_url = f"http://127.0.0.1:{metrics_port}"
            wait_ready(metrics_url + "/ready", proxy)
            if fake.poll() is not None:
                raise SystemExit(f"fake server exited: {(work / 'fake.log').read_text()}")
            share = [args.calls // procs + (1 if i < args.calls % procs else 0) for i in range(procs)]
            first = 0
            for i, n in enumerate(share):
                sims.append(subprocess.Popen(
                    nice + [sys.executable, "-m", "mediaproxy.sim.cli", "twilio", f"ws://127.0.0.1:{proxy_port}/twilio",
                            "--no-progress",
                            "--calls", str(n), "--duration", str(args.duration), "--ramp", str(args.ramp),
                            "--first-index", str(first), "--lead-ms", str(args.lead_ms),
                            "--silence-ms", str(args.silence_ms), "--barge-in-ms", str(args.barge_in_ms),
                            "--json", str(work / f"sim{i}.json")],
                    cwd=ROOT, stdout=open(work / f"sim{i}.log", "wb"), stderr=subprocess.STDOUT))
                first += n
            hz = os.sysconf("SC_CLK_TCK")
            wall0, proxy0, fake0 = time.monotonic(), cpu_ticks(proxy.pid), cpu_ticks(fake.pid)
            split0 = cpu_split_ticks(proxy.pid)
            wait0, (busy0, all0) = runqueue_wait_s(proxy.pid), machine_ticks()
            rss0 = rss_peak = rss_kib(proxy.pid)
            while any(s.poll() is None for s in sims):
                rss_peak = max(rss_peak, rss_kib(proxy.pid))
                if time.monotonic() - wall0 > bound_s:
                    print("bench: simulator overran; stopping it", file=sys.stderr)
                    break
                time.sleep(0.5)
            wall = time.monotonic() - wall0
            proxy_cpu = (cpu_ticks(proxy.pid) - proxy0) / hz
            split1 = cpu_split_ticks(proxy.pid)
            proxy_split = ((split1[0] - split0[0]) / hz, (split1[1] - split0[1]) / hz)
            fake_cpu = (cpu_ticks(fake.pid) - fake0) / hz
            busy1, all1 = machine_ticks()
            proxy_wait = runqueue_wait_s(proxy.pid) - wait0
            metrics = scrape(metrics_url + "/metrics")
        finally:
            for s in sims:
                stop_process(s, 5.0)
            stop_process(proxy)
            stop_process(fake, 5.0)
            proxy_log.close()
        stats, samples, sim_cpu = CallStats(), Samples(), 0.0
        for i in range(procs):
            path = work / f"sim{i}.json"
            if not path.exists():
                print((work / f"sim{i}.log").read_text()[-3000:], file=sys.stderr)
                raise SystemExit(f"simulator {i} wrote no results")
            data: dict[str, Any] = json.loads(path.read_text())
            stats.add(CallStats.from_json(data["stats"]))
            samples.extend(Samples.from_json(data["samples"]))
            sim_cpu += data["sim_cpu_s"]
        fake_stats = json.loads((work / "fake.json").read_text()) if (work / "fake.json").exists() else {}
        log_text = (work / "proxy.log").read_text(errors="replace")
    print(f"proxy RSS             {rss0 / 1024:.1f} MiB before the calls, peak {rss_peak / 1024:.1f} MiB: "
          f"{(rss_peak - rss0) / max(args.calls, 1):.0f} KiB per call")
    busy = (busy1 - busy0) / max(all1 - all0, 1)
    report(args, procs, wall, proxy_cpu, proxy_split, fake_cpu, sim_cpu, proxy_wait, busy, stats,
           samples, fake_stats, metrics, log_text)
    if profile:
        print_profile(profile, 30)
    return 0


def fmt(figures: dict[str, float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in figures.values())


def bound_ms(text: str) -> float | None:
    """The upper bound of a "<= X ms" bucket text (None for "-" or an overflow bucket)."""
    return float(text[3:-3]) if text.startswith("<= ") else None


def report(args: argparse.Namespace, procs: int, wall: float, proxy_cpu: float, proxy_split: tuple[float, float],
           fake_cpu: float, sim_cpu: float,
           proxy_wait: float, machine_busy: float, stats: CallStats, samples: Samples, fake: dict[str, Any],
           metrics: dict[str, list[tuple[dict[str, str], float]]], log_text: str) -> None:
    late = buckets(metrics, "mediaproxy_playout_late_seconds")
    bargein = buckets(metrics, "mediaproxy_bargein_seconds")
    gc_pause = buckets(metrics, "mediaproxy_gc_pause_seconds")
    stall = buckets(metrics, "mediaproxy_clock_tick_late_seconds")
    underruns = total(metrics, "mediaproxy_playout_underruns_total")
    outcomes = {lab["outcome"]: v for lab, v in metrics.get("mediaproxy_calls_total", [])}
    dropped = ", ".join(f"{lab.get('direction')}/{lab.get('reason')}={v:g}"
                        for lab, v in metrics.get("mediaproxy_frames_dropped_total", [])) or "0"
    client_grid = percentiles_ms(samples.lateness_grid)
    client_first = percentiles_ms(samples.lateness_first)
    collections = "; ".join(f"gen {lab.get('generation')}: {v:g}"
                            for lab, v in metrics.get("mediaproxy_gc_pause_seconds_count", []))
    ncpu = os.cpu_count() or 1
    print(f"== mediaproxy Twilio <-> OpenAI Realtime benchmark: {args.calls} calls x {args.duration:g} s, fake "
          f"at {args.speed:g}x real time, {procs} simulator process(es), {ncpu} CPUs; input_chunk_ms "
          f"{args.input_chunk_ms}, message_ms {args.message_ms}, lead_ms {args.lead_ms}, harness nice "
          f"{args.harness_nice} ==")
    print(f"calls                 {stats.calls} started, {stats.completed} completed with stop; proxy outcomes "
          f"{ {k: int(v) for k, v in outcomes.items()} }")
    print(f"proxy CPU             {proxy_cpu / wall * 100:.1f} % of one core over {wall:.1f} s (ramp and tails "
          f"included); fake {fake_cpu / wall * 100:.1f} %, simulators {sim_cpu / wall * 100:.1f} %; machine busy "
          f"{machine_busy * 100:.0f} % of {ncpu} cores; proxy runnable but not running {proxy_wait:.2f} s")
    # Call-seconds: every call runs its whole script (ramp and tails are idle, not counted).
    call_s = stats.calls * args.duration
    if call_s:
        print(f"proxy CPU per call    {proxy_cpu / call_s * 1000:.2f} ms per call-second (user "
              f"{proxy_split[0] / call_s * 1000:.2f}, system {proxy_split[1] / call_s * 1000:.2f}); "
              f"{proxy_cpu / call_s * 100:.3f} % of a core per call, {call_s / max(proxy_cpu, 1e-9):.0f} calls "
              "per core at this rate")
    print(f"lateness (server)     p50 {bucket_quantile(late, 0.5)}, p99 {bucket_quantile(late, 0.99)}, max "
          f"{bucket_max(late)}  [mediaproxy_playout_late_seconds, bucket resolution, "
          f"{late[-1][1] if late else 0:g} packets]")
    print(f"lateness (client)     p50/p99/max {fmt(client_grid)} ms vs the proxy's grid phase; "
          f"{fmt(client_first)} ms vs each reply's first frame + {args.lead_ms} ms lead")
    print(f"underruns             {underruns:g}  [mediaproxy_playout_underruns_total]; heard gaps (client) "
          f"{stats.late_frames}")
    print(f"frames                lost {stats.frames_lost} of {stats.frames_expected} expected in uninterrupted "
          f"replies (extra {stats.frames_extra}, after a clear {stats.frames_after_clear}, odd-sized "
          f"{stats.odd_frames}); proxy out {total(metrics, 'mediaproxy_frames_total', direction='out'):g}, "
          f"clients received {stats.frames_received}; proxy in "
          f"{total(metrics, 'mediaproxy_frames_total', direction='in'):g} of {stats.frames_sent} sent; "
          f"dropped {dropped}")
    print(f"barge-in flush        p50 {bucket_quantile(bargein, 0.5)}, p99 {bucket_quantile(bargein, 0.99)}, max "
          f"{bucket_max(bargein)}  [mediaproxy_bargein_seconds: speech_started handled -> clear sent, "
          f"{bargein[-1][1] if bargein else 0:g}]; client speech onset -> clear p50/p99/max "
          f"{fmt(percentiles_ms(samples.bargein))} ms (3 hops and the fake's VAD included)")
    print(f"replies               {stats.replies_received} of {stats.replies_expected} (interrupted "
          f"{stats.replies_interrupted}); first frame after end of speech p50/p99/max "
          f"{fmt(percentiles_ms(samples.reply_latency))} ms (silence_duration_ms {args.silence_ms} included)")
    print(f"backend               fake: {fake.get('connections', '?')} connections, {fake.get('responses', '?')} "
          f"responses ({fake.get('responses_cancelled_by_vad', '?')} cancelled by its VAD), truncates accepted "
          f"{fake.get('truncates_ok', '?')} / rejected {fake.get('truncate_errors', '?')}, response.cancel "
          f"{fake.get('cancels_received', '?')}; proxy reconnects "
          f"{total(metrics, 'mediaproxy_backend_reconnects_total'):g}, backend errors "
          f"{total(metrics, 'mediaproxy_backend_errors_total'):g}")
    print(f"longest GC pause      {bucket_max(gc_pause)} ({collections or 'no collections'}); longest reactor "
          f"stall {bucket_max(stall)} (clock tick p99 {bucket_quantile(stall, 0.99)})")
    print(f"simulator             worst own send lateness {stats.send_late_max_s * 1000:.1f} ms; marks echoed "
          f"{stats.marks_echoed}")
    if log_text.count("Traceback"):
        print(f"WARNING: {log_text.count('Traceback')} tracebacks in the proxy log")
    late_p99, bargein_p99 = bound_ms(bucket_quantile(late, 0.99)), bound_ms(bucket_quantile(bargein, 0.99))
    checks = {
        f"{TARGET_CALLS} calls": stats.calls >= TARGET_CALLS and stats.completed == stats.calls,
        "lateness p99 <= 5 ms (server)": late_p99 is not None and late_p99 <= TARGET_LATE_P99_MS,
        "lateness p99 <= 5 ms (client)": client_grid["p99"] is not None and client_grid["p99"] <= TARGET_LATE_P99_MS,
        "0 underruns": underruns == 0,
        "barge-in flush p99 <= 5 ms": bargein_p99 is not None and bargein_p99 <= TARGET_BARGEIN_P99_MS,
    }
    print("targets               " + "; ".join(f"{k}: {'MET' if v else 'MISSED'}" for k, v in checks.items()))


def main() -> int:
    p = argparse.ArgumentParser(description="Twilio <-> fake OpenAI Realtime through one proxy process.")
    p.add_argument("--calls", type=int, default=TARGET_CALLS, help=f"concurrent calls (default {TARGET_CALLS})")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of caller script per call (default 30)")
    p.add_argument("--ramp", type=float, default=4.0, help="seconds over which calls start (default 4)")
    p.add_argument("--procs", type=int, default=0, help="simulator processes (default: 1 up to 75 calls, else 2)")
    p.add_argument("--barge-in-ms", type=int, default=500, help="talk over every second answer this far in")
    p.add_argument("--silence-ms", type=int, default=600, help="[backend:openai] silence_duration_ms (default 600)")
    p.add_argument("--speed", type=float, default=10.0, help="fake delivery speed, times real time (default 10)")
    p.add_argument("--input-chunk-ms", type=int, default=20, help="[backend:openai] input_chunk_ms (default 20)")
    p.add_argument("--message-ms", type=int, default=20, help="[playout] message_ms (default 20)")
    p.add_argument("--lead-ms", type=int, default=60, help="[playout] lead_ms (default 60)")
    p.add_argument("--harness-nice", type=int, default=0,
                   help="run the fake and the simulators at this nice value (the proxy stays at 0)")
    p.add_argument("--keep", default="", help="keep config, logs and results in this directory")
    args = p.parse_args()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
