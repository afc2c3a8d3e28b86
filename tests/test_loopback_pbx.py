"""Loopback integration of Asterisk ``chan_websocket`` and FreeSWITCH ``mod_audio_stream``: the
real service on 127.0.0.1:0, a scripted PBX client (Asterisk offers the ``media`` subprotocol and
Basic auth, answers ``MARK_MEDIA`` at once; FreeSWITCH sends its metadata then binary L16), and
the echo backend (parrot: speak, hear it back byte-exact, barge in → ``FLUSH_MEDIA`` /
``killAudio``) or the fake Realtime server (Asterisk µ-law passes through untouched; L16 is
resampled to and from the model's 24 kHz), DTMF reaching the backend. Nothing here waits on a
timer: every step waits for the event it needs."""

from __future__ import annotations

import base64
import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.config import parse_config
from tests.pbx_dialects import (
    ASTERISK_SLIN16_JSON,
    ASTERISK_ULAW_JSON,
    ASTERISK_ULAW_PLAIN,
    FREESWITCH_16K,
    AsteriskDialect,
    FreeswitchDialect,
)
from tests.support import (
    ECHO_BACKEND,
    ConditionWaiting,
    EchoBehindPlatform,
    RealtimeBehindPlatform,
    quiet_frame,
    speech_frame,
)

USER, PASSWORD = "ast", "s3cret"
Dialect = AsteriskDialect | FreeswitchDialect


def config(dialect: Dialect, backend: dict[str, str]) -> Any:
    platform = {"path": f"/{dialect.name}", "backend": "bot"}
    if dialect.name == "asterisk":
        platform.update(username=USER, password=PASSWORD)
    else:
        platform.update(sample_rate=str(dialect.fmt.rate_hz), allow_unauthenticated="true")
    return parse_config("test.ini", {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        f"platform:{dialect.name}": platform,
        "backend:bot": backend,
    }, {})


class PbxClient(WebSocketClientProtocol):
    factory: PbxFactory

    def onConnect(self, response: Any) -> None:
        self.factory.subprotocol = response.protocol

    def onOpen(self) -> None:
        self.received: list[Any] = []
        d = self.factory.dialect
        self.send(d.media_start() if isinstance(d, AsteriskDialect) else d.metadata_text())
        self.factory.opened.callback(self)

    def send(self, message: str) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendMessage(message.encode(), False)

    def send_audio(self, frames: list[bytes]) -> None:
        for f in frames:
            if self.state == WebSocketClientProtocol.STATE_OPEN:
                self.sendMessage(f, True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        d = self.factory.dialect
        if isBinary:
            self.received.append(payload)
        elif isinstance(d, AsteriskDialect):
            command, correlation_id = d.command(payload.decode())
            self.received.append(command)
            if command == "MARK_MEDIA":
                self.send(d.mark_echo(correlation_id))
        else:
            text = payload.decode()
            audio = d.audio_of(text)
            self.received.append(audio if audio is not None else json.loads(text)["type"])
        self.factory.poke()

    def media(self) -> list[bytes]:
        return [m for m in self.received if isinstance(m, bytes)]

    def controls(self, since: int = 0) -> list[str]:
        return [m for m in self.received[since:] if isinstance(m, str)]

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.closed.called:
            self.factory.closed.callback(code)
        self.factory.poke()


class PbxFactory(ConditionWaiting, WebSocketClientFactory):
    protocol = PbxClient

    def __init__(self, url: str, dialect: Dialect, password: str = PASSWORD) -> None:
        headers, protocols = {}, None
        if dialect.name == "asterisk":
            headers = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()}
            protocols = ["media"]
        super().__init__(url, headers=headers, protocols=protocols)
        self.dialect = dialect
        self.subprotocol: str | None = None
        self.opened: Deferred[PbxClient] = Deferred()
        self.closed: Deferred[int | None] = Deferred()


def flush_word(dialect: Dialect) -> str:
    return "FLUSH_MEDIA" if dialect.name == "asterisk" else "killAudio"


def dtmf(dialect: Dialect, digit: str) -> str:
    return dialect.dtmf(digit)


def unknown(dialect: Dialect) -> str:
    return dialect.event("SOMETHING_NEW") if isinstance(dialect, AsteriskDialect) else '{"type":"somethingNew"}'


class EchoContract(EchoBehindPlatform):
    dialect: Dialect
    assertEqual: Any
    assertIn: Any
    assertTrue: Any
    failUnlessFailure: Any

    def setUp(self) -> Any:
        return self.start_echo_loopback(config(self.dialect, ECHO_BACKEND), self.dialect.name)

    @inlineCallbacks
    def test_parrot_call_with_barge_in(self) -> Any:
        d = self.dialect
        fmt = d.fmt
        factory = PbxFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        self.assertEqual(factory.subprotocol, "media" if d.name == "asterisk" else None)
        client.send_audio([speech_frame(fmt)] * 30 + [quiet_frame(fmt)] * 15)
        yield factory.when(lambda: len(b"".join(client.media())) >= fmt.bytes_for_ms(300))
        self.assertIn(speech_frame(fmt), b"".join(client.media()))  # our words, parroted back byte-exact
        seen = len(client.received)
        client.send_audio([speech_frame(fmt)] * 4)  # talk over it
        yield factory.when(lambda: flush_word(d) in client.controls(seen))
        client.send(dtmf(d, "4"))
        client.send(unknown(d))
        client.send_audio([b""])
        client.sendClose()
        yield factory.closed
        label = {"platform": d.name}
        self.assertEqual(self.metric("bargein_seconds_count"), 1)
        self.assertEqual(self.metric("protocol_errors_total", label, kind="unknown_event"), 1)
        self.assertEqual(self.metric("protocol_errors_total", label, kind="empty_frame"), 1)
        self.assertEqual(self.metric("calls_total", label, outcome="disconnected"), 1)
        self.assertEqual(self.metric("frames_total", label, direction="in"), 49)


class AsteriskEchoTests(EchoContract, TestCase):
    dialect: Dialect = ASTERISK_SLIN16_JSON

    @inlineCallbacks
    def test_bad_credentials_are_refused(self) -> Any:
        factory = PbxFactory(self.url, self.dialect, password="wrong")
        connectWS(factory)
        code = yield factory.closed
        self.assertTrue(code != 1000)
        self.assertEqual(factory.opened.called, False)
        self.assertEqual(self.metric("protocol_errors_total", {"platform": "asterisk"}, kind="auth"), 1)


class AsteriskUlawPlainEchoTests(EchoContract, TestCase):
    dialect = ASTERISK_ULAW_PLAIN


class FreeswitchEchoTests(EchoContract, TestCase):
    dialect = FREESWITCH_16K


class RealtimeContract(RealtimeBehindPlatform):
    dialect: Dialect
    assertEqual: Any
    assertTrue: Any

    def setUp(self) -> None:
        self.start_realtime_loopback(lambda backend: config(self.dialect, backend), self.dialect.name)

    @inlineCallbacks
    def test_call_through_the_model(self) -> Any:
        d = self.dialect
        fmt = d.fmt
        factory = PbxFactory(self.url, d)
        connectWS(factory)
        client = yield factory.opened
        conn, update = yield self.first_session_update()
        passthrough = fmt.encoding == "pcmu"
        self.assertEqual(update["audio"]["input"]["format"]["type"], "audio/pcmu" if passthrough else "audio/pcm")
        frames = [quiet_frame(fmt)] * 5 + [speech_frame(fmt)] * 10 + [quiet_frame(fmt)] * 12
        client.send_audio(frames)
        yield factory.when(lambda: len(b"".join(client.media())) >= fmt.bytes_for_ms(100))
        sent = b"".join(frames)
        if passthrough:
            # µ-law end to end: the model hears exactly what the caller said.
            yield self.fake.when(lambda: len(conn.input_audio) >= len(sent))
            self.assertEqual(bytes(conn.input_audio[:len(sent)]), sent)
        else:
            # L16 up to 24 kHz (less the resampler's latency).
            ratio = 24000 / fmt.rate_hz
            yield self.fake.when(lambda: len(conn.input_audio) >= int(ratio * len(sent)) - 960)
        if d.name == "asterisk":
            self.assertEqual({len(p) for p in client.media()}, {fmt.bytes_for_ms(20)})
        client.send(dtmf(d, "5"))
        client.send(dtmf(d, "#"))
        yield self.fake.when(lambda: any("5" in json.dumps(e) for e in conn.received
                                         if e.get("type") == "conversation.item.create"))
        client.sendClose()
        yield factory.closed


class AsteriskUlawRealtimeTests(RealtimeContract, TestCase):
    dialect: Dialect = ASTERISK_ULAW_JSON


class AsteriskSlin16RealtimeTests(RealtimeContract, TestCase):
    dialect = ASTERISK_SLIN16_JSON


class FreeswitchRealtimeTests(RealtimeContract, TestCase):
    dialect = FREESWITCH_16K
