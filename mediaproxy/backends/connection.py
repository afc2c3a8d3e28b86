"""What every network backend session does around its protocol: the parts of one call's backend
leg that do not depend on what the backend speaks.

- :func:`backoff_redialer` builds the call's :class:`~mediaproxy.backends.reconnect.Redialer` from
  the reconnect options every backend has; :func:`refused_dial_reason` classifies the dial
  failures retrying cannot fix (credentials or URL refused at the upgrade).
- :func:`open_until_ready` turns an opening WebSocket into the Deferred the Redialer waits on
  (it fires once the session says the connection is usable); :class:`BackendSocket` is the
  client protocol base that forwards a connection's end to its session, :func:`send_frames`
  writes a dialect's output on one and :func:`hang_up` lets go of one (closing handshake, or an
  abort on a failure).
- :class:`ReadyReporter` times each dial attempt to its connection's readiness and tells the
  listener of the call's first ready connection.
- :class:`HeldAudio` keeps caller audio while no connection takes it, drops counted in whole
  20 ms frames.
- :class:`WriteBackpressure` is a connection's push producer: the transport pauses it while the
  socket's write buffer is over its bound, so that the session holds caller audio instead.
- :class:`AlwaysReading` is the ``IPushProducer`` side of a session whose socket is never paused.
- :class:`CallLog` writes the session's log lines with the call and backend named and the
  secrets taken out.
- :class:`~mediaproxy.backends.redialing_session.RedialingSession` puts these together into the
  base of every session (one connection redialled, failing, sending output, shutting down).
- :class:`KeepAliveTimer` polls at a fixed interval on the injected reactor; :class:`QuietTimer`
  tells when a stream of events paused for a given time.

Time comes from the injected reactor (seconds), so tests drive all of it with ``task.Clock``.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mediaproxy.audio.format import AudioFormat
from mediaproxy.backends.base import BackendListener
from mediaproxy.backends.early_audio import EarlyAudio
from mediaproxy.backends.reconnect import (
    BackoffPolicy,
    DialedWebSocketProtocol,
    HandshakeRejected,
    Redialer,
    Timer,
    Timers,
)
from mediaproxy.metrics import Metrics

T = TypeVar("T")
P = TypeVar("P", bound="BackendSocket")

FRAME_MS = 20
"""Dropped caller audio is counted in frames of this many milliseconds."""


class ReconnectOptions(Protocol):
    """The options of every network backend that govern its connection (read only)."""

    @property
    def connect_timeout_seconds(self) -> float: ...

    @property
    def reconnect_attempts(self) -> int: ...

    @property
    def reconnect_backoff_ms(self) -> int: ...

    @property
    def reconnect_max_backoff_ms(self) -> int: ...


def backoff_redialer(
    reactor: Timers,
    options: ReconnectOptions,
    dial: Callable[[], Deferred[T]],
    *,
    on_up: Callable[[T], None],
    on_give_up: Callable[[str], None],
    is_fatal: Callable[[Failure], str | None],
    on_redial: Callable[[], None],
    random: Callable[[], float] = _random.random,
) -> Redialer[T]:
    """A :class:`Redialer` with the backoff (ms in the options, seconds in the policy), attempt
    count and attempt timeout (``connect_timeout_seconds``) of ``options``."""
    policy = BackoffPolicy(
        initial_s=options.reconnect_backoff_ms / 1000.0,
        max_s=options.reconnect_max_backoff_ms / 1000.0,
        max_attempts=options.reconnect_attempts,
    )
    return Redialer(reactor, dial, policy, timeout_s=options.connect_timeout_seconds, on_up=on_up,
                    on_give_up=on_give_up, is_fatal=is_fatal, on_redial=on_redial, random=random)


def refused_dial_reason(failure: Failure, *, not_found: str = "backend URL") -> str | None:
    """The reason to give up on a dial attempt that failed with ``failure``, when retrying cannot
    fix it (credentials refused, URL unknown; ``not_found`` names what a 404 did not find), else
    None (a transient failure: redial)."""
    error = failure.value
    if isinstance(error, HandshakeRejected):
        if error.status in (401, 403):
            return f"backend refused the credentials (HTTP {error.status})"
        if error.status == 404:
            return f"{not_found} not found (HTTP {error.status})"
    return None


class BackendSocket(DialedWebSocketProtocol):
    """The WebSocket of one backend connection. ``session`` is the session it reports to (its
    ``connection_closed(proto, code, reason)`` is called when the socket ends); None once the
    session let go of it, after which nothing is forwarded."""

    session: Any = None
    dialect: Any = None
    """The sans-IO protocol object of this connection (its ``take_output()`` is what to send)."""
    ready: Deferred[Any] | None = None
    """The dial attempt's Deferred (see :func:`open_until_ready`), fired once the session is set up."""

    def link_closed(self, clean: bool, code: int | None, reason: str | None) -> None:
        if self.session is not None:
            self.session.connection_closed(self, code, reason)


def send_frames(proto: BackendSocket, frames: Iterable[str | bytes]) -> None:
    """Send ``frames`` on ``proto``: text ones as UTF-8 text frames, bytes as binary frames."""
    for frame in frames:
        if isinstance(frame, bytes):
            proto.sendMessage(frame, isBinary=True)  # type: ignore[no-untyped-call]  # Autobahn
        else:
            proto.sendMessage(frame.encode("utf-8"), isBinary=False)  # type: ignore[no-untyped-call]


def hang_up(proto: BackendSocket, *, abort: bool) -> None:
    """Let go of ``proto``: nothing more reaches its session. ``abort`` drops the TCP connection
    (after a failure: a closing handshake would only keep timers running against a peer no longer
    trusted); otherwise the closing handshake is started (1000, normal)."""
    proto.session = None
    if abort:
        proto.dropConnection(abort=True)
    else:
        proto.sendClose(1000)


def open_until_ready(
    opened: Deferred[Any],
    adopt: Callable[[P, Deferred[P]], None],
    abandon: Callable[[P], None],
) -> Deferred[P]:
    """The Deferred of one dial attempt: it fires when the session calls it back (the protocol's
    own "ready": session configured), and fails when the WebSocket does not open.

    ``opened`` fires with the open protocol; ``adopt(proto, ready)`` then links it to the session
    (which keeps ``ready`` to fire it). Cancelling the attempt (the Redialer's timeout, or its
    stop) aborts the opening, or calls ``abandon(proto)`` once it is open: the session drops
    that connection if it is still the one it set up.
    """
    adopted: list[P] = []

    def cancel(d: Deferred[P]) -> None:
        if not opened.called:
            opened.cancel()
        elif adopted:
            abandon(adopted[0])

    ready: Deferred[P] = Deferred(cancel)

    def on_open(proto: P) -> None:
        adopted.append(proto)
        adopt(proto, ready)

    def not_opened(failure: Failure) -> None:
        if not ready.called:
            ready.errback(failure)

    opened.addCallbacks(on_open, not_opened)
    return ready


class ReadyReporter:
    """A call's backend connections coming up: each attempt's time from dialling to ready goes to
    ``backend_connect_seconds{backend}`` (seconds on ``reactor``), and the first ready connection
    of the call is the listener's ``backend_ready`` (a later one is a resumption, which the
    bridge is not told about)."""

    def __init__(self, reactor: Timers, metrics: Metrics, backend: str, listener: BackendListener) -> None:
        self._reactor = reactor
        self._observe = metrics.backend_connect_seconds.labels(backend).observe
        self._listener = listener
        self._dial_started = 0.0
        self.ever_ready = False
        """A connection of this call was ready once (the next one resumes the conversation)."""

    def dialling(self) -> None:
        """An attempt starts now."""
        self._dial_started = self._reactor.seconds()

    def up(self) -> bool:
        """The attempt's connection is ready; True when it is the call's first."""
        self._observe(self._reactor.seconds() - self._dial_started)
        if self.ever_ready:
            return False
        self.ever_ready = True
        self._listener.backend_ready()
        return True


class HeldAudio:
    """Caller audio kept while no backend connection takes it (connecting, reconnecting, a socket
    that does not drain), at most ``max_ms`` of ``audio_format``, oldest dropped first. Drops are
    counted in ``metrics`` (``frames_dropped_total{direction="in"}``) in whole 20 ms frames, the
    remainder carried to the next drop."""

    def __init__(self, audio_format: AudioFormat, max_ms: int, metrics: Metrics) -> None:
        self._early = EarlyAudio(audio_format.bytes_for_ms(max_ms))
        self._frame_bytes = audio_format.bytes_for_ms(FRAME_MS)
        self._dropped_bytes = 0
        self._metrics = metrics

    def __len__(self) -> int:
        """Bytes held."""
        return len(self._early)

    def hold(self, data: bytes, reason: str) -> int:
        """Keep ``data``; return how many bytes of the oldest audio were dropped for it, counted
        under ``reason``."""
        dropped = self._early.append(data)
        if dropped:
            self._dropped_bytes += dropped
            frames, self._dropped_bytes = divmod(self._dropped_bytes, self._frame_bytes)
            if frames:
                self._metrics.frames_dropped_total.labels("in", reason).inc(frames)
        return dropped

    def take(self) -> bytes:
        """Everything held, oldest first; the buffer is emptied."""
        return self._early.take()


@implementer(IPushProducer)
class WriteBackpressure:
    """The write side of one backend connection, as its transport's push producer: the transport
    pauses it while its write buffer is over its bound (Twisted's 64 KiB) and resumes it once
    drained; ``on_paused(True/False)`` reports each."""

    def __init__(self, on_paused: Callable[[bool], None]) -> None:
        self._on_paused = on_paused

    @classmethod
    def watch(cls, proto: DialedWebSocketProtocol, on_paused: Callable[[bool], None]) -> None:
        """Register a producer reporting to ``on_paused`` on ``proto``'s transport (if any)."""
        if proto.transport is not None:
            IConsumer(proto.transport).registerProducer(cls(on_paused), True)

    def pauseProducing(self) -> None:
        self._on_paused(True)

    def resumeProducing(self) -> None:
        self._on_paused(False)

    def stopProducing(self) -> None:
        """The connection is going: its end is reported through ``onClose``."""


@implementer(IPushProducer)
class AlwaysReading:
    """The ``IPushProducer`` side of a backend session, in name only: its socket is always read,
    whatever the playout holds, because control events (a barge-in above all) arrive on the same
    socket as the audio and must be handled at once; the playout bounds its own queue. Stopping
    the producer closes the session."""

    def close(self) -> None:
        """End the session (each session says how)."""
        raise NotImplementedError

    def pauseProducing(self) -> None:
        """Ignored: the backend socket is always read (barge-in must never wait behind audio)."""

    def resumeProducing(self) -> None:
        """Ignored (see :meth:`pauseProducing`)."""

    def stopProducing(self) -> None:
        self.close()


class CallLog:
    """One session's log lines, on ``logger``, each with ``call_id`` and ``backend``; ``secrets``
    (API keys, tokens) are replaced by ``[api key]`` in every string field and in what
    :meth:`redact` returns. Never used per frame."""

    def __init__(self, logger: Logger, call_id: str, backend: str, secrets: Iterable[str]) -> None:
        self._logger = logger
        self._call_id = _utf8_safe(call_id)
        self._backend = backend
        # A key too short to be secret (a test's "k") would only mangle the text around it.
        self._secrets = tuple(secret for secret in secrets if len(secret) >= 8)

    def log(self, level: str, fmt: str, **kwargs: Any) -> None:
        """Log ``fmt`` at ``level`` ("debug" ... "error"). Server-supplied text (error messages,
        close reasons, tool names) is redacted in case a peer echoes a key back, and a lone
        surrogate in it (a JSON ``\\ud800`` escape decodes to one) is written as an escape: the
        log file's UTF-8 write would fail on it, and the observer be dropped."""
        fields = {k: _utf8_safe(self.redact(v)) if isinstance(v, str) else v for k, v in kwargs.items()}
        getattr(self._logger, level)(fmt, call_id=self._call_id, backend=self._backend, **fields)

    def redact(self, text: str) -> str:
        """``text`` without the secrets (they must never reach a log line or a failure reason)."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[api key]")
        return text


def _utf8_safe(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class KeepAliveTimer:
    """Calls ``poll`` every ``interval_s`` seconds on ``reactor`` until stopped (one pending
    delayed call at a time; nothing per audio frame)."""

    def __init__(self, reactor: Timers, interval_s: float, poll: Callable[[], None]) -> None:
        self._reactor = reactor
        self._interval_s = interval_s
        self._poll = poll
        self._timer: Timer | None = None

    def start(self) -> None:
        """Start polling (a no-op while already started)."""
        if self._timer is None:
            self._timer = self._reactor.callLater(self._interval_s, self._fire)

    def stop(self) -> None:
        """Stop polling; :meth:`start` starts again."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        # The next poll is due before this one runs: a poll that stops the timer wins.
        self._timer = self._reactor.callLater(self._interval_s, self._fire)
        self._poll()


class QuietTimer:
    """Calls ``on_quiet`` once ``quiet_s`` seconds on ``reactor`` passed without
    :meth:`activity` (the first activity after a pause arms it). One delayed call per pause: an
    activity only reads the clock, however many arrive."""

    def __init__(self, reactor: Timers, quiet_s: float, on_quiet: Callable[[], None]) -> None:
        self._reactor = reactor
        self._quiet_s = quiet_s
        self._on_quiet = on_quiet
        self._last = 0.0
        self._timer: Timer | None = None

    def activity(self) -> None:
        """Something happened now: the quiet is counted from here."""
        self._last = self._reactor.seconds()
        if self._timer is None:
            self._timer = self._reactor.callLater(self._quiet_s, self._due)

    def stop(self) -> None:
        """Forget the pause being timed; the next activity arms it again."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _due(self) -> None:
        self._timer = None
        quiet_s = self._reactor.seconds() - self._last
        if quiet_s + 1e-9 < self._quiet_s:  # activity since it was armed: wait for the rest
            self._timer = self._reactor.callLater(self._quiet_s - quiet_s, self._due)
        else:
            self._on_quiet()


__all__ = [
    "AlwaysReading",
    "BackendSocket",
    "CallLog",
    "HeldAudio",
    "KeepAliveTimer",
    "QuietTimer",
    "ReadyReporter",
    "ReconnectOptions",
    "WriteBackpressure",
    "backoff_redialer",
    "hang_up",
    "open_until_ready",
    "refused_dial_reason",
    "send_frames",
]
