#!/usr/bin/env python3
"""Capacity: calls per core until pacing breaks, for mediaproxy and for pipecat, in one run.

    .venv/bin/python bench/capacity.py                                  # every scenario
    .venv/bin/python bench/capacity.py --scenarios echo,pipecat --steps 25,50,100 --step-seconds 15

For each scenario one server process is pinned to ``--server-cpu`` (0) and the load generator
(``python -m mediaproxy.sim.load``, one process) to ``--load-cpu`` (1). N steps up (``--steps``);
each step is one generator run of N concurrent calls, ``--step-seconds`` of caller script each
(calls dialled over ``--ramp`` seconds), against the same server process. A step *passes* when
every call completed, outbound lateness p99 (client side, vs the server's own grid) is <= 5 ms,
no frame was lost and no underrun (a gap in the caller's replayed playout) happened; the ramp
goes on while lateness and loss pass (underruns alone do not stop it, so both knees are seen).

* ``echo``: ``twistd -n mediaproxy``, Twilio <-> echo backend (parrot): talk/silence script;
* ``stream``: the same with ``[backend:echo] mode = stream`` and one continuous utterance, so
  every caller frame comes back at once: the same work as the pipecat echo;
* ``realtime``: Twilio <-> fake OpenAI Realtime (µ-law pass-through, answers at 10x real time,
  ``mediaproxy.testing.fake_realtime`` in its own process pinned to the load CPU);
* ``pipecat``: ``bench/pipecat_echo.py`` (pipecat-ai 1.14.0, FastAPI WebSocket transport, Twilio
  serializer, caller audio echoed back) under uvicorn, continuous utterance like ``stream``.
  Its virtual environment (``--pipecat-venv``, default ``bench/.venv-pipecat``) is created and
  filled by this script from PyPI on first use.

Per step: the generator's figures (its JSON), the server's CPU (``/proc/<pid>/stat``) over the
step, CPU ms per call-second (server CPU / the calls' summed open time), and the server's peak
RSS (``/proc/<pid>/status`` VmRSS) above its idle RSS, per call. A step whose generator was not
trustworthy (saturated or starved: see ``mediaproxy/sim/load.py``) is marked. Everything runs on
127.0.0.1 and stops by itself.
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
sys.path.insert(0, str(HERE))

from bench_twilio import cpu_ticks, free_port, runqueue_wait_s, stop_process, wait_ready  # noqa: E402

PIPECAT_PIN = ["pipecat-ai==1.14.0", "fastapi", "uvicorn"]
SCENARIOS = ("echo", "stream", "realtime", "pipecat")
LATE_P99_MS = 5.0
SATURATED_PCT = 95.0


def proxy_config(directory: Path, name: str, proxy_port: int, metrics_port: int, fake_port: int, calls: int,
                 message_ms: int = 20, input_chunk_ms: int = 20) -> Path:
    """The proxy's config for ``name`` (echo, stream or realtime); ``message_ms`` is
    ``[playout] message_ms``, ``input_chunk_ms`` the Realtime backend's (both default 20)."""
    if name == "realtime":
        backend = (f"[backend:bot]\ntype = openai-realtime\nurl = ws://127.0.0.1:{fake_port}/v1/realtime\n"
                   "model = gpt-realtime\napi_key = ${OPENAI_API_KEY}\nvoice = marin\ninstructions = A benchmark.\n"
                   "transcription_model =\nsilence_duration_ms = 600\ninterrupt_response = true\n"
                   f"input_chunk_ms = {input_chunk_ms}\n")
    else:
        backend = f"[backend:bot]\ntype = echo\nmode = {'stream' if name == 'stream' else 'parrot'}\nsilence_ms = 600\n"
    path = directory / f"{name}.ini"
    path.write_text(f"[proxy]\nlisten = tcp:{proxy_port}:interface=127.0.0.1\nmax_calls = {max(1000, 2 * calls)}\n"
                    f"drain_seconds = 2\n\n[metrics]\nlisten = tcp:{metrics_port}:interface=127.0.0.1\n\n"
                    "[playout]\nframe_ms = 20\nlead_ms = 60\nprefill_ms = 0\nmax_buffer_ms = 30000\n"
                    f"message_ms = {message_ms}\n"
                    "mark_interval_ms = 100\n\n[platform:twilio]\npath = /twilio\nbackend = bot\n\n" + backend)
    return path


def ensure_pipecat(venv: Path) -> Path:
    """The pipecat venv's python, creating the venv and installing the pinned packages if needed."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import pipecat, fastapi, uvicorn; from importlib.metadata import version; "
             "assert version('pipecat-ai') == '1.14.0'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"capacity: installing {' '.join(PIPECAT_PIN)} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PIPECAT_PIN], check=True)
    return python


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    """One scenario's server process (and the fake Realtime service, for ``realtime``)."""

    def __init__(self, name: str, args: argparse.Namespace, work: Path) -> None:
        self.name, self.helpers = name, []
        port = free_port()
        self.url = f"ws://127.0.0.1:{port}/twilio"
        pin = ["taskset", "-c", str(args.server_cpu)]
        log = open(work / f"{name}.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT), OPENAI_API_KEY="bench-dummy-key")
        if name == "pipecat":
            python = ensure_pipecat(Path(args.pipecat_venv))
            self.process = subprocess.Popen(pin + [str(python), str(HERE / "pipecat_echo.py"), "--port", str(port)],
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            self._wait_port(port)
            return
        metrics_port, fake_port = free_port(), free_port()
        if name == "realtime":
            fake = subprocess.Popen(["taskset", "-c", str(args.load_cpu), sys.executable, "-m",
                                     "mediaproxy.testing.fake_realtime", "--port", str(fake_port), "--api-key",
                                     "bench-dummy-key", "--speed", "10", "--max-seconds", "3600"],
                                    cwd=ROOT, env=env, stdout=open(work / "fake.log", "wb"), stderr=subprocess.STDOUT)
            self.helpers.append(fake)
        config = proxy_config(work, name, port, metrics_port, fake_port, max(args.steps),
                              args.message_ms, args.input_chunk_ms)
        twistd = str(Path(sys.executable).parent / "twistd")
        self.process = subprocess.Popen(pin + [twistd, "-n", "--pidfile=", "mediaproxy", "--config", str(config)],
                                        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{metrics_port}/ready", self.process)

    def _wait_port(self, port: int, limit_s: float = 60.0) -> None:
        import socket

        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} server exited with status {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"{self.name} server did not listen")

    def stop(self) -> None:
        stop_process(self.process)
        for helper in self.helpers:
            stop_process(helper, 5.0)


def run_step(server: Server, n: int, args: argparse.Namespace, work: Path, idle_rss: int) -> dict[str, Any]:
    """One generator run of ``n`` calls; the generator's figures plus the server's cost."""
    out = work / f"{server.name}-{n}.json"
    mirror = server.name in ("stream", "pipecat")
    rt = ["chrt", "-f", str(args.load_rt)] if args.load_rt else []
    cmd = rt + [sys.executable, "-m", "mediaproxy.sim.load", "--url", server.url, "--calls", str(n),
           "--duration", str(args.step_seconds), "--ramp", str(args.ramp), "--cpus", str(args.load_cpu),
           "--expect", "mirror" if mirror else "parrot", "--lead-ms", "0" if server.name == "pipecat" else "60",
           "--json", str(out), "--quiet"]
    hz = os.sysconf("SC_CLK_TCK")
    pid = server.process.pid
    cpu0, wall0, peak, wait0 = cpu_ticks(pid), time.monotonic(), 0, runqueue_wait_s(pid)
    gen = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    while gen.poll() is None:
        time.sleep(0.5)
        peak = max(peak, rss_kb(pid))
    wall, cpu_s = time.monotonic() - wall0, (cpu_ticks(pid) - cpu0) / hz
    waited = runqueue_wait_s(pid) - wait0
    if not out.exists():
        return {"calls": n, "error": f"generator exited with {gen.returncode} and no figures"}
    fig: dict[str, Any] = json.loads(out.read_text())
    stats, late = fig["stats"], fig["outbound_lateness_ms"]["p99"]
    fig["server"] = {"cpu_pct": round(cpu_s / wall * 100, 1), "cpu_ms_per_call_s": round(cpu_s * 1000 / max(
        fig["call_seconds"], 1e-9), 3), "rss_peak_mb": round(peak / 1024, 1),
        "rss_kb_per_call": round(max(0, peak - idle_rss) / n, 1), "runqueue_wait_pct": round(waited / wall * 100, 1)}
    fig["pacing_ok"] = (fig["completed"] == n and stats["frames_lost"] == 0 and late is not None
                        and late <= LATE_P99_MS)
    fig["passed"] = fig["pacing_ok"] and stats["underruns"] == 0
    return fig


def run_scenario(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server = Server(name, args, work)
    steps: list[dict[str, Any]] = []
    try:
        time.sleep(1.0)
        idle_rss = rss_kb(server.process.pid)
        if args.warmup:
            # Each server's first calls pay one-off costs (lazy imports, first pipeline, caches):
            # a short discarded step, so the first measured step is like the others.
            warm = argparse.Namespace(**{**vars(args), "step_seconds": 3.0, "ramp": 1.0})
            print_step(name + "*", run_step(server, args.warmup, warm, work, idle_rss))
        for n in args.steps:
            step = run_step(server, n, args, work, idle_rss)
            steps.append(step)
            print_step(name, step)
            if "error" in step or step["server"]["cpu_pct"] >= SATURATED_PCT:
                break  # past saturation the figures say nothing more
            if not step["pacing_ok"] and not args.all_steps:
                break
    finally:
        server.stop()
    knee = strict = 0
    for step in steps:
        if "error" in step or not step["pacing_ok"]:
            break
        knee = step["calls"]
    for step in steps:
        if "error" in step or not step["passed"]:
            break
        strict = step["calls"]
    return {"scenario": name, "knee_calls": knee, "knee_strict_calls": strict, "idle_rss_mb": round(idle_rss / 1024, 1),
            "steps": steps}


def print_step(name: str, step: dict[str, Any]) -> None:
    if "error" in step:
        print(f"{name:8} {step['calls']:5}  {step['error']}", flush=True)
        return
    s, srv, gen = step["stats"], step["server"], step["generator"]
    late = step["outbound_lateness_ms"]
    verdict = "pass" if step["passed"] else ("pacing ok, underruns" if step["pacing_ok"] else "FAIL")
    print(f"{name:8} {step['calls']:5} calls: done {step['completed']:5}  late p50/p99/max "
          f"{fmt(late['p50'])}/{fmt(late['p99'])}/{fmt(late['max'])} ms  underruns {s['underruns']:5}  "
          f"lost {s['frames_lost']:6}  server {srv['cpu_pct']:5.1f} % core, {srv['cpu_ms_per_call_s']:6.2f} ms/call-s, "
          f"RSS {srv['rss_peak_mb']:6.1f} MB ({srv['rss_kb_per_call']:6.1f} KB/call), waited for CPU "
          f"{srv['runqueue_wait_pct']:4.1f} %  generator "
          f"{gen['cpu_pct']:4.1f} % send p99 {fmt(gen['send_late_ms']['p99'])} ms"
          f"{'' if not gen['saturated'] else ' [' + gen['verdict'] + ']'}  -> {verdict}", flush=True)


def lossless(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps of ``result`` where every call completed and no frame was lost."""
    return [s for s in result["steps"] if "error" not in s and s["completed"] == s["calls"]
            and s["stats"]["frames_lost"] == 0]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description="Calls per core until pacing breaks: mediaproxy vs pipecat.")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--steps", default="25,50,100,150,200,250,300,400,500,600,800",
                   help="concurrent calls per step, ascending")
    p.add_argument("--step-seconds", type=float, default=15.0, help="caller script per step, s (default 15)")
    p.add_argument("--ramp", type=float, default=3.0, help="seconds over which a step's calls are dialled (default 3)")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to (default 0)")
    p.add_argument("--load-cpu", type=int, default=1, help="CPU of the generator and the fake Realtime (default 1)")
    p.add_argument("--load-rt", type=int, default=0,
                   help="run the generator at this SCHED_FIFO priority (chrt; shields it from other load on a "
                        "shared machine; it uses well under a core; default 0: normal scheduling)")
    p.add_argument("--warmup", type=int, default=5,
                   help="calls of a short discarded first step per server (default 5; 0: none)")
    p.add_argument("--all-steps", action="store_true",
                   help="go on past the knee (for the cost figures) until the server saturates its core")
    p.add_argument("--pipecat-venv", default=str(HERE / ".venv-pipecat"), help="pipecat's virtual environment")
    p.add_argument("--message-ms", type=int, default=20,
                   help="the proxy's [playout] message_ms: bot audio per Twilio media message (default 20)")
    p.add_argument("--input-chunk-ms", type=int, default=20,
                   help="the Realtime backend's input_chunk_ms: caller audio per append (default 20)")
    p.add_argument("--json", default="", help="write every figure here")
    p.add_argument("--keep", default="", help="keep configs, logs and per-step figures in this directory")
    args = p.parse_args()
    args.steps = sorted(int(s) for s in args.steps.split(","))
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not set(names) <= set(SCENARIOS):
        p.error(f"--scenarios: unknown {set(names) - set(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="mediaproxy-capacity-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [run_scenario(name, args, work) for name in names]
    print("\n== knees: most concurrent calls on one core with pacing intact (p99 <= 5 ms, 0 lost); "
          "strict: also 0 underruns ==")
    knees = {r["scenario"]: r for r in results}
    for r in results:
        last = next((s for s in reversed(r["steps"]) if "error" not in s and s["pacing_ok"]), None)
        cost = (f"{last['server']['cpu_ms_per_call_s']:.2f} CPU ms per call-second, "
                f"{last['server']['rss_kb_per_call']:.0f} KB RSS per call at the knee") if last else "no step passed"
        print(f"{r['scenario']:8} knee {r['knee_calls']:4} calls/core (strict {r['knee_strict_calls']:4}); {cost}")
    if "pipecat" in knees:
        for ours in ("stream", "echo"):
            if ours in knees:
                a, b = knees[ours], knees["pipecat"]
                ratio = f"{a['knee_calls'] / b['knee_calls']:.1f}x" if b["knee_calls"] else "pipecat passed no step"
                strict = (f"{a['knee_strict_calls'] / b['knee_strict_calls']:.1f}x" if b["knee_strict_calls"]
                          else "pipecat passed no strict step")
                print(f"ratio mediaproxy {ours} / pipecat: {ratio} (strict: {strict})")
    print("\n== cost per call at every step with nothing lost (CPU time, so less sensitive to other load "
          "than the knee): calls: CPU ms per call-second / KB RSS per call ==")
    for r in results:
        print(f"{r['scenario']:8} " + "; ".join(
            f"{s['calls']}: {s['server']['cpu_ms_per_call_s']:.2f} / {s['server']['rss_kb_per_call']:.0f}"
            for s in lossless(r)) or "none")
    if "pipecat" in knees and "stream" in knees:
        ours = {s["calls"]: s for s in lossless(knees["stream"])}
        both = [s for s in lossless(knees["pipecat"]) if s["calls"] in ours]
        for s in both:
            o = ours[s["calls"]]["server"]
            print(f"pipecat / mediaproxy stream at {s['calls']} calls: CPU per call-second "
                  f"{s['server']['cpu_ms_per_call_s'] / max(o['cpu_ms_per_call_s'], 1e-9):.1f}x, RSS per call "
                  f"{s['server']['rss_kb_per_call'] / max(o['rss_kb_per_call'], 1e-9):.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "results": results},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
