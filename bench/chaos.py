#!/usr/bin/env python3
"""Chaos benchmark: N Twilio calls to a fake OpenAI Realtime service through one real proxy
process, while backends are dropped, callers stop reading and hostile peers connect.

    .venv/bin/python bench/chaos.py                          # 100 calls, 300 s
    .venv/bin/python bench/chaos.py --calls 40 --duration 30 # quick check, under a minute

Processes (loopback only, each bounded in time):

* the fake Realtime service (``python -m mediaproxy.testing.fake_realtime``, 10x real time), in
  its own process; each SIGUSR1 makes it abort one random open connection (no closing
  handshake), recorded with the session's instructions, which carry the call's index because
  the proxy is configured with ``call_context_keys = call``;
* ``twistd -n mediaproxy`` with a temporary config: ``/twilio`` -> the fake (``reconnect_*`` as
  given), ``/audiohook`` (connector) and ``/audiocodes`` -> the echo backend;
* one ``mediaproxy-sim`` process: N callers (talk 1.2 s, pause 2.8 s, no barge-in), which with
  ``--stall-every`` makes a random call stop reading its socket for ``--stall-seconds``, then
  read again, and writes every call's arrivals (``--json --arrivals``).

This process drives the chaos: at random intervals (0.5x to 1.5x of the mean) it signals the
fake to drop a backend connection, and opens hostile connections on each platform path (bad
JSON, wrong sequence, oversize message or media, invalid base64 or its AudioHook analogue, audio
before open), each recorded until it ends (15 s at most). Chaos runs from the end of the ramp
until ``--quiet-tail`` seconds before the script ends, so that recovery can be seen.

Printed at the end:

* calls hit by a backend drop, by a stall, both; recovered: a backend drop is recovered when
  bot audio of a reply whose caller turn ended after the drop arrives (so it came over the new
  backend connection), and "fully" when that reply arrived whole; a stall when the first reply
  after it arrived whole;
* calls ended the platform's way (the caller's ``stop``, then the proxy's close), and the
  proxy's ``calls_total`` outcomes;
* frames lost on healthy calls (never hit: must be 0), on hit calls per reply (a stall delays
  the rest of a reply into the next reply's window, where the next speech onset's ``clear``
  arrives with it: the simulator's per-reply accounting then calls them lost) and by count
  (every reply frame the script provokes against every frame the call received);
* hostile connections per platform and kind, and how each ended (what the proxy sent, the close
  code, who closed, how long it took), with ``protocol_errors_total``;
* proxy CPU (average, peak 1 s) and RSS (start, end, peak); backend reconnects.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol  # noqa: E402
from bench_twilio import (  # noqa: E402
    bucket_max,
    bucket_quantile,
    buckets,
    free_port,
    machine_ticks,
    runqueue_wait_s,
    scrape,
    stop_process,
    total,
    wait_ready,
)
from longrun import ProcSampler, reply_accounting  # noqa: E402

from mediaproxy.sim.cli import build_script  # noqa: E402
from mediaproxy.sim.cli import parse_args as sim_parse_args  # noqa: E402
from mediaproxy.sim.script import expected_replies  # noqa: E402

API_KEY = "bench-dummy-key"  # the fake's; never a real key
ORG = "d7934305-0972-4844-938e-9060eef73d05"
HOSTILE_LIMIT_S = 15.0
BIG = 2 * 1024 * 1024  # beyond the proxy's 1 MiB WebSocket message limit


def write_config(directory: Path, proxy_port: int, metrics_port: int, fake_port: int, args: argparse.Namespace) -> Path:
    path = directory / "chaos.ini"
    path.write_text(f"""\
[proxy]
listen = tcp:{proxy_port}:interface=127.0.0.1
max_calls = {max(1000, args.calls * 2)}
drain_seconds = 2

[metrics]
listen = tcp:{metrics_port}:interface=127.0.0.1

[playout]
frame_ms = 20
lead_ms = 60
prefill_ms = 0
max_buffer_ms = 30000
mark_interval_ms = 100

[platform:twilio]
path = /twilio
backend = openai
allow_unauthenticated = true

[platform:audiohook]
path = /audiohook
backend = echo
mode = connector
allow_unauthenticated = true

[platform:audiocodes]
path = /audiocodes
backend = echo
allow_unauthenticated = true

[backend:echo]
type = echo
mode = parrot

[backend:openai]
type = openai-realtime
url = ws://127.0.0.1:{fake_port}/v1/realtime
model = gpt-realtime
api_key = ${{OPENAI_API_KEY}}
voice = marin
instructions = You are a chaos benchmark.
call_context_keys = call
transcription_model =
silence_duration_ms = 600
interrupt_response = true
reconnect_attempts = {args.reconnect_attempts}
reconnect_backoff_ms = {args.reconnect_backoff_ms}
reconnect_max_backoff_ms = 2000
""")
    return path


# --- hostile peers --------------------------------------------------------------------------------


def _j(message: dict[str, Any]) -> tuple[bytes, bool]:
    return json.dumps(message, separators=(",", ":")).encode(), False


def twilio_messages(kind: str, n: int) -> list[tuple[bytes, bool]]:
    sid = f"MZhostile{n:024d}"
    connected = _j({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    start = _j({"event": "start", "sequenceNumber": "1", "streamSid": sid,
                "start": {"streamSid": sid, "accountSid": "AC" + "0" * 32, "callSid": f"CAhostile{n:024d}",
                          "tracks": ["inbound"], "customParameters": {"call": f"hostile-{n}"},
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})

    def media(payload: str) -> tuple[bytes, bool]:
        return _j({"event": "media", "sequenceNumber": "2", "streamSid": sid,
                   "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}})

    silence = base64.b64encode(b"\xff" * 160).decode()
    return {
        "bad_json": [connected, (b'{"event":"start","start":{', False)],
        "wrong_sequence": [connected, media(silence)],  # media before start
        "oversize_media": [connected, start, media(base64.b64encode(b"\xff" * 4000).decode())],
        "bad_base64": [connected, start, media("!!not*base64!!" * 10)],
        "oversize_message": [(b'{"event":"media","pad":"' + b"A" * BIG + b'"}', False)],
    }[kind]


def audiohook_messages(kind: str, session_id: str) -> list[tuple[bytes, bool]]:
    def envelope(mtype: str, seq: int, parameters: dict[str, Any]) -> tuple[bytes, bool]:
        return _j({"version": "2", "id": session_id, "type": mtype, "seq": seq, "serverseq": 0,
                   "position": "PT0S", "parameters": parameters})

    def open_(seq: int) -> tuple[bytes, bool]:
        return envelope("open", seq, {
            "organizationId": ORG, "conversationId": str(uuid.uuid4()),
            "participant": {"id": str(uuid.uuid4()), "ani": "+15550100", "aniName": "", "dnis": ""},
            "media": [{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}]})

    return {
        "bad_json": [(b"{not json", False)],
        "wrong_sequence": [open_(3)],  # seq must start at 1
        "oversize_text": [open_(1), envelope("ping", 2, {"pad": "A" * 70_000})],  # > 65535 characters
        "audio_before_open": [(b"\xff" * 160, True)],  # AudioHook audio is binary: no base64 to break
        "oversize_message": [(b'{"pad":"' + b"A" * BIG + b'"}', False)],
    }[kind]


def audiocodes_messages(kind: str, n: int) -> list[tuple[bytes, bool]]:
    initiate = _j({"type": "session.initiate", "conversationId": f"hostile-{n}", "botName": "chaos",
                   "caller": "+15550100", "expectAudioMessages": True, "supportedMediaFormats": ["raw/mulaw"]})
    return {
        "bad_json": [(b"{nope", False)],
        "wrong_sequence": [_j({"type": "activities", "activities": [{"type": "event", "name": "start"}]})],
        "bad_base64": [initiate, _j({"type": "userStream.start"}),
                       _j({"type": "userStream.chunk", "audioChunk": "!!not*base64!!" * 10})],
        "oversize_message": [(b'{"type":"userStream.chunk","audioChunk":"' + b"A" * BIG + b'"}', False)],
    }[kind]


HOSTILE_KINDS: dict[str, tuple[str, ...]] = {
    "twilio": ("bad_json", "wrong_sequence", "oversize_media", "bad_base64", "oversize_message"),
    "audiohook": ("bad_json", "wrong_sequence", "oversize_text", "audio_before_open", "oversize_message"),
    "audiocodes": ("bad_json", "wrong_sequence", "bad_base64", "oversize_message"),
}


class HostileProtocol(WebSocketClientProtocol):
    """Sends its messages on open and records what the proxy answers and how the socket ends.
    On AudioHook it answers ``disconnect`` with ``close``, as Genesys does."""

    factory: HostileFactory

    def onOpen(self) -> None:
        result = self.factory.result
        result["opened_s"] = time.monotonic() - result["t0"]
        self.factory.live = self
        for payload, binary in self.factory.messages:
            self.sendMessage(payload, binary)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        result = self.factory.result
        if isBinary:
            result["received"].append("binary")
            return
        try:
            message = json.loads(payload)
            name = str(message.get("type") or message.get("event") or "?")
        except (ValueError, AttributeError):
            name = "not-json"
            message = {}
        if name == "disconnect":
            name += f"({message.get('parameters', {}).get('reason', '?')})"
            self.sendMessage(json.dumps({
                "version": "2", "id": self.factory.session_id, "type": "close", "seq": len(self.factory.messages) + 1,
                "serverseq": message.get("seq", 0), "position": "PT0S", "parameters": {"reason": "error"}}).encode())
        result["received"].append(name)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        result = self.factory.result
        result.update(ended_s=time.monotonic() - result["t0"], clean=wasClean,
                      code=self.remoteCloseCode, by="client" if self.closedByMe else "proxy")
        self.factory.live = None
        self.factory.finished()


class HostileFactory(WebSocketClientFactory):
    protocol = HostileProtocol  # type: ignore[assignment]

    def __init__(self, url: str, platform: str, kind: str, messages: list[tuple[bytes, bool]],
                 headers: dict[str, str], session_id: str, on_done: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(url, headers=headers)
        self.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=5, autoPingInterval=0)
        self.messages = messages
        self.session_id = session_id
        self.live: HostileProtocol | None = None
        self.result: dict[str, Any] = {"platform": platform, "kind": kind, "t0": time.monotonic(), "received": []}
        self._on_done = on_done
        self._done = False

    def finished(self) -> None:
        if not self._done:
            self._done = True
            self._on_done(self.result)

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.result.update(ended_s=time.monotonic() - self.result["t0"], failed=str(reason))
        self.finished()

    def give_up(self) -> None:
        """Still open after HOSTILE_LIMIT_S: the proxy left it open."""
        if self.live is not None and not self._done:
            self.result["timed_out"] = True
            self.live.dropConnection(abort=True)


def describe(result: dict[str, Any]) -> str:
    """One line: what the proxy sent, then how the socket ended."""
    if "failed" in result:
        return f"connect failed ({result['failed'][:60]})"
    got = ",".join(result["received"]) or "nothing"
    if result.get("timed_out"):
        return f"sent {got}; still open after {HOSTILE_LIMIT_S:g} s (client aborted)"
    return (f"sent {got}; close {result.get('code')} by {result.get('by')}"
            f"{'' if result.get('clean') else ' (unclean)'}")


# --- the run ---------------------------------------------------------------------------------------


class Chaos:
    """What this process does while the calls run, on its own reactor."""

    def __init__(self, reactor: Any, args: argparse.Namespace, proxy_port: int, fake: subprocess.Popen[bytes],
                 sim: subprocess.Popen[bytes], samplers: dict[str, ProcSampler], first_call_at: float) -> None:
        self.reactor = reactor
        self.args = args
        self.proxy_port = proxy_port
        self.fake = fake
        self.sim = sim
        self.samplers = samplers
        self.rng = random.Random(args.seed)
        now = time.time()
        self.chaos_from = first_call_at + args.ramp + 2.0
        self.chaos_to = first_call_at + args.duration - args.quiet_tail
        self.deadline = time.monotonic() + (first_call_at - now) + args.ramp + args.duration + 120
        self.drops_sent = 0
        self.proxy_wait_s = 0.0
        self.machine_busy = 0.0
        self.hostile: list[dict[str, Any]] = []
        self.hostile_open = 0
        self._hostile_plan: list[tuple[str, str]] = []
        self._n = 0

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        now = time.time()
        self.reactor.callLater(max(0.0, self.chaos_from - now) + self._interval(self.args.drop_every), self.drop)
        self.reactor.callLater(max(0.0, self.chaos_from - now) + self._interval(self.args.hostile_every),
                               self.hostile_connect)
        self._sampler = LoopingCall(self.sample)
        self._sampler.start(1.0, now=False)
        self._watch = LoopingCall(self.watch)
        self._watch.start(0.5, now=False)

    def _interval(self, mean: float) -> float:
        return mean * self.rng.uniform(0.5, 1.5)

    def sample(self) -> None:
        now = time.monotonic()
        for sampler in self.samplers.values():
            sampler.sample(now)

    def watch(self) -> None:
        if (self.sim.poll() is not None and self.hostile_open == 0) or time.monotonic() > self.deadline:
            if time.monotonic() > self.deadline:
                print("chaos: run overran; stopping", file=sys.stderr)
            self.reactor.stop()

    def drop(self) -> None:
        if self.args.drop_every <= 0 or time.time() > self.chaos_to or self.fake.poll() is not None:
            return
        os.kill(self.fake.pid, signal.SIGUSR1)
        self.drops_sent += 1
        self.reactor.callLater(self._interval(self.args.drop_every), self.drop)

    def hostile_connect(self) -> None:
        if self.args.hostile_every <= 0 or time.time() > self.chaos_to:
            return
        if not self._hostile_plan:  # every platform and kind once per round, in random order
            self._hostile_plan = [(p, k) for p, kinds in HOSTILE_KINDS.items() for k in kinds]
            self.rng.shuffle(self._hostile_plan)
        platform, kind = self._hostile_plan.pop()
        self._n += 1
        session_id = str(uuid.uuid4())
        headers: dict[str, str] = {}
        if platform == "twilio":
            messages = twilio_messages(kind, self._n)
        elif platform == "audiohook":
            messages = audiohook_messages(kind, session_id)
            headers = {"Audiohook-Organization-Id": ORG, "Audiohook-Session-Id": session_id,
                       "Audiohook-Correlation-Id": str(uuid.uuid4())}
        else:
            messages = audiocodes_messages(kind, self._n)
        url = f"ws://127.0.0.1:{self.proxy_port}/{platform}"
        factory = HostileFactory(url, platform, kind, messages, headers, session_id, self._hostile_done)
        self.hostile_open += 1
        self.reactor.connectTCP("127.0.0.1", self.proxy_port, factory, timeout=10)
        self.reactor.callLater(HOSTILE_LIMIT_S, factory.give_up)
        self.reactor.callLater(self._interval(self.args.hostile_every), self.hostile_connect)

    def _hostile_done(self, result: dict[str, Any]) -> None:
        self.hostile_open -= 1
        self.hostile.append(result)


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    sim_argv = ["twilio", "ws://x/twilio", "--calls", str(args.calls), "--duration", str(args.duration),
                "--ramp", str(args.ramp)]
    script = build_script(sim_parse_args(sim_argv))
    replies = expected_replies(script, -40.0, 600)
    with tempfile.TemporaryDirectory(prefix="mediaproxy-chaos-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        proxy_port, metrics_port, fake_port = free_port(), free_port(), free_port()
        bound_s = args.ramp + script.duration_s + 180
        env = dict(os.environ, OPENAI_API_KEY=API_KEY)
        fake = subprocess.Popen(
            [sys.executable, "-m", "mediaproxy.testing.fake_realtime", "--port", str(fake_port), "--api-key", API_KEY,
             "--speed", "10", "--stats", str(work / "fake.json"), "--max-seconds", str(bound_s),
             "--seed", str(args.seed)],
            cwd=ROOT, env=env, stdout=open(work / "fake.log", "wb"), stderr=subprocess.STDOUT)
        config = write_config(work, proxy_port, metrics_port, fake_port, args)
        proxy_log = open(work / "proxy.log", "wb")
        proxy = subprocess.Popen([str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "mediaproxy",
                                  "--config", str(config)], cwd=ROOT, env=env, stdout=proxy_log,
                                 stderr=subprocess.STDOUT)
        sim: subprocess.Popen[bytes] | None = None
        try:
            metrics_url = f"http://127.0.0.1:{metrics_port}"
            wait_ready(metrics_url + "/ready", proxy)
            if fake.poll() is not None:
                raise SystemExit(f"fake server exited: {(work / 'fake.log').read_text()}")
            metrics0 = scrape(metrics_url + "/metrics")
            stall_from = args.ramp + 2.0
            stall_to = args.duration - args.quiet_tail
            sim_cmd = [sys.executable, "-m", "mediaproxy.sim.cli", "twilio", f"ws://127.0.0.1:{proxy_port}/twilio",
                       *sim_argv[2:], "--json", str(work / "sim.json"), "--arrivals", "--no-progress",
                       "--seed", str(args.seed)]
            if args.stall_every > 0 and stall_to > stall_from:
                sim_cmd += ["--stall-every", str(args.stall_every), "--stall-seconds", str(args.stall_seconds),
                            "--stall-window", str(stall_from), str(stall_to)]
            launched = time.time()
            sim = subprocess.Popen(sim_cmd, cwd=ROOT, stdout=open(work / "sim.log", "wb"), stderr=subprocess.STDOUT)
            now = time.monotonic()
            samplers = {"proxy": ProcSampler(proxy.pid, now), "fake": ProcSampler(fake.pid, now),
                        "sim": ProcSampler(sim.pid, now)}
            # The simulator's first call starts about a second after its reactor does.
            chaos = Chaos(reactor, args, proxy_port, fake, sim, samplers, launched + 2.0)
            reactor.callWhenRunning(chaos.start)
            wait0, (busy0, all0) = runqueue_wait_s(proxy.pid), machine_ticks()
            reactor.run()
            chaos.sample()
            chaos.proxy_wait_s = runqueue_wait_s(proxy.pid) - wait0
            busy1, all1 = machine_ticks()
            chaos.machine_busy = (busy1 - busy0) / max(all1 - all0, 1)
            metrics1 = scrape(metrics_url + "/metrics")
        finally:
            if sim is not None:
                stop_process(sim, 10.0)
            stop_process(proxy)
            stop_process(fake, 5.0)
            proxy_log.close()
        if not (work / "sim.json").exists():
            print((work / "sim.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit("the simulator wrote no results")
        sim_data = json.loads((work / "sim.json").read_text())
        fake_stats = json.loads((work / "fake.json").read_text()) if (work / "fake.json").exists() else {}
        log_text = (work / "proxy.log").read_text(errors="replace")
    report(args, chaos, sim_data, fake_stats, replies, metrics0, metrics1, log_text)
    return 0


def report(args: argparse.Namespace, chaos: Chaos, sim: dict[str, Any], fake: dict[str, Any], replies: list[Any],
           metrics0: dict[str, Any], metrics1: dict[str, Any], log_text: str) -> None:
    calls = {c["index"]: c for c in sim["calls"]}
    drops_by_call: dict[int, list[float]] = defaultdict(list)
    drops_other = 0
    for drop in fake.get("drops", []):
        match = re.search(r'"call": "(\d+)"', drop.get("instructions", ""))
        if match and int(match.group(1)) in calls:
            drops_by_call[int(match.group(1))].append(drop["t"])
        else:
            drops_other += 1
    stalled = {i for i, c in calls.items() if c.get("stalls")}
    dropped = set(drops_by_call)
    hit = stalled | dropped
    healthy = set(calls) - hit

    drop_recovered = drop_recovered_full = drop_unobservable = 0
    recovery_s: list[float] = []
    stall_recovered = stall_unobservable = 0
    lost_healthy = expected_healthy = lost_hit_reply = expected_hit = lost_hit_total = 0
    lost_by_kind: Counter[str] = Counter()
    lost_total_by_kind: Counter[str] = Counter()
    for i, call in calls.items():
        accounting = reply_accounting(call, replies)
        for t in drops_by_call.get(i, []):
            after = [r for r in accounting if r.window_start > t]
            if not after:
                drop_unobservable += 1
                continue
            first = next((r for r in after if r.first_arrival is not None), None)
            if first is not None and first.first_arrival is not None:
                drop_recovered += 1
                recovery_s.append(first.first_arrival - t)
                drop_recovered_full += int(after[0].received >= after[0].expected)
        for _, end in call.get("stalls", []):
            after = [r for r in accounting if r.window_start > end]
            if not after:
                stall_unobservable += 1
            elif after[0].received >= after[0].expected:
                stall_recovered += 1
        lost = sum(r.lost for r in accounting)
        expected = sum(r.expected for r in accounting if not r.interrupted)
        if i in healthy:
            lost_healthy += lost
            expected_healthy += expected
        else:
            lost_hit_reply += lost
            expected_hit += expected
            # By count: every reply frame the script provokes against every frame received, so
            # frames a stall delayed into the next reply's window are not called lost.
            lost_total = max(0, sum(r.expected for r in accounting) - len(call.get("arrivals", [])))
            lost_hit_total += lost_total
            kind = "drop+stall" if i in dropped and i in stalled else "drop" if i in dropped else "stall"
            lost_by_kind[kind] += lost
            lost_total_by_kind[kind] += lost_total
    ended = sum(1 for c in calls.values() if c["close_reason"] == "stop")
    ended_hit = sum(1 for i in hit if calls[i]["close_reason"] == "stop")
    not_ended = Counter(c["close_reason"] for c in calls.values() if c["close_reason"] != "stop")
    outcomes = {lab["outcome"]: int(v) for lab, v in metrics1.get("mediaproxy_calls_total", [])}
    errors_name = "mediaproxy_protocol_errors_total"
    protocol_errors = {f"{lab.get('platform')}/{lab.get('kind')}": int(v - total(metrics0, errors_name, **lab))
                       for lab, v in metrics1.get(errors_name, [])}
    drops_on_calls = sum(len(v) for v in drops_by_call.values())
    stalls = sum(len(c.get("stalls", [])) for c in calls.values())
    underruns = total(metrics1, "mediaproxy_playout_underruns_total")
    dropped_frames = ", ".join(f"{lab.get('direction')}/{lab.get('reason')}={v:g}"
                               for lab, v in metrics1.get("mediaproxy_frames_dropped_total", [])) or "0"
    late = buckets(metrics1, "mediaproxy_playout_late_seconds")
    proxy = chaos.samplers["proxy"]
    recovery_s.sort()

    print(f"== mediaproxy chaos: {args.calls} Twilio calls x {args.duration:g} s <-> fake OpenAI Realtime at 10x, "
          f"{os.cpu_count()} CPUs; drop every ~{args.drop_every:g} s, stall every ~{args.stall_every:g} s "
          f"({args.stall_seconds:g} s), hostile every ~{args.hostile_every:g} s; seed {args.seed} ==")
    print(f"calls                 {len(calls)} started; hit {len(hit)}: backend dropped {len(dropped)}, reader stalled "
          f"{len(stalled)}, both {len(dropped & stalled)}; healthy {len(healthy)}")
    print(f"backend drops         {chaos.drops_sent} signalled, {len(fake.get('drops', []))} done "
          f"({drops_on_calls} on simulated calls, {drops_other} on hostile/other); "
          f"proxy reconnects {total(metrics1, 'mediaproxy_backend_reconnects_total'):g}; fake connections "
          f"{fake.get('connections', '?')}")
    print(f"recovered (drops)     {drop_recovered} of {drops_on_calls - drop_unobservable} "
          f"observable drops had bot audio again ({drop_recovered_full} with the next reply whole); drop -> next bot "
          f"audio p50/max {pct(recovery_s, 50)} / {pct(recovery_s, 100)} s; not observable (no turn after it) "
          f"{drop_unobservable}")
    print(f"recovered (stalls)    {stall_recovered} of {stalls - stall_unobservable} "
          f"stalls were followed by a whole reply; not observable {stall_unobservable}")
    print(f"ended properly        {ended} of {len(calls)} with the caller's stop and the proxy's close "
          f"({ended_hit} of {len(hit)} hit calls); others: {dict(not_ended) or 'none'}; proxy outcomes {outcomes}")
    print(f"frames lost, healthy  {lost_healthy} of {expected_healthy} expected (target 0: "
          f"{'MET' if lost_healthy == 0 else 'MISSED'})")
    print(f"frames lost, hit      {lost_hit_reply} of {expected_hit} expected, per reply ({dict(lost_by_kind)}); "
          f"by count (all frames expected vs received) {lost_hit_total} ({dict(lost_total_by_kind)})")
    print(f"proxy frames          dropped {dropped_frames}; underruns "
          f"{underruns:g}; lateness p50/p99/max {bucket_quantile(late, 0.5)} / "
          f"{bucket_quantile(late, 0.99)} / {bucket_max(late)}")
    by_kind: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for result in chaos.hostile:
        by_kind[(result["platform"], result["kind"])][describe(result)] += 1
    print(f"hostile connections   {len(chaos.hostile)}; protocol_errors_total {protocol_errors or 'none'}")
    for (platform, kind), outcomes_ in sorted(by_kind.items()):
        times = [r.get("ended_s", 0.0) for r in chaos.hostile if (r["platform"], r["kind"]) == (platform, kind)]
        for text, n in outcomes_.items():
            print(f"  {platform:10s} {kind:18s} x{n}: {text}; ended after max {max(times):.2f} s")
    print(f"proxy CPU / RSS       {proxy.average_pct():.1f} % of one core on average, peak 1 s {proxy.peak_pct:.1f} %; "
          f"RSS {proxy.rss_first / 1024:.1f} MiB at start, {proxy.rss_last / 1024:.1f} at the end, peak "
          f"{proxy.rss_max / 1024:.1f}; fake {chaos.samplers['fake'].average_pct():.1f} %, simulator "
          f"{chaos.samplers['sim'].average_pct():.1f} %")
    stall = buckets(metrics1, "mediaproxy_clock_tick_late_seconds")
    print(f"machine               longest reactor stall {bucket_max(stall)} (clock_tick_late_seconds); proxy "
          f"runnable but not running {chaos.proxy_wait_s:.2f} s; machine busy {chaos.machine_busy * 100:.0f} % "
          f"of {os.cpu_count()} cores")
    tracebacks = log_text.count("Traceback")
    if tracebacks:
        print(f"WARNING: {tracebacks} tracebacks in the proxy log")


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    return f"{values[min(len(values) - 1, int(q / 100 * len(values)))]:.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description="Twilio <-> fake OpenAI Realtime through one proxy, under chaos.")
    p.add_argument("--calls", type=int, default=100, help="concurrent calls (default 100)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of caller script per call (default 300)")
    p.add_argument("--ramp", type=float, default=4.0, help="seconds over which calls start (default 4)")
    p.add_argument("--drop-every", type=float, default=None,
                   help="mean seconds between backend drops (default: duration / 30, at least 2; 0 disables)")
    p.add_argument("--stall-every", type=float, default=None,
                   help="mean seconds between reader stalls (default: as --drop-every; 0 disables)")
    p.add_argument("--stall-seconds", type=float, default=3.0, help="how long a reader stalls (default 3)")
    p.add_argument("--hostile-every", type=float, default=2.0,
                   help="mean seconds between hostile connections (default 2)")
    p.add_argument("--quiet-tail", type=float, default=10.0,
                   help="no chaos in the script's last this many seconds, so recovery shows (default 10)")
    p.add_argument("--reconnect-attempts", type=int, default=5, help="[backend] reconnect_attempts (default 5)")
    p.add_argument("--reconnect-backoff-ms", type=int, default=250, help="[backend] reconnect_backoff_ms (default 250)")
    p.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    p.add_argument("--keep", default="", help="keep config, logs and results in this directory")
    args = p.parse_args()
    if args.calls < 1 or args.duration < args.ramp + args.quiet_tail + 8:
        p.error("--duration must leave room for the ramp, 8 s of chaos and the quiet tail")
    default_every = max(2.0, args.duration / 30)
    args.drop_every = default_every if args.drop_every is None else args.drop_every
    args.stall_every = default_every if args.stall_every is None else args.stall_every
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
