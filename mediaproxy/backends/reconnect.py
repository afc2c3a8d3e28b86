"""Dialling a backend WebSocket and keeping it dialled: the part every network backend shares.

- :func:`dial_websocket` opens one Autobahn client connection through an injected reactor, with
  keep-alive pings (Autobahn's ``autoPingInterval``/``autoPingTimeout``), and returns a Deferred
  that fires with the protocol once the WebSocket is open. Cancelling it aborts the attempt.
- :class:`Redialer` owns the retry policy of one call's backend leg: a first dial, a timeout on
  each attempt, exponential backoff with jitter after failures and mid-call drops, an immediate
  redial after an expected end (session at its maximum duration), and giving up when a failure is
  fatal (bad key) or the attempts are exhausted.

Time comes from the injected ``IReactorTime`` so tests drive it with ``task.Clock``. (Autobahn's
own ping and handshake timers run on txaio's loop, which is the process reactor.) :class:`Timers`
and :class:`Timer` spell out the part of ``IReactorTime``/``IDelayedCall`` used, as typing
protocols, so the types check without a zope.interface plugin.
"""

from __future__ import annotations

import random as _random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IConnector
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediaproxy import wsframe

log = Logger()

T = TypeVar("T")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest message (and frame) a backend may send, bytes. Audio deltas and session events
are far smaller; a larger one is a faulty peer, and Autobahn would otherwise buffer it whole
(its default is no bound). Over it the connection fails (1009) and the redial policy applies."""


class Timer(Protocol):
    """A pending call (what of ``IDelayedCall`` is used)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Timers(Protocol):
    """Time and delayed calls (what of ``IReactorTime`` is used); seconds are the unit."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> Timer: ...


class HandshakeRejected(ConnectError):
    """The server answered the WebSocket upgrade with an HTTP error (``status``: 401, 403...)."""

    def __init__(self, status: int, reason: str) -> None:
        # Twisted's error classes are unannotated.
        super().__init__(f"WebSocket upgrade refused: HTTP {status} {reason}".strip())  # type: ignore[no-untyped-call]
        self.status = status
        self.reason = reason


class ClosedBeforeOpen(ConnectError):
    """The connection ended before the WebSocket opened (TCP refused, TLS failure, timeout)."""


class DialedWebSocketProtocol(WebSocketClientProtocol):
    """Client protocol base for :func:`dial_websocket`: reports the opening (or its failure) to
    the dial's Deferred; after that, subclasses get :meth:`link_closed` when the socket ends."""

    if not TYPE_CHECKING:
        # The common frames skip Autobahn's per-message overhead (mediaproxy/wsframe.py).
        dataReceived = wsframe.data_received
        _dataReceived = wsframe.lean_data_received
        sendMessage = wsframe.lean_send_message

    def connectionMade(self) -> None:
        super().connectionMade()
        # Autobahn means to disable Nagle (its tcpNoDelay option defaults to True) but tries
        # before it copies the option from the factory, fails with an AttributeError and
        # swallows it. With Nagle on, each 20 ms append waits for the previous one's delayed
        # ACK (up to 40 ms on Linux) and a burst of deltas stalls the same way.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:  # not a TCP socket
                pass

    def onOpen(self) -> None:
        opened: Deferred[Any] = self.factory.opened
        if not opened.called:
            opened.callback(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Autobahn leaves its closing-handshake timer armed when the peer drops the TCP
        # connection instead of answering our close; it would fire on a dead protocol.
        leftover = getattr(self, "closeHandshakeTimeoutCall", None)
        if leftover is not None:
            leftover.cancel()
            self.closeHandshakeTimeoutCall = None
        opened: Deferred[Any] = self.factory.opened
        if not opened.called:
            opened.errback(_opening_failure(self, reason))
            return
        self.link_closed(wasClean, code, reason)

    def link_closed(self, clean: bool, code: int | None, reason: str | None) -> None:
        """The open WebSocket ended (``code``: the close code, 1006 when the TCP connection
        dropped without a closing handshake)."""


def _opening_failure(protocol: WebSocketClientProtocol, reason: str | None) -> Exception:
    # Autobahn fails a refused upgrade with a generic close; the HTTP status line it parsed is
    # the reliable source of the status code.
    status_line = getattr(protocol, "http_status_line", None) or ""
    match = re.match(r"HTTP/\d\.\d\s+(\d{3})\s*(.*)", status_line)
    if match and match.group(1) != "101":
        return HandshakeRejected(int(match.group(1)), match.group(2).strip())
    return ClosedBeforeOpen(reason or "connection closed before the WebSocket opened")  # type: ignore[no-untyped-call]


class _DialFactory(WebSocketClientFactory):
    opened: Deferred[Any]
    noisy = False  # one factory per call: no "Starting factory" log line per call

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.opened.called:
            self.opened.errback(reason)


def dial_websocket(
    reactor: Any,
    url: str,
    protocol: type[DialedWebSocketProtocol],
    *,
    headers: Mapping[str, str],
    timeout_s: float,
    keepalive_s: float,
) -> Deferred[DialedWebSocketProtocol]:
    """Open a client WebSocket to ``url`` (``ws://`` or ``wss://``, query string included).

    ``reactor`` provides IReactorTCP (and IReactorSSL for ``wss://``). ``timeout_s`` bounds the
    TCP connect and the opening handshake; ``keepalive_s`` is the ping interval and the time a
    pong may take before the connection is dropped (0 turns pings off). The Deferred fires with
    the open protocol; cancelling it aborts the attempt.
    """
    # Autobahn is unannotated.
    factory = _DialFactory(url, headers=dict(headers), reactor=reactor)  # type: ignore[no-untyped-call]
    factory.protocol = protocol
    factory.setProtocolOptions(  # type: ignore[no-untyped-call]
        # Autobahn's timers count whole seconds (txaio's batched timer truncates the deadline), so
        # its own handshake timeout could fire up to a second early: at once, for 1 s. It only
        # backs up the exact bound, the Redialer's attempt timeout on the injected reactor.
        openHandshakeTimeout=timeout_s + 1, autoPingInterval=keepalive_s, autoPingTimeout=keepalive_s,
        maxMessagePayloadSize=MAX_MESSAGE_BYTES, maxFramePayloadSize=MAX_MESSAGE_BYTES,
    )
    # The reactor's connector (IConnector, plus the state and transport of a tcp.Connector).
    connector: Any = None

    def cancel(d: Deferred[Any]) -> None:
        # Abort rather than disconnect: a graceful close would wait on a peer that is too slow.
        if connector is None:
            return
        if getattr(connector, "state", None) == "connecting":
            connector.stopConnecting()
        elif getattr(connector, "transport", None) is not None:
            connector.transport.abortConnection()

    factory.opened = Deferred(cancel)
    if factory.isSecure:
        from twisted.internet.ssl import optionsForClientTLS  # OpenSSL only when TLS is used

        connector = reactor.connectSSL(
            factory.host, factory.port, factory, optionsForClientTLS(factory.host), timeout=timeout_s
        )
    else:
        connector = reactor.connectTCP(factory.host, factory.port, factory, timeout=timeout_s)
    return factory.opened


@dataclass(frozen=True)
class BackoffPolicy:
    """When to retry: ``initial_s`` after the first failure, multiplied by ``multiplier`` per
    further failure up to ``max_s``, each delay spread by ±``jitter`` (a fraction) so that many
    calls dropped together do not redial in lockstep. ``max_attempts`` failed attempts in a row
    end the call. A connection that stayed up ``stable_s`` seconds resets the count."""

    initial_s: float = 0.25
    max_s: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int = 5
    stable_s: float = 10.0

    def delay_s(self, failures: int, rand: float) -> float:
        """The wait before the next attempt after ``failures`` failures in a row (>= 1);
        ``rand`` is uniform in [0, 1)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, failures - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand - 1.0)))


class Redialer(Generic[T]):
    """Keeps one backend connection of a call up.

    ``dial()`` starts an attempt and returns a Deferred firing with the usable connection (the
    caller decides what "usable" means: for OpenAI, ``session.updated`` received). Each attempt
    is cancelled after ``timeout_s``. ``on_up(conn)`` is called for each connection that comes
    up; ``on_give_up(reason)`` once, when a failure is fatal (``is_fatal(failure)`` returns a
    reason) or ``policy.max_attempts`` attempts failed in a row. ``on_redial()`` is called for
    every attempt after the first (a reconnect, for metrics).
    """

    def __init__(
        self,
        reactor: Timers,
        dial: Callable[[], Deferred[T]],
        policy: BackoffPolicy,
        *,
        timeout_s: float,
        on_up: Callable[[T], None],
        on_give_up: Callable[[str], None],
        is_fatal: Callable[[Failure], str | None] = lambda f: None,
        on_redial: Callable[[], None] = lambda: None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._reactor = reactor
        self._dial = dial
        self._policy = policy
        self._timeout_s = timeout_s
        self._on_up = on_up
        self._on_give_up = on_give_up
        self._is_fatal = is_fatal
        self._on_redial = on_redial
        self._random = random
        self._failures = 0
        self._attempts = 0
        self._up_since: float | None = None
        self._pending: Deferred[T] | None = None
        self._timer: Timer | None = None
        self._stopped = False

    def start(self) -> None:
        """Make the first attempt now."""
        self._attempt()

    def lost(self, reason: str, *, expected: bool = False) -> None:
        """The connection that was up has gone. ``expected``: it ended on purpose (the session
        reached its maximum duration), so redial at once instead of backing off."""
        if self._stopped:
            return
        if self._up_since is not None and self._reactor.seconds() - self._up_since >= self._policy.stable_s:
            self._failures = 0
        self._up_since = None
        if expected:
            self._schedule(0.0)
        else:
            self._failed(reason)

    def stop(self) -> None:
        """Stop for good: cancel a pending attempt or wait; no callback follows."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    def _attempt(self) -> None:
        self._timer = None
        if self._stopped:
            return
        self._attempts += 1
        if self._attempts > 1:
            self._on_redial()
        d = self._pending = self._dial()
        timeout = self._reactor.callLater(self._timeout_s, d.cancel)

        def done(result: T | Failure) -> None:
            if timeout.active():
                timeout.cancel()
            if self._pending is not d or self._stopped:
                return  # stopped while dialling: the cancellation failure is expected
            self._pending = None
            if isinstance(result, Failure):
                fatal = self._is_fatal(result)
                if fatal is not None:
                    self._give_up(fatal)
                elif isinstance(result.value, CancelledError):
                    self._failed(f"no ready session within {self._timeout_s:g} s")
                else:
                    self._failed(result.getErrorMessage())
            else:
                self._up_since = self._reactor.seconds()
                self._on_up(result)

        d.addBoth(done)

    def _failed(self, reason: str) -> None:
        self._failures += 1
        if self._failures > self._policy.max_attempts:
            self._give_up(f"backend unreachable after {self._policy.max_attempts} attempts: {reason}")
            return
        delay = self._policy.delay_s(self._failures, self._random())
        log.info("backend connection failed ({reason}); retrying in {delay:.2f} s", reason=reason, delay=delay)
        self._schedule(delay)

    def _schedule(self, delay_s: float) -> None:
        self._timer = self._reactor.callLater(delay_s, self._attempt)

    def _give_up(self, reason: str) -> None:
        self._stopped = True
        self._on_give_up(reason)


def connection_lost_reason(code: int | None, reason: str | None) -> str:
    """A one-line description of a WebSocket close for logs and failure reasons."""
    return f"closed with code {code}" + (f": {reason}" if reason else "")


__all__ = [
    "BackoffPolicy",
    "ClosedBeforeOpen",
    "DialedWebSocketProtocol",
    "HandshakeRejected",
    "Redialer",
    "Timer",
    "Timers",
    "connection_lost_reason",
    "dial_websocket",
]
