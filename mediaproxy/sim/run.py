"""Places the simulated calls on a reactor, and runs a whole ``mediaproxy-sim`` invocation.

:func:`start_calls` only schedules (it works on any running reactor, so tests drive it inside
trial); :func:`run_and_report` is the command: it runs the reactor until every call is over (or a
watchdog gives up), with a progress bar on a terminal, then reports (:mod:`mediaproxy.sim.output`).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, gatherResults

from mediaproxy.sim.caller import CallRecord, SimCall
from mediaproxy.sim.output import Progress, recorded_indexes, summarize
from mediaproxy.sim.script import CallScript, expected_replies

__all__ = ["start_calls", "run_and_report"]

#: Seconds between scheduling and the first dial (the reactor settles), and from a dial to that
#: call's script start (the connection comes up).
_SETTLE_S = 0.5


def start_calls(args: argparse.Namespace, script: CallScript, reactor: Any,
                settle_s: float = _SETTLE_S) -> tuple[list[SimCall], Deferred[list[CallRecord]]]:
    """Schedule ``args.calls`` calls of ``args.sim_mode`` (spread over ``args.ramp``); the
    Deferred fires with their records, in call order, once every call is over."""
    mode = args.sim_mode
    run_id = f"{os.getpid() % 100000:05d}"
    keep = recorded_indexes(args.record, args.calls, args.first_index)
    now = reactor.seconds()
    first_start = now + 2 * settle_s
    calls: list[SimCall] = []
    for i in range(args.calls):
        index = args.first_index + i
        start_at = first_start + args.ramp * i / args.calls
        call = mode.call(args.url, script, reactor, index, start_at, args, run_id, index in keep)
        calls.append(call)
        reactor.callLater(start_at - settle_s - now, call.dial)
    if args.stall_every > 0:
        schedule_stalls(reactor, calls, first_start, script.duration_s, args)
    done: Deferred[list[CallRecord]] = gatherResults([c.done for c in calls])
    return calls, done


def schedule_stalls(reactor: Any, calls: list[SimCall], first_start: float, script_s: float,
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
        candidates = [c for c in calls if c.live is not None and not c.stalled]
        if candidates:
            rng.choice(candidates).stall(args.stall_seconds)
        reactor.callLater(args.stall_every * rng.uniform(0.5, 1.5), next_stall)

    first = max(0.0, first_start + lo - reactor.seconds()) + args.stall_every * rng.uniform(0.5, 1.5)
    reactor.callLater(first, next_stall)


def run_calls(args: argparse.Namespace, script: CallScript) -> list[CallRecord]:
    """Run every call on the real reactor; returns their records (also of calls a watchdog cut)."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    calls, done = start_calls(args, script, reactor)
    progress = Progress(len(calls), enabled=not args.no_progress and sys.stderr.isatty())

    def finished(record: CallRecord) -> CallRecord:
        progress.advance()
        return record

    for call in calls:
        call.done.addCallback(finished)
    refresh = LoopingCall(progress.refresh)
    refresh.clock = reactor
    refresh.start(0.5)
    DeferredList([done], consumeErrors=True).addBoth(lambda _: reactor.stop())
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
    refresh.stop()
    progress.close()
    records = []
    for call in calls:
        if not call.done.called:  # cut by the watchdog: what it got so far
            call.record.close_reason = call.record.close_reason or "not finished"
            if call.keep_audio:
                call.record.heard = call.playout.segments()
        records.append(call.record)
    return records


def run_and_report(args: argparse.Namespace) -> int:
    """The whole command: run the calls, print and write the reports; 0 when every call
    completed."""
    from mediaproxy.sim.cli import build_script

    script = build_script(args)
    replies = expected_replies(script, args.threshold_dbfs, args.silence_ms) if args.sim_mode.plays_audio else []
    if args.plot:
        from mediaproxy.sim.plot import require_matplotlib

        require_matplotlib()  # before the run, not after minutes of it
    cpu0 = time.process_time()
    records = run_calls(args, script)
    cpu_s = time.process_time() - cpu0
    report = summarize(args, script, replies, records, cpu_s)
    return 0 if report.total.completed == report.total.calls else 1
