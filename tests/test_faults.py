"""Backend and platform faults, through the real service on 127.0.0.1 with the OpenAI Realtime
backend pointed at the fake service (or at a purpose-built broken server): each fault ends the
call (``backend_failed``, the platform told its own way) or is recovered from (a redial), and is
counted; memory stays bounded when a peer stops reading; another call is not affected.

Nothing sleeps: each step waits for the event it needs.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mediaproxy.backends import reconnect
from mediaproxy.backends.openai_session import OpenAIRealtimeSession
from mediaproxy.backends.openai_socket import RealtimeClientProtocol
from mediaproxy.calls import CallBridge
from mediaproxy.service import MediaProxyService
from mediaproxy.testing.fake_realtime import FakeRealtimeServer
from tests.support import LoopbackService, cancel_autobahn_timer_buckets
from tests.test_loopback_audiocodes import VaicFactory
from tests.test_loopback_audiohook import has
from tests.test_loopback_openai import quiet_frames
from tests.test_loopback_twilio import SPEECH, media_count
from tests.three_platforms import StartWatcher, open_audiohook, open_twilio, three_platforms

API_KEY = "fault-test-key"


def free_port() -> int:
    """A TCP port nothing listens on (bound once by the kernel, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def backend(url: str, **options: str) -> dict[str, str]:
    return {"type": "openai-realtime", "url": url, "api_key": API_KEY, "transcription_model": "",
            "reconnect_backoff_ms": "0", "reconnect_max_backoff_ms": "0", "keepalive_seconds": "0",
            "reconnect_attempts": "1", "connect_timeout_seconds": "1", **options}


def transport_buffered(transport: Any) -> int:
    """Bytes a TCP transport holds that the kernel has not taken yet."""
    return len(transport.dataBuffer) + transport._tempDataLen


class FaultCase(LoopbackService, TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.fake = FakeRealtimeServer(reactor, api_key=API_KEY)
        self.fake_url = self.fake.listen()
        self.service: Any = None
        self.backend_sockets: list[RealtimeClientProtocol] = []
        self.ups: list[OpenAIRealtimeSession] = []
        self._up_waiters: list[tuple[int, Deferred[None]]] = []
        opened = RealtimeClientProtocol.onOpen
        connection_up = OpenAIRealtimeSession._connection_up

        def record_open(proto: RealtimeClientProtocol) -> None:
            self.backend_sockets.append(proto)
            opened(proto)

        def record_up(session: OpenAIRealtimeSession, proto: RealtimeClientProtocol) -> None:
            connection_up(session, proto)
            self.ups.append(session)
            for n, d in list(self._up_waiters):
                if len(self.ups) >= n:
                    self._up_waiters.remove((n, d))
                    d.callback(None)

        self.patch(RealtimeClientProtocol, "onOpen", record_open)
        self.patch(OpenAIRealtimeSession, "_connection_up", record_up)

    @inlineCallbacks
    def tearDown(self) -> Any:
        if self.service is not None:
            yield self.service.stopService()
            self.assertEqual(self.service.registry.connected_calls(), [])
            self.assertEqual(len(self.service.clock), 0)
        # Both ends of every backend connection closed before Autobahn's timers are swept.
        yield self.fake.stop()
        yield DeferredList([proto.is_closed for proto in self.backend_sockets])
        cancel_autobahn_timer_buckets()

    def start(self, url: str, **options: str) -> str:
        cfg = three_platforms(backend=backend(url, **options))
        self.service = MediaProxyService(cfg, reactor, tune_gc=False)
        self.service.startService()
        return f"ws://127.0.0.1:{self.service.platform_listener.address().port}"

    def when_up(self, n: int) -> Deferred[None]:
        """Fires once ``n`` backend connections have come up (session.updated received)."""
        d: Deferred[None] = Deferred()
        self._up_waiters.append((n, d))
        if len(self.ups) >= n:
            self._up_waiters.remove((n, d))
            d.callback(None)
        return d

    def bridge(self) -> CallBridge:
        (bridge,) = [b for b in self.service.registry.connected_calls() if b.started]
        return bridge

    @inlineCallbacks
    def expect_backend_failed_everywhere(self, base: str) -> Any:
        """One call per platform; each ends ``backend_failed``, told its platform's way."""
        twilio, _ = yield open_twilio(base)
        audiohook, audiohook_client = yield open_audiohook(base)
        vaic = VaicFactory(f"{base}/audiocodes")
        connectWS(vaic)
        vaic_client = yield vaic.opened
        vaic_client.initiate(["raw/mulaw"])
        vaic_client.start()
        code = yield twilio.closed
        self.assertEqual(code, 1000)  # Twilio: the stream's socket is closed
        yield audiohook.wait_for(has("disconnect"))
        self.assertEqual(audiohook_client.of_type("disconnect")[-1]["parameters"]["reason"], "error")
        yield audiohook.closed
        yield vaic.wait_for(lambda msgs: any(
            m["type"] == "activities" and any(a.get("name") == "hangup" for a in m["activities"]) for m in msgs))
        yield vaic.closed
        yield self.service.registry.when_idle()
        for platform in ("twilio", "audiohook", "audiocodes"):
            self.assertEqual(self.metric("calls_total", platform=platform, outcome="backend_failed"), 1, platform)
        # One redial per call (reconnect_attempts = 1), then the call ended.
        self.assertEqual(self.metric("backend_reconnects_total", backend="bot"), 3)


class BackendUnreachableTests(FaultCase):
    @inlineCallbacks
    def test_refused_connection(self) -> Any:
        base = self.start(f"ws://127.0.0.1:{free_port()}/v1/realtime")
        yield self.expect_backend_failed_everywhere(base)

    @inlineCallbacks
    def test_tls_failure(self) -> Any:
        """``wss://`` to a plain WebSocket port: the TLS handshake fails; no upgrade reaches it."""
        base = self.start(self.fake_url.replace("ws://", "wss://"))
        yield self.expect_backend_failed_everywhere(base)
        self.assertEqual(self.fake.stats.connections, 0)
        self.assertEqual(self.fake.handshakes, [])

    @inlineCallbacks
    def test_handshake_timeout(self) -> Any:
        """A TCP server that never answers the upgrade: each attempt is abandoned after
        ``connect_timeout_seconds`` and its connection closed."""
        accepted: list[Protocol] = []
        lost: list[Protocol] = []

        class Mute(Protocol):
            def connectionMade(self) -> None:
                accepted.append(self)

            def connectionLost(self, reason: Any = None) -> None:
                lost.append(self)

        port = reactor.listenTCP(0, Factory.forProtocol(Mute), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = self.start(f"ws://127.0.0.1:{port.getHost().port}/v1/realtime")
        factory, _ = yield open_twilio(base)
        code = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertEqual(len(accepted), 2)
        yield self.service.registry.when_idle()
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="backend_failed"), 1)
        self.assertEqual(len(lost), 2)


class BackendDropTests(FaultCase):
    @inlineCallbacks
    def test_drops_beyond_the_attempts_end_the_call(self) -> Any:
        """The connection drops mid-call and every redial drops before it is ready: after
        ``reconnect_attempts`` the call ends ``backend_failed``; the platform is told."""
        base = self.start(self.fake_url, reconnect_attempts="2")
        factory, client = yield open_twilio(base)
        yield self.when_up(1)
        first = self.fake.connection(-1)
        on_open = type(first).onOpen

        def drop_at_open(connection: Any) -> None:
            on_open(connection)
            connection.drop()

        self.patch(type(first), "onOpen", drop_at_open)
        first.drop()
        code = yield factory.closed
        self.assertEqual(code, 1000)
        yield self.service.registry.when_idle()
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="backend_failed"), 1)
        # Failures 1 and 2 redial; failure 3 is over reconnect_attempts.
        self.assertEqual(self.metric("backend_reconnects_total", backend="bot"), 2)
        self.assertEqual(len(self.fake.connections), 3)


class GarbageTests(FaultCase):
    @inlineCallbacks
    def test_garbage_is_counted_and_a_huge_message_redials(self) -> Any:
        self.patch(reconnect, "MAX_MESSAGE_BYTES", 64 * 1024)
        base = self.start(self.fake_url)
        factory, client = yield open_twilio(base)
        yield self.when_up(1)
        connection = self.fake.connection(-1)
        connection.sendMessage(b"this is not JSON", False)
        connection.sendMessage(b"\x00\x01\x02", True)
        connection.sendMessage(json.dumps({"type": "response.future_thing", "event_id": "e1"}).encode(), False)
        connection.sendMessage(b"[1, 2]", False)  # JSON, but no event
        connection.sendMessage(b'{"type": "x", "pad": "' + b"A" * (128 * 1024) + b'"}', False)
        yield self.when_up(2)  # the huge message failed the connection (1009); the redial is ready
        self.assertEqual(self.metric("backend_errors_total", backend="bot", code="malformed_event"), 3)
        self.assertEqual(self.metric("backend_errors_total", backend="bot", code="unknown_event"), 1)
        self.assertEqual(self.metric("backend_reconnects_total", backend="bot"), 1)
        self.assertFalse(factory.closed.called)
        # The call goes on over the new connection.
        client.send_audio(quiet_frames(5, seed=3))
        second = self.fake.connection(-1)
        yield self.fake.when(lambda: second.input_bytes >= 5 * 160)
        client.send({"event": "stop", "streamSid": "MZ1"})
        yield factory.closed
        yield self.service.registry.when_idle()
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 1)


class BackendStallTests(FaultCase):
    @inlineCallbacks
    def test_a_backend_that_stops_reading_costs_bounded_memory(self) -> Any:
        """The fake stops reading; the caller keeps talking. The proxy's socket buffer stops
        growing at Twisted's bound, caller audio beyond ``early_audio_ms`` is dropped (oldest
        first, counted ``backend_stalled``), and all of it flows again once the backend reads."""
        base = self.start(self.fake_url, early_audio_ms="1000")
        factory, client = yield open_twilio(base)
        yield self.when_up(1)
        connection = self.fake.connection(-1)
        connection.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.transport.pauseProducing()  # stop reading
        session = self.ups[0]
        proxy_transport = self.backend_sockets[0].transport
        proxy_transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        port = self.bridge().leg
        frames = 3000  # one minute of audio, sent as fast as the proxy reads it
        read: Deferred[None] = Deferred()
        received = port.received
        largest = [0]

        def counting(payload: bytes, binary: bool) -> None:
            received(payload, binary)
            largest[0] = max(largest[0], transport_buffered(proxy_transport))
            if port.messages_received >= frames + 2 and not read.called:
                read.callback(None)

        port.received = counting
        client.send_audio(quiet_frames(frames, seed=7))
        yield read
        dropped = self.metric("frames_dropped_total", direction="in", reason="backend_stalled")
        self.assertGreater(dropped, frames / 2)
        self.assertTrue(session._stalled)
        self.assertLessEqual(len(session._early), 8 * 1000)  # early_audio_ms of µ-law
        # Twisted pauses the producer above 64 KiB; control messages may still follow.
        self.assertLess(largest[0], 64 * 1024 + 4096)
        self.assertFalse(factory.closed.called)
        # The backend reads again: the held second goes out and the call carries on.
        connection.transport.resumeProducing()
        yield self.fake.when(lambda: not session._stalled and len(session._early) == 0)
        client.send({"event": "stop", "streamSid": "MZ1"})
        yield factory.closed
        yield self.service.registry.when_idle()
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 1)
        self.assertEqual(self.metric("frames_dropped_total", direction="in", reason="backend_stalled"), dropped)


class PlatformFaultTests(LoopbackService, StartWatcher):
    """Platforms that stop reading or vanish, on the echo backend (streaming the caller's audio
    back as it comes)."""

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        cfg = three_platforms(backend={"type": "echo", "mode": "stream"},
                              proxy={"close_handshake_timeout_seconds": "1"})
        cfg = replace(cfg, playout=replace(cfg.playout, max_buffer_ms=1000))
        self.service = MediaProxyService(cfg, reactor, tune_gc=False)
        address, _ = yield self.start_service(self.service)
        self.base = f"ws://127.0.0.1:{address.port}"
        self.watch_starts()

    def tearDown(self) -> Any:
        return self.stop_service()

    def small_receive_buffer_for_the_next_client(self) -> None:
        """The next TCP client socket gets a 4 KiB receive buffer before it connects (so the
        window it advertises stays small and a paused reader backs the proxy up quickly)."""
        create = tcp.Client.createInternetSocket
        done = [False]

        def small(client: Any) -> Any:
            sock = create(client)
            if not done[0]:
                done[0] = True
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            return sock

        self.patch(tcp.Client, "createInternetSocket", small)

    @inlineCallbacks
    def test_a_platform_that_stops_reading(self) -> Any:
        """The caller's socket stops reading: the playout (the transport's push producer) is
        paused, bot audio beyond ``max_buffer_ms`` is dropped and counted, the socket buffer
        stays bounded, and a concurrent call gets every frame of its echo."""
        self.small_receive_buffer_for_the_next_client()
        stalled, stalled_client = yield open_twilio(self.base)
        stalled_client.transport.pauseProducing()  # stop reading
        yield self.when_started(1)
        bridge = self.started[0]
        server_transport = bridge.leg._wire.transport
        server_transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        server_transport.bufferSize = 4096
        playout = bridge.playout
        paused: Deferred[None] = Deferred()
        pause = playout.pauseProducing

        def recording_pause() -> None:
            pause()
            if not paused.called:
                paused.callback(None)

        playout.pauseProducing = recording_pause
        stalled_client.send_audio([SPEECH] * 500)  # 10 s at once: the echo streams it back
        yield paused
        self.assertGreater(self.metric("frames_dropped_total", direction="out", reason="overflow"), 0)
        # The other call, meanwhile: every frame of its echo arrives.
        other, other_client = yield open_twilio(self.base)
        other_client.send_audio([SPEECH] * 25)
        yield other.wait_for(lambda msgs: media_count(msgs) >= 25)
        self.assertLessEqual(transport_buffered(server_transport), 4096 + 1024)
        self.assertFalse(stalled.closed.called)
        for factory, client in ((other, other_client), (stalled, stalled_client)):
            client.transport.resumeProducing()
            client.send({"event": "stop", "streamSid": "MZ1"})
            yield factory.closed
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 2)

    @inlineCallbacks
    def test_a_platform_that_vanishes_without_a_close(self) -> Any:
        """TCP aborted, no close frame: the call ends at once and nothing is left behind."""
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        client.transport.abortConnection()
        yield factory.closed
        yield self.service.registry.when_idle()
        self.assertEqual(self.service.registry.connected_calls(), [])
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="disconnected"), 1)
        self.assertEqual(len(self.service.clock), 0)

    @inlineCallbacks
    def test_a_half_open_platform_is_released_by_the_idle_timeout(self) -> Any:
        """The peer neither sends, nor reads, nor closes (a half-open TCP connection): the idle
        timeout ends the call, the unanswered close handshake times out, and the registry is
        empty."""
        clock = Clock()
        registry = self.service.registry
        registry.context = replace(registry.context, reactor=clock)
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        client.transport.pauseProducing()  # reads nothing more, answers nothing
        for _ in range(11):
            clock.advance(registry.idle_timeout_s / 10)
        yield registry.when_idle()
        self.assertEqual(registry.connected_calls(), [])
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="timeout"), 1)
        client.transport.abortConnection()
        yield factory.closed
