"""Loopback integration of the OpenAI Realtime backend: the real service on 127.0.0.1:0 with
``[platform:twilio]`` wired to ``[backend:openai] type = openai-realtime``, pointed at the fake GA Realtime server
(mediaproxy/testing/fake_realtime.py), and a scripted Twilio client that plays what it receives at
real time and echoes each mark when the audio before it has played, as Twilio does.

Nothing here sleeps: every step waits on a Deferred fired by the event it needs (a message at the
client, an event at the fake server). The client's player runs on reactor timers because that is
how Twilio behaves, not to wait for anything.
"""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.backends.openai_socket import RealtimeClientProtocol
from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from mediaproxy.sim.twilio_player import TwilioPlayer
from mediaproxy.testing.fake_audio import LOUD_FRAME, pattern
from mediaproxy.testing.fake_realtime import FakeRealtimeConnection, FakeRealtimeServer
from tests.support import (
    ConditionWaiting,
    LoopbackService,
    all_closed,
    cancel_autobahn_timer_buckets,
    record_backend_websockets,
)

FRAME_BYTES = 160
FRAME_MS = 20
LOUD = LOUD_FRAME["audio/pcmu"]
API_KEY = "dummy-test-key"


def quiet_frames(count: int, seed: int) -> list[bytes]:
    """20 ms µ-law frames below the fake's VAD that differ byte by byte and per ``seed``: a lost,
    reordered, altered or misrouted byte shows in a comparison."""
    return [bytes((0xF0 if i % 2 else 0x70) + (seed * 5 + n * 3 + i) % 16 for i in range(FRAME_BYTES))
            for n in range(count)]


def proxy_config(fake_url: str, playout: dict[str, str] | None = None, **backend: str) -> Any:
    """The service's config: Twilio → OpenAI Realtime at the fake server."""
    return parse_config(
        "test.ini",
        {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            **({"playout": playout} if playout else {}),
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": "openai"},
            "backend:openai": {
                "type": "openai-realtime",
                "url": fake_url,
                "api_key": API_KEY,
                "transcription_model": "",
                "silence_duration_ms": "200",
                "reconnect_backoff_ms": "0",
                "reconnect_max_backoff_ms": "0",
                "keepalive_seconds": "0",
                **backend,
            },
        },
        {},
    )


class PlayingTwilio(WebSocketClientProtocol):
    """A Twilio Media Stream: ``connected``/``start``/``media``/``stop`` out; inbound audio is
    "played" at real time and each ``mark`` echoed once the audio queued before it has played;
    ``clear`` empties the player and echoes every pending mark at once (Twilio's behaviour)."""

    factory: PlayingTwilioFactory

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.setTcpNoDelay(True)  # Autobahn's own attempt fails silently

    def onOpen(self) -> None:
        sid = self.factory.sid
        self.received: list[dict[str, Any]] = []
        self.media: list[tuple[float, bytes]] = []
        """(arrival time, payload) of every media frame."""
        self.echoed: list[tuple[float, str]] = []
        """(time, name) of every mark echo sent, in order."""
        self.sent_audio = bytearray()
        self.heard_at_clear_ms: list[float] = []
        self.clear_times: list[float] = []
        """What the caller had heard when each ``clear`` arrived (ms of received audio)."""
        self.player = TwilioPlayer(reactor, self._echo)
        self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self.send({
            "event": "start", "sequenceNumber": "1", "streamSid": f"MZ{sid}",
            "start": {"streamSid": f"MZ{sid}", "accountSid": "AC1", "callSid": f"CA{sid}",
                      "tracks": ["inbound"], "customParameters": dict(self.factory.custom_parameters),
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        })
        self.factory.protocol_instance = self
        self.factory.opened.callback(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendMessage(json.dumps(message).encode(), False)

    def send_audio(self, frames: list[bytes]) -> None:
        """Caller audio, one ``media`` message per 20 ms frame."""
        for frame in frames:
            self.sent_audio += frame
            self.send({"event": "media", "streamSid": f"MZ{self.factory.sid}",
                       "media": {"track": "inbound", "payload": base64.b64encode(frame).decode()}})

    def stop(self) -> None:
        self.send({"event": "stop", "streamSid": f"MZ{self.factory.sid}",
                   "stop": {"accountSid": "AC1", "callSid": f"CA{self.factory.sid}"}})

    def audio(self) -> bytes:
        return b"".join(payload for _, payload in self.media)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.received.append(message)
        kind = message["event"]
        if kind == "media":
            data = base64.b64decode(message["media"]["payload"])
            self.media.append((reactor.seconds(), data))
            self.player.media(data)
        elif kind == "mark":
            self.player.mark(message["mark"]["name"])
        elif kind == "clear":
            self.clear_times.append(reactor.seconds())
            # How far playback had gone through the received audio when the flush arrived.
            self.heard_at_clear_ms.append(self.player.position_ms)
            self.player.clear()
        self.factory.poke()

    def _echo(self, name: str) -> None:
        self.echoed.append((reactor.seconds(), name))
        self.send({"event": "mark", "streamSid": f"MZ{self.factory.sid}", "mark": {"name": name}})
        self.factory.poke()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.player.stop()
        if not self.factory.closed.called:
            self.factory.closed.callback(code)
        self.factory.poke()


class PlayingTwilioFactory(ConditionWaiting, WebSocketClientFactory):
    protocol = PlayingTwilio

    def __init__(self, url: str, sid: str = "1", headers: dict[str, str] | None = None,
                 custom_parameters: dict[str, str] | None = None) -> None:
        super().__init__(url, headers=headers or {})
        self.sid = sid
        self.custom_parameters = custom_parameters or {}
        self.protocol_instance: PlayingTwilio | None = None
        self.opened: Deferred[PlayingTwilio] = Deferred()
        self.closed: Deferred[int | None] = Deferred()


def events_of(connection: FakeRealtimeConnection, kind: str) -> list[dict[str, Any]]:
    return [e for e in connection.received if e.get("type") == kind]


class TwilioCallersLoopback(LoopbackService):
    """For the backend loopback suites (a trial TestCase mixin): Twilio callers
    (:class:`PlayingTwilioFactory`) through the real service to a fake backend server. setUp
    calls :meth:`use_fake`; a test starts the service with :meth:`serve` and dials callers with
    :meth:`call`. tearDown hangs up every caller, stops the service (no call, held call or
    playout may survive), waits for both ends of every backend connection to close, stops the
    fake and requires that it saw no protocol violation."""

    timeout = 30
    fake: Any
    url: str
    assertEqual: Any

    def use_fake(self, fake: Any, protocol: type[Any]) -> None:
        """``fake`` is the backend server (with ``stop`` and ``violations``); ``protocol`` is the
        proxy's client protocol for it, whose connections tearDown waits for."""
        self.fake = fake
        self.service: MediaProxyService | None = None
        self.clients: list[PlayingTwilioFactory] = []
        self.backend_websockets = record_backend_websockets(self, protocol)

    def serve(self, config: Any) -> None:
        """Start the service on ``config`` (Twilio at ``/twilio``)."""
        self.service = MediaProxyService(config, reactor, tune_gc=False)
        self.service.startService()
        self.url = f"ws://127.0.0.1:{self.service.platform_listener.address().port}/twilio"

    def call(self, sid: str = "1", custom_parameters: dict[str, str] | None = None) -> PlayingTwilioFactory:
        """Dial one Twilio caller (stream ``MZ<sid>``, ``customParameters`` in its ``start``)."""
        factory = PlayingTwilioFactory(self.url, sid, custom_parameters=custom_parameters)
        self.clients.append(factory)
        connectWS(factory)
        return factory

    @inlineCallbacks
    def tearDown(self) -> Any:
        for factory in self.clients:
            if factory.protocol_instance is not None and not factory.closed.called:
                factory.protocol_instance.sendClose()
        yield DeferredList([f.closed for f in self.clients if f.opened.called])
        if self.service is not None:
            yield self.service.stopService()
            self.assertEqual(self.service.registry.connected_calls(), [])
            self.assertEqual(self.service.registry.held_calls(), {})
            self.assertEqual(len(self.service.clock), 0)
        yield all_closed(self.backend_websockets)
        yield self.fake.stop()
        cancel_autobahn_timer_buckets()
        self.assertEqual(self.fake.violations, [])


class OpenAILoopbackTests(TwilioCallersLoopback, TestCase):
    def start_proxy(self, playout: dict[str, str] | None = None, **backend: str) -> None:
        self.serve(proxy_config(self.fake_url, playout, **backend))

    def setUp(self) -> None:
        self.use_fake(FakeRealtimeServer(reactor, api_key=API_KEY), RealtimeClientProtocol)
        self.fake_url = self.fake.listen().removesuffix("/v1/realtime") + "/v1/realtime"


    def ready_connections(self) -> list[FakeRealtimeConnection]:
        """Fake-server connections that have been sent their session.update."""
        return [c for c in self.fake.connections if events_of(c, "session.update")]

    # --- the tests -------------------------------------------------------------------------------

    @inlineCallbacks
    def test_whole_call_passes_mulaw_through_both_ways_paced(self) -> Any:
        yield self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.ready_connections()) == 1)
        conn = self.fake.connection(0)
        update = events_of(conn, "session.update")[0]["session"]
        self.assertEqual(update["audio"]["input"]["format"], {"type": "audio/pcmu"})
        self.assertEqual(update["audio"]["output"]["format"], {"type": "audio/pcmu"})
        self.assertEqual(conn.headers.get("authorization"), f"Bearer {API_KEY}")
        # Nagle is off on the backend socket: 20 ms appends must not wait for delayed ACKs.
        handle = self.backend_websockets[0].transport.getHandle()
        self.assertEqual(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        # The caller talks (quiet, then loud, then quiet long enough to end the turn).
        caller = quiet_frames(10, seed=1) + [LOUD] * 10 + quiet_frames(12, seed=2)
        client.send_audio(caller)
        expected = pattern(1000 * 8, 0 * 10 + 1)  # the fake's first response on connection 0
        yield factory.when(lambda: len(client.audio()) >= len(expected))
        # Up: every caller byte reached the input buffer, unaltered, as one append per frame.
        yield self.fake.when(lambda: len(conn.input_audio) >= len(caller) * FRAME_BYTES)
        self.assertEqual(bytes(conn.input_audio), b"".join(caller))
        appends = events_of(conn, "input_audio_buffer.append")
        self.assertTrue(all(len(base64.b64decode(e["audio"])) % FRAME_BYTES == 0 for e in appends))
        # Down: the irregular deltas arrive as exact 160-byte frames, byte-identical.
        self.assertTrue(all(len(payload) == FRAME_BYTES for _, payload in client.media))
        self.assertEqual(client.audio(), expected)
        # Paced: the fake sent all 50 frames' worth within a few reactor turns, yet they arrived
        # spread over (nearly) their play time, less the lead. A loose lower bound: a stalled
        # machine can only make the spread longer, never shorter.
        span_s = client.media[-1][0] - client.media[0][0]
        lead_s = self.service.config.playout.lead_ms / 1000.0
        self.assertGreaterEqual(span_s, 0.8 * (len(client.media) - 1) * FRAME_MS / 1000.0 - lead_s)
        self.assertTrue(any(m["event"] == "mark" for m in client.received))
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("mediaproxy_frames_total", {"platform": "twilio", "direction": "out"}), 50)

    @inlineCallbacks
    def test_barge_in_truncates_at_the_played_position(self) -> Any:
        # A 4 s answer, held by the server after 2 s so that it is still in progress (and can be
        # cancelled by the server's VAD) when the caller talks over it.
        self.fake.response_audio = lambda conn, n, bpm: pattern(4000 * bpm, conn * 10 + n)
        self.fake.pause_after_ms = 2000
        self.fake.late_deltas = 3
        yield self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        client.send_audio(quiet_frames(5, seed=1) + [LOUD] * 10 + quiet_frames(12, seed=2))
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).response is not None
                             and bool(self.fake.connection(0).response.get("paused")))
        conn = self.fake.connection(0)
        response = conn.response
        assert response is not None
        # Let the caller hear a while: several marks echoed after real playback.
        yield factory.when(lambda: len(client.echoed) >= 3 and len(client.media) >= 20)
        # Talk over the bot. The echoes sent before this frame reach the proxy before it does.
        last_echo = client.echoed[-1][1]
        _, _, position = last_echo.partition(":")
        acknowledged_ms = float(position)
        media_before = len(client.media)
        seen = len(client.received)
        client.send_audio([LOUD])
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
        heard_upper_ms = client.heard_at_clear_ms[-1]
        sent_ms = len(client.media) * FRAME_MS
        yield self.fake.when(lambda: bool(conn.truncations) or bool(conn.errors_sent))
        self.assertEqual(conn.errors_sent, [])
        [(item_id, end_ms)] = conn.truncations
        self.assertEqual(item_id, response["item_id"])
        truncate = events_of(conn, "conversation.item.truncate")[0]
        self.assertIsInstance(truncate["audio_end_ms"], int)
        self.assertEqual(truncate["content_index"], 0)
        # The played position: at least what the caller acknowledged before talking, at most
        # what it had heard when the flush arrived, and below everything sent and received.
        received_ms = response["sent"] // 8
        self.assertGreaterEqual(end_ms, int(acknowledged_ms))
        self.assertLessEqual(end_ms, heard_upper_ms + 1)
        self.assertLess(end_ms, sent_ms)
        self.assertLess(end_ms, received_ms)
        self.assertLess(end_ms, 2000)
        self.assertGreaterEqual(media_before * FRAME_MS, int(acknowledged_ms))
        # interrupt_response is on: the server cancels by itself, the proxy must not.
        self.assertEqual(events_of(conn, "response.cancel"), [])
        self.assertEqual(self.metric("mediaproxy_bargein_seconds_count"), 1)
        self.assertGreater(self.metric("mediaproxy_frames_dropped_total", {"direction": "out", "reason": "bargein"}), 0)
        # The cancelled item's late deltas (sent after speech_started) never reach the caller:
        # after the clear, nothing more arrives, and what did arrive is a prefix of the answer.
        clear_index = max(i for i, m in enumerate(client.received) if m["event"] == "clear")
        # A mark round trip after the clear proves the proxy handled everything before it.
        client.send_audio(quiet_frames(1, seed=9))
        yield self.fake.when(lambda: len(conn.input_audio) >= len(client.sent_audio))
        self.assertEqual([m for m in client.received[clear_index + 1:] if m["event"] == "media"], [])
        self.assertEqual(client.audio(), response["audio"][: len(client.audio())])
        self.assertEqual(bytes(conn.input_audio), bytes(client.sent_audio))
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_backend_drop_reconnects_and_the_call_goes_on(self) -> Any:
        yield self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        first = pattern(1000 * 8, 1)
        yield factory.when(lambda: len(client.audio()) >= len(first))
        self.assertEqual(client.audio(), first)
        self.fake.connection(0).drop()
        yield self.fake.when(lambda: len(self.ready_connections()) == 2)
        second = self.fake.connection(1)
        # The configuration is replayed with a note that the conversation continues.
        self.assertEqual(events_of(second, "session.update")[0]["session"]["audio"]["input"]["format"],
                         {"type": "audio/pcmu"})
        yield self.fake.when(lambda: bool(events_of(second, "conversation.item.create")))
        notes = [e["item"] for e in events_of(second, "conversation.item.create")]
        self.assertEqual(notes[0]["role"], "system")
        self.assertEqual(events_of(second, "response.create"), [])  # no second greeting
        self.assertFalse(factory.closed.called)
        # Caller audio keeps flowing to the new connection, and the bot answers on it.
        words = quiet_frames(3, seed=4) + [LOUD] * 5 + quiet_frames(12, seed=5)
        client.send_audio(words)
        answer = pattern(1000 * 8, 1 * 10 + 1)
        yield factory.when(lambda: len(client.audio()) >= len(first) + len(answer))
        self.assertEqual(client.audio(), first + answer)
        self.assertTrue(bytes(second.input_audio).endswith(b"".join(words)))
        self.assertFalse(factory.closed.called)
        self.assertEqual(self.metric("mediaproxy_backend_reconnects_total", {"backend": "openai"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_active", {"platform": "twilio"}), 1)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_auth_failure_ends_the_call(self) -> Any:
        self.fake.reject_auth = True
        yield self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        client.send_audio(quiet_frames(5, seed=1))
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_active", {"platform": "twilio"}), 0)
        self.assertEqual(self.metric("mediaproxy_backend_reconnects_total", {"backend": "openai"}), 0)
        self.assertEqual(len(self.fake.handshakes), 1)  # a bad key is never retried
        self.assertEqual(self.fake.connections, [])

    @inlineCallbacks
    def test_invalid_api_key_error_ends_the_call(self) -> Any:
        self.fake.error_after_created = {"code": "invalid_api_key", "message": "Incorrect API key provided"}
        yield self.start_proxy()
        factory = self.call()
        yield factory.opened
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        labels = {"backend": "openai", "code": "invalid_api_key"}
        self.assertEqual(self.metric("mediaproxy_backend_errors_total", labels),
                         1)
        self.assertEqual(len(self.fake.handshakes), 1)

    @inlineCallbacks
    def test_two_concurrent_calls_are_isolated(self) -> Any:
        yield self.start_proxy()
        factories = [self.call("1"), self.call("2")]
        clients = [(yield factories[0].opened), (yield factories[1].opened)]
        yield self.fake.when(lambda: len(self.ready_connections()) == 2)
        for n, client in enumerate(clients):
            client.send_audio(quiet_frames(4, seed=10 + n) + [LOUD] * 5 + quiet_frames(12, seed=20 + n))
        pairs = list(zip(factories, clients, strict=True))
        yield DeferredList([f.when(lambda c=c: len(c.audio()) >= 8000) for f, c in pairs])
        # Each fake connection heard exactly one caller, and that caller got that connection's
        # answer: match them up by content.
        by_input = {bytes(c.input_audio): c for c in self.fake.connections}
        self.assertEqual(len(by_input), 2)
        conns = [by_input[bytes(client.sent_audio)] for client in clients]
        for client, conn in zip(clients, conns, strict=True):
            self.assertEqual(client.audio(), pattern(1000 * 8, conn.index * 10 + 1))
        # Barge-in on one call leaves the other alone.
        self.fake.pause_after_ms = 500
        self.fake.response_audio = lambda conn, n, bpm: pattern(3000 * bpm, conn * 10 + n)
        for client in clients:
            client.send_audio([LOUD] * 3 + quiet_frames(12, seed=30))
        yield DeferredList([f.when(lambda c=c: len(c.audio()) >= 8000 + 160 * 15) for f, c in pairs])
        seen = [len(client.received) for client in clients]
        clients[0].send_audio([LOUD])
        yield factories[0].when(lambda: any(m["event"] == "clear" for m in clients[0].received[seen[0]:]))
        self.assertFalse(any(m["event"] == "clear" for m in clients[1].received[seen[1]:]))
        # Both callers talked over the end of their first answer (Twilio still held its last
        # frames): each first answer was truncated on its own connection.
        self.assertEqual([t[0] for t in conns[1].truncations], [f"item_{conns[1].index}_1"])
        yield self.fake.when(lambda: len(conns[0].truncations) == 2)
        self.assertEqual(conns[0].truncations[1][0], f"item_{conns[0].index}_2")
        self.assertEqual([t[0] for t in conns[1].truncations], [f"item_{conns[1].index}_1"])
        for client in clients:
            client.stop()
        yield DeferredList([f.closed for f in factories])
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 2)

    @inlineCallbacks
    def test_greeting_the_bot_speaks_first(self) -> Any:
        yield self.start_proxy(greeting="Thanks for calling Acme.")
        factory = self.call()
        client = yield factory.opened
        expected = pattern(1000 * 8, 1)
        yield factory.when(lambda: len(client.audio()) >= len(expected))
        self.assertEqual(client.sent_audio, b"")  # the caller has not said a word
        self.assertEqual(client.audio(), expected)
        conn = self.fake.connection(0)
        [greeting] = [e["item"] for e in events_of(conn, "conversation.item.create")]
        self.assertEqual(greeting["role"], "system")
        self.assertIn("Thanks for calling Acme.", greeting["content"][0]["text"])
        self.assertEqual(len(events_of(conn, "response.create")), 1)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_barge_in_before_anything_played_cancels_when_the_server_will_not(self) -> Any:
        # interrupt_response off: only the proxy can stop the answer. The caller talks while the
        # answer is being generated but before any of its audio arrived (nothing was heard, so
        # nothing to truncate): the response must still be cancelled.
        self.fake.pause_after_ms = 0
        yield self.start_proxy(interrupt_response="false")
        factory = self.call()
        client = yield factory.opened
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).response is not None
                             and bool(self.fake.connection(0).response.get("paused")))
        conn = self.fake.connection(0)
        self.assertEqual(conn.turn_detection["interrupt_response"], False)
        seen = len(client.received)
        client.send_audio([LOUD])
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
        yield self.fake.when(lambda: bool(events_of(conn, "response.cancel")))
        self.assertEqual(conn.truncations, [])
        self.assertEqual(conn.errors_sent, [])
        self.assertIsNone(conn.response)  # cancelled
        self.assertEqual(client.media, [])
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_barge_in_with_server_interrupt_off_truncates_and_cancels(self) -> Any:
        self.fake.response_audio = lambda conn, n, bpm: pattern(3000 * bpm, conn * 10 + n)
        self.fake.pause_after_ms = 1500
        yield self.start_proxy(interrupt_response="false")
        factory = self.call()
        client = yield factory.opened
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        yield factory.when(lambda: len(client.echoed) >= 2)
        conn = self.fake.connection(0)
        seen = len(client.received)
        client.send_audio([LOUD])
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
        yield self.fake.when(lambda: bool(events_of(conn, "response.cancel")) and bool(conn.truncations))
        self.assertEqual(conn.errors_sent, [])
        self.assertEqual(len(events_of(conn, "response.cancel")), 1)
        [(item_id, end_ms)] = conn.truncations
        self.assertEqual(item_id, "item_0_1")
        self.assertLess(end_ms, len(client.media) * FRAME_MS)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_backend_drop_mid_answer_plays_what_arrived_and_goes_on(self) -> Any:
        # The connection drops while an answer is still being generated: what arrived is played
        # out in full (no frame stuck waiting for a "done" that will never come), the call stays
        # up, and the next answer comes over the new connection.
        self.fake.response_audio = lambda conn, n, bpm: pattern(2000 * bpm, conn * 10 + n)
        self.fake.pause_after_ms = 500
        yield self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).response is not None
                             and bool(self.fake.connection(0).response.get("paused")))
        first = self.fake.connection(0)
        arrived = first.response["audio"][: first.response["sent"]]
        first.drop()
        yield self.fake.when(lambda: len(self.ready_connections()) == 2)
        padded = arrived + b"\xff" * (-len(arrived) % FRAME_BYTES)
        yield factory.when(lambda: len(client.audio()) >= len(padded))
        self.assertEqual(client.audio(), padded)
        self.fake.pause_after_ms = None
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=2))
        answer = pattern(2000 * 8, 1 * 10 + 1)
        yield factory.when(lambda: len(client.audio()) >= len(padded) + len(answer))
        self.assertEqual(client.audio(), padded + answer)
        self.assertFalse(factory.closed.called)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    # --- failed responses ------------------------------------------------------------------------

    @inlineCallbacks
    def assert_ends_backend_failed(self, factory: PlayingTwilioFactory) -> Any:
        code = yield factory.closed
        self.assertIsNotNone(code)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        self.assertEqual(self.metric("mediaproxy_calls_active", {"platform": "twilio"}), 0)

    @inlineCallbacks
    def test_failed_response_fatal_ends_the_call(self) -> Any:
        self.fake.fail_responses = ["insufficient_quota"]
        yield self.start_proxy(greeting="Hello.")
        factory = self.call()
        yield factory.opened
        yield self.assert_ends_backend_failed(factory)
        self.assertEqual(self.metric("mediaproxy_backend_errors_total",
                                     {"backend": "openai", "code": "insufficient_quota"}), 1)
        self.assertEqual(len(events_of(self.fake.connection(0), "response.create")), 1)  # never retried

    @inlineCallbacks
    def test_failed_response_transient_is_retried_and_the_bot_speaks(self) -> Any:
        self.fake.fail_responses = ["server_error"]
        yield self.start_proxy(greeting="Hello.", response_retry_backoff_ms="10")
        factory = self.call()
        client = yield factory.opened
        expected = pattern(1000 * 8, 2)  # the second response on connection 0
        yield factory.when(lambda: len(client.audio()) >= len(expected))
        self.assertEqual(client.audio(), expected)
        self.assertEqual(len(events_of(self.fake.connection(0), "response.create")), 2)
        errors = {"backend": "openai", "code": "server_error"}
        self.assertEqual(self.metric("mediaproxy_backend_errors_total", errors), 1)
        self.assertFalse(factory.closed.called)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_failed_response_transient_exhausted_ends_the_call(self) -> Any:
        self.fake.fail_responses = ["rate_limit_exceeded"] * 3
        yield self.start_proxy(greeting="Hello.", response_retries="2", response_retry_backoff_ms="10")
        factory = self.call()
        yield factory.opened
        yield self.assert_ends_backend_failed(factory)
        self.assertEqual(len(events_of(self.fake.connection(0), "response.create")), 3)
        self.assertEqual(self.metric("mediaproxy_backend_errors_total",
                                     {"backend": "openai", "code": "rate_limit_exceeded"}), 3)

    # --- flow control and barge-in ----------------------------------------------------------------

    @inlineCallbacks
    def test_barge_in_at_ten_times_real_time_is_never_held_behind_queued_audio(self) -> Any:
        # 60 s of answer at 10x real time against a 10 s playout bound: the bound is passed
        # within about a second. The caller talks at 2 s: the flush must follow the server's
        # speech_started within a frame, the truncate must be at what was heard, and nothing of
        # the cut answer may follow the clear.
        yield self.fake.stop()
        self.fake = FakeRealtimeServer(reactor, api_key=API_KEY, speed=10.0)
        self.fake_url = self.fake.listen()
        self.fake.response_audio = lambda conn, n, bpm: pattern(60000 * bpm, conn * 10 + n)
        sent_at: dict[str, float] = {}
        send = FakeRealtimeConnection.send

        def stamped(conn: FakeRealtimeConnection, event: dict[str, Any]) -> None:
            sent_at.setdefault(event["type"], reactor.seconds())
            send(conn, event)

        self.patch(FakeRealtimeConnection, "send", stamped)
        yield self.start_proxy({"max_buffer_ms": "10000"}, greeting="Hello.")
        factory = self.call()
        client = yield factory.opened
        yield factory.when(lambda: client.player.position_ms >= 2000)
        seen = len(client.received)
        client.send_audio([LOUD])
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
        conn = self.fake.connection(0)
        self.assertLessEqual(client.clear_times[-1] - sent_at["input_audio_buffer.speech_started"], 0.020)
        heard_ms = client.heard_at_clear_ms[-1]
        yield self.fake.when(lambda: bool(conn.truncations) or bool(conn.errors_sent))
        self.assertEqual(conn.errors_sent, [])
        [(_, end_ms)] = conn.truncations
        mark_ms = self.service.config.playout.mark_interval_ms
        self.assertGreaterEqual(end_ms, 2000 - mark_ms - FRAME_MS)
        self.assertLessEqual(end_ms, heard_ms + mark_ms + FRAME_MS)
        # A round trip after the clear: nothing of the cut answer came after it.
        clear_index = max(i for i, m in enumerate(client.received) if m["event"] == "clear")
        client.send_audio(quiet_frames(1, seed=9))
        yield self.fake.when(lambda: len(conn.input_audio) >= len(client.sent_audio))
        self.assertEqual([m for m in client.received[clear_index + 1:] if m["event"] == "media"], [])
        self.assertEqual(client.audio(), pattern(60000 * 8, 1)[: len(client.audio())])  # an exact prefix
        # The queue never held more than max_buffer_ms: every observation is in the 10 s bucket.
        count = self.metric("mediaproxy_playout_buffer_seconds_count")
        self.assertGreater(count, 0)
        self.assertEqual(self.metric("mediaproxy_playout_buffer_seconds_bucket", {"le": "10.0"}), count)
        overflow = {"direction": "out", "reason": "overflow"}
        self.assertGreater(self.metric("mediaproxy_frames_dropped_total", overflow), 0)
        client.stop()
        yield factory.closed
