"""Fuzzing the running service from the backend side: a hostile Gemini Live server.

The service answers ``/gemini`` with a Gemini backend pointed at a stand-in server that, on each
connection, completes the setup and then sends a generated script of hostile messages (the
generators of :mod:`tests.test_fuzz_gemini`: valid messages in any order, malformed ones, random
mutations, binary frames, ``goAway`` among them). Short Twilio calls come and go on that path
while one healthy Twilio call on the echo backend (``/twilio``) streams; the healthy call must
lose no frame, every hostile call must end when its caller hangs up (nothing raised: trial fails
a test on any logged error), the service must count what it could not use as
``backend_errors_total{backend, code}`` with bounded codes, and nothing may stay registered.

Nothing here waits on a timer: every step waits for the event it needs. The scripts are seeded
per connection, so the run is the same every time.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.backends.gemini_dialect import ERROR_CODE_LABELS
from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from tests.strategies import binary_frame, mutate
from tests.support import LoopbackService
from tests.test_fuzz_gemini import gemini_targeted, gemini_valid
from tests.test_fuzz_loopback import HEALTHY_FRAMES, HealthyFactory, healthy_frame
from tests.test_fuzz_platforms import twilio_start

HOSTILE_CALLS = 48
AT_ONCE = 6
HOSTILE_SCRIPTS = 64
"""Connections that get a hostile script; later ones (a call's redials) only complete the setup,
so every call settles."""


def script(seed: int) -> list[str | bytes]:
    """One connection's hostile messages."""
    rng = random.Random(seed)
    out: list[str | bytes] = []
    for _ in range(rng.randint(3, 14)):
        roll = rng.random()
        if roll < 0.45:
            out.append(json.dumps(gemini_valid(rng)))
        elif roll < 0.7:
            out.append(gemini_targeted(rng)[0])
        elif roll < 0.9:
            out.append(mutate(gemini_valid(rng), rng))
        else:
            out.append(binary_frame(rng))
    return out


class HostileLive(WebSocketServerProtocol):
    """Answers ``setup`` with ``setupComplete``, then sends its script (once per connection)."""

    factory: HostileLiveFactory

    def onOpen(self) -> None:
        self.factory.opened.append(self)
        self.factory.connections += 1
        self.index = self.factory.connections

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not payload.startswith(b'{"setup"'):
            return
        self.sendMessage(b'{"setupComplete":{}}', False)
        if self.index > HOSTILE_SCRIPTS:
            return
        for message in script(self.index):
            if isinstance(message, bytes):
                self.sendMessage(message, True)
            else:
                # A lone surrogate goes out as the invalid bytes it means (a text frame that is
                # not UTF-8, which the client must survive too).
                self.sendMessage(message.encode("utf-8", "surrogatepass"), False)
        self.factory.scripts_sent += 1
        self.factory.poke()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.poke()


class HostileLiveFactory(WebSocketServerFactory):
    protocol = HostileLive

    def __init__(self) -> None:
        super().__init__("ws://127.0.0.1")
        self.connections = self.scripts_sent = 0
        self.opened: list[HostileLive] = []
        self.waiters: list[tuple[Any, Deferred[None]]] = []

    def when(self, condition: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiters.append((condition, d))
        self.poke()
        return d

    def poke(self) -> None:
        for condition, d in list(self.waiters):
            if condition():
                self.waiters.remove((condition, d))
                d.callback(None)


class ShortCall(WebSocketClientProtocol):
    """A Twilio call that starts, sends a little audio, and hangs up once told to."""

    factory: ShortCallFactory

    def onOpen(self) -> None:
        self.sendMessage(json.dumps(twilio_start(random.Random(1)) | {"streamSid": "MZ2"}).encode(), False)
        payload = base64.b64encode(healthy_frame(0)).decode()
        for _ in range(5):
            self.sendMessage(json.dumps({"event": "media", "streamSid": "MZ2",
                                         "media": {"track": "inbound", "payload": payload}}).encode(), False)
        self.factory.opened.callback(self)

    def hang_up(self) -> None:
        self.sendMessage(b'{"event":"stop","streamSid":"MZ2"}', False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback(code)


class ShortCallFactory(WebSocketClientFactory):
    protocol = ShortCall

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.opened: Deferred[ShortCall] = Deferred()
        self.closed: Deferred[int | None] = Deferred()


class HostileGeminiLoopbackTests(LoopbackService, TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.live = HostileLiveFactory()
        self.live_port = reactor.listenTCP(0, self.live, interface="127.0.0.1")
        config = parse_config("test.ini", {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": "echo"},
            "platform:gemini": {"type": "twilio", "path": "/gemini", "backend": "gemini"},
            "backend:echo": {"type": "echo", "mode": "stream"},
            "backend:gemini": {"type": "gemini", "url": f"ws://127.0.0.1:{self.live_port.getHost().port}/ws/live",
                               "api_key": "k", "greeting": "Hello!", "stall_seconds": "0",
                               "keepalive_seconds": "0", "reconnect_backoff_ms": "0",
                               "reconnect_max_backoff_ms": "0"},
        }, {})
        address, _ = yield self.start_service(MediaProxyService(config, reactor, tune_gc=False))
        self.base = f"ws://127.0.0.1:{address.port}"

    @inlineCallbacks
    def tearDown(self) -> Any:
        yield self.stop_service()
        # Every connection the proxy opened, it closed (some redials never got as far as open).
        yield self.live.when(lambda: all(p.state == WebSocketServerProtocol.STATE_CLOSED for p in self.live.opened))
        yield self.live_port.stopListening()

    @inlineCallbacks
    def hostile_call(self, index: int) -> Any:
        factory = ShortCallFactory(self.base + "/gemini")
        connectWS(factory)
        client = yield factory.opened
        yield self.live.when(lambda: self.live.scripts_sent >= min(index + 1, HOSTILE_SCRIPTS))
        if not factory.closed.called:  # the hostile server may have called end_call
            client.hang_up()
        code = yield factory.closed
        return code

    @inlineCallbacks
    def test_healthy_call_loses_nothing_while_a_hostile_backend_talks_to_other_calls(self) -> Any:
        """Every hostile call ends cleanly when its caller hangs up, whatever its backend sent;
        what could not be used is counted under bounded codes; the healthy call on the same
        service gets back every frame it sent, byte for byte."""
        healthy = HealthyFactory(self.base + "/twilio")
        connectWS(healthy)
        client = yield healthy.opened
        sent = 0
        per_batch = -(-HEALTHY_FRAMES // -(-HOSTILE_CALLS // AT_ONCE))
        for start in range(0, HOSTILE_CALLS, AT_ONCE):
            batch = [self.hostile_call(i) for i in range(start, min(start + AT_ONCE, HOSTILE_CALLS))]
            for _ in range(min(per_batch, HEALTHY_FRAMES - sent)):
                client.send({"event": "media", "streamSid": "MZ1",
                             "media": {"track": "inbound", "payload": base64.b64encode(healthy_frame(sent)).decode()}})
                sent += 1
            codes = yield gatherResults(batch)
            self.assertEqual(set(codes), {1000})
        self.assertEqual(sent, HEALTHY_FRAMES)
        yield healthy.all_back
        self.assertEqual(b"".join(client.payloads), b"".join(healthy_frame(i) for i in range(HEALTHY_FRAMES)))
        errors: dict[str, float] = {}
        for family in self.service.metrics.registry.collect():
            if family.name == "mediaproxy_backend_errors":
                for sample in family.samples:
                    if sample.name.endswith("_total") and sample.labels["backend"] == "gemini":
                        errors[sample.labels["code"]] = errors.get(sample.labels["code"], 0) + sample.value
        self.assertGreater(errors.get("malformed_event", 0), HOSTILE_CALLS)
        self.assertGreater(errors.get("unknown_event", 0), 0)
        self.assertLessEqual(set(errors), ERROR_CODE_LABELS | {"other"})
        ended = {outcome: self.metric("calls_total", platform="gemini", outcome=outcome)
                 for outcome in ("completed", "bot_hangup", "backend_error", "protocol_error")}
        self.assertEqual(sum(ended.values()), HOSTILE_CALLS, ended)
        self.assertEqual(ended["protocol_error"], 0, "the caller did nothing wrong")
        client.send({"event": "stop", "streamSid": "MZ1"})
        yield healthy.closed
        self.assertEqual(self.metric("calls_active", platform="gemini"), 0)
