"""Loopback integration of Vonage and jambonz: the real service on 127.0.0.1:0, a scripted vendor
client sending binary L16 frames, and the echo backend (parrot: speak, hear it back byte-exact,
barge in → the platform's clear) or the fake Realtime server (L16 16 kHz resampled to and from
the model's 24 kHz), DTMF reaching the backend. jambonz's client insists on its subprotocol.
Nothing here waits on a timer: every step waits for the event it needs."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.binary_dialects import JAMBONZ_16K, VONAGE_16K, BinaryDialect
from tests.support import (
    ECHO_BACKEND,
    ConditionWaiting,
    EchoBehindPlatform,
    RealtimeBehindPlatform,
    quiet_frame,
    speech_frame,
)
from tests.test_loopback_cousins import config


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


class EchoContract(EchoBehindPlatform):
    dialect: BinaryDialect
    assertEqual: Any
    assertIn: Any
    assertTrue: Any

    def setUp(self) -> Any:
        return self.start_echo_loopback(config(self.dialect, ECHO_BACKEND), self.dialect.name)  # type: ignore[arg-type]

    @inlineCallbacks
    def test_parrot_call_with_barge_in(self) -> Any:
        d = self.dialect
        factory = BinaryVendorFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        self.assertEqual(factory.subprotocol, "audio.jambonz.org" if d.name == "jambonz" else None)
        client.send_audio([speech_frame(d.fmt)] * 30 + [quiet_frame(d.fmt)] * 15)
        yield factory.when(lambda: len(client.media()) >= 3)
        self.assertIn(speech_frame(d.fmt), b"".join(client.media()))  # our words, parroted back byte-exact
        self.assertEqual({len(m) for m in client.media()}, {d.fmt.bytes_for_ms(20)})
        seen = len(client.received)
        client.send_audio([speech_frame(d.fmt)] * 4)  # talk over it
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


class RealtimeContract(RealtimeBehindPlatform):
    dialect: BinaryDialect
    assertEqual: Any
    assertTrue: Any

    def setUp(self) -> None:
        self.start_realtime_loopback(lambda backend: config(self.dialect, backend), self.dialect.name)  # type: ignore[arg-type]

    @inlineCallbacks
    def test_call_through_the_model(self) -> Any:
        d = self.dialect
        factory = BinaryVendorFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        conn, update = yield self.first_session_update()
        self.assertEqual(update["audio"]["input"]["format"]["type"], "audio/pcm")
        frames = [quiet_frame(d.fmt)] * 5 + [speech_frame(d.fmt)] * 10 + [quiet_frame(d.fmt)] * 12
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
