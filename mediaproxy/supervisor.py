"""The composition root of ``[proxy] workers`` > 1: a supervisor process and its workers.

The supervisor binds the platform listen socket once and starts ``workers`` copies of
``twistd -n mediaproxy --worker I`` that each adopt it (file descriptor 3) and serve calls as a
single-process proxy would; each also gets a private loopback socket for its metrics (fd 4). The
supervisor restarts a worker that dies (:mod:`mediaproxy.workers.supervision`), relays the
workers' log lines into its own log, serves the configured ``[metrics] listen`` itself (/metrics
merges every worker's series with a ``worker`` label, /health, /ready), and on SIGTERM drains
every worker, then exits.

Handed the real reactor by ``tap.py``, like :mod:`mediaproxy.service`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from typing import IO, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from mediaproxy.config import Config
from mediaproxy.json_log import JsonLogObserver, become_log_observer
from mediaproxy.metrics import SupervisorMetrics
from mediaproxy.service import Listener, MediaProxyService, WorkerSockets
from mediaproxy.workers.merge import merge_worker_metrics
from mediaproxy.workers.sockets import ListenSpec, bind, listen_spec
from mediaproxy.workers.supervision import WorkerPool

log = Logger()

PLATFORM_FD = 3
METRICS_FD = 4
STOP_MARGIN_S = 20.0
"""Beyond ``drain_seconds``, how long a stopping worker may take to say its goodbyes (a close
transaction, the close handshake) before it is killed."""
SCRAPE_TIMEOUT_S = 2.0
"""How long /metrics waits for a worker's series, and /ready for a worker's answer."""


class _WorkerProtocol(ProcessProtocol):
    """One worker process: its log lines into the supervisor's log, its end to its slot."""

    def __init__(self, index: int, ended: Callable[[str], None]) -> None:
        self._index = index
        self._ended = ended
        self._partial = b""

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            # A worker's JSON log line ([log] format = json) is passed on whole, with its worker
            # index (the JSON log writes it as the worker's line, not as text inside a line).
            relayed = _json_object(text) if text.startswith("{") else None
            log.info("worker {worker}| {line}", worker=self._index, line=text, worker_event=relayed)
        if len(self._partial) > 65536:  # a line without end is still shown, in pieces
            self.outReceived(b"\n")

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        if self._partial:
            self.outReceived(b"\n")
        code, signal = getattr(reason.value, "exitCode", None), getattr(reason.value, "signal", None)
        self._ended(f"signal {signal}" if signal else f"exit status {code}")


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


class _RunningWorker:
    def __init__(self, transport: IProcessTransport) -> None:
        self._transport = transport

    def signal(self, name: str) -> None:
        try:
            self._transport.signalProcess(name)
        except ProcessExitedAlready:
            pass


class SupervisorService(MultiService):
    """Runs ``workers`` worker processes sharing the platform listener; see the module doc."""

    def __init__(self, config: Config, reactor: Any, workers: int, log_stream: IO[str] | None = None) -> None:
        super().__init__()
        self.config = config
        # [log] format = json: the supervisor's lines and its workers' (relayed) as JSON lines.
        self.log_observer = (JsonLogObserver(log_stream, config.secrets)
                             if config.log.format == "json" and log_stream is not None else None)
        self.reactor = reactor
        self.metrics = SupervisorMetrics()
        self.spec = listen_spec(config.proxy.listen)
        self.config_path = os.path.abspath(config.source)
        self.draining = False
        self._platform_socket: socket.socket | None = None
        self._metrics_sockets: list[socket.socket] = []
        self.pool = WorkerPool(workers, self._spawn, reactor, self.metrics)
        self._scrape_connections = _QuietPool(reactor)
        self._agent = Agent(reactor, pool=self._scrape_connections)
        root = Resource()
        root.putChild(b"metrics", _AsyncPage(self._render_metrics))
        root.putChild(b"health", _AsyncPage(self._render_health))
        root.putChild(b"ready", _AsyncPage(self._render_ready))
        site = Site(root)
        site.noisy = False
        self.metrics_listener = Listener(reactor, config.metrics.listen, site)
        self.metrics_listener.setServiceParent(self)

    def setServiceParent(self, parent: IServiceCollection) -> None:
        """Join ``parent``, giving a twistd application :attr:`log_observer` (see
        :func:`~mediaproxy.json_log.become_log_observer`)."""
        become_log_observer(parent, self.log_observer)
        super().setServiceParent(parent)

    # --- start and stop ---------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        if self._platform_socket is None:
            # Bound before privileges are dropped (a port below 1024), and a failure stops twistd.
            try:
                self._platform_socket = bind(self.spec)
            except OSError as e:
                log.error("cannot listen on {endpoint}: {error}", endpoint=self.config.proxy.listen, error=e)
                raise
            loopback = ListenSpec(0, "127.0.0.1", 50)
            self._metrics_sockets = [bind(loopback) for _ in self.pool.slots]
        super().privilegedStartService()

    def startService(self) -> None:
        if self._platform_socket is None:
            self.privilegedStartService()
        super().startService()
        self.pool.start()
        self.reactor.callWhenRunning(
            log.info, "mediaproxy supervisor ready: {workers} workers on {listen}, metrics on {metrics}",
            workers=len(self.pool.slots), listen=self.config.proxy.listen, metrics=self.config.metrics.listen)

    def stopService(self) -> Deferred[None]:
        """/ready turns 503 at once; every worker drains (SIGTERM) and none is restarted; then the
        sockets close. A worker still running ``drain_seconds`` + ``STOP_MARGIN_S`` later is killed."""
        self.draining = True
        stopped = self.pool.stop(self.config.proxy.drain_seconds + STOP_MARGIN_S)

        def close(_: object) -> Deferred[None] | None:
            for sock in [self._platform_socket, *self._metrics_sockets]:
                if sock is not None:
                    sock.close()
            self._platform_socket, self._metrics_sockets = None, []
            self._scrape_connections.closeCachedConnections()
            result: Deferred[None] | None = super(SupervisorService, self).stopService()
            return result

        return stopped.addCallback(close)

    def _spawn(self, index: int, ended: Callable[[str], None]) -> _RunningWorker:
        assert self._platform_socket is not None, "spawned before the socket was bound"
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "mediaproxy", "--config", self.config_path, "--worker", str(index)]
        transport = self.reactor.spawnProcess(
            _WorkerProtocol(index, ended), sys.executable, args, env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r", PLATFORM_FD: self._platform_socket.fileno(),
                      METRICS_FD: self._metrics_sockets[index].fileno()})
        log.info("worker {worker} started (pid {pid})", worker=index, pid=transport.pid)
        return _RunningWorker(transport)

    # --- the metrics listener ---------------------------------------------------------------------

    def _get(self, index: int, path: str) -> Deferred[tuple[int, bytes]]:
        """GET ``path`` from worker ``index``'s metrics socket: (status, body), or a failure after
        ``SCRAPE_TIMEOUT_S``."""
        port = self._metrics_sockets[index].getsockname()[1]
        d: Deferred[Any] = self._agent.request(b"GET", f"http://127.0.0.1:{port}{path}".encode())

        def read(response: Any) -> Deferred[tuple[int, bytes]]:
            body: Deferred[bytes] = readBody(response)
            return body.addCallback(lambda data: (response.code, data))

        d.addCallback(read)
        return d.addTimeout(SCRAPE_TIMEOUT_S, self.reactor)

    def _render_metrics(self) -> Deferred[tuple[int, bytes, bytes]]:
        running = [slot.index for slot in self.pool.slots if slot.running]

        def fetch(index: int) -> Deferred[bytes | None]:
            def failed(failure: Failure) -> None:
                self.metrics.worker_scrape_failures_total.labels(str(index)).inc()
                log.warn("worker {worker} metrics: {error}", worker=index, error=failure.getErrorMessage())

            def body(response: tuple[int, bytes]) -> bytes | None:
                return response[1] if response[0] == 200 else None

            d: Deferred[Any] = self._get(index, "/metrics")
            return d.addCallback(body).addErrback(failed)

        def merge(results: list[tuple[bool, bytes | None]]) -> tuple[int, bytes, bytes]:
            scrapes: list[bytes | None] = [None] * len(self.pool.slots)
            for index, (_, body) in zip(running, results, strict=True):
                scrapes[index] = body
            text = merge_worker_metrics(scrapes) + generate_latest(self.metrics.registry)
            return 200, CONTENT_TYPE_LATEST.encode(), text

        return DeferredList([fetch(i) for i in running]).addCallback(merge)

    def _render_health(self) -> Deferred[tuple[int, bytes, bytes]]:
        up = self.running and self.pool.up() > 0
        return _answer(200 if up else 503, b"ok\n" if up else b"down\n")

    def _render_ready(self) -> Deferred[tuple[int, bytes, bytes]]:
        if self.draining or not self.running or self.pool.up() < len(self.pool.slots):
            return _answer(503, b"draining\n" if self.draining else b"starting\n")
        asked = [self._get(slot.index, "/ready") for slot in self.pool.slots]

        def verdict(results: list[tuple[bool, Any]]) -> tuple[int, bytes, bytes]:
            ready = not self.draining and all(ok and r[0] == 200 for ok, r in results)
            return 200 if ready else 503, b"text/plain", b"ok\n" if ready else b"starting\n"

        return DeferredList(asked, consumeErrors=True).addCallback(verdict)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


class _QuietPool(HTTPConnectionPool):
    """Keeps the connections to the workers open between scrapes, without a log line for each."""

    _factory = _QuietFactory


def _answer(code: int, body: bytes) -> Deferred[tuple[int, bytes, bytes]]:
    d: Deferred[tuple[int, bytes, bytes]] = Deferred()
    d.callback((code, b"text/plain", body))
    return d


class _AsyncPage(Resource):
    """A GET answered later: ``answer()`` fires with (status, content type, body)."""

    isLeaf = True

    def __init__(self, answer: Callable[[], Deferred[tuple[int, bytes, bytes]]]) -> None:
        super().__init__()
        self._answer = answer

    def render_GET(self, request: Request) -> Any:  # noqa: N802
        gone = [False]
        request.notifyFinish().addErrback(lambda _: gone.__setitem__(0, True))

        def reply(result: tuple[int, bytes, bytes]) -> None:
            if gone[0]:
                return
            code, content_type, body = result
            request.setResponseCode(code)
            request.setHeader(b"content-type", content_type)
            request.write(body)
            request.finish()

        self._answer().addCallback(reply).addErrback(lambda f: log.failure("status page failed", f))
        return NOT_DONE_YET


# --- a worker process -------------------------------------------------------------------------


def worker_service(config: Config, reactor: Any, log_stream: IO[str] | None = None) -> MediaProxyService:
    """The proxy as worker of a supervisor: serves on the sockets it inherited, in its own process
    group (a terminal's Ctrl-C reaches the supervisor, which drains the workers itself), and
    drains as on SIGTERM should the supervisor vanish (it would no longer restart or stop it)."""
    os.setpgrp()
    service = MediaProxyService(config, reactor, sockets=WorkerSockets(
        PLATFORM_FD, listen_spec(config.proxy.listen), METRICS_FD), log_stream=log_stream)
    parent = os.getppid()

    def check_parent() -> None:
        if os.getppid() != parent and reactor.running:
            log.warn("the supervisor (pid {pid}) is gone: stopping", pid=parent)
            watch.stop()
            reactor.stop()

    watch = LoopingCall(check_parent)
    watch.clock = reactor
    reactor.callWhenRunning(watch.start, 1.0, now=False)
    return service
