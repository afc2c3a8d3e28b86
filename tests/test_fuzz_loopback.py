"""Fuzzing the running service: one healthy Twilio call on the echo backend (``mode = stream``,
every caller frame comes back) while hundreds of short connections on every platform path send
generated hostile messages. The healthy call must lose no frame, every hostile connection must be
closed by the proxy (after the protocol's own goodbye: AudioHook's ``disconnect``, the generic
WebSocket's ``error``), each platform's ``protocol_errors_total`` must move (by one per
connection on the media-stream platforms, whose hostile connections never end the stream
themselves), and nothing may stay registered (the tear-down checks that).

Nothing here waits on a timer: every step waits for the event it needs. The hostile messages
come from the generators of :mod:`tests.test_fuzz_platforms`, seeded per connection, so the run
is the same every time.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from tests.strategies import binary_frame, garbage_text, mutate
from tests.support import LoopbackService
from tests.test_fuzz_media_platforms import (
    COUSINS,
    JAMBONZ_KINDS,
    JSON_KINDS,
    VONAGE_KINDS,
    WEBSOCKET_KINDS,
    cousin_valid,
    jambonz_valid,
    vonage_valid,
    websocket_valid,
)
from tests.test_fuzz_pbx import ASTERISK_KINDS, FREESWITCH_KINDS, asterisk_valid, freeswitch_valid
from tests.test_fuzz_platforms import (
    AUDIOCODES_KINDS,
    AUDIOHOOK_KINDS,
    IGNORED_KINDS,
    ORG,
    SID,
    TWILIO_KINDS,
    CodesModel,
    HookModel,
    codes_valid,
    hook_valid,
    twilio_start,
    twilio_valid,
)

PATHS = {"twilio": "/twilio", "audiohook": "/audiohook", "genesys-bot": "/audiohook/bot", "audiocodes": "/audiocodes",
         "telnyx": "/telnyx", "plivo": "/plivo", "exotel": "/exotel", "vonage": "/vonage", "jambonz": "/jambonz",
         "websocket": "/websocket", "asterisk": "/asterisk", "freeswitch": "/freeswitch"}
MEDIA_STREAMS = ("telnyx", "plivo", "exotel", "vonage", "jambonz", "websocket", "asterisk", "freeswitch")
"""The platforms whose hostile connections never send their protocol's end of stream: each of
them ends in exactly one violation."""
IGNORED = IGNORED_KINDS | {"unknown_type", "empty_frame"}
"""The labels of ignored messages (counted in ``protocol_errors_total`` too)."""
ALL_KINDS = (TWILIO_KINDS | AUDIOHOOK_KINDS | AUDIOCODES_KINDS | JSON_KINDS | VONAGE_KINDS | JAMBONZ_KINDS
             | WEBSOCKET_KINDS | ASTERISK_KINDS | FREESWITCH_KINDS | IGNORED | {"bad_utf8"})
"""Every label ``protocol_errors_total{kind}`` may take (``bad_utf8``: the glue's own)."""
HOSTILE_PER_PLATFORM = 60
"""Hostile connections per platform path (twelve paths: 720 in all)."""
AT_ONCE = 8
"""Hostile connections open at the same time."""
HEALTHY_FRAMES = 240
"""Caller frames of the healthy call (20 ms each): 4.8 s of audio, all of it loud."""


def healthy_frame(index: int) -> bytes:
    """20 ms of loud µ-law, different for each frame so the echo can be compared byte for byte."""
    return bytes([0x10 + index % 16, 0x90 + (index // 16) % 16]) * 80


def config() -> Any:
    backend = {"backend": "echo"}
    return parse_config(
        "test.ini",
        {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": PATHS["twilio"], **backend},
            "platform:audiohook": {"path": PATHS["audiohook"], "mode": "monitor", **backend},
            "platform:genesys-bot": {"type": "audiohook", "path": PATHS["genesys-bot"], "mode": "connector",
                                     **backend},
            "platform:audiocodes": {"path": PATHS["audiocodes"], **backend},
            **{f"platform:{name}": {"type": name, "path": PATHS[name], **backend} for name in MEDIA_STREAMS},
            "backend:echo": {"type": "echo", "mode": "stream"},
        },
        {},
    )


class HealthyTwilio(WebSocketClientProtocol):
    """A well-behaved Twilio stream: collects every media payload the proxy sends back."""

    factory: HealthyFactory

    def onOpen(self) -> None:
        self.payloads: list[bytes] = []
        self.send(twilio_start(random.Random(0)) | {"streamSid": "MZ1"})
        self.factory.opened.callback(self)

    def send(self, message: dict[str, Any]) -> None:
        self.sendMessage(json.dumps(message).encode(), False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        if message["event"] == "media":
            self.payloads.append(base64.b64decode(message["media"]["payload"]))
            waiter = self.factory.all_back
            if len(self.payloads) >= HEALTHY_FRAMES and not waiter.called:
                waiter.callback(None)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback(code)


class HealthyFactory(WebSocketClientFactory):
    protocol = HealthyTwilio

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.opened: Deferred[HealthyTwilio] = Deferred()
        self.all_back: Deferred[None] = Deferred()
        self.closed: Deferred[int | None] = Deferred()


class Hostile(WebSocketClientProtocol):
    """A short hostile connection: sends its generated messages, then answers an AudioHook
    ``disconnect`` with ``close`` (so the close transaction completes) and waits for the proxy to
    close the socket. It never closes the socket itself."""

    factory: HostileFactory

    def onOpen(self) -> None:
        self.texts: list[Any] = []
        for message in self.factory.messages:
            if isinstance(message, bytes):
                self.sendMessage(message, True)
            else:
                # A raw lone surrogate cannot be UTF-8: it goes out as the invalid bytes it means.
                self.sendMessage(message.encode("utf-8", "surrogatepass"), False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return
        message = json.loads(payload)
        self.texts.append(message)
        if not self.factory.platform.startswith(("audiohook", "genesys")):
            return
        if message.get("type") == "disconnect":
            self.sendMessage(json.dumps({"version": "2", "id": SID, "type": "close", "seq": 10**6, "serverseq": 0,
                                         "position": "PT0S", "parameters": {"reason": "end"}}).encode(), False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.factory.platform == "websocket":
            # The generic WebSocket's goodbye to a violation is its error message.
            self.factory.goodbye = self.texts[-1].get("type") if getattr(self, "texts", None) else None
        self.factory.closed.callback(code)


class HostileFactory(WebSocketClientFactory):
    protocol = Hostile

    def __init__(self, url: str, platform: str, messages: list[str | bytes], headers: dict[str, str]) -> None:
        super().__init__(url, headers=headers, protocols=["audio.jambonz.org"] if platform == "jambonz" else None)
        self.goodbye: str | None = None
        self.platform = platform
        self.messages = messages
        self.closed: Deferred[int | None] = Deferred()


def is_utf8(message: str | bytes) -> bool:
    """A text message that goes out as valid UTF-8 (binary frames count as such)."""
    try:
        if isinstance(message, str):
            message.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def hostile_messages(platform: str, seed: int) -> list[str | bytes]:
    """One connection's worth: a few valid or mutated messages, then one that no protocol
    accepts (not JSON, or a binary frame where the protocol has none)."""
    rng = random.Random(seed)
    out: list[str | bytes] = []
    hook, codes = HookModel("monitor" if platform == "audiohook" else "connector"), CodesModel()
    if platform in ("asterisk", "freeswitch"):
        return pbx_messages(platform, rng)
    for index in range(rng.randint(0, 4)):
        if platform == "twilio":
            message = twilio_valid(rng)
        elif platform == "audiocodes":
            message = codes_valid(codes, rng)
        elif platform in COUSINS:
            message = cousin_valid(COUSINS[platform], rng)
        elif platform == "vonage":
            message = vonage_valid(rng)
        elif platform == "jambonz":
            message = jambonz_valid(rng, index > 0)
        elif platform == "websocket":
            message = websocket_valid(rng)
        else:
            message = hook_valid(hook, rng)[0]
        if platform in MEDIA_STREAMS and (message.get("event") == "stop" or message.get("type") == "stop"):
            continue  # the stream's own end: this connection is to end in a violation
        out.append(mutate(message, rng) if rng.random() < 0.5 else json.dumps(message))
    if platform in ("twilio", "audiocodes", *COUSINS) and rng.random() < 0.3:
        out.append(binary_frame(rng))
    else:
        out.append("{" + garbage_text(rng))
    return out


def pbx_messages(platform: str, rng: random.Random) -> list[str | bytes]:
    """An Asterisk or FreeSWITCH connection's worth: control messages (valid or mutated) and
    audio frames of any size, then one message neither accepts in any state: text that is not
    JSON for Asterisk, an odd-sized audio frame for FreeSWITCH (whose first text frame, whatever
    it holds, is the call's metadata)."""
    out: list[str | bytes] = []
    for _ in range(rng.randint(0, 5)):
        if rng.random() < 0.4:
            out.append(rng.randbytes(rng.choice((0, 160, 320, 640, 3))))
        elif platform == "asterisk":
            text, name, fields = asterisk_valid(rng, rng.random() < 0.5)
            out.append(mutate({"event": name, **fields}, rng) if rng.random() < 0.3 else text)
        else:
            message = freeswitch_valid(rng)
            out.append(mutate(message, rng) if rng.random() < 0.3 else json.dumps(message))
    out.append("{not json" + garbage_text(rng) if platform == "asterisk" else rng.randbytes(3))
    return out


class HostileLoopbackTests(LoopbackService, TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        address, _ = yield self.start_service(MediaProxyService(config(), reactor, tune_gc=False))
        self.base = f"ws://127.0.0.1:{address.port}"
        self.goodbyes: list[HostileFactory] = []

    def tearDown(self) -> Any:
        return self.stop_service()

    def hostile(self, platform: str, seed: int) -> Deferred[int | None]:
        headers = {}
        if platform in ("audiohook", "genesys-bot"):
            headers = {"Audiohook-Session-Id": SID, "Audiohook-Organization-Id": ORG}
        factory = HostileFactory(self.base + PATHS[platform], platform, hostile_messages(platform, seed), headers)
        connectWS(factory)
        self.goodbyes.append(factory)
        return factory.closed

    @inlineCallbacks
    def test_healthy_call_loses_nothing_while_hostile_connections_run(self) -> Any:
        """The healthy call gets back every frame it sent, byte for byte, while 720 hostile
        connections on twelve platform paths come and go; each of those is closed by the proxy
        (the generic WebSocket's after an ``error``), and each platform counts its protocol
        errors: one per connection on the media-stream platforms."""
        healthy = HealthyFactory(self.base + PATHS["twilio"])
        connectWS(healthy)
        client = yield healthy.opened
        jobs = [(platform, seed) for seed in range(HOSTILE_PER_PLATFORM) for platform in PATHS]
        sent = 0
        per_batch = -(-HEALTHY_FRAMES // -(-len(jobs) // AT_ONCE))
        for start in range(0, len(jobs), AT_ONCE):
            batch = [self.hostile(platform, seed) for platform, seed in jobs[start:start + AT_ONCE]]
            for _ in range(min(per_batch, HEALTHY_FRAMES - sent)):
                client.send({"event": "media", "streamSid": "MZ1",
                             "media": {"track": "inbound", "payload": base64.b64encode(healthy_frame(sent)).decode()}})
                sent += 1
            yield gatherResults(batch)  # every hostile connection was closed by the proxy
        self.assertEqual(sent, HEALTHY_FRAMES)
        yield healthy.all_back
        self.assertEqual(b"".join(client.payloads), b"".join(healthy_frame(i) for i in range(HEALTHY_FRAMES)))
        self.assertEqual(self.metric("frames_dropped_total", direction="out", reason="overflow"), 0)
        families = list(self.service.metrics.registry.collect())
        errors: dict[str, float] = {}
        violations: dict[str, float] = {}  # errors less the ignored messages, counted alongside
        kinds: set[str] = set()
        for family in families:
            if family.name == "mediaproxy_protocol_errors":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        errors[sample.labels["platform"]] = errors.get(sample.labels["platform"], 0) + sample.value
                        kinds.add(sample.labels["kind"])
                        if sample.labels["kind"] not in IGNORED:
                            violations[sample.labels["platform"]] = \
                                violations.get(sample.labels["platform"], 0) + sample.value
        for platform in PATHS:
            self.assertGreater(errors.get(platform, 0), 0, platform)
        for platform in MEDIA_STREAMS:
            self.assertEqual(violations.get(platform), HOSTILE_PER_PLATFORM, platform)
        self.assertLessEqual(kinds, ALL_KINDS)  # a bounded set of labels, whatever was sent
        # A frame that is not UTF-8 is answered the protocol's way too (the session's
        # invalid_text): every hostile WebSocket connection ends with an error message.
        websocket = [f for f in self.goodbyes if f.platform == "websocket"]
        self.assertTrue(any(not all(map(is_utf8, f.messages)) for f in websocket))
        self.assertEqual({f.goodbye for f in websocket}, {"error"})
        client.send({"event": "stop", "streamSid": "MZ1"})
        yield healthy.closed
        self.assertEqual(len(client.payloads), HEALTHY_FRAMES)
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 1)
        self.assertEqual(self.metric("calls_active", platform="twilio"), 0)
