"""Loopback integration of Telnyx, Plivo and Exotel: the real service on 127.0.0.1:0, a scripted
vendor client per platform, and the echo backend (parrot: speak, hear it back, barge in → the
platform's clear) or the fake Realtime server (µ-law passes through untouched; Exotel's L16 is
transcoded to the model's 24 kHz PCM), DTMF reaching the backend. Nothing here waits on a timer:
every step waits for the event it needs."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.config import parse_config
from tests.cousins import EXOTEL, PLIVO, TELNYX, Dialect
from tests.support import (
    ECHO_BACKEND,
    ConditionWaiting,
    EchoBehindPlatform,
    RealtimeBehindPlatform,
    quiet_frame,
    speech_frame,
)


class VendorClient(WebSocketClientProtocol):
    """Speaks the dialect: its opening, media frames, DTMF; echoes every mark at once."""

    factory: VendorFactory

    def onOpen(self) -> None:
        self.received: list[dict[str, Any]] = []
        for message in self.factory.dialect.opening():
            self.send(message)
        self.factory.opened.callback(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendMessage(json.dumps(message).encode(), False)

    def send_audio(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.send(self.factory.dialect.media(frame))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.received.append(message)
        d = self.factory.dialect
        if message["event"] == d.mark_event:
            self.send(d.mark_echo(d.mark_name(message)))
        self.factory.poke()

    def media(self) -> list[bytes]:
        d = self.factory.dialect
        return [d.payload_of(m) for m in self.received if m["event"] == d.media_event]

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.closed.called:
            self.factory.closed.callback(code)
        self.factory.poke()


class VendorFactory(ConditionWaiting, WebSocketClientFactory):
    protocol = VendorClient

    def __init__(self, url: str, dialect: Dialect, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, headers=headers or {})
        self.dialect = dialect
        self.opened: Deferred[VendorClient] = Deferred()
        self.closed: Deferred[int | None] = Deferred()


def config(dialect: Dialect, backend: dict[str, str]) -> Any:
    return parse_config("test.ini", {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        f"platform:{dialect.name}": {"path": f"/{dialect.name}", "backend": "bot"},
        "backend:bot": backend,
    }, {})


class EchoContract(EchoBehindPlatform):
    dialect: Dialect

    def setUp(self) -> Any:
        return self.start_echo_loopback(config(self.dialect, ECHO_BACKEND), self.dialect.name)

    @inlineCallbacks
    def test_parrot_call_with_barge_in(self) -> Any:
        d = self.dialect
        factory = VendorFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        client.send_audio([speech_frame(d.fmt)] * 30 + [quiet_frame(d.fmt)] * 15)
        yield factory.when(lambda: len(client.media()) >= 3)
        self.assertIn(speech_frame(d.fmt), b"".join(client.media()))  # our words, parroted back
        seen = len(client.received)
        client.send_audio([speech_frame(d.fmt)] * 4)  # talk over it
        yield factory.when(lambda: any(m["event"] == d.flush_event for m in client.received[seen:]))
        client.send(d.dtmf("4"))
        client.send({"event": "somethingNew"})
        stop = d.stop()
        if stop is not None:
            client.send(stop)
        else:
            client.sendClose()
        yield factory.closed
        label = {"platform": d.name}
        self.assertEqual(self.metric("bargein_seconds_count"), 1)
        self.assertEqual(self.metric("protocol_errors_total", label, kind="unknown_event"), 1)
        outcome = "completed" if stop is not None else "disconnected"
        self.assertEqual(self.metric("calls_total", label, outcome=outcome), 1)
        self.assertEqual(self.metric("frames_total", label, direction="in"), 49)


class TelnyxEchoTests(EchoContract, TestCase):
    dialect = TELNYX


class PlivoEchoTests(EchoContract, TestCase):
    dialect = PLIVO


class ExotelEchoTests(EchoContract, TestCase):
    dialect = EXOTEL


class RealtimeContract(RealtimeBehindPlatform):
    """The fake Realtime server behind the platform: what format the model is given, what reaches
    it, and DTMF."""

    dialect: Dialect
    model_format: str
    assertEqual: Any
    assertTrue: Any

    def setUp(self) -> None:
        self.start_realtime_loopback(lambda backend: config(self.dialect, backend), self.dialect.name)

    @inlineCallbacks
    def test_call_through_the_model(self) -> Any:
        d = self.dialect
        factory = VendorFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        conn, update = yield self.first_session_update()
        self.assertEqual(update["audio"]["input"]["format"]["type"], self.model_format)
        self.assertEqual(update["audio"]["output"]["format"]["type"], self.model_format)
        frames = [quiet_frame(d.fmt)] * 5 + [speech_frame(d.fmt)] * 10 + [quiet_frame(d.fmt)] * 12
        client.send_audio(frames)
        yield factory.when(lambda: len(client.media()) >= 5)
        if self.model_format == "audio/pcmu":  # pass-through: every caller byte reaches the model
            yield self.fake.when(lambda: len(conn.input_audio) >= len(b"".join(frames)))
            self.assertEqual(bytes(conn.input_audio), b"".join(frames))
        else:  # transcoded up to 24 kHz: three times the samples
            yield self.fake.when(lambda: len(conn.input_audio) >= 3 * len(b"".join(frames)) - 960)
        self.assertTrue(all(len(p) % d.fmt.frame_bytes == 0 for p in client.media()))
        client.send(d.dtmf("5#"))
        yield self.fake.when(lambda: any("5" in json.dumps(e) for e in conn.received
                                         if e.get("type") == "conversation.item.create"))
        client.sendClose()
        yield factory.closed


class TelnyxRealtimeTests(RealtimeContract, TestCase):
    dialect = TELNYX
    model_format = "audio/pcmu"


class PlivoRealtimeTests(RealtimeContract, TestCase):
    dialect = PLIVO
    model_format = "audio/pcmu"


class ExotelRealtimeTests(RealtimeContract, TestCase):
    dialect = EXOTEL
    model_format = "audio/pcm"


