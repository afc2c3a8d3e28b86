"""The part of a network backend session that does not depend on what the backend speaks: one
current connection, redialled by the call's :class:`~mediaproxy.backends.reconnect.Redialer`,
the call's log lines, sending what the dialect queued, failing the call and shutting down.

A session subclasses :class:`RedialingSession`, calls :meth:`RedialingSession._set_up_redialing`
from its constructor and supplies ``_dial``, ``_connection_up`` and ``_handle_event`` (and, when it
holds more than one connection or runs timers, ``_let_go``). The pieces it is built from are in
:mod:`~mediaproxy.backends.connection`. Time comes from the injected reactor (seconds).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediaproxy.backends.base import BackendListener, CallInfo
from mediaproxy.backends.connection import (
    AlwaysReading,
    BackendSocket,
    CallLog,
    ReadyReporter,
    ReconnectOptions,
    backoff_redialer,
    hang_up,
    send_frames,
)
from mediaproxy.backends.reconnect import Redialer
from mediaproxy.metrics import Metrics

P = TypeVar("P", bound=BackendSocket)
E = TypeVar("E")


class RedialingSession(AlwaysReading, Generic[P, E]):
    """A backend session whose connections are ``P`` sockets carrying ``E`` events. ``_proto`` is
    the connection caller audio goes to (None while dialling or reconnecting)."""

    _name: str
    _listener: BackendListener
    _reactor: Any
    _metrics: Metrics
    _proto: P | None
    _connections: int
    """Dial attempts so far (names each connection's responses)."""
    _closed: bool
    _ready: ReadyReporter
    _log: Callable[..., None]
    _redact: Callable[[str], str]
    _redialer: Redialer[P]

    def _set_up_redialing(self, backend_name: str, options: ReconnectOptions, call: CallInfo,
                          listener: BackendListener, reactor: Any, metrics: Metrics, *, logger: Logger,
                          secrets: Iterable[str], is_fatal: Callable[[Failure], str | None],
                          random: Callable[[], float] = _random.random) -> None:
        """The shared state: no connection yet, ``logger``'s lines naming the call with
        ``secrets`` taken out, and the Redialer (``options``' backoff; ``is_fatal`` names the
        dial failures retrying cannot fix) that calls ``_dial`` and reports to
        ``_connection_up``/``_fail``, each redial counted in ``backend_reconnects_total``."""
        self._name = backend_name
        self._listener = listener
        self._reactor = reactor
        self._metrics = metrics
        self._proto = None
        self._connections = 0
        self._closed = False
        self._ready = ReadyReporter(reactor, metrics, backend_name, listener)
        call_log = CallLog(logger, call.call_id, backend_name, secrets)
        self._log, self._redact = call_log.log, call_log.redact
        self._redialer = backoff_redialer(
            reactor, options, self._dial, on_up=self._connection_up, on_give_up=self._fail, is_fatal=is_fatal,
            on_redial=metrics.backend_reconnects_total.labels(backend_name).inc, random=random,
        )

    def start(self) -> None:
        """Dial the first connection (``open_session`` calls this; it returns at once)."""
        self._redialer.start()

    def close(self) -> None:
        """End the session; no listener calls follow. Idempotent."""
        self._shut_down(abort=False)

    # --- what each session supplies ------------------------------------------------------------

    def _dial(self) -> Deferred[P]:
        """One dial attempt: fires once its connection is ready (see ``open_until_ready``)."""
        raise NotImplementedError

    def _connection_up(self, proto: P) -> None:
        """The Redialer's attempt is ready on ``proto``."""
        raise NotImplementedError

    def _handle_event(self, proto: P, event: E) -> None:
        """Carry out one ``event`` of ``proto``'s dialect."""
        raise NotImplementedError

    def _let_go(self) -> Sequence[P | None]:
        """Forget the connections (and stop the timers) at shutdown; return those to hang up."""
        proto, self._proto = self._proto, None
        return (proto,)

    # --- shared --------------------------------------------------------------------------------

    def _shut_down(self, *, abort: bool) -> None:
        """Stop redialling and let go of every connection (``abort``: drop it, after a failure)."""
        if self._closed:
            return
        self._closed = True
        self._redialer.stop()
        for proto in self._let_go():
            if proto is not None:
                hang_up(proto, abort=abort)
        self._log("info", "backend session closed")

    def _fail(self, reason: str) -> None:
        """End the call's backend leg for ``reason`` (redacted): the listener's ``backend_failed``."""
        if self._closed:
            return
        reason = self._redact(reason)
        self._log("error", "backend failed: {reason}", reason=reason)
        self._shut_down(abort=True)
        self._listener.backend_failed(reason)

    def _abandon(self, proto: P) -> None:
        """The attempt that opened ``proto`` was cancelled (timeout, stop)."""
        if proto is self._proto:
            self._proto = None
            hang_up(proto, abort=True)

    def _send_output(self, proto: P | None = None) -> None:
        """Send what the dialect of ``proto`` (default: the current connection) has queued."""
        proto = proto or self._proto
        if proto is not None and proto.dialect is not None:
            send_frames(proto, proto.dialect.take_output())

    def _handle_all(self, proto: P, events: Iterable[E]) -> None:
        """Handle ``events`` of ``proto`` in order, while it is still the current connection."""
        for event in events:
            if self._closed or proto is not self._proto:
                return
            self._handle_event(proto, event)

    def _attempt_ready(self, proto: P) -> None:
        """``proto``'s protocol is configured: its dial attempt is ready (once)."""
        if proto.ready is not None and not proto.ready.called:
            proto.ready.callback(proto)

    def _attempt_failed(self, proto: P, error: Exception) -> bool:
        """When ``proto``'s attempt was not ready yet, fail it with ``error`` (the Redialer then
        retries or gives up) and return True; False when the connection had been ready."""
        if proto.ready is not None and not proto.ready.called:
            proto.ready.errback(error)
            return True
        return False


__all__ = ["RedialingSession"]
