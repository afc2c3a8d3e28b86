"""The composition root: builds the whole proxy from a validated :class:`Config`.

The only module that is handed the real reactor (by ``tap.py``); everything below receives it, or
just its ``IReactorTime`` face, as an argument.
"""

from __future__ import annotations

import gc
import importlib
import time
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site

from mediaproxy.calls import CallContext, CallRegistry
from mediaproxy.config import BACKEND_TYPES, PLATFORM_TYPES, Config, ConfigError
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.routing import PathRouter, PlatformResource
from mediaproxy.platforms.websocket import PlatformServerFactory
from mediaproxy.playout import PlayoutClock
from mediaproxy.web import metrics_root

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


class MediaProxyService(MultiService):
    """The proxy: platform listener, metrics listener, shared clock, drain on stop."""

    def __init__(self, config: Config, reactor: Any, tune_gc: bool = True) -> None:
        super().__init__()
        self.tune_gc = tune_gc
        self.config = config
        self.reactor = reactor
        self.metrics = Metrics()
        self.clock = PlayoutClock(reactor, config.playout.frame_ms, self.metrics)
        self.registry = CallRegistry(max_calls=config.proxy.max_calls)
        self.context = CallContext(
            reactor=reactor,
            clock=self.clock,
            metrics=self.metrics,
            playout=config.playout,
            public_url=config.proxy.public_url,
            registry=self.registry,
        )
        self.backends = {
            name: importlib.import_module(BACKEND_TYPES[settings.type]).new_backend(settings, reactor, self.metrics)
            for name, settings in config.backends.items()
        }
        routes = {}
        for settings in config.platforms:
            module = importlib.import_module(PLATFORM_TYPES[settings.type])
            if settings.options.get("auth_token") and not config.proxy.public_url:
                raise ConfigError(config.source, "proxy", "public_url",
                                  f"required because [platform:{settings.name}] checks signatures")
            factory = PlatformServerFactory(settings, module, self.backends[settings.backend], self.context)
            routes[settings.path] = PlatformResource(factory)
        self.site = Site(PathRouter(routes))
        self.site.noisy = False
        self.platform_listener = StreamServerEndpointService(serverFromString(reactor, config.proxy.listen), self.site)
        self.platform_listener.setServiceParent(self)
        metrics_site = Site(metrics_root(self.metrics.registry, self.ready))
        metrics_site.noisy = False
        self.metrics_listener = StreamServerEndpointService(
            serverFromString(reactor, config.metrics.listen), metrics_site
        )
        self.metrics_listener.setServiceParent(self)
        self.gc_meter = GcPauseMeter(self.metrics)

    def listening_address(self, listener: StreamServerEndpointService) -> Deferred[Any]:
        """Fires with the address ``listener`` is bound to (for ``tcp:0`` in tests and benches),
        without taking the port away from the listener, which closes it on stop."""
        d: Deferred[Any] = Deferred()

        def tell(port: Any) -> Any:
            d.callback(port.getHost())
            return port

        listener._waitingForPort.addCallback(tell)  # type: ignore[attr-defined]
        return d

    def ready(self) -> bool:
        return self.running and not self.registry.draining

    def startService(self) -> None:
        super().startService()
        # twistd starts services before the reactor runs (and installs its signal handlers):
        # "ready" is only true once it does.
        self.reactor.callWhenRunning(
            log.info, "mediaproxy ready: platforms on {listen}, metrics on {metrics}",
            listen=self.config.proxy.listen, metrics=self.config.metrics.listen,
        )
        if self.tune_gc:
            # Everything built at start-up is long-lived: keep it out of every future
            # collection, and collect the young generation less often (DESIGN §2: an ~80 ms
            # full collection caused a peer's first underruns).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
        # Measured from here on: the start-up collection above is not a pause any call sees.
        gc.callbacks.append(self.gc_meter)


    def stopService(self) -> Deferred[None]:
        """Drain: refuse new calls, let live ones finish for ``drain_seconds``, then end them."""
        self.registry.draining = True
        idle = self.registry.when_idle()
        timeout = self.reactor.callLater(self.config.proxy.drain_seconds, self._end_all_calls)
        done: Deferred[None] = Deferred()

        def stop_listeners(_: object) -> Deferred[Any]:
            if timeout.active():
                timeout.cancel()
            self.clock.stop()
            if self.gc_meter in gc.callbacks:
                gc.callbacks.remove(self.gc_meter)
            return DeferredList([d for d in [super(MediaProxyService, self).stopService()] if d is not None])

        idle.addCallback(stop_listeners).addBoth(lambda _: done.callback(None))
        return done

    def _end_all_calls(self) -> None:
        for connection in list(self.registry.connections):
            connection.drain()
        for key, held in list(self.registry.held.items()):
            if held.expiry.active():
                held.expiry.cancel()
            held.bridge.end("drained", "proxy shutting down")
            self.registry.release_held(*key)
