"""``[proxy] workers = 2`` in a real ``twistd mediaproxy`` process: both workers take calls on the
one port (over TLS too), a worker killed with SIGKILL is restarted and takes calls again, the
workers of a killed supervisor drain and exit by themselves, and SIGTERM drains the calls on
every worker with each platform's goodbye before the supervisor exits. Which worker serves a call
is read from the supervisor's /metrics (the ``worker`` label)."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.test_config import ROOT, Collect
from tests.test_drain import CONFIG, free_port
from tests.test_limits import _RefusalProbe
from tests.test_loopback_audiohook import has
from tests.test_tls import self_signed
from tests.three_platforms import open_audiocodes, open_audiohook, open_twilio

READY_LINE = re.compile(rb"worker (\d+)\| [^\n]*mediaproxy ready: platforms")
STARTED_LINE = re.compile(rb"worker (\d+) started \(pid (\d+)\)")


class Supervisor(Collect):
    """The supervisor's output, with waits on what it says."""

    def __init__(self) -> None:
        super().__init__()
        self.conditions: list[tuple[Callable[[bytes], bool], Deferred[None]]] = []

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        super().outReceived(data)
        for condition, d in list(self.conditions):
            if condition(self.output):
                self.conditions.remove((condition, d))
                d.callback(None)

    errReceived = outReceived

    def when(self, condition: Callable[[bytes], bool]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.conditions.append((condition, d))
        self.outReceived(b"")
        return d

    def workers_ready(self, times: int) -> Deferred[None]:
        """Fires once workers have said "ready" ``times`` times in all (restarts included)."""
        return self.when(lambda out: len(READY_LINE.findall(out)) >= times)

    def pids(self) -> dict[int, int]:
        """The latest pid of each worker."""
        return {int(index): int(pid) for index, pid in STARTED_LINE.findall(self.output)}


class WorkersProcessTests(TestCase):
    timeout = 90

    def start(self, config: str) -> Supervisor:
        self.port, self.metrics_port = free_port(), free_port()
        path = os.path.abspath(self.mktemp())
        FilePath(path).setContent(config.format(port=self.port, metrics=self.metrics_port).encode())
        process = Supervisor()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        env = {**os.environ, "PYTHONPATH": ROOT.path}  # this worktree's code, whatever the venv has
        reactor.spawnProcess(process, sys.executable, [sys.executable, twistd, "-n", "--pidfile=", "mediaproxy",
                                                       "--config", path], env=env, path=ROOT.path)
        self.agent = Agent(reactor)
        self.process = process
        self.addCleanup(self.kill_leftovers)
        return process

    def kill_leftovers(self) -> None:
        """A failed test must not leave a supervisor (or its workers) holding ports."""
        if not self.process.ended.called:
            for pid in self.process.pids().values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.transport.signalProcess("KILL")

    @inlineCallbacks
    def get(self, path: str) -> Any:
        response = yield self.agent.request(b"GET", f"http://127.0.0.1:{self.metrics_port}{path}".encode())
        body = yield readBody(response)
        return response.code, body

    @inlineCallbacks
    def calls_by_worker(self) -> Any:
        """``mediaproxy_calls_active`` summed over platforms, per worker, from the supervisor."""
        code, text = yield self.get("/metrics")
        self.assertEqual(code, 200)
        active: dict[int, float] = {}
        for worker, value in re.findall(rb'^mediaproxy_calls_active\{worker="(\d+)",[^}]*\} (\S+)$', text, re.M):
            active[int(worker)] = active.get(int(worker), 0.0) + float(value)
        return active, text

    @inlineCallbacks
    def until_counted(self, calls: int) -> Any:
        """Polls /metrics until the workers count ``calls`` active calls in all (a call is counted
        once its worker has read its start)."""
        for _ in range(400):
            active, _ = yield self.calls_by_worker()
            if sum(active.values()) == calls:
                return active
            yield deferLater(reactor, 0.02, lambda: None)
        self.fail(f"never {calls} calls: {active}")

    @inlineCallbacks
    def spread_twilio_calls(self, base: str, workers: set[int], opened: list[Any], **connect: Any) -> Any:
        """Opens Twilio calls, four at a time, until each of ``workers`` serves at least one (at
        most 48 calls). Concurrent connects: one at a time, whichever worker the kernel wakes
        first can take every call of an idle machine (the other finds nothing left to accept);
        under load the busier worker is rarely the first awake, which is what spreads real calls."""
        for _ in range(12):
            batch = yield gatherResults([open_twilio(base, **connect) for _ in range(4)])
            opened.extend(factory for factory, _ in batch)
            active = yield self.until_counted(len([f for f in opened if not f.closed.called]))
            if all(active.get(w, 0) >= 1 for w in workers):
                return active
        self.fail(f"calls never reached workers {workers}: {active}")

    @inlineCallbacks
    def test_tls_calls_on_both_workers_a_killed_worker_restarts_orphans_drain(self) -> Any:
        key, cert, pem = self_signed(os.path.abspath(self.mktemp()))
        config = CONFIG.replace("listen = tcp:{port}:interface=127.0.0.1",
                                f"listen = ssl:{{port}}:interface=127.0.0.1:privateKey={key}:certKey={cert}\n"
                                "workers = 2")
        process = self.start(config)
        yield process.workers_ready(2)
        code, body = yield self.get("/ready")
        self.assertEqual((code, body), (200, b"ok\n"))
        tls = optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(pem))
        base = f"wss://127.0.0.1:{self.port}"
        calls: list[Any] = []
        yield self.spread_twilio_calls(base, {0, 1}, calls, contextFactory=tls)

        # SIGKILL: no drain, the worker's calls drop with it; the supervisor starts another.
        before = process.pids()
        os.kill(before[0], signal.SIGKILL)
        yield process.when(lambda out: b"worker 0 died: signal 9" in out)
        yield process.workers_ready(3)
        self.assertNotEqual(process.pids()[0], before[0])
        self.assertEqual(process.pids()[1], before[1])
        active, text = yield self.calls_by_worker()
        self.assertIn(b'mediaproxy_worker_restarts_total{worker="0"} 1.0\n', text)
        self.assertIn(b'mediaproxy_worker_restarts_total{worker="1"} 0.0\n', text)
        self.assertIn(b"mediaproxy_workers_up 2.0\n", text)
        self.assertEqual(active.get(0, 0), 0)
        # The killed worker's calls are gone (their sockets closed with it); worker 1's go on.
        for _ in range(400):
            if len([f for f in calls if not f.closed.called]) == active[1]:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        calls = [f for f in calls if not f.closed.called]
        self.assertEqual(len(calls), active[1])
        # The new worker 0 takes calls again.
        yield self.spread_twilio_calls(base, {0}, calls, contextFactory=tls)
        code, _ = yield self.get("/ready")
        self.assertEqual(code, 200)

        # Should the supervisor itself be killed, its workers notice, drain their calls as on
        # SIGTERM and exit: nothing is left holding the port.
        process.transport.signalProcess("KILL")
        exit_code = yield process.ended
        self.assertEqual(exit_code, -9)
        for factory in calls:
            code = yield factory.closed
            self.assertEqual(code, 1000)
        for _ in range(500):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    break
            yield deferLater(reactor, 0.02, lambda: None)
        else:
            self.fail("the workers of a killed supervisor still hold the port")
        self.assertNotIn("Traceback", process.output.decode(errors="replace"))

    @inlineCallbacks
    def test_sigterm_drains_the_calls_of_every_worker_then_exits(self) -> Any:
        process = self.start(CONFIG.replace("drain_seconds = 2", "drain_seconds = 2\nworkers = 2"))
        yield process.workers_ready(2)
        base = f"ws://127.0.0.1:{self.port}"
        twilio: list[Any] = []
        yield self.spread_twilio_calls(base, {0, 1}, twilio)
        audiohook, audiohook_client = yield open_audiohook(base)
        audiocodes, _ = yield open_audiocodes(base)
        yield self.until_counted(len(twilio) + 2)

        process.transport.signalProcess("TERM")
        yield process.wait_for(b"Received SIGTERM")
        signalled = reactor.seconds()
        code, body = yield self.get("/ready")
        self.assertEqual((code, body), (503, b"draining\n"))
        yield process.when(lambda out: len(re.findall(rb"worker \d+\| [^\n]*Received SIGTERM", out)) == 2)
        refused = _RefusalProbe(f"{base}/twilio")
        connectWS(refused)
        yield refused.closed
        self.assertFalse(refused.opened)
        self.assertIn("503", refused.status_line)
        # The live calls on both workers go on meanwhile.
        yield audiohook_client.ping()
        active, _ = yield self.calls_by_worker()
        self.assertEqual(sum(active.values()), len(twilio) + 2)
        self.assertGreaterEqual(min(active.values()), 1)
        self.assertFalse(any(f.closed.called for f in [*twilio, audiohook, audiocodes]))

        for factory in twilio:
            code = yield factory.closed
            self.assertEqual(code, 1000)
        self.assertGreaterEqual(reactor.seconds() - signalled, 1.5)  # drain_seconds = 2
        yield audiohook.wait_for(has("disconnect"))
        self.assertNotEqual(audiohook_client.of_type("disconnect")[-1]["parameters"]["reason"], "completed")
        yield audiohook.closed
        yield audiocodes.wait_for(lambda msgs: any(
            m["type"] == "activities" and any(a.get("name") == "hangup" for a in m["activities"]) for m in msgs))
        yield audiocodes.closed
        exit_code = yield process.ended
        output = process.output.decode(errors="replace")
        # twistd shuts down cleanly, then re-raises SIGTERM so its exit status says why it ended.
        self.assertEqual(exit_code, -15, output[-3000:])
        self.assertNotIn("Traceback", output)
        self.assertEqual(output.count("ended on twilio: drained"), len(twilio))
        for worker in (0, 1):
            self.assertIn(f"worker {worker} stopped: signal 15", output)
        self.assertNotIn("restarting worker", output)
        self.assertIn("Server Shut Down", output.rsplit("worker 1 stopped", 1)[1])
