"""Loopback integration of the Gemini Live backend: the real service on 127.0.0.1:0 with
``[platform:twilio]`` wired to ``[backend:gemini] type = gemini``, pointed at the fake Live API
(mediaproxy/testing/fake_gemini.py), and the scripted Twilio client of the OpenAI loopback tests
(plays what it receives at real time, echoes marks, obeys ``clear``).

µ-law 8 kHz goes up as 16 kHz PCM and the fake's 24 kHz answers come back as µ-law. Nothing here
sleeps: every step waits on a Deferred fired by the event it needs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.backends.gemini_socket import GeminiClientProtocol
from mediaproxy.config import parse_config
from mediaproxy.testing.fake_audio import LOUD_FRAME
from mediaproxy.testing.fake_gemini import FakeGeminiServer
from tests.test_loopback_openai import FRAME_MS, TwilioCallersLoopback, quiet_frames

API_KEY = "dummy-gemini-key"
LOUD = LOUD_FRAME["audio/pcmu"]


class GeminiLoopbackTests(TwilioCallersLoopback, TestCase):
    fake: FakeGeminiServer

    def setUp(self) -> None:
        self.use_fake(FakeGeminiServer(reactor, api_key=API_KEY), GeminiClientProtocol)
        self.fake_url = self.fake.listen()

    def start_proxy(self, key: str = API_KEY, **backend: str) -> None:
        config = parse_config("test.ini", {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": "gemini"},
            "backend:gemini": {"type": "gemini", "url": self.fake_url, "api_key": key,
                               "reconnect_backoff_ms": "0", "reconnect_max_backoff_ms": "0",
                               "keepalive_seconds": "0", **backend},
        }, {})
        self.serve(config)

    def turn(self) -> list[bytes]:
        return quiet_frames(5, seed=1) + [LOUD] * 10 + quiet_frames(15, seed=2)

    @inlineCallbacks
    def test_whole_call_transcodes_both_ways_and_barge_in_clears(self) -> Any:
        self.fake.answer_ms = 2000
        self.fake.hold_after_ms = 1000
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).setup is not None)
        conn = self.fake.connection(0)
        self.assertEqual(conn.params.get("key"), API_KEY)
        assert conn.setup is not None
        self.assertEqual(conn.setup["generationConfig"]["responseModalities"], ["AUDIO"])
        caller = self.turn()
        client.send_audio(caller)
        # Up: 8 kHz µ-law became 16 kHz PCM (twice the samples, two bytes each).
        yield self.fake.when(lambda: len(conn.input_audio) >= len(caller) * 160 * 4 - 64)
        # The answer is held after 1 s (still under way); the caller hears it, transcoded.
        yield self.fake.when(lambda: conn.answer is not None and bool(conn.answer.get("held")))
        yield factory.when(lambda: len(client.media) >= 20)
        self.assertTrue(all(len(payload) == 160 for _, payload in client.media))
        # Barge-in: the fake's VAD hears the caller over the answer and sends interrupted.
        seen = len(client.received)
        client.send_audio([LOUD] * 3)
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
        self.assertEqual(self.fake.interruptions, 1)
        self.assertEqual(self.metric("mediaproxy_bargein_seconds_count"), 1)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_tool_call_reaches_the_call_actions(self) -> Any:
        self.fake.next_function_call = ("end_call", {"reason": "the caller is done"})
        self.fake.answer_ms = 400
        self.start_proxy(tools="end_call")
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).setup is not None)
        conn = self.fake.connection(0)
        assert conn.setup is not None
        [tools] = conn.setup["tools"]
        self.assertEqual([d["name"] for d in tools["functionDeclarations"]], ["end_call"])
        client.send_audio(self.turn())
        # end_call with nothing left to play: the call ends the platform's way at once.
        yield factory.closed
        self.assertEqual(conn.tool_calls, {"fc_0_1": "end_call"})
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "bot_hangup"}), 1)

    @inlineCallbacks
    def test_go_away_mid_answer_reconnects_without_the_caller_noticing(self) -> Any:
        self.fake.answer_ms = 2000
        self.fake.hold_after_ms = 800
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).setup is not None)
        old = self.fake.connection(0)
        client.send_audio(self.turn())
        yield self.fake.when(lambda: old.answer is not None and bool(old.answer.get("held")))
        yield factory.when(lambda: len(client.media) >= 10)
        # The service announces the end of the connection in the middle of the answer.
        old.go_away(close_after_s=5.0)
        yield self.fake.when(lambda: len(self.fake.connections) == 2 and self.fake.connection(1).setup is not None)
        new = self.fake.connection(1)
        yield self.fake.when(lambda: new.resumed_from is not None)
        self.assertEqual(new.resumed_from, self.fake.handles[-2])
        # The rest of the answer comes on the old connection, which is then closed by the proxy.
        old.continue_answer()
        yield self.fake.when(lambda: old.closed)
        yield factory.when(lambda: len(client.media) >= 100)
        # No gap: the caller got the 2 s answer as a steady stream, whole, on the 20 ms grid.
        arrivals = [t for t, _ in client.media]
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        lead_s = self.service.config.playout.lead_ms / 1000.0 if self.service else 0.06
        self.assertLess(max(gaps), FRAME_MS / 1000.0 + lead_s + 0.1)
        self.assertEqual(len(client.media), 100)
        # The call goes on: the next turn is answered by the new connection.
        self.fake.hold_after_ms = None
        client.send_audio(self.turn())
        yield self.fake.when(lambda: new.turns >= 1 and self.fake.answers >= 2)
        yield factory.when(lambda: len(client.media) >= 200)
        self.assertFalse(factory.closed.called)
        self.assertEqual(self.metric("mediaproxy_backend_reconnects_total", backend="gemini"), 1)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_bad_key_ends_the_call(self) -> Any:
        self.start_proxy(key="wrong-key")
        factory = self.call()
        yield factory.opened
        yield factory.closed
        self.assertEqual(self.fake.refused, 1)
        self.assertEqual(len(self.fake.connections), 1)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
