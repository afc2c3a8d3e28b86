"""``mediaproxy-sim``: N scripted Twilio callers against a running proxy, with a pacing report.

    mediaproxy-sim --url ws://127.0.0.1:8080/twilio --calls 10 --duration 20
    mediaproxy-sim --url ws://127.0.0.1:8080/twilio --wav hello.wav --barge-in-ms 500

Each call plays a speech-like script (default: 1.2 s of a 300 Hz vowel-like tone at -12 dBFS,
then 2.8 s of silence, repeated; or a WAV file, 8 kHz mono 16-bit/µ-law), then enough silence for
the parrot's last reply to finish, then ``stop``. Call starts are spread over ``--ramp`` seconds
(so their 20 ms phases differ, as real calls' do). ``--json`` writes the counts and raw samples
for a benchmark to merge.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from typing import Any
from urllib.parse import urlparse

from mediaproxy.sim.report import CallStats, Samples, analyse_call, format_summary, percentiles_ms
from mediaproxy.sim.script import FRAME_MS, CallScript, expected_replies, synthetic_script, wav_script


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mediaproxy-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:8080/twilio", help="the proxy's Twilio WebSocket URL")
    p.add_argument("--calls", type=int, default=1, help="concurrent calls (default 1)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of caller script per call (default 20)")
    p.add_argument("--wav", help="caller audio: WAV, 8 kHz mono, 16-bit PCM or µ-law (default: synthetic)")
    p.add_argument("--talk-ms", type=int, default=1200, help="synthetic utterance length (default 1200)")
    p.add_argument("--gap-ms", type=int, default=2800,
                   help="synthetic silence after each utterance; long enough for the reply (default 2800)")
    p.add_argument("--barge-in-ms", type=int, default=None,
                   help="talk again this long into every second reply (default: never barge in)")
    p.add_argument("--ramp", type=float, default=2.0, help="seconds over which call starts are spread (default 2)")
    p.add_argument("--lead-ms", type=int, default=60, help="the proxy's [playout] lead_ms (default 60)")
    p.add_argument("--silence-ms", type=int, default=600, help="the echo backend's silence_ms (default 600)")
    p.add_argument("--threshold-dbfs", type=float, default=-40.0,
                   help="the echo backend's speech_threshold_dbfs (default -40)")
    p.add_argument("--first-index", type=int, default=0, help="index of the first call (unique ids across processes)")
    p.add_argument("--per-call", action="store_true", help="print one line per call")
    p.add_argument("--json", help="write counts and raw samples to this file")
    p.add_argument("--arrivals", action="store_true",
                   help="with --json: also write each call's script start, media arrival times and stalls")
    p.add_argument("--stall-every", type=float, default=0.0,
                   help="chaos: stop reading a random call's socket about every this many seconds (default 0: never)")
    p.add_argument("--stall-seconds", type=float, default=3.0, help="chaos: how long each stall lasts (default 3)")
    p.add_argument("--stall-window", type=float, nargs=2, default=None, metavar=("FROM", "TO"),
                   help="chaos: stalls only this many seconds after the first call's start (default: whole script)")
    p.add_argument("--seed", type=int, default=None, help="seed of the chaos choices")
    args = p.parse_args(argv)
    if args.calls < 1 or args.duration <= 0 or args.stall_every < 0 or args.stall_seconds <= 0:
        p.error("--calls and --duration must be positive")
    if urlparse(args.url).scheme not in ("ws", "wss"):
        p.error("--url must be ws:// or wss://")
    return args


def build_script(args: argparse.Namespace) -> CallScript:
    """The caller script every call plays, with a silent tail long enough for the last reply."""
    if args.wav:
        bare = wav_script(args.wav)
    else:
        bare = synthetic_script(args.duration, args.talk_ms, args.gap_ms, args.barge_in_ms, args.silence_ms)
    replies = expected_replies(bare, args.threshold_dbfs, args.silence_ms)
    longest = max((r.frames for r in replies), default=0) * FRAME_MS
    tail_ms = args.silence_ms + longest + 1000
    if args.wav:
        return wav_script(args.wav, tail_ms)
    return synthetic_script(args.duration, args.talk_ms, args.gap_ms, args.barge_in_ms, args.silence_ms, tail_ms)


def run_calls(args: argparse.Namespace, script: CallScript) -> list[Any]:
    """Run every call on the real reactor; returns their :class:`CallRecord` s."""
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredList
    from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
    from twisted.internet.interfaces import IStreamClientEndpoint
    from twisted.internet.ssl import optionsForClientTLS
    from twisted.python.failure import Failure

    from mediaproxy.sim.twilio import TwilioCallerFactory

    url = urlparse(args.url)
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if url.scheme == "wss" else 80)
    run_id = f"{os.getpid() % 100000:05d}"
    now = reactor.seconds()
    base = now + 0.5
    factories: list[TwilioCallerFactory] = []
    for i in range(args.calls):
        start_at = base + 0.5 + args.ramp * i / args.calls
        factory = TwilioCallerFactory(args.url, script, reactor, args.first_index + i, start_at, run_id)
        factories.append(factory)

        def dial(factory: TwilioCallerFactory = factory) -> None:
            endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(reactor, host, port, timeout=30)
            if url.scheme == "wss":
                endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
            d = endpoint.connect(factory)

            def failed(failure: Failure, f: TwilioCallerFactory = factory) -> None:
                f.clientConnectionFailed(None, failure.value)

            d.addErrback(failed)

        reactor.callLater(start_at - 0.5 - now, dial)

    if args.stall_every > 0:
        schedule_stalls(reactor, factories, base + 0.5, script.duration_s, args)

    done = DeferredList([f.done for f in factories])
    done.addBoth(lambda _: reactor.stop())
    limit = args.ramp + script.duration_s + 60.0

    def give_up() -> None:
        print(f"mediaproxy-sim: giving up after {limit:.0f} s", file=sys.stderr)
        reactor.stop()

    watchdog = reactor.callLater(limit, give_up)
    # Long-lived objects out of the collector, and rare young collections: our own pauses would
    # show up as the proxy's lateness.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    reactor.run()
    if watchdog.active():
        watchdog.cancel()
    return [f.record for f in factories]


def schedule_stalls(reactor: Any, factories: list[Any], first_start: float, script_s: float,
                    args: argparse.Namespace) -> None:
    """Chaos: every ``stall_every`` seconds (uniformly 0.5x to 1.5x, seeded), one random open call
    that is not stalled stops reading for ``stall_seconds``. Bounded by the window (default: the
    script's duration), so it ends by itself."""
    rng = random.Random(args.seed)
    lo, hi = args.stall_window if args.stall_window else (0.0, script_s)
    end = first_start + hi

    def next_stall() -> None:
        now = reactor.seconds()
        if now + args.stall_seconds > end:
            return
        candidates = [f.live for f in factories if f.live is not None and not f.live.stalled]
        if candidates:
            rng.choice(candidates).stall(args.stall_seconds)
        reactor.callLater(args.stall_every * rng.uniform(0.5, 1.5), next_stall)

    first = max(0.0, first_start + lo - reactor.seconds()) + args.stall_every * rng.uniform(0.5, 1.5)
    reactor.callLater(first, next_stall)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mediaproxy-sim``; exit status 0 when every call completed."""
    args = parse_args(argv)
    script = build_script(args)
    replies = expected_replies(script, args.threshold_dbfs, args.silence_ms)
    cpu0 = time.process_time()
    records = run_calls(args, script)
    cpu_s = time.process_time() - cpu0
    total, samples = CallStats(), Samples()
    per_call: list[dict[str, Any]] = []
    for record in records:
        stats, call_samples = analyse_call(record, replies, args.lead_ms)
        total.add(stats)
        samples.extend(call_samples)
        if args.per_call:
            late = percentiles_ms(call_samples.lateness_grid)
            p99 = "-" if late["p99"] is None else f"{late['p99']:.2f}"
            print(f"call {record.index:4d} {record.call_sid}: received {stats.frames_received} "
                  f"expected {stats.frames_expected} lost {stats.frames_lost} heard-gaps {stats.late_frames} "
                  f"grid-lateness p99 {p99} ms; {record.close_reason or 'not closed'}")
        entry: dict[str, Any] = {"index": record.index, "close_reason": record.close_reason, **stats.to_json()}
        if args.arrivals:
            entry.update(script_start=record.script_start, arrivals=[round(t, 4) for t in record.arrivals],
                         clears=[round(t, 4) for t in record.clears], stalls=record.stalls)
        per_call.append(entry)
    print(f"script: {script.duration_s:.1f} s per call, {len(replies)} replies expected per call")
    print(format_summary(total, samples))
    print(f"simulator CPU {cpu_s:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"stats": total.to_json(), "samples": samples.to_json(), "calls": per_call,
                       "sim_cpu_s": cpu_s}, f)
    return 0 if total.completed == total.calls else 1


if __name__ == "__main__":
    sys.exit(main())
