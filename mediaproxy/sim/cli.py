"""``mediaproxy-sim``: scripted platform calls against a running proxy, with a pacing report.

    mediaproxy-sim twilio ws://127.0.0.1:8080/twilio --calls 10 --duration 20
    mediaproxy-sim connector ws://127.0.0.1:8080/audiohook/connector --record out.wav --plot out.png
    mediaproxy-sim audiocodes --wav hello.wav --barge-in-ms 500
    mediaproxy-sim load ...            (the load generator, mediaproxy.sim.load)

One subcommand per platform (mediaproxy/sim/modes.py lists them); the URL defaults to where
etc/mediaproxy.ini serves that platform on 127.0.0.1:8080. Each call speaks the platform as the
platform does and plays a speech-like script (default: 1.2 s of a 300 Hz vowel-like tone at -12
dBFS, then 2.8 s of silence, repeated; or a WAV file, 8 or 16 kHz mono 16-bit/µ-law), then enough
silence for the parrot's last reply to finish, then ends the call the platform's way. Call starts
are spread over ``--ramp`` seconds (so their 20 ms phases differ, as real calls' do).

Outputs: a summary table and report on stdout; ``--json`` the counts, per-call figures and raw
samples for a benchmark to merge; ``--record`` what the caller heard as a WAV (the platform's
playout: bot audio at its play time, silence where nothing played, cut by clears): a file name
records the first call, a directory (existing, or ending in /) one ``call-NNNN.wav`` per call;
``--plot`` a PNG of lateness and playout depth over time with barge-ins marked (needs the
``plot`` extra: matplotlib). The old form ``mediaproxy-sim --url URL ...`` still runs a Twilio
call, and is deprecated.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any
from urllib.parse import urlparse

from mediaproxy.sim.modes import MODE_MODULES, SimMode, load_modes
from mediaproxy.sim.script import (
    FRAME_MS,
    CallScript,
    expected_replies,
    frames_to_script,
    synthetic_script,
    wav_script,
)

DEFAULT_HOST = "ws://127.0.0.1:8080"
LOAD_MODULE = "mediaproxy.sim.load"


def _common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("calls and script")
    g.add_argument("--calls", type=int, default=1, help="concurrent calls (default 1)")
    g.add_argument("--duration", type=float, default=20.0, help="seconds of caller script per call (default 20)")
    g.add_argument("--wav", help="caller audio: WAV, 8 or 16 kHz mono, 16-bit PCM or µ-law (default: synthetic)")
    g.add_argument("--talk-ms", type=int, default=1200, help="synthetic utterance length (default 1200)")
    g.add_argument("--gap-ms", type=int, default=2800,
                   help="synthetic silence after each utterance; long enough for the reply (default 2800)")
    g.add_argument("--barge-in-ms", type=int, default=None,
                   help="talk again this long into every second reply (with --wav: play it a second time this "
                        "long into the reply to it; default: never barge in)")
    g.add_argument("--chunk-ms", type=int, default=None,
                   help="caller audio per message, a multiple of 20 (default: the platform's usual size)")
    g.add_argument("--ramp", type=float, default=2.0, help="seconds over which call starts are spread (default 2)")
    g.add_argument("--first-index", type=int, default=0, help="index of the first call (unique ids across processes)")
    g = p.add_argument_group("what the proxy is expected to do (its configuration)")
    g.add_argument("--lead-ms", type=int, default=60, help="the proxy's [playout] lead_ms (default 60)")
    g.add_argument("--silence-ms", type=int, default=600, help="the echo backend's silence_ms (default 600)")
    g.add_argument("--threshold-dbfs", type=float, default=-40.0,
                   help="the echo backend's speech_threshold_dbfs (default -40)")
    g = p.add_argument_group("output")
    g.add_argument("--per-call", action="store_true", help="print one line per call")
    g.add_argument("--json", help="write counts, per-call figures and raw samples to this file")
    g.add_argument("--arrivals", action="store_true",
                   help="with --json: also write each call's script start, media arrival times and stalls")
    g.add_argument("--record", help="write what the caller heard: FILE.wav (the first call) or DIR/ (every call)")
    g.add_argument("--plot", help="write lateness and playout depth over time to this PNG (needs matplotlib)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (there is none when not a TTY)")
    g = p.add_argument_group("chaos")
    g.add_argument("--stall-every", type=float, default=0.0,
                   help="stop reading a random call's socket about every this many seconds (default 0: never)")
    g.add_argument("--stall-seconds", type=float, default=3.0, help="how long each stall lasts (default 3)")
    g.add_argument("--stall-window", type=float, nargs=2, default=None, metavar=("FROM", "TO"),
                   help="stalls only this many seconds after the first call's start (default: whole script)")
    g.add_argument("--seed", type=int, default=None, help="seed of the chaos choices")
    return p


def build_parser(modes: dict[str, SimMode] | None = None) -> argparse.ArgumentParser:
    """The whole command line: one subcommand per mode, plus ``load``."""
    modes = load_modes() if modes is None else modes
    intro, examples = (__doc__ or "").replace("``", "").split("\n\n")[:2]
    p = argparse.ArgumentParser(prog="mediaproxy-sim", description=intro,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"examples:\n{examples}\n\n"
                                       "Run 'mediaproxy-sim MODE --help' for a mode's options.")
    sub = p.add_subparsers(dest="mode", metavar="MODE", required=True)
    common = _common_options()
    for mode in modes.values():
        mp = sub.add_parser(mode.name, parents=[common], help=mode.help,
                            description=f"{mode.help}: simulated calls against the proxy.")
        mp.add_argument("url", nargs="?", default=f"{DEFAULT_HOST}{mode.default_path}",
                        help=f"the proxy's WebSocket URL (default {DEFAULT_HOST}{mode.default_path})")
        mode.add_options(mp.add_argument_group(f"{mode.name} options"))  # type: ignore[arg-type]
    sub.add_parser("load", help="the load generator (mediaproxy-sim load --help)", add_help=False)
    return p


def legacy_argv(argv: list[str]) -> list[str] | None:
    """``--url URL ...`` (the old Twilio-only form) as ``twilio URL ...``; None if not that form."""
    if not argv or argv[0] in MODE_MODULES or argv[0] == "load" or argv[0] in ("-h", "--help"):
        return None
    rest, url = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--url" and i + 1 < len(argv):
            url = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--url="):
            url = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return ["twilio", *([url] if url else []), *rest]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a mode's command line (``load`` is dispatched by :func:`main`, not parsed here)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    legacy = legacy_argv(argv)
    if legacy is not None:
        print("mediaproxy-sim: --url is deprecated; use: mediaproxy-sim twilio URL [options]", file=sys.stderr)
        argv = legacy
    modes = load_modes()
    parser = build_parser(modes)
    args = parser.parse_args(argv)
    mode = modes[args.mode]
    args.sim_mode = mode
    if args.chunk_ms is None:
        args.chunk_ms = mode.chunk_ms
    if args.calls < 1 or args.duration <= 0 or args.stall_every < 0 or args.stall_seconds <= 0:
        parser.error("--calls and --duration must be positive")
    if args.chunk_ms < FRAME_MS or args.chunk_ms % FRAME_MS:
        parser.error(f"--chunk-ms must be a positive multiple of {FRAME_MS}")
    if urlparse(args.url).scheme not in ("ws", "wss"):
        parser.error("the URL must be ws:// or wss://")
    return args


def build_script(args: argparse.Namespace) -> CallScript:
    """The caller script every call plays, with a silent tail long enough for the last reply."""
    # Enough quiet after the script for its last utterance to end (and be counted).
    bare = _script(args, args.silence_ms + 2 * FRAME_MS)
    replies = expected_replies(bare, args.threshold_dbfs, args.silence_ms)
    longest = max((r.frames for r in replies), default=0) * FRAME_MS
    return _script(args, args.silence_ms + longest + 1000)


def _script(args: argparse.Namespace, tail_ms: int) -> CallScript:
    if not args.wav:
        return synthetic_script(args.duration, args.talk_ms, args.gap_ms, args.barge_in_ms, args.silence_ms, tail_ms)
    if args.barge_in_ms is None:
        return wav_script(args.wav, tail_ms)
    once = wav_script(args.wav)
    # The WAV, then the WAV again barge_in_ms into the parrot's reply to its last utterance
    # (which ends with the quiet after the WAV, if not before).
    replies = expected_replies(wav_script(args.wav, args.silence_ms + 2 * FRAME_MS), args.threshold_dbfs,
                               args.silence_ms)
    again_at = (replies[-1].end_frame if replies else len(once.frames)) + args.barge_in_ms // FRAME_MS
    silence = b"\xff" * len(once.frames[0]) if once.frames else b""
    frames = list(once.frames) + [silence] * max(0, again_at - len(once.frames)) + list(once.frames)
    frames += [silence] * (tail_ms // FRAME_MS)
    return frames_to_script(frames)


def run_load(argv: list[str]) -> int:
    """``mediaproxy-sim load ...``: the load generator's own ``main``, imported when asked for."""
    try:
        module = importlib.import_module(LOAD_MODULE)
    except ModuleNotFoundError as e:
        if e.name != LOAD_MODULE:
            raise
        print(f"mediaproxy-sim: the load generator ({LOAD_MODULE}) is not installed in this version",
              file=sys.stderr)
        return 2
    status: Any = module.main(argv)
    return int(status or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mediaproxy-sim``; exit status 0 when every call completed without a
    protocol error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "load":
        return run_load(argv[1:])
    args = parse_args(argv)
    from mediaproxy.sim.run import run_and_report

    return run_and_report(args)


if __name__ == "__main__":
    sys.exit(main())
