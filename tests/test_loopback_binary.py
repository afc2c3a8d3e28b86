"""Loopback integration of Vonage and jambonz: the real service on 127.0.0.1:0, a scripted vendor
client sending binary L16 frames, and the echo backend (parrot: speak, hear it back byte-exact,
barge in → the platform's clear) or the fake Realtime server (L16 16 kHz resampled to and from
the model's 24 kHz), DTMF reaching the backend. jambonz's client insists on its subprotocol.
Nothing here waits on a timer: every step waits for the event it needs."""

from __future__ import annotations

import json
from array import array
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.backends.openai_session import RealtimeClientProtocol
from mediaproxy.service import MediaProxyService
from mediaproxy.testing.fake_realtime import FakeRealtimeServer
from tests.binary_dialects import JAMBONZ_16K, VONAGE_16K, BinaryDialect
from tests.support import ConditionWaiting, LoopbackService, cancel_autobahn_timer_buckets
from tests.test_loopback_cousins import API_KEY, config


def speech(dialect: BinaryDialect) -> bytes:
    return array("h", [12000, -12000] * (dialect.fmt.rate_hz // 100)).tobytes()


def quiet(dialect: BinaryDialect) -> bytes:
    return dialect.fmt.silence(dialect.fmt.bytes_for_ms(20))


class BinaryVendorClient(WebSocketClientProtocol):
    factory: BinaryVendorFactory

    def onConnect(self, response: Any) -> None:
        self.factory.subprotocol = response.protocol

    def onOpen(self) -> None:
        self.received: list[Any] = []
        self.send(self.factory.dialect.opening())
        self.factory.opened.callback(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendMessage(json.dumps(message).encode(), False)

    def send_audio(self, frames: list[bytes]) -> None:
        for f in frames:
            if self.state == WebSocketClientProtocol.STATE_OPEN:
                self.sendMessage(f, True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        d = self.factory.dialect
        if isBinary:
            self.received.append(payload)
        else:
            message = json.loads(payload)
            self.received.append(message)
            if d.kind_of(message) == "mark":
                self.send(d.mark_echo(d.mark_name(message)))
        self.factory.poke()

    def media(self) -> list[bytes]:
        return [m for m in self.received if isinstance(m, bytes)]

    def controls(self, since: int = 0) -> list[str]:
        return [self.factory.dialect.kind_of(m) for m in self.received[since:] if not isinstance(m, bytes)]

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.closed.called:
            self.factory.closed.callback(code)
        self.factory.poke()


class BinaryVendorFactory(ConditionWaiting, WebSocketClientFactory):
    protocol = BinaryVendorClient

    def __init__(self, url: str, dialect: BinaryDialect) -> None:
        protocols = ["audio.jambonz.org"] if dialect.name == "jambonz" else None
        super().__init__(url, protocols=protocols)
        self.dialect = dialect
        self.subprotocol: str | None = None
        self.opened: Deferred[BinaryVendorClient] = Deferred()
        self.closed: Deferred[int | None] = Deferred()


class EchoContract(LoopbackService):
    dialect: BinaryDialect
    timeout = 30
    assertEqual: Any
    assertIn: Any
    assertTrue: Any

    def setUp(self) -> Any:
        service = MediaProxyService(config(self.dialect, {"type": "echo", "silence_ms": "200"}),  # type: ignore[arg-type]
                                    reactor, tune_gc=False)
        d = self.start_service(service)
        d.addCallback(lambda addresses: setattr(self, "url", f"ws://127.0.0.1:{addresses[0].port}/{self.dialect.name}"))
        return d

    def tearDown(self) -> Any:
        return self.stop_service()

    @inlineCallbacks
    def test_parrot_call_with_barge_in(self) -> Any:
        d = self.dialect
        factory = BinaryVendorFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        self.assertEqual(factory.subprotocol, "audio.jambonz.org" if d.name == "jambonz" else None)
        client.send_audio([speech(d)] * 30 + [quiet(d)] * 15)
        yield factory.when(lambda: len(client.media()) >= 3)
        self.assertIn(speech(d), b"".join(client.media()))  # our words, parroted back byte-exact
        self.assertEqual({len(m) for m in client.media()}, {d.fmt.bytes_for_ms(20)})
        seen = len(client.received)
        client.send_audio([speech(d)] * 4)  # talk over it
        yield factory.when(lambda: "clear" in client.controls(seen))
        client.send(d.dtmf("4"))
        client.send({"event": "somethingNew", "type": "somethingNew"})
        client.send_audio([b""])
        client.sendClose()
        yield factory.closed
        label = {"platform": d.name}
        self.assertEqual(self.metric("bargein_seconds_count"), 1)
        self.assertEqual(self.metric("protocol_errors_total", label, kind="unknown_event"), 1)
        self.assertEqual(self.metric("protocol_errors_total", label, kind="empty_frame"), 1)
        self.assertEqual(self.metric("calls_total", label, outcome="disconnected"), 1)
        self.assertEqual(self.metric("frames_total", label, direction="in"), 49)


class VonageEchoTests(EchoContract, TestCase):
    dialect = VONAGE_16K


class JambonzEchoTests(EchoContract, TestCase):
    dialect = JAMBONZ_16K


class RealtimeContract:
    dialect: BinaryDialect
    timeout = 30
    assertEqual: Any
    assertTrue: Any
    patch: Any

    def setUp(self) -> None:
        self.backend_websockets: list[RealtimeClientProtocol] = []
        opened = RealtimeClientProtocol.onOpen

        def record(proto: RealtimeClientProtocol) -> None:
            self.backend_websockets.append(proto)
            opened(proto)

        self.patch(RealtimeClientProtocol, "onOpen", record)
        self.fake = FakeRealtimeServer(reactor, api_key=API_KEY)
        url = self.fake.listen().removesuffix("/v1/realtime") + "/v1/realtime"
        backend = {"type": "openai-realtime", "url": url, "api_key": API_KEY, "transcription_model": "",
                   "silence_duration_ms": "200", "reconnect_backoff_ms": "0", "reconnect_max_backoff_ms": "0",
                   "keepalive_seconds": "0"}
        self.service = MediaProxyService(config(self.dialect, backend), reactor, tune_gc=False)  # type: ignore[arg-type]
        self.service.startService()
        self.url = f"ws://127.0.0.1:{self.service.platform_listener.address().port}/{self.dialect.name}"

    @inlineCallbacks
    def tearDown(self) -> Any:
        yield self.service.stopService()
        yield DeferredList([proto.is_closed for proto in self.backend_websockets])
        yield self.fake.stop()
        cancel_autobahn_timer_buckets()

    @inlineCallbacks
    def test_call_through_the_model(self) -> Any:
        d = self.dialect
        factory = BinaryVendorFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        yield self.fake.when(lambda: bool(self.fake.connections)
                             and any(e.get("type") == "session.update" for e in self.fake.connection(0).received))
        conn = self.fake.connection(0)
        update = next(e for e in conn.received if e.get("type") == "session.update")["session"]
        self.assertEqual(update["audio"]["input"]["format"]["type"], "audio/pcm")
        frames = [quiet(d)] * 5 + [speech(d)] * 10 + [quiet(d)] * 12
        client.send_audio(frames)
        yield factory.when(lambda: len(client.media()) >= 5)
        # 16 kHz up to 24 kHz: one and a half times the bytes (less the resampler's latency).
        yield self.fake.when(lambda: len(conn.input_audio) >= 3 * len(b"".join(frames)) // 2 - 960)
        self.assertEqual({len(p) for p in client.media()}, {d.fmt.bytes_for_ms(20)})
        client.send(d.dtmf("5"))
        client.send(d.dtmf("#"))
        yield self.fake.when(lambda: any("5" in json.dumps(e) for e in conn.received
                                         if e.get("type") == "conversation.item.create"))
        client.sendClose()
        yield factory.closed


class VonageRealtimeTests(RealtimeContract, TestCase):
    dialect = VONAGE_16K


class JambonzRealtimeTests(RealtimeContract, TestCase):
    dialect = JAMBONZ_16K
