"""Test doubles and scaffolding the suites share.

For the clock-driven bridge tests: a backend that records what the bridge tells it (the test
speaks as the backend through the session's ``listener``), and a platform leg that records what
the platform session queued, stamped with the clock time it left at.

For the loopback suites (the real service on 127.0.0.1): :class:`LoopbackService` (start, read
metrics, stop leaving nothing behind), :func:`record_backend_websockets` (every backend
connection the proxy opens, so tearDown waits for each to close), one platform in front of the
echo parrot (:class:`EchoBehindPlatform`) or of the fake OpenAI Realtime server
(:class:`RealtimeBehindPlatform`), and 20 ms caller frames
(:func:`speech_frame`, :func:`quiet_frame`)."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from mediaproxy.audio.format import AudioFormat
from mediaproxy.backends.base import CallInfo
from mediaproxy.backends.openai_socket import RealtimeClientProtocol
from mediaproxy.calls import CallBridge, CallContext, Endpoint
from mediaproxy.config import PlayoutSettings, parse_config
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.base import CallStarted, PlatformSession
from mediaproxy.platforms.twilio import TWILIO
from mediaproxy.playout import PlayoutClock
from mediaproxy.testing.fake_realtime import FakeRealtimeConnection, FakeRealtimeServer
from mediaproxy.testing.waiting import ConditionWaiting as ConditionWaiting  # re-exported for the suites


class RecordingBackendSession:
    """One backend session: records caller audio, interrupts, digits, pauses and close."""

    def __init__(self, call: CallInfo, listener: Any, audio_format: AudioFormat) -> None:
        self.call = call
        self.listener = listener
        self.audio_format = audio_format
        self.audio = bytearray()
        self.interrupts: list[tuple[str, int]] = []
        self.dtmf: list[str] = []
        self.tool_results: list[tuple[str, str]] = []
        self.languages: list[str] = []
        self.closed = False
        self.paused = False

    def send_audio(self, data: bytes) -> None:
        self.audio.extend(data)

    def interrupt(self, response_id: str, played_ms: int) -> None:
        self.interrupts.append((response_id, played_ms))

    def send_dtmf(self, digits: str) -> None:
        self.dtmf.append(digits)

    def tool_result(self, call_id: str, output: str) -> None:
        self.tool_results.append((call_id, output))

    def set_language(self, language: str) -> None:
        self.languages.append(language)

    def close(self) -> None:
        self.closed = True

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.close()


class RecordingBackend:
    """Takes the platform's first offered format; its sessions speak ``audio_format`` (default:
    the platform's own, so nothing is transcoded). Keeps every session it opens."""

    name = "fake"
    format_preference = ()

    def __init__(self, audio_format: AudioFormat | None = None) -> None:
        self.audio_format = audio_format
        self.sessions: list[RecordingBackendSession] = []

    @property
    def listener(self) -> Any:
        """The listener of the latest session (the bridge)."""
        return self.sessions[-1].listener if self.sessions else None

    def open_session(self, call: CallInfo, listener: Any, platform_format: AudioFormat) -> RecordingBackendSession:
        session = RecordingBackendSession(call, listener, self.audio_format or platform_format)
        self.sessions.append(session)
        return session


class RecordingLeg:
    """The platform connection (a :class:`~mediaproxy.calls.PlatformLeg`): records the session's
    output as (clock time, bytes or parsed JSON message) at each flush, and counts flushes."""

    def __init__(self, clock: IReactorTime, session: PlatformSession) -> None:
        self.clock = clock
        self.session = session
        self.sent: list[tuple[float, Any]] = []
        self.hung_up = False
        self.given_up = False
        self.flushes = 0
        self.producer: Any = None
        self.call: Any = None
        self.messages_received = 0

    def adopt(self, call: Any, session: PlatformSession) -> None:
        self.call = call
        self.session = session

    def flush(self) -> None:
        self.flushes += 1
        now = self.clock.seconds()
        for item in self.session.take_output():
            self.sent.append((now, item if isinstance(item, bytes) else json.loads(item)))

    def close(self) -> None:
        self.flush()
        self.hung_up = True

    def give_up(self) -> None:
        self.given_up = True

    def register_producer(self, producer: Any) -> None:
        self.producer = producer

    def play(self, packet: bytes) -> None:
        self.session.play(packet)

    def mark(self, name: str) -> None:
        self.session.mark(name)

    def playback_finished(self) -> None:
        self.session.playback_finished()


def make_bridge(leg: Any, backend: Any, clock: IReactorTime, *, platform: str = "twilio",
                settings: PlayoutSettings | None = None, metrics: Metrics | None = None,
                frame_ms: int = 20, pacing: PlayoutClock | None = None,
                log_transcripts: bool = False) -> CallBridge:
    """A CallBridge on ``leg`` (no registry: nothing to resume), paced by ``pacing`` or a fresh
    shared clock on ``clock``."""
    metrics = metrics if metrics is not None else Metrics()
    pacing = pacing if pacing is not None else PlayoutClock(clock, frame_ms, metrics)
    context = CallContext(clock, pacing, metrics, settings or PlayoutSettings(), log_transcripts)
    # The platform type only matters to the registry (resume grace): any will do here.
    return CallBridge(Endpoint(platform, TWILIO, None, backend), context, leg)


BRIDGE_T0 = 100.0
"""Where a bridged call's clock starts, in seconds (not 0: nothing may assume it)."""


class BridgedCall:
    """For the clock-driven bridge suites (a SynchronousTestCase mixin): one call started on a
    real :class:`~mediaproxy.calls.CallBridge` over a platform session, a
    :class:`RecordingBackend` and a recording leg, on a ``task.Clock``; then :meth:`receive`
    feeds the platform's frames, :meth:`run_ms` runs the clock and :meth:`media` reads the
    binary frames sent."""

    def start_bridged_call(self, session: PlatformSession, opening: list[str], *, platform: str,
                           settings: PlayoutSettings, leg_type: type[RecordingLeg] = RecordingLeg) -> None:
        """Feed the platform's ``opening`` text frames to ``session`` and start the bridge on
        the call they start; what the session answered is flushed and forgotten."""
        self.clock = Clock()
        self.clock.advance(BRIDGE_T0)
        self.metrics = Metrics()
        self.backend = RecordingBackend()
        self.session = session
        self.leg = leg_type(self.clock, session)
        self.bridge = make_bridge(self.leg, self.backend, self.clock, platform=platform, settings=settings,
                                  metrics=self.metrics)
        started = [e for text in opening for e in session.receive_text(text) if isinstance(e, CallStarted)]
        assert len(started) == 1, started
        self.bridge.start(started[0])
        self.leg.flush()
        self.leg.sent.clear()
        self.backend_session = self.backend.sessions[0]

    def receive_frame(self, text: str) -> None:
        """One text frame from the platform, through the session to the bridge; then a flush."""
        self.bridge.handle(self.session.receive_text(text))
        self.leg.flush()

    def run_ms(self, ms: int) -> None:
        """Advance the clock ``ms`` one millisecond at a time (every timer fires when due)."""
        for _ in range(ms):
            self.clock.advance(0.001)

    def media(self) -> list[tuple[float, bytes]]:
        """The binary frames sent, with the clock time each left at."""
        return [(t, m) for t, m in self.leg.sent if isinstance(m, bytes)]


def cancel_autobahn_timer_buckets() -> None:
    """Autobahn arms close-handshake timeouts through txaio's batched timers; cancelling one
    leaves its bucket's reactor call armed until the bucket comes due. Once every connection is
    closed those calls have nothing left to do, so a test may cancel them instead of waiting."""
    from twisted.internet import reactor

    for call in reactor.getDelayedCalls():
        if getattr(call.func, "__qualname__", "").startswith("_BatchedTimer."):
            call.cancel()


class LoopbackService:
    """For trial TestCases running the real service on 127.0.0.1: start it, read metrics, and
    stop it checking that no connection, held call or playout survived."""

    service: Any

    def start_service(self, service: Any) -> Deferred[tuple[Any, Any]]:
        """Start ``service``; fires with the (platform, metrics) listening addresses."""
        self.service = service
        service.startService()
        return succeed((service.platform_listener.address(), service.metrics_listener.address()))

    def stop_service(self) -> Deferred[None]:
        """Stop the service (drain) and check it left nothing behind."""

        def check(_: object) -> None:
            assert self.service.registry.connected_calls() == [], self.service.registry.connected_calls()
            assert self.service.registry.held_calls() == {}, self.service.registry.held_calls()
            assert len(self.service.clock) == 0, "a playout is still on the clock"
            cancel_autobahn_timer_buckets()

        return self.service.stopService().addCallback(check)

    def metric(self, name: str, labels: dict[str, str] | None = None, **label_values: str) -> float:
        """A sample of the service's registry (0 when absent); ``mediaproxy_`` may be omitted."""
        if not name.startswith("mediaproxy_"):
            name = "mediaproxy_" + name
        value = self.service.metrics.registry.get_sample_value(name, {**(labels or {}), **label_values})
        return 0.0 if value is None else value


def record_backend_websockets(case: Any, protocol: type[Any]) -> list[Any]:
    """Every connection of the backend client ``protocol`` that opens during the test ``case``
    (a trial TestCase: ``protocol.onOpen`` is patched for the test), in order; wait for them
    with :func:`all_closed`."""
    opened: list[Any] = []
    original = protocol.onOpen

    def record(proto: Any) -> None:
        opened.append(proto)
        original(proto)

    case.patch(protocol, "onOpen", record)
    return opened


def all_closed(websockets: list[Any]) -> Deferred[Any]:
    """Fires once both ends of every recorded backend connection have closed (before Autobahn's
    timers are swept)."""
    return DeferredList([proto.is_closed for proto in websockets])


def twilio_to_backend(name: str, backend: dict[str, str], *, platform: dict[str, str] | None = None) -> Any:
    """The config of a backend loopback suite: the service and its metrics on 127.0.0.1:0 (drain
    1 s), ``[platform:twilio]`` at ``/twilio`` (plus ``platform``) wired to ``[backend:<name>]``,
    which is ``backend`` redialling at once (no backoff)."""
    return parse_config(
        "test.ini",
        {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": name, **(platform or {})},
            f"backend:{name}": {"reconnect_backoff_ms": "0", "reconnect_max_backoff_ms": "0", **backend},
        },
        {},
    )


ECHO_BACKEND: dict[str, str] = {"type": "echo", "silence_ms": "200"}
"""A ``[backend:NAME]`` section for the echo parrot, quick to answer."""


class EchoBehindPlatform(LoopbackService):
    """For the platform loopback suites (a trial TestCase mixin): the real service with one
    platform in front of the echo parrot, at ``self.url``; tearDown stops it leaving nothing
    behind."""

    timeout = 30
    url: str

    def start_echo_loopback(self, config: Any, platform_path: str) -> Deferred[None]:
        """Start the service on ``config`` (see :data:`ECHO_BACKEND`); callers dial
        ``ws://127.0.0.1:PORT/platform_path``."""
        from twisted.internet import reactor

        from mediaproxy.service import MediaProxyService

        def remember(addresses: tuple[Any, Any]) -> None:
            self.url = f"ws://127.0.0.1:{addresses[0].port}/{platform_path}"

        return self.start_service(MediaProxyService(config, reactor, tune_gc=False)).addCallback(remember)

    def tearDown(self) -> Deferred[None]:
        return self.stop_service()


REALTIME_API_KEY = "dummy-test-key"

REALTIME_BACKEND: dict[str, str] = {
    "type": "openai-realtime", "api_key": REALTIME_API_KEY, "transcription_model": "", "silence_duration_ms": "200",
    "reconnect_backoff_ms": "0", "reconnect_max_backoff_ms": "0", "keepalive_seconds": "0",
}
"""A ``[backend:NAME]`` section for the fake Realtime server (its ``url`` added when it listens)."""


class RealtimeBehindPlatform:
    """For the platform loopback suites (a trial TestCase mixin): the real service with one
    platform in front of the fake OpenAI Realtime server, at ``self.url``; tearDown stops the
    service, waits for every backend connection to close and stops the fake."""

    timeout = 30
    patch: Any
    fake: FakeRealtimeServer
    service: Any
    url: str

    def start_realtime_loopback(self, make_config: Callable[[dict[str, str]], Any], platform_path: str) -> None:
        """Start the fake and the service; ``make_config`` gives the service's config for a
        backend section; callers dial ``ws://127.0.0.1:PORT/platform_path``."""
        from twisted.internet import reactor

        from mediaproxy.service import MediaProxyService

        self.backend_websockets = record_backend_websockets(self, RealtimeClientProtocol)
        self.fake = FakeRealtimeServer(reactor, api_key=REALTIME_API_KEY)
        url = self.fake.listen().removesuffix("/v1/realtime") + "/v1/realtime"
        self.service = MediaProxyService(make_config({**REALTIME_BACKEND, "url": url}), reactor, tune_gc=False)
        self.service.startService()
        self.url = f"ws://127.0.0.1:{self.service.platform_listener.address().port}/{platform_path}"

    @inlineCallbacks
    def tearDown(self) -> Generator[Deferred[Any], Any, None]:
        yield self.service.stopService()
        yield all_closed(self.backend_websockets)
        yield self.fake.stop()
        cancel_autobahn_timer_buckets()

    @inlineCallbacks
    def first_session_update(self) -> Generator[Deferred[Any], Any, tuple[FakeRealtimeConnection, dict[str, Any]]]:
        """Waits for the proxy's first ``session.update``; returns the fake's connection and
        the session it asked for."""
        yield self.fake.when(lambda: bool(self.fake.connections)
                             and any(e.get("type") == "session.update" for e in self.fake.connection(0).received))
        conn = self.fake.connection(0)
        update = next(e for e in conn.received if e.get("type") == "session.update")["session"]
        return conn, update


def speech_frame(fmt: AudioFormat) -> bytes:
    """20 ms of loud audio in ``fmt`` (µ-law or L16): speech to the echo's and the fakes' VAD."""
    if fmt.encoding == "pcmu":
        return bytes([0x10, 0x90]) * 80
    return array("h", [12000, -12000] * (fmt.rate_hz // 100)).tobytes()


def quiet_frame(fmt: AudioFormat) -> bytes:
    """20 ms of silence in ``fmt``."""
    return fmt.silence(fmt.bytes_for_ms(20))
