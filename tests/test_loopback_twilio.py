"""Loopback integration: the real service on 127.0.0.1:0, a scripted Twilio client, the echo
backend. Nothing here waits on a timer: every step waits for the event it needs."""

from __future__ import annotations

import base64
import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from mediaproxy.sim.twilio_player import TwilioPlayer
from tests.support import LoopbackService, cancel_autobahn_timer_buckets

SPEECH = bytes([0x10, 0x90]) * 80  # 20 ms of loud µ-law (±~12 kdB below full scale)
QUIET = b"\xff" * 160


def config(**platform: str) -> Any:
    return parse_config(
        "test.ini",
        {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": "echo", **platform},
            "backend:echo": {"type": "echo", "silence_ms": "200"},
        },
        {},
    )


class ScriptedTwilio(WebSocketClientProtocol):
    """Speaks Twilio: start, media frames, mark echoes when playback reaches them (as Twilio
    does, :class:`TwilioPlayer`), stop."""

    factory: ScriptedTwilioFactory

    def onOpen(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.player = TwilioPlayer(reactor, self._echo)
        self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.send({
            "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
            "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
                      "customParameters": {"tenant": "acme"},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        })
        self.factory.opened.callback(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendMessage(json.dumps(message).encode(), False)

    def send_audio(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.send({"event": "media", "streamSid": "MZ1",
                       "media": {"track": "inbound", "payload": base64.b64encode(frame).decode()}})

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.received.append(message)
        if message["event"] == "media":
            self.player.media(base64.b64decode(message["media"]["payload"]))
        elif message["event"] == "mark":
            self.player.mark(message["mark"]["name"])
        elif message["event"] == "clear":
            self.player.clear()
        for predicate, d in list(self.factory.waiters):
            if predicate(self.received):
                self.factory.waiters.remove((predicate, d))
                d.callback(self.received)

    def _echo(self, name: str) -> None:
        self.send({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}})

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if hasattr(self, "player"):
            self.player.stop()
        if not self.factory.closed.called:
            self.factory.closed.callback(code)


class ScriptedTwilioFactory(WebSocketClientFactory):
    protocol = ScriptedTwilio

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, headers=headers or {})
        self.opened: Deferred[ScriptedTwilio] = Deferred()
        self.closed: Deferred[int | None] = Deferred()
        self.waiters: list[tuple[Any, Deferred[Any]]] = []

    def wait_for(self, predicate: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiters.append((predicate, d))
        return d


def media_count(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m["event"] == "media")


class TwilioLoopbackTests(LoopbackService, TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        address, metrics_address = yield self.start_service(MediaProxyService(config(), reactor, tune_gc=False))
        self.url = f"ws://127.0.0.1:{address.port}/twilio"
        self.metrics_url = f"http://127.0.0.1:{metrics_address.port}"

    def tearDown(self) -> Any:
        return self.stop_service()

    @inlineCallbacks
    def test_parrot_call_with_barge_in(self) -> Any:
        factory = ScriptedTwilioFactory(self.url)
        connectWS(factory)
        client = yield factory.opened
        # An utterance of 600 ms, then quiet: the parrot replies with it.
        client.send_audio([SPEECH] * 30 + [QUIET] * 15)
        received = yield factory.wait_for(lambda msgs: media_count(msgs) >= 10)
        payloads = [base64.b64decode(m["media"]["payload"]) for m in received if m["event"] == "media"]
        self.assertTrue(all(len(p) == 160 for p in payloads))
        self.assertIn(SPEECH, payloads)  # our words, parroted back
        self.assertTrue(any(m["event"] == "mark" for m in received))
        # Talk over it: barge-in. The proxy must send clear at once.
        barge_in_at = len(client.received)
        client.send_audio([SPEECH] * 4)
        yield factory.wait_for(lambda msgs: any(m["event"] == "clear" for m in msgs[barge_in_at:]))
        self.assertEqual(self.metric("mediaproxy_bargein_seconds_count"), 1)
        # After the clear, no frame of the interrupted reply may follow (the new utterance's
        # reply comes only after the caller pauses, which this caller never does).
        clear_at = max(i for i, m in enumerate(client.received) if m["event"] == "clear")
        client.send({"event": "stop", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}})
        yield factory.closed
        self.assertEqual([m for m in client.received[clear_at + 1:] if m["event"] == "media"], [])
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_active", {"platform": "twilio"}), 0)
        self.assertEqual(self.metric("mediaproxy_frames_total", {"platform": "twilio", "direction": "in"}), 49)
        self.assertGreaterEqual(self.metric("mediaproxy_frames_total", {"platform": "twilio", "direction": "out"}), 10)
        response = yield Agent(reactor).request(b"GET", f"{self.metrics_url}/metrics".encode())
        body = yield readBody(response)
        self.assertIn(b'mediaproxy_calls_total{outcome="completed",platform="twilio"} 1.0', body)
        self.assertIn(b"mediaproxy_bargein_seconds_count 1.0", body)
        self.assertIn(b'mediaproxy_backend_connect_seconds_count{backend="echo"} 1.0', body)
        self.assertRegex(body, rb"mediaproxy_playout_late_seconds_count [1-9]")
        self.assertRegex(body, rb"mediaproxy_playout_buffer_seconds_count [1-9]")
        for family in (b"calls_active", b"frames_dropped_total", b"playout_underruns_total",
                       b"backend_reconnects_total", b"flow_pauses_total", b"protocol_errors_total"):
            self.assertIn(b"# TYPE mediaproxy_" + family.replace(b"_total", b""), body)

    @inlineCallbacks
    def test_unknown_event_mid_call_is_counted_and_the_call_goes_on(self) -> Any:
        """Twilio adds events: one we do not know is counted, and the call carries on."""
        factory = ScriptedTwilioFactory(self.url)
        connectWS(factory)
        client = yield factory.opened
        client.send_audio([SPEECH] * 10)
        client.send({"event": "streamPaused", "streamSid": "MZ1", "sequenceNumber": "12"})
        client.send({"event": "future", "streamSid": "MZ1", "future": {"x": 1}})
        client.send_audio([SPEECH] * 20 + [QUIET] * 15)
        received = yield factory.wait_for(lambda msgs: media_count(msgs) >= 10)
        payloads = [base64.b64decode(m["media"]["payload"]) for m in received if m["event"] == "media"]
        self.assertIn(SPEECH, payloads)  # audio still flows both ways
        self.assertEqual(self.metric("mediaproxy_protocol_errors_total",
                                     {"platform": "twilio", "kind": "unknown_event"}), 2)
        self.assertEqual(self.metric("mediaproxy_calls_active", {"platform": "twilio"}), 1)
        client.send({"event": "stop", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}})
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "protocol_error"}), 0)

    @inlineCallbacks
    def test_bad_input_closes_only_that_call(self) -> Any:
        good = ScriptedTwilioFactory(self.url)
        bad = ScriptedTwilioFactory(self.url)
        connectWS(good)
        connectWS(bad)
        good_client = yield good.opened
        bad_client = yield bad.opened
        bad_client.sendMessage(b"{not json", False)
        yield bad.closed
        self.assertEqual(self.metric("mediaproxy_protocol_errors_total", {"platform": "twilio", "kind": "bad_json"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "protocol_error"}), 1)
        # The other call is unharmed: it still gets its words back.
        good_client.send_audio([SPEECH] * 20 + [QUIET] * 15)
        yield good.wait_for(lambda msgs: media_count(msgs) >= 5)
        good_client.sendClose()
        yield good.closed

    @inlineCallbacks
    def test_invalid_utf8_is_a_protocol_error(self) -> Any:
        factory = ScriptedTwilioFactory(self.url)
        connectWS(factory)
        client = yield factory.opened
        client.sendMessage(b'{"event":"media","x":"\xff\xfe"}', False)
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_protocol_errors_total", {"platform": "twilio", "kind": "bad_utf8"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "protocol_error"}), 1)

    @inlineCallbacks
    def test_unknown_path_refused(self) -> Any:
        factory = ScriptedTwilioFactory(self.url.replace("/twilio", "/nope"))
        connectWS(factory)
        yield factory.closed
        self.assertFalse(factory.opened.called)

    @inlineCallbacks
    def test_health_and_ready(self) -> Any:
        agent = Agent(reactor)
        for path in (b"/health", b"/ready"):
            response = yield agent.request(b"GET", self.metrics_url.encode() + path)
            self.assertEqual(response.code, 200)
            yield readBody(response)
        self.service.registry.draining = True
        response = yield agent.request(b"GET", self.metrics_url.encode() + b"/ready")
        self.assertEqual(response.code, 503)
        yield readBody(response)
        self.service.registry.draining = False


class TwilioSignatureLoopbackTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_bad_signature_refuses_upgrade(self) -> Any:
        cfg = parse_config(
            "test.ini",
            {
                "proxy": {"listen": "tcp:0:interface=127.0.0.1", "public_url": "wss://proxy.example.com",
                          "drain_seconds": "1"},
                "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
                "platform:twilio": {"path": "/twilio", "backend": "echo", "auth_token": "secret"},
                "backend:echo": {"type": "echo"},
            },
            {},
        )
        service = MediaProxyService(cfg, reactor, tune_gc=False)
        service.startService()
        self.addCleanup(cancel_autobahn_timer_buckets)
        self.addCleanup(service.stopService)
        address = service.platform_listener.address()
        factory = ScriptedTwilioFactory(f"ws://127.0.0.1:{address.port}/twilio",
                                        headers={"X-Twilio-Signature": "AAAA"})
        connectWS(factory)
        yield factory.closed
        self.assertFalse(factory.opened.called)
        value = service.metrics.registry.get_sample_value(
            "mediaproxy_protocol_errors_total", {"platform": "twilio", "kind": "auth"})
        self.assertEqual(value, 1)
