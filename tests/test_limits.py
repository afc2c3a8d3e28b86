"""The per-listener limits of ``[proxy]``, each shown firing through the real service on
127.0.0.1: message and frame size, the opening and closing handshake timeouts, keep-alive pings,
the idle timeout (on a ``task.Clock``: the registry takes its time from ``CallContext.reactor``),
and ``max_calls`` on every platform (HTTP 503, or AudioCodes' in-band ``session.error``).

Nothing sleeps: every step waits for the event it needs. The handshake and ping timeouts run on
the process reactor (Autobahn's timers are txaio's), so they are set to a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import ConfigError, ProxySettings
from mediaproxy.server.websocket import PlatformServerFactory
from mediaproxy.service import MediaProxyService
from tests.support import LoopbackService
from tests.test_loopback_audiohook import has
from tests.test_loopback_twilio import SPEECH, ScriptedTwilioFactory
from tests.three_platforms import StartWatcher, open_audiocodes, open_audiohook, open_twilio, three_platforms


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        settings = ProxySettings()
        self.assertEqual(
            (settings.max_message_bytes, settings.max_frame_bytes, settings.open_handshake_timeout_seconds,
             settings.close_handshake_timeout_seconds, settings.auto_ping_interval_seconds,
             settings.auto_ping_timeout_seconds, settings.idle_timeout_seconds),
            (1024 * 1024, 1024 * 1024, 10.0, 5.0, 0.0, 0.0, 60.0))

    def test_every_listener_takes_its_limits_from_config(self) -> None:
        cfg = three_platforms(proxy={
            "max_message_bytes": "4096", "max_frame_bytes": "2048", "open_handshake_timeout_seconds": "3",
            "close_handshake_timeout_seconds": "2", "auto_ping_interval_seconds": "7",
            "idle_timeout_seconds": "9"})
        service = MediaProxyService(cfg, reactor, tune_gc=False)
        factories = [resource.factory for resource in service.site.resource.routes.values()]
        self.assertEqual(len(factories), 3)
        for factory in factories:
            self.assertIsInstance(factory, PlatformServerFactory)
            self.assertEqual((factory.maxMessagePayloadSize, factory.maxFramePayloadSize,
                              factory.openHandshakeTimeout, factory.closeHandshakeTimeout,
                              factory.autoPingInterval, factory.autoPingTimeout),
                             (4096, 2048, 3, 2, 7, 7))  # pong timeout 0: as long as the interval
        self.assertEqual(service.site.timeOut, 3)
        self.assertEqual(service.registry.idle_timeout_s, 9)

    def test_frame_larger_than_message_is_refused(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            three_platforms(proxy={"max_message_bytes": "2048", "max_frame_bytes": "4096"})
        self.assertIn("[proxy] max_frame_bytes: must be at most max_message_bytes (2048)", str(caught.exception))

    def test_bad_values_are_refused(self) -> None:
        for key, value in (("max_message_bytes", "10"), ("idle_timeout_seconds", "-1"),
                           ("open_handshake_timeout_seconds", "0"), ("auto_ping_interval_seconds", "x"),
                           ("auto_ping_interval_seconds", "0.5")):
            with self.assertRaises(ConfigError, msg=key) as caught:
                three_platforms(proxy={key: value})
            self.assertIn(f"[proxy] {key}:", str(caught.exception))


class LimitCase(LoopbackService, StartWatcher):
    timeout = 20
    proxy: dict[str, str] = {}

    @inlineCallbacks
    def setUp(self) -> Any:
        self.service = MediaProxyService(three_platforms(proxy=self.proxy), reactor, tune_gc=False)
        address, _ = yield self.start_service(self.service)
        self.port = address.port
        self.base = f"ws://127.0.0.1:{address.port}"
        self.watch_starts()

    def tearDown(self) -> Any:
        return self.stop_service()


class MessageSizeTests(LimitCase):
    proxy = {"max_message_bytes": "4096", "max_frame_bytes": "4096"}

    @inlineCallbacks
    def test_a_message_over_the_bound_closes_the_connection_with_1009(self) -> Any:
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        client.send({"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": "A" * 8000}})
        code = yield factory.closed
        self.assertEqual(code, 1009)
        yield self.service.registry.when_idle()
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="disconnected"), 1)

    @inlineCallbacks
    def test_a_message_within_the_bound_is_accepted(self) -> Any:
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        client.send_audio([SPEECH] * 5)  # 300-byte messages
        client.send({"event": "stop", "streamSid": "MZ1"})
        code = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 1)


class _Silent(Protocol):
    """A TCP client that connects and never sends a byte."""

    def connectionMade(self) -> None:
        self.factory.connected.callback(reactor.seconds())

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.lost.callback(reactor.seconds())


class OpenHandshakeTimeoutTests(LimitCase):
    proxy = {"open_handshake_timeout_seconds": "1"}

    @inlineCallbacks
    def test_a_connection_that_never_sends_its_upgrade_is_dropped(self) -> Any:
        factory = ClientFactory()
        factory.protocol = _Silent
        factory.connected, factory.lost = Deferred(), Deferred()
        reactor.connectTCP("127.0.0.1", self.port, factory)
        connected_at = yield factory.connected
        lost_at = yield factory.lost
        self.assertGreaterEqual(lost_at - connected_at, 0.9)
        self.assertLess(lost_at - connected_at, 5)


class _DeafTwilio(WebSocketClientProtocol):
    """Starts a Twilio stream and then never answers a close frame, nor a ping."""

    def onOpen(self) -> None:
        self.sendMessage(json.dumps({"event": "start", "streamSid": "MZ1", "start": {
            "streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}).encode())
        self.factory.opened.callback(reactor.seconds())

    def onCloseFrame(self, code: Any, reasonRaw: Any) -> bool:
        self.factory.close_frame_at = reactor.seconds()
        return False  # no reply: the server's closing handshake must time out

    def onPing(self, payload: bytes) -> None:
        self.factory.pings += 1  # no pong

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback(reactor.seconds())


class _DeafFactory(WebSocketClientFactory):
    protocol = _DeafTwilio

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.opened: Deferred[float] = Deferred()
        self.closed: Deferred[float] = Deferred()
        self.close_frame_at: float | None = None
        self.pings = 0


class CloseHandshakeTimeoutTests(LimitCase):
    proxy = {"close_handshake_timeout_seconds": "2"}

    @inlineCallbacks
    def test_a_peer_that_never_answers_our_close_is_dropped(self) -> Any:
        factory = _DeafFactory(f"{self.base}/twilio")
        connectWS(factory)
        yield factory.opened
        yield self.when_started(1)
        # The bot ends the call: the proxy sends its close frame and waits for the answer.
        self.started[0].backend_hangup("goodbye")
        closed_at = yield factory.closed
        self.assertIsNotNone(factory.close_frame_at)
        # Autobahn's timers count whole seconds: 2 s fire between 1 and 2 s after our close.
        self.assertGreaterEqual(closed_at - factory.close_frame_at, 0.9)
        yield self.service.registry.when_idle()
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="bot_hangup"), 1)


class AutoPingTests(LimitCase):
    proxy = {"auto_ping_interval_seconds": "1", "auto_ping_timeout_seconds": "1"}

    @inlineCallbacks
    def test_a_peer_that_never_answers_pings_is_dropped(self) -> Any:
        factory = _DeafFactory(f"{self.base}/twilio")
        connectWS(factory)
        opened_at = yield factory.opened
        closed_at = yield factory.closed
        self.assertGreaterEqual(factory.pings, 1)
        self.assertLess(closed_at - opened_at, 5)
        yield self.service.registry.when_idle()
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="disconnected"), 1)

    @inlineCallbacks
    def test_a_peer_that_answers_pings_stays(self) -> Any:
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        pings: Deferred[None] = Deferred()
        on_ping = client.onPing

        def counting(payload: bytes) -> None:
            on_ping(payload)
            if not pings.called and client.state == WebSocketClientProtocol.STATE_OPEN:
                client.pings = getattr(client, "pings", 0) + 1
                if client.pings >= 3:
                    pings.callback(None)

        client.onPing = counting
        yield pings  # three intervals, longer than interval + timeout: still up
        self.assertEqual(client.state, WebSocketClientProtocol.STATE_OPEN)
        client.send({"event": "stop", "streamSid": "MZ1"})
        yield factory.closed
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 1)


class IdleTimeoutTests(LimitCase):
    """The idle check on a ``task.Clock``: the registry's context gets a Clock as its reactor
    (the sockets and the pacing keep the real one)."""

    proxy = {"idle_timeout_seconds": "30", "close_handshake_timeout_seconds": "1"}

    def use_clock(self) -> Clock:
        clock = Clock()
        registry = self.service.registry
        registry.context = dataclasses.replace(registry.context, reactor=clock)
        return clock

    @inlineCallbacks
    def test_each_platform_gets_its_own_goodbye_after_the_idle_timeout(self) -> Any:
        clock = self.use_clock()
        twilio, _ = yield open_twilio(self.base)
        audiohook, audiohook_client = yield open_audiohook(self.base)
        audiocodes, _ = yield open_audiocodes(self.base)
        yield self.when_started(3)
        # One timer for the whole process, at a tenth of the timeout.
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [3.0])
        # Their opening messages were seen by the pass at t = 3; nothing came since.
        for _ in range(10):
            clock.advance(3)
        self.assertEqual(len(self.service.registry.connected_calls()), 3)  # t = 30
        clock.advance(3)  # t = 33: 30 s of silence
        code = yield twilio.closed
        self.assertEqual(code, 1000)  # Twilio: the stream's socket is closed
        yield audiocodes.wait_for(lambda msgs: any(
            m["type"] == "activities" and any(a.get("name") == "hangup" for a in m["activities"]) for m in msgs))
        yield audiocodes.closed
        yield audiohook.wait_for(has("disconnect"))
        disconnect = audiohook_client.of_type("disconnect")[-1]
        self.assertEqual(disconnect["parameters"]["reason"], "error")
        yield audiohook.closed  # after its close transaction (disconnect, close, closed)
        yield self.service.registry.when_idle()
        for platform in ("twilio", "audiohook", "audiocodes"):
            self.assertEqual(self.metric("calls_total", platform=platform, outcome="timeout"), 1, platform)
            self.assertEqual(self.metric("calls_active", platform=platform), 0, platform)
        self.assertEqual(clock.getDelayedCalls(), [])  # no connection: no idle timer

    @inlineCallbacks
    def test_any_message_keeps_the_call(self) -> Any:
        clock = self.use_clock()
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        port = self.started[0].leg
        read: Deferred[None] = Deferred()
        received = port.received

        def counting(payload: bytes, binary: bool) -> None:
            received(payload, binary)
            if not read.called:
                read.callback(None)

        port.received = counting
        clock.advance(24)
        client.send_audio([SPEECH])
        yield read
        # Seen by the pass at t = 27: the call has 30 s from then (the check is a tenth coarse).
        for _ in range(10):
            clock.advance(3)
        self.assertEqual(len(self.service.registry.connected_calls()), 1)  # t = 54
        clock.advance(3)  # t = 57
        code = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="timeout"), 1)

    @inlineCallbacks
    def test_a_twilio_stream_that_goes_quiet_is_closed(self) -> Any:
        clock = self.use_clock()
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        for _ in range(10):  # its opening messages were seen by the pass at t = 3
            clock.advance(3)
        self.assertEqual(len(self.service.registry.connected_calls()), 1)
        clock.advance(3)  # t = 33
        code = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="timeout"), 1)
        self.assertEqual(self.metric("calls_active", platform="twilio"), 0)

    @inlineCallbacks
    def test_a_connection_that_never_starts_a_call_is_closed(self) -> Any:
        clock = self.use_clock()
        factory = ScriptedTwilioFactory(f"{self.base}/twilio")
        factory.protocol = _Mute
        connectWS(factory)
        yield factory.opened
        for _ in range(10):
            clock.advance(3)
        yield factory.closed
        self.assertEqual(self.started, [])
        yield self.service.registry.when_idle()


class _Mute(WebSocketClientProtocol):
    """Opens the WebSocket and sends nothing."""

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback(code)


class CapacityTests(LimitCase):
    """``max_calls`` on every platform: the upgrade is refused with 503 (Twilio, AudioHook), or
    answered in-band (AudioCodes ``session.error``)."""

    proxy = {"max_calls": "1"}

    @inlineCallbacks
    def occupy(self) -> Any:
        factory, client = yield open_twilio(self.base)
        yield self.when_started(1)
        return factory, client

    @inlineCallbacks
    def release(self, factory: Any, client: Any) -> Any:
        client.send({"event": "stop", "streamSid": "MZ1"})
        yield factory.closed

    @inlineCallbacks
    def test_twilio_is_refused_with_503(self) -> Any:
        held = yield self.occupy()
        refused = _RefusalProbe(f"{self.base}/twilio")
        connectWS(refused)
        yield refused.closed
        self.assertFalse(refused.opened)
        self.assertIn("503", refused.status_line)
        self.assertEqual(self.refused("twilio", "capacity"), 1)
        yield self.release(*held)

    def refused(self, platform: str, reason: str) -> float | None:
        return self.service.metrics.registry.get_sample_value(
            "mediaproxy_calls_refused_total", {"platform": platform, "reason": reason})

    @inlineCallbacks
    def test_audiohook_is_refused_with_503(self) -> Any:
        from tests.test_loopback_audiohook import genesys_headers

        held = yield self.occupy()
        refused = _RefusalProbe(f"{self.base}/audiohook",
                                headers=genesys_headers("30b0e395-84d3-4570-ac13-9a62d8f514c0"))
        connectWS(refused)
        yield refused.closed
        self.assertFalse(refused.opened)
        self.assertIn("503", refused.status_line)
        yield self.release(*held)

    @inlineCallbacks
    def test_audiocodes_is_refused_in_band(self) -> Any:
        from tests.test_loopback_audiocodes import VaicFactory

        held = yield self.occupy()
        vaic = VaicFactory(f"{self.base}/audiocodes")
        connectWS(vaic)
        client = yield vaic.opened
        client.initiate(["raw/mulaw"])
        yield vaic.closed
        self.assertEqual(client.received, [{"type": "session.error", "reason": "no capacity (1 calls)"}])
        self.assertEqual(self.refused("audiocodes", "capacity"), 1)
        yield self.release(*held)


class _RefusalProbe(WebSocketClientFactory):
    """Records whether the upgrade opened and the HTTP status line of a refusal."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, headers=headers or {})
        self.opened = False
        self.status_line = ""
        self.closed: Deferred[None] = Deferred()
        probe = self

        class Protocol_(WebSocketClientProtocol):
            def onOpen(self) -> None:
                probe.opened = True

            def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
                probe.status_line = getattr(self, "http_status_line", "") or ""
                probe.closed.callback(None)

        self.protocol = Protocol_

