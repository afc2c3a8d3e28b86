"""Loopback integration of the WebSocket platform: the real service on 127.0.0.1:0, a Python
client speaking our protocol (binary L16 or Opus, JSON control), and the echo backend (parrot:
speak, hear exactly those bytes back, barge in → ``clear``; DTMF reaching the backend; pause and
resume). Nothing here waits on a timer: every step waits for the event it needs."""

from __future__ import annotations

import json
from array import array
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from mediaproxy.audio.opus import OpusEncoder, OpusUnavailableError
from mediaproxy.backends import echo
from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from tests.support import ConditionWaiting, LoopbackService

TOKEN = "browser-secret"
RATE = 16000


def speech(seed: int = 0) -> bytes:
    """20 ms of loud L16 16 kHz audio, different per seed (so the echo is checked byte for byte)."""
    return array("h", [(12000 - seed * 7) if i % 2 else -(12000 - seed * 5) for i in range(320)]).tobytes()


def quiet() -> bytes:
    return bytes(640)


class Client(WebSocketClientProtocol):
    """Sends ``start`` on open; records binary audio and text messages; echoes marks at once."""

    factory: ClientFactory

    def onOpen(self) -> None:
        self.audio: list[bytes] = []
        self.messages: list[dict[str, Any]] = []
        self.send({"type": "start", "call_id": "py-1", "format": self.factory.format,
                   "metadata": {"client": "python"}})
        self.factory.opened.callback(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendMessage(json.dumps(message).encode(), False)

    def send_audio(self, frames: list[bytes]) -> None:
        for frame in frames:
            if self.state == WebSocketClientProtocol.STATE_OPEN:
                self.sendMessage(frame, True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.audio.append(payload)
        else:
            message = json.loads(payload)
            self.messages.append(message)
            if message["type"] == "mark" and self.factory.echo_marks:
                self.send({"type": "mark", "name": message["name"]})
        self.factory.poke()

    def types(self, since: int = 0) -> list[str]:
        return [m["type"] for m in self.messages[since:]]

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.closed.called:
            self.factory.closed.callback(code)
        self.factory.poke()


class ClientFactory(ConditionWaiting, WebSocketClientFactory):
    protocol = Client

    def __init__(self, url: str, fmt: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, headers=headers or {})
        self.format = fmt or {"encoding": "l16", "rate_hz": RATE}
        self.echo_marks = True
        self.opened: Deferred[Client] = Deferred()
        self.closed: Deferred[int | None] = Deferred()


def config(encodings: str = "l16") -> Any:
    return parse_config("test.ini", {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "platform:browser": {"type": "websocket", "path": "/browser", "backend": "bot", "token": TOKEN,
                             "encodings": encodings},
        "backend:bot": {"type": "echo", "silence_ms": "200"},
    }, {})


class ServiceFixture(LoopbackService):
    """The real service with ``[platform:browser] type = websocket`` before an echo parrot."""

    timeout = 30
    encodings = "l16"

    def setUp(self) -> Any:
        d = self.start_service(MediaProxyService(config(self.encodings), reactor, tune_gc=False))
        d.addCallback(lambda addresses: setattr(self, "url", f"ws://127.0.0.1:{addresses[0].port}/browser"))
        return d

    def tearDown(self) -> Any:
        return self.stop_service()

    def connect(self, query: str = f"?token={TOKEN}", fmt: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> ClientFactory:
        factory = ClientFactory(self.url + query, fmt, headers)
        connectWS(factory)
        return factory

    def wait_until(self, condition: Any) -> Deferred[None]:
        """Fires once ``condition()`` holds, checked on every reactor turn (no time is waited:
        the proxy's state changes only as it handles the client's frames)."""
        d: Deferred[None] = Deferred()

        def check() -> None:
            if condition():
                d.callback(None)
            else:
                reactor.callLater(0, check)

        check()
        return d

    def wait_metric_frames(self, n: int) -> Deferred[None]:
        """Fires once the proxy has counted ``n`` caller frames."""
        return self.wait_until(lambda: self.metric("frames_total", {"platform": "browser"}, direction="in") >= n)


class EchoTests(ServiceFixture, TestCase):
    @inlineCallbacks
    def test_parrot_call_with_barge_in(self) -> Any:
        factory = self.connect()
        client = yield factory.opened
        words = [speech(i) for i in range(30)]
        client.send_audio(words + [quiet()] * 15)
        yield factory.when(lambda: words[-1] in b"".join(client.audio))
        heard = b"".join(client.audio)
        self.assertIn(b"".join(words), heard)  # our words, parroted back byte for byte
        self.assertTrue(all(len(p) == 640 for p in client.audio))  # 20 ms binary frames
        seen = len(client.messages)
        client.send_audio([speech(1)] * 30 + [quiet()] * 15)  # a second utterance ...
        yield factory.when(lambda: len(client.audio) * 640 > len(heard) + 640 * 3)
        client.send_audio([speech(2)] * 4)  # ... talked over
        yield factory.when(lambda: "clear" in client.types(seen))
        client.send({"type": "dtmf", "digits": "4"})
        client.send({"type": "somethingNew"})
        client.send({"type": "stop"})
        yield factory.closed
        label = {"platform": "browser"}
        # The second utterance may already barge in on the first reply's quiet tail.
        self.assertGreaterEqual(self.metric("bargein_seconds_count"), 1)
        self.assertEqual(self.metric("protocol_errors_total", label, kind="unknown_type"), 1)
        self.assertEqual(self.metric("calls_total", label, outcome="completed"), 1)
        self.assertEqual(self.metric("frames_total", label, direction="in"), 30 + 15 + 30 + 15 + 4)
        self.assertIn("mark", client.types())

    @inlineCallbacks
    def test_dtmf_reaches_the_backend(self) -> Any:
        digits: list[str] = []
        self.patch(echo.EchoSession, "send_dtmf", lambda session, d: digits.append(d))
        factory = self.connect(query="", headers={"Authorization": f"Bearer {TOKEN}"})
        client = yield factory.opened
        client.send({"type": "dtmf", "digits": "12#"})
        client.send_audio([quiet()])
        yield self.wait_metric_frames(1)  # the frame after the digits: they were handled first
        self.assertEqual(digits, ["12"])
        client.sendClose()
        yield factory.closed

    @inlineCallbacks
    def test_pause_and_resume(self) -> Any:
        factory = self.connect()
        client = yield factory.opened
        client.send({"type": "pause"})
        words = [speech(i) for i in range(20)]
        client.send_audio(words + [quiet()] * 15)
        yield self.wait_metric_frames(35)
        yield self.wait_until(lambda: self.service.registry.connected_calls()[0].playout.queued_ms > 0)
        self.assertEqual(client.audio, [])  # held while paused
        self.assertEqual(self.metric("flow_pauses_total", leg="platform"), 1)
        client.send({"type": "resume"})
        yield factory.when(lambda: words[-1] in b"".join(client.audio))
        self.assertIn(b"".join(words), b"".join(client.audio))
        client.sendClose()
        yield factory.closed

    @inlineCallbacks
    def test_malformed_start_gets_an_error_then_close(self) -> Any:
        factory = self.connect(fmt={"encoding": "l16", "rate_hz": 7})
        client = yield factory.opened
        yield factory.closed
        self.assertEqual(client.messages[-1]["type"], "error")
        self.assertEqual(client.messages[-1]["reason"], "unsupported_format")
        self.assertEqual(self.metric("protocol_errors_total", {"platform": "browser"}, kind="unsupported_format"), 1)

    @inlineCallbacks
    def test_bad_token_is_refused(self) -> Any:
        factory = self.connect(query="?token=nope")
        connected: Deferred[None] = Deferred()
        factory.clientConnectionFailed = lambda *a: None  # type: ignore[method-assign]
        factory.opened.addBoth(lambda r: connected.callback(r) if not connected.called else None)
        factory.closed.addBoth(lambda r: connected.callback(r) if not connected.called else None)
        yield connected
        self.assertFalse(factory.opened.called)
        self.assertEqual(self.metric("protocol_errors_total", {"platform": "browser"}, kind="auth"), 1)


class OpusEchoTests(ServiceFixture, TestCase):
    """The same parrot with Opus on the wire: the proxy decodes, the echo backend answers in
    L16 48 kHz, and the proxy encodes it back into 20 ms packets the client can decode."""

    encodings = "l16, opus"

    def setUp(self) -> Any:
        try:
            OpusEncoder(48000, 1, 20)
        except OpusUnavailableError as e:
            raise SkipTest(str(e)) from None
        return super().setUp()

    @inlineCallbacks
    def test_opus_call(self) -> Any:
        from mediaproxy.audio.opus import OpusDecoder

        factory = self.connect(fmt={"encoding": "opus", "rate_hz": 48000})
        client = yield factory.opened
        encoder = OpusEncoder(48000, 1, 20)
        tone = array("h", [12000 if (i // 24) % 2 else -12000 for i in range(960)]).tobytes()
        client.send_audio([encoder.encode(tone) for _ in range(30)] + [encoder.encode(bytes(1920)) for _ in range(15)])
        yield factory.when(lambda: len(client.audio) >= 20)
        decoder = OpusDecoder(48000, 1)
        pcm = b"".join(decoder.decode(p) for p in client.audio)
        self.assertEqual(len(pcm), 1920 * len(client.audio))
        self.assertGreater(max(array("h", pcm)), 4000)  # loud audio came back through both codecs
        client.sendClose()
        yield factory.closed
