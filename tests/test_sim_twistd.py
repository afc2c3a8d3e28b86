"""The installed ``mediaproxy-sim`` command against a real ``twistd mediaproxy`` running the
default configuration (etc/mediaproxy.ini, on free loopback ports): the README's "Try it", one
command per platform, all four at once, each with a recording and a plot."""

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
from tests.test_e2e_call_control import free_port
from tests.test_sim import PNG_MAGIC, loud_spans

ROOT = FilePath(__file__).parent().parent()
MODES = {"twilio": "/twilio", "audiohook": "/audiohook", "connector": "/audiohook/connector",
         "audiocodes": "/audiocodes"}


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
    def test_one_call_per_platform_against_the_default_config(self) -> Any:
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

        sim = os.path.join(self.bin, "mediaproxy-sim")
        runs: dict[str, Collect] = {}
        for mode, path in MODES.items():
            runs[mode] = Collect()
            # Every option left at its default but the script's length (the URL too: the default
            # port is taken here, so it is given).
            argv = [sim, mode, f"ws://127.0.0.1:{port}{path}", "--duration", "2", "--talk-ms", "400",
                    "--gap-ms", "1600", "--json", f"{mode}.json", "--record", f"{mode}.wav", "--plot", f"{mode}.png"]
            reactor.spawnProcess(runs[mode], sim, argv, env=self.env, path=work.path)
        codes = yield gatherResults([run.ended for run in runs.values()])
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
