"""The installed ``mediaproxy-sim`` command against a real ``twistd mediaproxy`` running the
default configuration (etc/mediaproxy.ini, on free loopback ports, its development
credentials): the README's "Try it", one command per platform, all four at once, each with a
recording and a plot; and full calls with barge-in and DTMF for every other platform (and
Twilio's DTMF), all at once, checked in the calls' reports and the proxy's ``/metrics``."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from tests.test_config import Collect
from tests.test_e2e_call_control import free_port, scrape_metrics
from tests.test_sim import PNG_MAGIC, loud_spans

ROOT = FilePath(__file__).parent().parent()
MODES = {"twilio": "/twilio", "audiohook": "/audiohook", "connector": "/audiohook/connector",
         "audiocodes": "/audiocodes"}
#: mode -> (path in etc/mediaproxy.ini, the [platform:NAME] it reaches).
DTMF_MODES = {"twilio": ("/twilio", "twilio"), "telnyx": ("/telnyx", "telnyx"), "plivo": ("/plivo", "plivo"),
              "exotel": ("/exotel", "exotel"), "vonage": ("/vonage", "vonage"), "jambonz": ("/jambonz", "jambonz"),
              "asterisk": ("/asterisk", "asterisk"), "freeswitch": ("/freeswitch", "freeswitch"),
              "websocket": ("/browser", "browser")}
#: How the proxy sees each call end when the platform ends it: a stop message, or (where the
#: socket closing is the platform's hang-up) ``disconnected``.
OUTCOME = {"plivo": "disconnected", "vonage": "disconnected", "jambonz": "disconnected", "asterisk": "disconnected",
           "freeswitch": "disconnected"}
# Two 400 ms utterances, the second 200 ms into the parrot's reply to the first (the default
# config's 600 ms end of speech); keys at 0.3 s and 1.5 s. About 3.6 s of script per call.
DTMF_SCRIPT = ["--duration", "1.6", "--talk-ms", "400", "--gap-ms", "1000", "--barge-in-ms", "200",
               "--ramp", "0", "--dtmf", "12@300", "--dtmf", "#@1500", "--no-progress"]


def default_config_on(port: int, metrics_port: int) -> str:
    """etc/mediaproxy.ini with its listeners moved to ``port``/``metrics_port`` on loopback."""
    text = ROOT.child("etc").child("mediaproxy.ini").getContent().decode()
    text, n = re.subn(r"^listen = tcp:8080$", f"listen = tcp:{port}:interface=127.0.0.1", text, flags=re.M)
    text, m = re.subn(r"^listen = tcp:9090:interface=127.0.0.1$", f"listen = tcp:{metrics_port}:interface=127.0.0.1",
                      text, flags=re.M)
    assert (n, m) == (1, 1), "etc/mediaproxy.ini's listeners moved: update this test"
    return re.sub(r"^drain_seconds = \d+$", "drain_seconds = 1", text, flags=re.M)


class InstalledSimulatorTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.env = {**os.environ, "PYTHONPATH": ROOT.path}
        self.bin = os.path.dirname(sys.executable)
        self.proxy: Collect | None = None

    @inlineCallbacks
    def tearDown(self) -> Any:
        if self.proxy is not None and not self.proxy.ended.called:
            self.proxy.transport.signalProcess("TERM")
            code = yield self.proxy.ended
            self.assertEqual(code, -15, self.proxy.output[-3000:])
            self.assertNotIn(b"Traceback", self.proxy.output)

    @inlineCallbacks
    def start_proxy(self) -> Any:
        """``twistd mediaproxy`` on the default configuration; fires with (port, metrics port,
        work directory) once it is ready."""
        port, metrics_port = free_port(), free_port()
        work = FilePath(self.mktemp())
        work.makedirs()
        ini = work.child("mediaproxy.ini")
        ini.setContent(default_config_on(port, metrics_port).encode())
        self.proxy = Collect()
        twistd = os.path.join(self.bin, "twistd")
        reactor.spawnProcess(self.proxy, twistd, [twistd, "--nodaemon", "--pidfile=", "mediaproxy", "--config",
                                                  ini.path], env=self.env, path=ROOT.path)
        yield self.proxy.wait_for(b"mediaproxy ready")
        return port, metrics_port, work

    def simulate(self, work: FilePath[str], argvs: dict[str, list[str]]) -> Any:
        """One installed ``mediaproxy-sim MODE ARGS`` process per entry, all at once, in ``work``;
        fires with their exit codes once all ended."""
        sim = os.path.join(self.bin, "mediaproxy-sim")
        self.runs: dict[str, Collect] = {}
        for mode, argv in argvs.items():
            self.runs[mode] = Collect()
            reactor.spawnProcess(self.runs[mode], sim, [sim, mode, *argv], env=self.env, path=work.path)
        return gatherResults([run.ended for run in self.runs.values()])

    @inlineCallbacks
    def test_one_call_per_platform_against_the_default_config(self) -> Any:
        port, _, work = yield self.start_proxy()
        # Every option left at its default but the script's length (the URL too: the default
        # port is taken here, so it is given).
        codes = yield self.simulate(work, {
            mode: [f"ws://127.0.0.1:{port}{path}", "--duration", "2", "--talk-ms", "400", "--gap-ms", "1600",
                   "--json", f"{mode}.json", "--record", f"{mode}.wav", "--plot", f"{mode}.png"]
            for mode, path in MODES.items()})
        runs = self.runs
        for (mode, run), code in zip(runs.items(), codes, strict=True):
            output = run.output.decode(errors="replace")
            self.assertEqual(code, 0, f"{mode}: {output}")
            document = json.loads(work.child(f"{mode}.json").getContent())
            self.assertEqual(document["platform"], mode)
            self.assertEqual((document["stats"]["completed"], document["stats"]["protocol_errors"]), (1, 0), output)
            self.assertEqual(work.child(f"{mode}.png").getContent()[:8], PNG_MAGIC)
            _, spans = loud_spans(work.child(f"{mode}.wav").path)
            if mode == "audiohook":  # listen-only: the caller hears nothing
                self.assertEqual(spans, [])
                self.assertEqual(document["stats"]["replies_expected"], 0)
            else:
                self.assertEqual(document["stats"]["replies_received"], 1, output)
                self.assertEqual(len(spans), 1, spans)
                self.assertIn("mediaproxy-sim " + mode, output)  # the summary table

    @inlineCallbacks
    def test_a_call_with_barge_in_and_dtmf_per_platform(self) -> Any:
        """Each call talks, is parroted, talks over the first reply and presses ``1 2 #``: it
        completes without a protocol error, hears both replies with the first cut by the
        platform's clear, and the proxy counted the three keys on that platform."""
        port, metrics_port, work = yield self.start_proxy()
        codes = yield self.simulate(work, {
            mode: [f"ws://127.0.0.1:{port}{path}", *DTMF_SCRIPT, "--json", f"{mode}.json"]
            for mode, (path, _) in DTMF_MODES.items()})
        samples = yield scrape_metrics(metrics_port)
        for (mode, run), code in zip(self.runs.items(), codes, strict=True):
            output = run.output.decode(errors="replace")
            self.assertEqual(code, 0, f"{mode}: {output}")
            document = json.loads(work.child(f"{mode}.json").getContent())
            stats = document["stats"]
            self.assertEqual((document["platform"], stats["completed"], stats["protocol_errors"]), (mode, 1, 0), output)
            self.assertEqual((stats["replies_expected"], stats["replies_received"], stats["replies_interrupted"]),
                             (2, 2, 1), f"{mode}: {output}")
            self.assertGreaterEqual(stats["clears"], 1, f"{mode}: {output}")  # the barge-in's clear
            self.assertEqual(stats["dtmf_sent"], 3)
            platform = DTMF_MODES[mode][1]
            self.assertEqual(samples.get(("mediaproxy_dtmf_keys_total", (("platform", platform),))), 3.0, mode)
            errors = {k: v for k, v in samples.items()
                      if k[0] == "mediaproxy_protocol_errors_total" and ("platform", platform) in k[1]}
            self.assertEqual(sum(errors.values()), 0.0, errors)
            # Ended by the platform: a stop, or the socket closing (where that is the platform's way).
            ended = {dict(labels)["outcome"]: value for (name, labels), value in samples.items()
                     if name == "mediaproxy_calls_total" and dict(labels)["platform"] == platform}
            self.assertEqual(ended, {OUTCOME.get(mode, "completed"): 1.0}, mode)
