"""Graceful drain of a real ``twistd mediaproxy`` process: SIGTERM makes ``/ready`` 503 at once
and new upgrades are refused (503); live calls go on for ``drain_seconds``; then each gets its
platform's goodbye (Twilio: the socket closed; AudioHook: ``disconnect`` with a reason that is
not ``completed``; AudioCodes: a ``hangup`` activity) and the process exits cleanly."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.test_config import ROOT, Collect
from tests.test_limits import _RefusalProbe
from tests.test_loopback_audiohook import has
from tests.three_platforms import open_audiocodes, open_audiohook, open_twilio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


CONFIG = """
[proxy]
listen = tcp:{port}:interface=127.0.0.1
drain_seconds = 2
[metrics]
listen = tcp:{metrics}:interface=127.0.0.1
[platform:twilio]
path = /twilio
backend = echo
[platform:audiohook]
path = /audiohook
backend = echo
mode = connector
[platform:audiocodes]
path = /audiocodes
backend = echo
token = test-token
[backend:echo]
type = echo
"""


class DrainProcessTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_sigterm_drains_every_platform_then_exits_cleanly(self) -> Any:
        port, metrics = free_port(), free_port()
        path = os.path.abspath(self.mktemp())
        FilePath(path).setContent(CONFIG.format(port=port, metrics=metrics).encode())
        process = Collect()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        # This worktree's code, whatever the venv has installed.
        env = {**os.environ, "PYTHONPATH": ROOT.path}
        reactor.spawnProcess(process, sys.executable, [sys.executable, twistd, "-n", "--pidfile=", "mediaproxy",
                                                       "--config", path], env=env, path=ROOT.path)
        yield process.wait_for(b"mediaproxy ready")
        base = f"ws://127.0.0.1:{port}"
        agent = Agent(reactor)
        ready_url = f"http://127.0.0.1:{metrics}/ready".encode()
        response = yield agent.request(b"GET", ready_url)
        yield readBody(response)
        self.assertEqual(response.code, 200)

        twilio, _ = yield open_twilio(base)
        audiohook, audiohook_client = yield open_audiohook(base)
        audiocodes, _ = yield open_audiocodes(base)
        yield audiohook_client.ping()
        process.transport.signalProcess("TERM")
        yield process.wait_for(b"Received SIGTERM")
        signalled = reactor.seconds()
        response = yield agent.request(b"GET", ready_url)
        body = yield readBody(response)
        self.assertEqual((response.code, body), (503, b"draining\n"))
        refused = _RefusalProbe(f"{base}/twilio")
        connectWS(refused)
        yield refused.closed
        self.assertFalse(refused.opened)
        self.assertIn("503", refused.status_line)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{metrics}/metrics".encode())
        exported = (yield readBody(response)).decode()
        self.assertIn("\nmediaproxy_draining 1.0\n", exported)
        self.assertIn('\nmediaproxy_calls_refused_total{platform="twilio",reason="draining"} 1.0\n', exported)
        # The live calls go on meanwhile: AudioHook still answers.
        yield audiohook_client.ping()
        self.assertFalse(twilio.closed.called or audiohook.closed.called or audiocodes.closed.called)

        code = yield twilio.closed
        self.assertGreaterEqual(reactor.seconds() - signalled, 1.5)  # drain_seconds = 2
        self.assertEqual(code, 1000)
        yield audiohook.wait_for(has("disconnect"))
        reason = audiohook_client.of_type("disconnect")[-1]["parameters"]["reason"]
        self.assertNotEqual(reason, "completed")
        yield audiohook.closed
        yield audiocodes.wait_for(lambda msgs: any(
            m["type"] == "activities" and any(a.get("name") == "hangup" for a in m["activities"]) for m in msgs))
        yield audiocodes.closed
        exit_code = yield process.ended
        output = process.output.decode(errors="replace")
        # twistd shuts down cleanly, then re-raises SIGTERM so its exit status says why it ended.
        self.assertEqual(exit_code, -15, output[-2000:])
        self.assertIn("Server Shut Down", output)
        self.assertNotIn("Traceback", output)
        for platform in ("twilio", "audiohook", "audiocodes"):
            self.assertIn(f"ended on {platform}: drained", output)
