"""The composition root: builds the whole proxy from a validated :class:`Config`.

The only module that is handed the real reactor (by ``tap.py``); everything below receives it, or
just its ``IReactorTime`` face, as an argument.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from typing import IO, Any

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from mediaproxy.calls import CallContext, CallRegistry, Endpoint
from mediaproxy.calls.webhook import ToolWebhook
from mediaproxy.config import Config
from mediaproxy.json_log import JsonLogObserver, become_log_observer
from mediaproxy.metrics import Metrics
from mediaproxy.playout import PlayoutClock
from mediaproxy.server.http_client import TreqHttpClient
from mediaproxy.server.routing import PathRouter, PlatformResource
from mediaproxy.server.status import metrics_root
from mediaproxy.server.websocket import PlatformServerFactory
from mediaproxy.workers.sockets import ListenSpec

log = Logger()


class GcPauseMeter:
    """Measures every garbage-collection pause into ``gc_pause_seconds{generation}``.

    ``gc.callbacks`` are called around each collection; the pause is what a reactor timer sees.
    A process-monitoring concern, not the media path, hence a real clock here.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._histogram = metrics.gc_pause_seconds
        self._started = 0.0
        self.longest_s = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._started
            self.longest_s = max(self.longest_s, pause)
            self._histogram.labels(str(info.get("generation", "?"))).observe(pause)


class Listener(Service):
    """Listens on one endpoint string while running. Binding happens in
    ``privilegedStartService`` and a failure there is raised, so twistd stops with the error
    instead of running without its port. :meth:`address` gives the bound address (for
    ``tcp:0`` in tests and benchmarks)."""

    def __init__(self, reactor: Any, description: str, factory: IProtocolFactory) -> None:
        self._endpoint = serverFromString(reactor, description)
        self._description = description
        self._factory = factory
        self._port: IListeningPort | None = None
        self._failure: Failure | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._port is not None:
            return
        d = self._endpoint.listen(self._factory)
        d.addCallbacks(self._listening, self._failed)
        if self._failure is not None:
            self._failure.raiseException()

    def startService(self) -> None:
        if self._port is None and self._failure is None:
            self.privilegedStartService()
        super().startService()

    def _listening(self, port: IListeningPort) -> None:
        self._port = port

    def _failed(self, failure: Failure) -> None:
        self._failure = failure
        log.failure("cannot listen on {endpoint}", failure, endpoint=self._description)

    def address(self) -> Any:
        """The bound address (``IAddress``); only while running."""
        assert self._port is not None, "not listening"
        return self._port.getHost()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self._port = self._port, None
        if port is None:
            return None
        stopped = port.stopListening()
        d: Deferred[None] = stopped if isinstance(stopped, Deferred) else succeed(None)
        d.addErrback(lambda failure: log.failure("stopping the listener on {endpoint} failed", failure,
                                                 endpoint=self._description))
        return d


class AdoptedListener(Listener):
    """Serves ``factory`` on a listening socket this process inherited as file descriptor ``fd``
    (a worker: the supervisor bound it), wrapped as ``spec`` says (TLS for ``ssl:``)."""

    def __init__(self, reactor: Any, fd: int, spec: ListenSpec, factory: IProtocolFactory) -> None:
        # Not Listener.__init__: there is no endpoint string to parse, only a socket to adopt.
        self._reactor = reactor
        self._fd = fd
        self._spec = spec
        self._description = f"inherited fd {fd}"
        self._factory = spec.wrap(factory)
        self._port = None
        self._failure = None

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        if self._port is None:
            self._port = self._reactor.adoptStreamPort(self._fd, self._spec.family, self._factory)
            # The reactor's port holds its own duplicate: the inherited copy is not needed.
            os.close(self._fd)


@dataclass(frozen=True)
class WorkerSockets:
    """What a worker inherits from its supervisor: the shared platform socket (``platform_fd``,
    listening as ``platform`` says) and its private loopback metrics socket (``metrics_fd``)."""

    platform_fd: int
    platform: ListenSpec
    metrics_fd: int


class MediaProxyService(MultiService):
    """The proxy: platform listener, metrics listener, shared clock, drain on stop. A worker
    (``sockets`` given) serves on the sockets its supervisor bound instead of binding its own.

    With ``[log] format = json`` and a ``log_stream`` (what twistd would write its log to: see
    ``tap.py``), :attr:`log_observer` writes JSON lines there, and it becomes the twistd
    application's log observer when this service joins the application (see
    :meth:`setServiceParent`).
    """

    def __init__(self, config: Config, reactor: Any, tune_gc: bool = True,
                 sockets: WorkerSockets | None = None, log_stream: IO[str] | None = None) -> None:
        super().__init__()
        self.tune_gc = tune_gc
        self.config = config
        self.reactor = reactor
        self.metrics = Metrics()
        frame_ms = config.playout.frame_ms
        # Calls spread over 5 ms sub-ticks: no tick serves every call at once.
        self.clock = PlayoutClock(reactor, frame_ms, self.metrics, PlayoutClock.phases_for(frame_ms))
        http = TreqHttpClient(reactor)
        self.context = CallContext(
            reactor=reactor,
            clock=self.clock,
            metrics=self.metrics,
            playout=config.playout,
            log_transcripts=config.log.transcripts,
            http=http,
            webhooks={name: ToolWebhook(name, tool, http, reactor, self.metrics)
                      for name, tool in config.tools.items()},
        )
        self.registry = CallRegistry(self.context, config.proxy.max_calls, config.proxy.idle_timeout_seconds)
        self.backends = {
            name: settings.type.create(name, settings.options, reactor, self.metrics, http)
            for name, settings in config.backends.items()
        }
        routes = {}
        for settings in config.platforms:
            backend = config.backends[settings.backend]
            endpoint = Endpoint(settings.name, settings.type, settings.options, self.backends[settings.backend],
                                backend.common, settings.transfer_targets)
            factory = PlatformServerFactory(endpoint, self.registry, config.proxy)
            routes[settings.path] = PlatformResource(factory)
        # The Site's timeout bounds how long a connection may stay silent before its upgrade
        # request is complete (twisted.web's default is 12 hours); after the WebSocket takeover
        # Autobahn's limits apply.
        self.site = Site(PathRouter(routes), timeout=config.proxy.open_handshake_timeout_seconds)
        self.site.noisy = False
        metrics_site = Site(metrics_root(self.metrics.registry, self.ready))
        metrics_site.noisy = False
        self.platform_listener: Listener
        self.metrics_listener: Listener
        if sockets is None:
            self.platform_listener = Listener(reactor, config.proxy.listen, self.site)
            self.metrics_listener = Listener(reactor, config.metrics.listen, metrics_site)
        else:
            # The supervisor's scrapes of this worker are not news: its own listener logs the
            # scrape it answers.
            metrics_site.log = lambda request: None  # type: ignore[method-assign]
            self.platform_listener = AdoptedListener(reactor, sockets.platform_fd, sockets.platform, self.site)
            self.metrics_listener = AdoptedListener(reactor, sockets.metrics_fd, ListenSpec(0, "127.0.0.1", 50),
                                                    metrics_site)
        self.platform_listener.setServiceParent(self)
        self.metrics_listener.setServiceParent(self)
        self.gc_meter = GcPauseMeter(self.metrics)
        self.log_observer: JsonLogObserver | None = None
        if config.log.format == "json" and log_stream is not None:
            self.log_observer = JsonLogObserver(log_stream, config.secrets, self.context.calls.fields)

    def setServiceParent(self, parent: IServiceCollection) -> None:
        """Join ``parent``; the twistd application also gets :attr:`log_observer` as its
        ``ILogObserver`` component, which twistd's ``AppLogger.start`` reads after the plugin's
        service was added and before the first line is logged, so every line twistd writes,
        its own included, is JSON."""
        become_log_observer(parent, self.log_observer)
        super().setServiceParent(parent)

    def ready(self) -> bool:
        return bool(self.running) and not self.registry.draining

    def startService(self) -> None:
        super().startService()
        # twistd starts services before the reactor runs (and installs its signal handlers):
        # "ready" is only true once it does.
        self.reactor.callWhenRunning(
            log.info, "mediaproxy ready: platforms on {listen}, metrics on {metrics}",
            listen=self.config.proxy.listen, metrics=self.config.metrics.listen,
        )
        if self.config.log.transcripts:
            log.info("transcripts are logged ([log] transcripts = true): the log holds personal data")
        if self.tune_gc:
            # Everything built at start-up is long-lived: keep it out of every future
            # collection, and collect the young generation less often (an ~80 ms full
            # collection was measured causing a peer's first underruns).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
        # Measured from here on: the start-up collection above is not a pause any call sees.
        gc.callbacks.append(self.gc_meter)

    def stopService(self) -> Deferred[None]:
        """Drain: refuse new calls, let live ones finish for ``drain_seconds``, then end them;
        then stop listening."""
        done: Deferred[None] = Deferred()

        def stop_listeners(_: object) -> Deferred[None] | None:
            self.clock.stop()
            if self.gc_meter in gc.callbacks:
                gc.callbacks.remove(self.gc_meter)
            stopped: Deferred[None] | None = super(MediaProxyService, self).stopService()
            return stopped

        drained = self.registry.drain(self.config.proxy.drain_seconds)
        drained.addCallback(stop_listeners)
        drained.addErrback(lambda failure: log.failure("stopping mediaproxy failed", failure))
        drained.addBoth(lambda _: done.callback(None))
        return done
