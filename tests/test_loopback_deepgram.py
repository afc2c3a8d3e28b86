"""Loopback integration of the Deepgram Voice Agent backend: the real service on 127.0.0.1:0 with
``[platform:twilio]`` wired to ``[backend:deepgram] type = deepgram``, pointed at the fake Voice
Agent server (mediaproxy/testing/fake_deepgram.py), and the scripted Twilio client of the OpenAI
loopback suite (plays what it receives at real time, echoes marks).

Nothing here sleeps: every step waits on a Deferred fired by the event it needs.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.backends.deepgram_session import AgentClientProtocol
from mediaproxy.testing.fake_audio import LOUD_FRAME, pattern
from mediaproxy.testing.fake_deepgram import FakeDeepgramConnection, FakeDeepgramServer
from tests.agent_loopback import barge_in_drops_the_cut_answer, mulaw_passes_through
from tests.support import twilio_to_backend
from tests.test_loopback_openai import TwilioCallersLoopback, quiet_frames

FRAME_BYTES = 160
LOUD = LOUD_FRAME["audio/pcmu"]
API_KEY = "dummy-deepgram-key"


def proxy_config(fake_url: str, **backend: str) -> Any:
    """The service's config: Twilio → Deepgram Voice Agent at the fake server."""
    return twilio_to_backend("deepgram", {"type": "deepgram", "url": fake_url, "api_key": API_KEY,
                                          "instructions": "You are a helpful agent.", "ping_seconds": "0",
                                          **backend})


def of_type(connection: FakeDeepgramConnection, kind: str) -> list[dict[str, Any]]:
    return [m for m in connection.received if m.get("type") == kind]


class DeepgramLoopbackTests(TwilioCallersLoopback, TestCase):
    fake: FakeDeepgramServer

    def setUp(self) -> None:
        self.use_fake(FakeDeepgramServer(reactor, api_key=API_KEY), AgentClientProtocol)
        self.fake_url = self.fake.listen()

    def start_proxy(self, **backend: str) -> None:
        self.serve(proxy_config(self.fake_url, **backend))

    def applied(self) -> list[FakeDeepgramConnection]:
        return [c for c in self.fake.connections if c.settings is not None]

    # --- the tests -------------------------------------------------------------------------------

    @inlineCallbacks
    def test_whole_call_passes_mulaw_through_both_ways(self) -> Any:
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.applied()) == 1)
        conn = self.fake.connection(0)
        self.assertEqual(conn.headers.get("authorization"), f"Token {API_KEY}")
        settings = conn.settings
        assert settings is not None
        self.assertEqual(conn.received[0]["type"], "Settings")
        self.assertEqual(settings["audio"]["input"], {"encoding": "mulaw", "sample_rate": 8000})
        self.assertEqual(settings["audio"]["output"], {"encoding": "mulaw", "sample_rate": 8000, "container": "none"})
        self.assertEqual(settings["agent"]["think"]["prompt"], "You are a helpful agent.")
        # Up: every caller byte, unaltered, one binary frame per platform frame.
        yield mulaw_passes_through(self, factory, client, conn, lambda: conn.audio_frames)
        self.assertEqual(conn.errors_sent, [])
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("frames_total", {"platform": "twilio", "direction": "out"}), 50)

    @inlineCallbacks
    def test_barge_in_clears_twilio_and_drops_the_rest_of_the_turn(self) -> Any:
        # A 4 s answer held after 2 s, so that it is still in progress when the caller talks; three
        # more chunks are "in flight" after UserStartedSpeaking and must never be played.
        yield barge_in_drops_the_cut_answer(self)

    @inlineCallbacks
    def test_end_call_after_the_goodbye(self) -> Any:
        self.fake.next_function_call = ("end_call", json.dumps({"reason": "the caller is done"}))
        self.fake.speak_before_function_call = True
        self.start_proxy(tools="end_call")
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.applied()) == 1)
        conn = self.fake.connection(0)
        [function] = conn.settings["agent"]["think"]["functions"]  # type: ignore[index]
        self.assertEqual(function["name"], "end_call")
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        yield factory.closed
        # The goodbye was played to its last frame before the call ended.
        self.assertEqual(client.audio(), conn.turns[0])
        self.assertEqual(list(conn.function_calls.values()), ["end_call"])
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "bot_hangup"}), 1)

    @inlineCallbacks
    def test_backend_drop_reconnects_and_the_call_goes_on(self) -> Any:
        self.start_proxy(greeting="Hello there.")
        factory = self.call()
        client = yield factory.opened
        first = pattern(1000 * 8, 1)  # the greeting
        yield factory.when(lambda: len(client.audio()) >= len(first))
        self.assertEqual(client.audio(), first)
        client.send_audio([LOUD] * 3 + quiet_frames(12, seed=1))
        second = pattern(1000 * 8, 2)
        yield factory.when(lambda: len(client.audio()) >= len(first) + len(second))
        self.fake.connection(0).drop()
        yield self.fake.when(lambda: len(self.applied()) == 2)
        resumed = self.fake.connection(1).settings
        assert resumed is not None
        # The Settings are sent again: no second greeting, the conversation so far in the prompt.
        self.assertNotIn("greeting", resumed["agent"])
        self.assertIn("do not greet the caller again", resumed["agent"]["think"]["prompt"])
        self.assertIn("assistant: answer 2", resumed["agent"]["think"]["prompt"])
        self.assertEqual(resumed["audio"]["input"]["encoding"], "mulaw")
        words = quiet_frames(3, seed=4) + [LOUD] * 5 + quiet_frames(12, seed=5)
        client.send_audio(words)
        answer = pattern(1000 * 8, 11)
        yield factory.when(lambda: len(client.audio()) >= len(first) + len(second) + len(answer))
        self.assertEqual(client.audio(), first + second + answer)
        self.assertTrue(bytes(self.fake.connection(1).input_audio).endswith(b"".join(words)))
        self.assertFalse(factory.closed.called)
        self.assertEqual(self.metric("backend_reconnects_total", {"backend": "deepgram"}), 1)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_auth_failure_ends_the_call(self) -> Any:
        self.fake.reject_auth = True
        self.start_proxy()
        factory = self.call()
        yield factory.opened
        yield factory.closed
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        self.assertEqual(self.metric("backend_reconnects_total", {"backend": "deepgram"}), 0)
        self.assertEqual(len(self.fake.handshakes), 1)

    @inlineCallbacks
    def test_errors_warnings_and_unknown_messages_are_counted(self) -> Any:
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.applied()) == 1)
        conn = self.fake.connection(0)
        conn.send_error("PROMPT_TOO_LONG", "truncated", warning=True)
        conn.send_error("SOMETHING_NEW", "?", warning=True)
        conn.send({"type": "BrandNewEvent"})
        conn.send_error("INVALID_SETTINGS", "bad")
        yield factory.closed
        errors = "mediaproxy_backend_errors_total"
        self.assertEqual(self.metric(errors, {"backend": "deepgram", "code": "PROMPT_TOO_LONG"}), 1)
        self.assertEqual(self.metric(errors, {"backend": "deepgram", "code": "other"}), 1)
        self.assertEqual(self.metric(errors, {"backend": "deepgram", "code": "unknown_message"}), 1)
        self.assertEqual(self.metric(errors, {"backend": "deepgram", "code": "INVALID_SETTINGS"}), 1)
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        del client
