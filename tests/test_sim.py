"""mediaproxy-sim tested like the product: every mode places a real call through the real proxy
service on 127.0.0.1 (echo parrot backend), driven by the simulator's own code on the real
reactor (a short script; every wait is for the calls to end, bounded by trial's timeout). Each
call barges in on the first reply; the tests check the replies came, the barge-in was answered by
a clear, the recording holds the bot's audio where the caller heard it, the JSON has its fields
and the plot is a PNG. Also: the command line (subcommands, the old --url form, ``load``)."""

from __future__ import annotations

import io
import json
import os
import sys
import types
import wave
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from mediaproxy.sim import cli
from mediaproxy.sim.audiocodes import DEV_TOKEN
from mediaproxy.sim.genesys import DEV_API_KEY, DEV_CLIENT_SECRET
from mediaproxy.sim.output import RunReport, summarize
from mediaproxy.sim.run import start_calls
from mediaproxy.sim.script import expected_replies
from tests.support import LoopbackService, cancel_autobahn_timer_buckets

SILENCE_MS = 200
# Two 400 ms utterances: the second starts 100 ms into the parrot's reply to the first (a
# barge-in), the reply to the second plays out. About 3.5 s per call with the silent tail.
SCRIPT = ["--duration", "1.6", "--talk-ms", "400", "--gap-ms", "800", "--barge-in-ms", "100",
          "--silence-ms", str(SILENCE_MS), "--ramp", "0", "--no-progress"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def config() -> Any:
    genesys = {"backend": "echo", "api_key": DEV_API_KEY, "client_secret": DEV_CLIENT_SECRET}
    return parse_config("test.ini", {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "platform:twilio": {"path": "/twilio", "backend": "echo"},
        "platform:audiohook": {"path": "/audiohook", "mode": "monitor", **genesys},
        "platform:connector": {"type": "audiohook", "path": "/audiohook/connector", "mode": "connector", **genesys},
        "platform:audiocodes": {"path": "/audiocodes", "backend": "echo", "token": DEV_TOKEN, "barge_in": "true"},
        "backend:echo": {"type": "echo", "silence_ms": str(SILENCE_MS)},
    }, {})


def loud_spans(path: str, frame_ms: int = 20) -> tuple[int, list[tuple[float, float]]]:
    """The WAV's rate and its loud stretches, ``(start s, end s)``, at 20 ms resolution."""
    with wave.open(path, "rb") as w:
        rate = w.getframerate()
        self_check = (w.getnchannels(), w.getsampwidth())
        assert self_check == (1, 2), self_check
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    n = rate * frame_ms // 1000
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    loud = np.abs(frames.astype(np.int32)).max(axis=1) > 1000
    spans, start = [], None
    for i, is_loud in enumerate(list(loud) + [False]):
        if is_loud and start is None:
            start = i
        elif not is_loud and start is not None:
            spans.append((start * frame_ms / 1000, i * frame_ms / 1000))
            start = None
    return rate, spans


class SimulatorLoopbackTests(LoopbackService, TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        address, _ = yield self.start_service(MediaProxyService(config(), reactor, tune_gc=False))
        self.base = f"ws://127.0.0.1:{address.port}"

    def tearDown(self) -> Any:
        d = self.stop_service()
        d.addCallback(lambda _: cancel_autobahn_timer_buckets())
        return d

    @inlineCallbacks
    def simulate(self, mode: str, path: str, *extra: str) -> Any:
        """One call of ``mode`` through the proxy; returns (report, json document, output dir)."""
        out = os.path.abspath(self.mktemp())
        os.makedirs(out)
        args = cli.parse_args([mode, self.base + path, *SCRIPT, "--json", f"{out}/sim.json",
                               "--record", f"{out}/heard.wav", "--plot", f"{out}/plot.png", *extra])
        script = cli.build_script(args)
        replies = expected_replies(script, args.threshold_dbfs, args.silence_ms) if args.sim_mode.plays_audio else []
        _, done = start_calls(args, script, reactor, settle_s=0.05)
        records = yield done
        text = io.StringIO()
        report = summarize(args, script, replies, records, 0.0, out=text)
        with open(f"{out}/sim.json") as f:
            document = json.load(f)
        self.text = text.getvalue()
        return report, document, out

    def assertCompleted(self, report: RunReport, document: dict[str, Any], platform: str) -> dict[str, Any]:
        (call,) = document["calls"]
        self.assertEqual((report.total.completed, report.total.protocol_errors), (1, 0),
                         f"{call['close_reason']} {call['errors']}\n{self.text}")
        self.assertEqual(call["close_reason"], "stop")
        self.assertEqual(document["platform"], platform)
        for key in ("stats", "samples", "summary", "sim_cpu_s", "url"):
            self.assertIn(key, document)
        for key in ("reply_latency_ms", "lateness_ms", "lead_ms", "bargein_ms", "first_audio_ms", "connect_ms"):
            self.assertIn(key, document["summary"])
            self.assertIn(key, call["figures"])
        self.assertIsNotNone(call["figures"]["connect_ms"])
        return call

    def assertConversation(self, report: RunReport, document: dict[str, Any], out: str, platform: str) -> None:
        """Both replies came back, the first cut by the barge-in, and the caller heard that."""
        call = self.assertCompleted(report, document, platform)
        stats = report.total
        self.assertEqual((stats.replies_expected, stats.replies_received), (2, 2), self.text)
        self.assertEqual(stats.replies_interrupted, 1, self.text)
        self.assertEqual((stats.frames_lost, stats.late_frames), (0, 0), self.text)
        # The proxy answered the barge-in with a clear (Twilio gets one at every onset).
        self.assertTrue(report.samples.bargein, self.text)
        self.assertLess(max(report.samples.bargein), 0.5, self.text)
        self.assertGreater(call["figures"]["first_audio_ms"], 0)
        self.assertEqual(call["recording"], f"{out}/heard.wav")
        rate, spans = loud_spans(f"{out}/heard.wav")
        self.assertEqual(rate, 8000)
        # Reply 1 (400 ms of tone) starts once the parrot saw 200 ms of quiet after 0.4 s (the
        # frame sent at 0.58 s) and is cut by the barge-in (the caller's second utterance starts
        # at 0.7 s; Genesys's 200 ms frames carry it by 0.78 s); reply 2 plays its whole 400 ms
        # after the second utterance ended (1.1 s) and the parrot's wait.
        self.assertEqual(len(spans), 2, spans)
        (a0, a1), (b0, b1) = spans
        self.assertTrue(0.56 <= a0 < 0.75, spans)
        self.assertLess(a1 - a0, 0.35, spans)
        self.assertTrue(1.25 <= b0 < 1.6, spans)
        self.assertTrue(abs(b1 - b0 - 0.4) <= 0.045, spans)  # 20 ms bins, the play start between two
        with open(f"{out}/plot.png", "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)

    @inlineCallbacks
    def test_twilio(self) -> Any:
        report, document, out = yield self.simulate("twilio", "/twilio")
        self.assertConversation(report, document, out, "twilio")
        self.assertGreater(report.total.marks_echoed, 0)
        self.assertEqual(report.total.marks_echoed, report.total.marks_received)

    @inlineCallbacks
    def test_twilio_messages_of_several_frames(self) -> Any:
        report, document, out = yield self.simulate("twilio", "/twilio", "--chunk-ms", "60")
        self.assertConversation(report, document, out, "twilio")

    @inlineCallbacks
    def test_connector(self) -> Any:
        report, document, out = yield self.simulate("connector", "/audiohook/connector")
        self.assertConversation(report, document, out, "connector")
        received = document["calls"][0]["received"]
        self.assertEqual((received["opened"], received["closed"]), (1, 1))
        self.assertGreaterEqual(received["pong"], 1)  # the first ping goes 1 s after opened
        self.assertEqual(received["event"], 1)  # the barge_in

    @inlineCallbacks
    def test_audiohook_monitor_with_a_pause(self) -> Any:
        report, document, _ = yield self.simulate("audiohook", "/audiohook", "--pause-at-ms", "600",
                                                  "--pause-ms", "400")
        call = self.assertCompleted(report, document, "audiohook")
        self.assertEqual((report.total.replies_expected, report.total.frames_received), (0, 0))
        self.assertEqual(call["frames_withheld"], 20)  # 400 ms not sent while paused
        self.assertEqual(call["received"]["opened"], 1)
        self.assertNotIn("binary", call["received"])

    @inlineCallbacks
    def test_audiocodes(self) -> Any:
        report, document, out = yield self.simulate("audiocodes", "/audiocodes")
        self.assertConversation(report, document, out, "audiocodes")
        received = document["calls"][0]["received"]
        self.assertEqual(received["activity:config"], 1)  # barge_in = true: VAIC's barge-in turned on
        self.assertEqual(received["playStream.start"], 2)
        self.assertEqual(received["playStream.stop"], 2)

    @inlineCallbacks
    def test_audiocodes_resume(self) -> Any:
        """The socket drops 1 s into the script; VAIC resumes the conversation on a new one."""
        report, document, _ = yield self.simulate("audiocodes", "/audiocodes", "--resume-at-ms", "1000")
        call = self.assertCompleted(report, document, "audiocodes")
        self.assertEqual(call["received"]["session.accepted"], 2)
        self.assertEqual(call["received"]["userStream.started"], 2)
        self.assertEqual(report.total.replies_received, 2, self.text)

    @inlineCallbacks
    def test_wrong_credentials_are_a_failed_call(self) -> Any:
        report, document, _ = yield self.simulate("audiocodes", "/audiocodes", "--token", "wrong")
        self.assertEqual(report.total.completed, 0)
        self.assertNotEqual(document["calls"][0]["close_reason"], "stop")


class CommandLineTests(SynchronousTestCase):
    def put_module(self, module: types.ModuleType | None) -> None:
        """``mediaproxy.sim.load`` is ``module`` for this test (None: it cannot be imported)."""
        saved = sys.modules.get(cli.LOAD_MODULE, False)
        sys.modules[cli.LOAD_MODULE] = module  # type: ignore[assignment]
        self.addCleanup(lambda: sys.modules.pop(cli.LOAD_MODULE) if saved is False
                        else sys.modules.__setitem__(cli.LOAD_MODULE, saved))  # type: ignore[arg-type]

    def test_every_mode_is_a_subcommand_with_a_default_url(self) -> None:
        for mode, path in (("twilio", "/twilio"), ("audiohook", "/audiohook"),
                           ("connector", "/audiohook/connector"), ("audiocodes", "/audiocodes")):
            args = cli.parse_args([mode])
            self.assertEqual((args.sim_mode.name, args.url), (mode, f"ws://127.0.0.1:8080{path}"))

    def test_platform_chunk_sizes(self) -> None:
        self.assertEqual(cli.parse_args(["twilio"]).chunk_ms, 20)
        self.assertEqual(cli.parse_args(["connector"]).chunk_ms, 200)
        self.assertEqual(cli.parse_args(["audiocodes", "--chunk-ms", "60"]).chunk_ms, 60)
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, cli.parse_args, ["twilio", "--chunk-ms", "30"])

    def test_a_16_khz_wav_with_barge_in(self) -> None:
        """A 16 kHz WAV is resampled to the 8 kHz script; with --barge-in-ms it plays again that
        long into the parrot's reply to it."""
        path = self.mktemp()
        tone = (np.sin(2 * np.pi * 300 * np.arange(8000) / 16000) * 8000).astype("<i2")  # 0.5 s
        with wave.open(path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(tone.tobytes())
        args = cli.parse_args(["twilio", "--wav", path, "--barge-in-ms", "200"])
        replies = expected_replies(cli.build_script(args), args.threshold_dbfs, args.silence_ms)
        self.assertEqual([(r.utterance_start_frame, r.speech_end_frame) for r in replies], [(0, 25), (64, 89)])
        # The second copy starts 200 ms after the parrot decided the first utterance was over.
        self.assertEqual(replies[0].end_frame + 10, replies[1].utterance_start_frame)

    def test_the_old_url_form_is_twilio(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        args = cli.parse_args(["--url", "ws://h:1/twilio", "--calls", "3"])
        self.assertEqual((args.sim_mode.name, args.url, args.calls), ("twilio", "ws://h:1/twilio", 3))
        self.assertIn("deprecated", sys.stderr.getvalue())  # type: ignore[attr-defined]
        self.assertEqual(cli.parse_args(["--url=ws://h:2/t"]).url, "ws://h:2/t")

    def test_load_runs_the_load_generator(self) -> None:
        seen: list[list[str]] = []
        module = types.ModuleType(cli.LOAD_MODULE)
        module.main = lambda argv: seen.append(argv) or 7  # type: ignore[attr-defined]
        self.put_module(module)
        self.assertEqual(cli.main(["load", "--calls", "5"]), 7)
        self.assertEqual(seen, [["--calls", "5"]])

    def test_load_without_the_load_generator_says_so(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        self.put_module(None)  # an import of it fails as if it were not there
        self.assertEqual(cli.run_load([]), 2)
        self.assertIn("load generator", sys.stderr.getvalue())  # type: ignore[attr-defined]
