"""Loopback integration for Genesys AudioHook: the real service on 127.0.0.1:0 with a Monitor
endpoint (``/audiohook``) and an Audio Connector endpoint (``/audiohook/bot``), and a scripted
Genesys client (Autobahn) that speaks the protocol as the reference client does and checks every
message the proxy sends. Nothing here waits on a timer: every step waits for the event it needs
(a ``ping`` answered by ``pong`` proves everything sent before it was processed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from mediaproxy.config import parse_config
from mediaproxy.platforms.audiohook_messages import SERVER_TYPES, format_duration, is_uuid
from mediaproxy.service import MediaProxyService
from mediaproxy.transcripts import Transcript
from tests.support import LoopbackService

ORG = "6f1c2a9e-3b7d-4c21-9a55-0d2e8b4f7a10"
CONVERSATION = "5e0b7c1d-2a3f-4d6e-8b9a-0c1d2e3f4a5b"
PARTICIPANT = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
CORRELATION = "91ab0c3e-2f4d-4e8a-b7c6-1d2e3f4a5b6c"
NULL = "00000000-0000-0000-0000-000000000000"
API_KEY = "bXlBcGlLZXk="
SECRET_B64 = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="  # the spec's test secret, not a real one

STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}
INTERNAL = {"type": "audio", "format": "PCMU", "channels": ["internal"], "rate": 8000}
MONITOR_OFFER = [STEREO, EXTERNAL, INTERNAL]

# 200 ms of loud µ-law (what the parrot hears as speech), and 200 ms of µ-law silence.
SPEECH = bytes([0x10, 0x90]) * 800
QUIET = b"\xff" * 1600
AGENT = bytes([0x20, 0xA0]) * 800  # the agent's side: different bytes, to check de-interleaving


def interleave(external: bytes, internal: bytes) -> bytes:
    """Stereo PCMU in the order [external, internal], one byte per sample."""
    out = bytearray(len(external) * 2)
    out[0::2] = external
    out[1::2] = internal
    return bytes(out)


def config(extra: Mapping[str, Mapping[str, str]] | None = None, **audiohook: str) -> Any:
    sections: dict[str, Mapping[str, str]] = {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "platform:audiohook": {"path": "/audiohook", "backend": "echo", "mode": "monitor", **audiohook},
        "platform:genesys-bot": {"type": "audiohook", "path": "/audiohook/bot", "backend": "echo",
                                 "mode": "connector"},
        "backend:echo": {"type": "echo", "silence_ms": "200"},
    }
    sections.update(extra or {})
    return parse_config("test.ini", sections, {})


def sign(headers: dict[str, str], target: str, authority: str, secret_b64: str, created: int,
         nonce: str = "Zm9vYmFyYmF6cXV4cXV1eHh5") -> dict[str, str]:
    """Sign an upgrade as Genesys does (protocol notes §1), independently of the proxy's code."""
    components = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
                  "audiohook-correlation-id", "x-api-key")
    params = ("(" + " ".join(f'"{c}"' for c in components) + ")"
              + f';keyid="{headers["X-API-KEY"]}";nonce="{nonce}";alg="hmac-sha256"'
              + f";created={created};expires={created + 30}")
    lowered = {k.lower(): v for k, v in headers.items()}
    values = {"@request-target": target, "@authority": authority.lower(), **lowered}
    base = "\n".join([f'"{c}": {values[c]}' for c in components] + [f'"@signature-params": {params}'])
    digest = hmac.new(base64.b64decode(secret_b64), base.encode(), hashlib.sha256).digest()
    return {**headers, "Signature-Input": f"sig1={params}",
            "Signature": f"sig1=:{base64.b64encode(digest).decode()}:"}


class ScriptedGenesys(WebSocketClientProtocol):
    """The Genesys side: numbers its messages, tracks the stream position, answers ``disconnect``
    with ``close`` (as the reference client does), and checks every message the proxy sends.
    Problems are collected in ``problems`` (tests assert it stays empty)."""

    factory: GenesysFactory

    def __init__(self) -> None:
        super().__init__()
        self.session_id = ""
        self.seq = 0  # last seq we sent
        self.serverseq = 0  # last server seq we processed
        self.last_clientseq = 0
        self.channels = 1
        self.samples = 0
        self.skipped_us = 0
        self.awaiting_reply: dict[str, list[int]] = {"pong": [], "closed": [], "opened": []}
        self.messages: list[dict[str, Any]] = []
        self.audio: list[bytes] = []
        self.timeline: list[tuple[float, str, Any]] = []  # (arrival, "text"|"binary", message)
        self.problems: list[str] = []

    # --- sending -------------------------------------------------------------------------------

    def onOpen(self) -> None:
        self.session_id = self.factory.session_id
        self.factory.connected.callback(self)

    @property
    def position(self) -> str:
        return format_duration(self.samples * 1_000_000 // 8000 + self.skipped_us)

    def send(self, mtype: str, parameters: dict[str, Any] | None = None, **override: Any) -> int:
        self.seq += 1
        message = {"version": "2", "id": self.session_id, "type": mtype, "seq": self.seq,
                   "serverseq": self.serverseq, "position": self.position,
                   "parameters": {} if parameters is None else parameters}
        message.update(override)
        if mtype in ("ping", "close", "open"):
            self.awaiting_reply[{"ping": "pong", "close": "closed", "open": "opened"}[mtype]].append(self.seq)
        self.sendMessage(json.dumps(message).encode(), False)
        return self.seq

    def open(self, media: list[dict[str, Any]], conversation: str = CONVERSATION,
             participant: str = PARTICIPANT, **extra: Any) -> None:
        ani = "" if participant == NULL else "+15550100"
        self.send("open", {
            "organizationId": ORG, "conversationId": conversation,
            "participant": {"id": participant, "ani": ani, "aniName": "", "dnis": ""},
            "media": media, **extra,
        })

    def send_audio(self, *frames: bytes) -> None:
        for frame in frames:
            self.sendMessage(frame, True)
            self.samples += len(frame) // self.channels

    def ping(self) -> Deferred[Any]:
        """Ping, and fire when its pong arrives: everything sent before it has been processed."""
        seq = self.send("ping", {"rtt": "PT0.002S"} if self.seq > 2 else {})
        return self.factory.wait_for(lambda c: any(m["type"] == "pong" and m["clientseq"] == seq
                                                   for m in c.messages))

    # --- receiving ------------------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        now = reactor.seconds()
        if isBinary:
            self.audio.append(payload)
            self.timeline.append((now, "binary", payload))
        else:
            message = json.loads(payload)
            self.check(message)
            self.messages.append(message)
            self.timeline.append((now, "text", message))
            if message.get("type") == "opened":
                media = message["parameters"].get("media") or [{"channels": ["external"]}]
                self.channels = len(media[0]["channels"])
            if message.get("type") == "disconnect" and self.factory.answer_disconnect:
                self.send("close", {"reason": "disconnect"})
            if message.get("type") == "closed" and self.factory.close_after_closed:
                self.sendClose(1000)
        self.factory.poke(self)

    def check(self, message: Any) -> None:
        """The rules of protocol notes §2 and §6 for every server message."""
        def problem(text: str) -> None:
            self.problems.append(f"{text}: {message}")

        if not isinstance(message, dict):
            return problem("not an object")
        if message.get("version") != "2":
            problem('version is not the string "2"')
        if message.get("id") != self.session_id:
            problem("id is not the session id")
        mtype = message.get("type")
        if mtype not in SERVER_TYPES:
            problem("not a server message type")
        if message.get("seq") != self.serverseq + 1:
            problem(f"seq is not {self.serverseq + 1}")
        clientseq = message.get("clientseq")
        if not isinstance(clientseq, int) or not self.last_clientseq <= clientseq <= self.seq:
            problem(f"clientseq outside [{self.last_clientseq}, {self.seq}]")
        if not isinstance(message.get("parameters"), dict):
            problem("parameters missing")
        if set(message) != {"version", "id", "type", "seq", "clientseq", "parameters"}:
            problem("unexpected or missing envelope fields")
        waiting = self.awaiting_reply.get(mtype)  # type: ignore[arg-type]
        if waiting is not None:
            if not waiting:
                problem("a reply nobody asked for")
            elif clientseq != waiting.pop(0):
                problem("clientseq is not the seq of the message it answers")
        if isinstance(message.get("seq"), int):
            self.serverseq = message["seq"]
        if isinstance(clientseq, int):
            self.last_clientseq = clientseq

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.close_reason = reason or ""
        if not self.factory.closed.called:
            self.factory.closed.callback(code)

    # --- helpers for assertions ---------------------------------------------------------------

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def of_type(self, mtype: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == mtype]


class GenesysFactory(WebSocketClientFactory):
    protocol = ScriptedGenesys

    def __init__(self, url: str, session_id: str = "30b0e395-84d3-4570-ac13-9a62d8f514c0",
                 headers: dict[str, str] | None = None, answer_disconnect: bool = True,
                 close_after_closed: bool = True) -> None:
        if headers is None:
            headers = genesys_headers(session_id)
        super().__init__(url, headers=headers)
        self.session_id = session_id
        self.answer_disconnect = answer_disconnect
        # The reference client closes the socket once it has `closed`; tests that must see the
        # proxy close it on its own turn this off.
        self.close_after_closed = close_after_closed
        self.connected: Deferred[ScriptedGenesys] = Deferred()
        self.closed: Deferred[int | None] = Deferred()
        self.close_reason = ""
        self.waiters: list[tuple[Callable[[ScriptedGenesys], bool], Deferred[Any]]] = []
        self.client: ScriptedGenesys | None = None

    def buildProtocol(self, addr: Any) -> Any:
        self.client = super().buildProtocol(addr)
        return self.client

    def wait_for(self, predicate: Callable[[ScriptedGenesys], bool]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiters.append((predicate, d))
        if self.client is not None:
            self.poke(self.client)
        return d

    def poke(self, client: ScriptedGenesys) -> None:
        for predicate, d in list(self.waiters):
            if predicate(client):
                self.waiters.remove((predicate, d))
                d.callback(client)


def genesys_headers(session_id: str, api_key: str = API_KEY) -> dict[str, str]:
    return {
        "Audiohook-Organization-Id": ORG,
        "Audiohook-Session-Id": session_id,
        "Audiohook-Correlation-Id": CORRELATION,
        "X-API-KEY": api_key,
        "User-Agent": "GenesysCloud-AudioHook-Client",
    }


def has(mtype: str, count: int = 1) -> Callable[[ScriptedGenesys], bool]:
    return lambda c: len(c.of_type(mtype)) >= count


class BackendRecorder:
    """Wraps a configured backend's ``open_session`` so a test can see every backend session a
    call opens, what audio reached it, and speak as the backend through its listener."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.opened: list[tuple[Any, Any, Any]] = []  # (CallInfo, listener, session)
        self.audio: list[bytearray] = []
        original = backend.open_session

        def open_session(call: Any, listener: Any, platform_format: Any) -> Any:
            session = original(call, listener, platform_format)
            received = bytearray()
            send_audio = session.send_audio

            def recording_send_audio(data: bytes) -> None:
                received.extend(data)
                send_audio(data)

            session.send_audio = recording_send_audio
            self.opened.append((call, listener, session))
            self.audio.append(received)
            return session

        backend.open_session = open_session


class AudioHookLoopbackCase(LoopbackService, TestCase):
    timeout = 30
    audiohook_options: dict[str, str] = {}
    extra_sections: dict[str, dict[str, str]] = {}

    @inlineCallbacks
    def setUp(self) -> Any:
        self.service = MediaProxyService(config(self.extra_sections, **self.audiohook_options), reactor,
                                         tune_gc=False)
        self.recorder = BackendRecorder(self.service.backends[self.service.config.platforms[0].backend])
        address, _ = yield self.start_service(self.service)
        self.base = f"ws://127.0.0.1:{address.port}"
        self.host = f"127.0.0.1:{address.port}"

    def tearDown(self) -> Any:
        return self.stop_service()

    def call_samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every calls_total / calls_active sample (to prove a session counted as no call)."""
        out = {}
        for family in self.service.metrics.registry.collect():
            for sample in family.samples:
                if sample.name in ("mediaproxy_calls_total", "mediaproxy_calls_active"):
                    out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def connect(self, path: str = "/audiohook", **kwargs: Any) -> GenesysFactory:
        """Dial ``path`` as Genesys (``kwargs`` go to :class:`GenesysFactory`)."""
        factory = GenesysFactory(self.base + path, **kwargs)
        connectWS(factory)
        return factory

    def bridge(self) -> Any:
        (bridge,) = self.service.registry.connected_calls()
        return bridge

    def assertClean(self, client: ScriptedGenesys) -> None:
        self.assertEqual(client.problems, [])

    @inlineCallbacks
    def finish(self, factory: GenesysFactory, client: ScriptedGenesys, reason: str = "end") -> Any:
        """Genesys ends the session: close → closed, then the socket closes."""
        seq = client.send("close", {"reason": reason})
        yield factory.wait_for(has("closed"))
        yield factory.closed
        closed = client.of_type("closed")[-1]
        self.assertEqual(closed["clientseq"], seq)
        self.assertEqual(closed["parameters"], {})
        self.assertClean(client)


class MonitorLoopbackTests(AudioHookLoopbackCase):
    @inlineCallbacks
    def test_monitor_stereo_session(self) -> Any:
        """Monitor: stereo selected unchanged, each party's audio reaches its own backend session,
        transcripts come back as events on the right channel, and the close transaction ends the
        call as completed."""
        factory = self.connect()
        client = yield factory.connected
        client.open(MONITOR_OFFER, language="en-US")
        yield factory.wait_for(has("opened"))
        opened = client.of_type("opened")[0]
        self.assertEqual(opened["seq"], 1)
        self.assertEqual(opened["clientseq"], 1)
        self.assertEqual(opened["parameters"]["media"], [STEREO])
        self.assertIs(opened["parameters"]["startPaused"], False)
        # 1 s of the caller talking while the agent says something else; frames of odd sizes.
        stream = interleave(SPEECH * 5, AGENT * 5)
        for size in (3200, 1, 3199, 0, 2000, 4400, 3200):
            client.send_audio(stream[:size])
            stream = stream[size:]
        yield client.ping()
        self.assertEqual(len(self.recorder.opened), 2)
        (call_a, _, _), (call_b, _, _) = self.recorder.opened
        for call in (call_a, call_b):
            self.assertEqual(call.call_id, CONVERSATION)
            self.assertTrue(call.listen_only)
        # The external channel (the caller) goes to the bridge's own session, internal to the other.
        self.assertEqual(bytes(self.recorder.audio[0]), SPEECH * 5)
        self.assertEqual(bytes(self.recorder.audio[1]), AGENT * 5)
        # Transcripts from each channel's backend session come back on that channel.
        (_, caller_listener, _), (_, agent_listener, _) = self.recorder.opened
        caller_listener.backend_transcript(Transcript("caller", "I need help", True))
        agent_listener.backend_transcript(Transcript("caller", "Sure, one moment", True))
        yield factory.wait_for(has("event", 2))
        entities = [e for m in client.of_type("event") for e in m["parameters"]["entities"]]
        self.assertEqual([e["type"] for e in entities], ["transcript", "transcript"])
        caller, agent = (e["data"] for e in entities)
        self.assertEqual((caller["channelId"], agent["channelId"]), (0, 1))
        self.assertEqual(caller["alternatives"][0]["interpretations"][0]["transcript"], "I need help")
        self.assertEqual(agent["alternatives"][0]["interpretations"][0]["transcript"], "Sure, one moment")
        for data in (caller, agent):
            self.assertTrue(is_uuid(data["id"]))
            self.assertIs(data["isFinal"], True)
            self.assertNotIn("channel", data)
        self.assertEqual(self.metric("mediaproxy_calls_active", {"platform": "audiohook"}), 1)
        yield self.finish(factory, client)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "audiohook", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_active", {"platform": "audiohook"}), 0)
        self.assertEqual(client.of_type("disconnect"), [])

    @inlineCallbacks
    def test_probe_is_not_a_call(self) -> Any:
        """Genesys's connection probe: open→opened, close→closed, no backend, no call metrics."""
        before = self.call_samples()
        factory = self.connect(close_after_closed=False)  # the proxy must close it on its own
        client = yield factory.connected
        client.open(MONITOR_OFFER, conversation=NULL, participant=NULL)
        yield factory.wait_for(has("opened"))
        self.assertIn(client.of_type("opened")[0]["parameters"]["media"], ([], [STEREO], [EXTERNAL], [INTERNAL]))
        client.send_audio(b"")  # the reference client sends one empty frame
        yield self.finish(factory, client)
        self.assertEqual(self.recorder.opened, [])
        self.assertEqual(self.call_samples(), before)
        self.assertEqual(self.metric("mediaproxy_protocol_errors_total",
                                     {"platform": "audiohook", "kind": "bad_seq"}), 0)

    @inlineCallbacks
    def test_paused_and_resumed_stop_and_restart_forwarding(self) -> Any:
        """Genesys's own pause (hold, secure pause): audio is not forwarded until resumed, the
        pause is counted as a flow pause, and the timeline takes the discarded span."""
        factory = self.connect()
        client = yield factory.connected
        client.open(MONITOR_OFFER)
        yield factory.wait_for(has("opened"))
        client.send_audio(interleave(SPEECH, AGENT))
        yield client.ping()
        forwarded = [len(a) for a in self.recorder.audio]
        self.assertEqual(forwarded, [1600, 1600])
        pauses = self.metric("mediaproxy_flow_pauses_total", {"leg": "platform"})
        client.send("paused")
        client.send_audio(interleave(SPEECH, AGENT))  # in flight when Genesys paused: dropped
        yield client.ping()
        self.assertEqual([len(a) for a in self.recorder.audio], forwarded)
        self.assertEqual(self.metric("mediaproxy_flow_pauses_total", {"leg": "platform"}), pauses + 1)
        client.skipped_us += 1_400_000
        client.send("resumed", {"start": "PT0.4S", "discarded": "PT1.4S"})
        client.send_audio(interleave(SPEECH, AGENT))
        yield client.ping()
        self.assertEqual([len(a) for a in self.recorder.audio], [3200, 3200])
        (bridge,) = self.service.registry.connected_calls()
        self.assertEqual(bridge.leg.session.position_us, 2_000_000)  # 0.6 s received + 1.4 s discarded
        yield self.finish(factory, client)

    @inlineCallbacks
    def test_protocol_violation_disconnects_then_closes(self) -> Any:
        """A wrong seq: disconnect{error, info}, Genesys's close is answered with closed, then
        the socket closes; counted as a protocol error and the call as protocol_error."""
        factory = self.connect(close_after_closed=False)
        client = yield factory.connected
        client.open(MONITOR_OFFER)
        yield factory.wait_for(has("opened"))
        client.seq += 3  # a gap in our numbering
        client.send("ping")
        client.awaiting_reply["pong"].clear()
        yield factory.wait_for(has("closed"))
        yield factory.closed
        self.assertEqual(client.types(), ["opened", "disconnect", "closed"])
        disconnect = client.of_type("disconnect")[0]
        self.assertEqual(disconnect["parameters"]["reason"], "error")
        self.assertIn("seq", disconnect["parameters"]["info"])
        self.assertClean(client)
        self.assertEqual(self.metric("mediaproxy_protocol_errors_total",
                                     {"platform": "audiohook", "kind": "bad_seq"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_total",
                                     {"platform": "audiohook", "outcome": "protocol_error"}), 1)

    @inlineCallbacks
    def test_binary_before_open_is_a_violation(self) -> Any:
        factory = self.connect(close_after_closed=False)
        client = yield factory.connected
        client.send_audio(QUIET)
        yield factory.wait_for(has("closed"))
        yield factory.closed
        self.assertEqual(client.types(), ["disconnect", "closed"])
        self.assertEqual(client.of_type("disconnect")[0]["parameters"]["reason"], "error")
        self.assertClean(client)
        self.assertEqual(self.metric("mediaproxy_protocol_errors_total",
                                     {"platform": "audiohook", "kind": "unexpected_binary"}), 1)


class ConnectorLoopbackTests(AudioHookLoopbackCase):
    @inlineCallbacks
    def open_connector(self, **extra: Any) -> Any:
        factory = self.connect("/audiohook/bot")
        client = yield factory.connected
        client.open([STEREO, EXTERNAL], **extra)
        yield factory.wait_for(has("opened"))
        self.assertEqual(client.of_type("opened")[0]["parameters"]["media"], [EXTERNAL])
        return factory, client

    @inlineCallbacks
    def test_parrot_reply_paced_in_1600_byte_packets_with_barge_in(self) -> Any:
        """Audio Connector: the parrot's reply comes back as 1600-byte binary PCMU packets, never
        as a burst; talking over it sends the barge_in event and stops the reply at once."""
        factory, client = yield self.open_connector(inputVariables={"Lang": "en"})
        (call, _, _), = self.recorder.opened
        self.assertEqual(dict(call.metadata), {"Lang": "en", "audiohook.participant.ani": "+15550100",
                                               "audiohook.participant.aniName": "", "audiohook.participant.dnis": ""})
        self.assertFalse(call.listen_only)
        # 2 s of speech, then enough quiet for the parrot to answer (silence_ms = 200).
        client.send_audio(*[SPEECH] * 10, QUIET, QUIET)
        yield factory.wait_for(lambda c: len(c.audio) >= 3)
        self.assertEqual([len(p) for p in client.audio], [1600] * len(client.audio))
        self.assertIn(SPEECH, client.audio)
        # Never a burst: packet n is sent no earlier than n * 200 ms - lead (60 ms) after the
        # first (the arrival of the first may lag its sending, hence a small allowance).
        arrivals = [t for t, kind, _ in client.timeline if kind == "binary"]
        for n, arrival in enumerate(arrivals):
            self.assertGreaterEqual(arrival - arrivals[0], n * 0.2 - 0.06 - 0.05)
        # Talk over the reply: barge-in.
        client.send_audio(SPEECH)
        yield factory.wait_for(lambda c: any(e["type"] == "barge_in"
                                             for m in c.of_type("event") for e in m["parameters"]["entities"]))
        barge_in = client.of_type("event")[-1]
        self.assertEqual(barge_in["parameters"], {"entities": [{"type": "barge_in", "data": {}}]})
        cut_at = max(i for i, (_, kind, m) in enumerate(client.timeline) if kind == "text" and m is barge_in)
        sent_before = len(client.audio)
        self.assertLess(sent_before, 10)  # the reply was cut, not played out
        # The caller keeps talking (no pause, so no new reply); nothing of the old reply follows.
        client.send_audio(SPEECH, SPEECH)
        yield client.ping()
        self.assertEqual([kind for _, kind, _ in client.timeline[cut_at + 1:] if kind == "binary"], [])
        client.send("playback_started")
        client.send("playback_completed")
        client.send("dtmf", {"digit": "5"})
        yield client.ping()
        yield self.finish(factory, client)
        self.assertEqual(self.metric("mediaproxy_bargein_seconds_count"), 1)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "genesys-bot", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_rate_limit_is_counted_and_holds_playout(self) -> Any:
        """Genesys 429 with retryAfter: counted by code, and no audio is sent during the hold."""
        factory, client = yield self.open_connector()
        client.send_audio(*[SPEECH] * 10, QUIET, QUIET)
        yield factory.wait_for(lambda c: len(c.audio) >= 1)
        sent_at = reactor.seconds()
        client.send("error", {"code": 429, "message": "Too many requests", "retryAfter": "PT0.6S"})
        yield client.ping()
        pong_at = max(i for i, (_, kind, m) in enumerate(client.timeline)
                      if kind == "text" and m["type"] == "pong")
        self.assertEqual(self.metric("mediaproxy_platform_errors_total",
                                     {"platform": "genesys-bot", "code": "429"}), 1)
        # Everything after the pong left the proxy after it processed the 429, hence after
        # sent_at: the first such packet comes no sooner than the hold allows.
        yield factory.wait_for(lambda c: any(kind == "binary" for _, kind, _ in c.timeline[pong_at:]))
        first = next(t for t, kind, _ in client.timeline[pong_at:] if kind == "binary")
        self.assertGreaterEqual(first - sent_at, 0.6)
        yield self.finish(factory, client)

    @inlineCallbacks
    def test_bot_hangup_sends_output_variables(self) -> Any:
        """The bot ends the call: disconnect{completed, info, outputVariables}, Genesys's
        close{disconnect} is answered with closed, and the call counts as bot_hangup. (No
        backend emits a hang-up yet; the test speaks as the backend through its listener.)"""
        factory, client = yield self.open_connector()
        (_, listener, _), = self.recorder.opened
        listener.backend_hangup("caller asked for agent", {"Intent": "billing", "Escalate": True})
        yield factory.wait_for(has("closed"))
        yield factory.closed
        self.assertEqual(client.types(), ["opened", "disconnect", "closed"])
        disconnect = client.of_type("disconnect")[0]["parameters"]
        self.assertEqual(disconnect, {"reason": "completed", "info": "caller asked for agent",
                                      "outputVariables": {"Intent": "billing", "Escalate": "True"}})
        self.assertEqual(client.of_type("closed")[0]["clientseq"], client.seq)
        self.assertClean(client)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "genesys-bot", "outcome": "bot_hangup"}), 1)


class _Silent(Protocol):
    """Accepts a TCP connection and never answers (a backend that never connects)."""

    def connectionMade(self) -> None:
        self.factory.connections.append(self)  # type: ignore[attr-defined]


class HangingBackendLoopbackTests(AudioHookLoopbackCase):
    """``opened`` never waits for the backend, even one that accepts TCP and never answers."""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.silent = Factory.forProtocol(_Silent)
        self.silent.connections = []  # type: ignore[attr-defined]
        self.silent_port = reactor.listenTCP(0, self.silent, interface="127.0.0.1")
        port = self.silent_port.getHost().port
        self.extra_sections = {
            "backend:hang": {"type": "openai-realtime", "url": f"ws://127.0.0.1:{port}",
                             "api_key": "test-key", "connect_timeout_seconds": "60",
                             "reconnect_attempts": "0"},
        }
        self.audiohook_options = {"backend": "hang"}
        yield super().setUp()

    @inlineCallbacks
    def tearDown(self) -> Any:
        yield super().tearDown()
        for connection in self.silent.connections:  # type: ignore[attr-defined]
            connection.transport.abortConnection()
        yield self.silent_port.stopListening()

    @inlineCallbacks
    def test_opened_does_not_wait_for_the_backend(self) -> Any:
        factory = self.connect()
        client = yield factory.connected
        client.open(MONITOR_OFFER)
        yield factory.wait_for(has("opened"))
        # The caller's backend session was started, and `opened` did not wait for it.
        self.assertEqual(len(self.recorder.opened), 1)
        client.send_audio(interleave(QUIET, QUIET))
        yield client.ping()
        self.assertEqual(len(self.recorder.opened), 2)
        # The backend has not answered (and never will): the session still runs.
        self.assertEqual(self.bridge().ended, False)
        yield self.finish(factory, client)


class AuthLoopbackTests(AudioHookLoopbackCase):
    audiohook_options = {"api_key": API_KEY, "client_secret": SECRET_B64}

    def signed(self, session_id: str, target: str = "/audiohook?tenant=acme", **changes: Any) -> dict[str, str]:
        headers = genesys_headers(session_id)
        created = int(reactor.seconds())
        return sign(headers, changes.pop("signed_target", target), changes.pop("authority", self.host),
                    changes.pop("secret", SECRET_B64), changes.pop("created", created))

    @inlineCallbacks
    def test_signed_session(self) -> Any:
        session_id = "c2d8f4a1-7e39-4b6a-8f20-5a1b9c3d6e77"
        factory = self.connect("/audiohook?tenant=acme", session_id=session_id, headers=self.signed(session_id))
        client = yield factory.connected
        client.open(MONITOR_OFFER)
        yield factory.wait_for(has("opened"))
        yield self.finish(factory, client)

    @inlineCallbacks
    def assertRefused(self, headers: dict[str, str], session_id: str) -> Any:
        factory = self.connect("/audiohook?tenant=acme", session_id=session_id, headers=headers)
        yield factory.closed
        self.assertFalse(factory.connected.called)
        self.assertIn("[401]", factory.close_reason)

    @inlineCallbacks
    def test_bad_api_key(self) -> Any:
        session_id = "c2d8f4a1-7e39-4b6a-8f20-5a1b9c3d6e77"
        headers = self.signed(session_id)
        headers["X-API-KEY"] = "d3JvbmdLZXk="
        yield self.assertRefused(headers, session_id)

    @inlineCallbacks
    def test_bad_signature(self) -> Any:
        session_id = "c2d8f4a1-7e39-4b6a-8f20-5a1b9c3d6e77"
        yield self.assertRefused(self.signed(session_id, secret=base64.b64encode(b"wrong secret").decode()),
                                 session_id)
        yield self.assertRefused(self.signed(session_id, signed_target="/audiohook"), session_id)
        yield self.assertRefused(self.signed(session_id, created=int(reactor.seconds()) - 60), session_id)
        yield self.assertRefused(genesys_headers(session_id), session_id)  # unsigned
        self.assertEqual(self.metric("mediaproxy_protocol_errors_total", {"platform": "audiohook", "kind": "auth"}), 4)
