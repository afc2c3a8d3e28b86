"""Keeping N worker processes alive: restart a dead one after a bounded backoff, and stop them all
(drain) without restarting any.

No process or reactor here: a worker is started by an injected ``spawn`` and reports its end by
the callback it is given; time is an ``IReactorTime``. The supervisor (:mod:`mediaproxy.supervisor`)
spawns real processes; tests spawn fakes and drive a ``Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mediaproxy.metrics import SupervisorMetrics

log = Logger()


class WorkerProcess(Protocol):
    """A running worker as the supervisor drives it."""

    def signal(self, name: str) -> None:
        """Send it a signal by name (``TERM``, ``KILL``); a process already gone is ignored."""


Spawn = Callable[[int, Callable[[str], None]], WorkerProcess]
"""``spawn(index, ended)`` starts worker ``index``; ``ended(why)`` is called once when it ends.
It may raise (the process could not be started): that counts as a worker that died at once."""


@dataclass(frozen=True)
class Backoff:
    """Restart delays, seconds: ``first_s`` after a worker dies, doubling with each death that
    follows quickly, up to ``max_s``; a worker that ran ``stable_s`` or longer starts the count
    again, so one crash an hour restarts at once while a crash loop settles at ``max_s``."""

    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 10.0

    def delay(self, quick_deaths: int) -> float:
        """The wait before the restart that follows ``quick_deaths`` (>= 1) deaths in a row."""
        return float(min(self.max_s, self.first_s * 2 ** (quick_deaths - 1)))


class WorkerSlot:
    """Worker ``index``: started, restarted when it dies, stopped on request."""

    def __init__(self, index: int, spawn: Spawn, clock: IReactorTime, backoff: Backoff,
                 metrics: SupervisorMetrics, changed: Callable[[], None]) -> None:
        self.index = index
        self._spawn = spawn
        self._clock = clock
        self._backoff = backoff
        self._metrics = metrics
        self._changed = changed
        self.process: WorkerProcess | None = None
        self._started_at = 0.0
        self._quick_deaths = 0
        self._restart: IDelayedCall | None = None
        self._stopping = False
        self._stopped: list[Deferred[None]] = []

    @property
    def running(self) -> bool:
        return self.process is not None

    def start(self) -> None:
        self._restart = None
        if self._stopping:
            return
        self._started_at = self._clock.seconds()
        try:
            self.process = self._spawn(self.index, self._ended)
        except Exception as e:  # fork or exec refused: wait and try again, like a crash
            log.error("worker {worker} could not be started: {error}", worker=self.index, error=e)
            self.process = None
            self._schedule_restart()
        self._changed()

    def _ended(self, why: str) -> None:
        self.process = None
        self._changed()
        if self._stopping:
            log.info("worker {worker} stopped: {why}", worker=self.index, why=why)
            stopped, self._stopped = self._stopped, []
            for d in stopped:
                d.callback(None)
            return
        log.warn("worker {worker} died: {why}", worker=self.index, why=why)
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        if self._clock.seconds() - self._started_at >= self._backoff.stable_s:
            self._quick_deaths = 0
        self._quick_deaths += 1
        delay = self._backoff.delay(self._quick_deaths)
        log.info("restarting worker {worker} in {delay} s", worker=self.index, delay=delay)
        self._restart = self._clock.callLater(delay, self._restarted)

    def _restarted(self) -> None:
        self._metrics.worker_restarts_total.labels(str(self.index)).inc()
        self.start()

    def stop(self) -> Deferred[None]:
        """Ask the worker to drain (SIGTERM) and never restart it; fires once it has ended."""
        self._stopping = True
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        self._restart = None
        if self.process is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        self.process.signal("TERM")
        return d

    def kill(self) -> None:
        """End a worker that outlived its drain (SIGKILL)."""
        if self.process is not None:
            log.warn("worker {worker} did not stop in time: killing it", worker=self.index)
            self.process.signal("KILL")


class WorkerPool:
    """``count`` worker slots; :meth:`up` is how many run; :meth:`stop` drains them all."""

    def __init__(self, count: int, spawn: Spawn, clock: IReactorTime, metrics: SupervisorMetrics,
                 backoff: Backoff | None = None) -> None:
        self._clock = clock
        self._metrics = metrics
        self.slots = [WorkerSlot(i, spawn, clock, backoff or Backoff(), metrics, self._changed)
                      for i in range(count)]
        for slot in self.slots:
            metrics.worker_restarts_total.labels(str(slot.index))
        self._changed()

    def _changed(self) -> None:
        self._metrics.workers_up.set(self.up())

    def _kill_all(self) -> None:
        for slot in self.slots:
            slot.kill()

    def up(self) -> int:
        """Worker processes running now."""
        return sum(slot.running for slot in self.slots)

    def start(self) -> None:
        for slot in self.slots:
            slot.start()

    def stop(self, grace_s: float) -> Deferred[None]:
        """SIGTERM every worker (each drains), none restarted; SIGKILL any still running after
        ``grace_s``. Fires once every worker has ended."""
        stopping = [slot.stop() for slot in self.slots]
        deadline = self._clock.callLater(grace_s, self._kill_all)
        done: Deferred[None] = Deferred()

        def all_ended(_: object) -> None:
            if deadline.active():
                deadline.cancel()
            done.callback(None)

        DeferredList(stopping).addCallback(all_ended)
        return done
