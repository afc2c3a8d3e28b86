"""Loopback integration of the ElevenLabs Agents backend: the real service on 127.0.0.1:0 with
``[platform:twilio]`` wired to ``[backend:elevenlabs] type = elevenlabs``, pointed at the fake
service (mediaproxy/testing/fake_elevenlabs.py: its signed-URL HTTP API and its conversation
WebSocket), and the scripted Twilio client of the OpenAI loopback suite (plays what it receives
at real time, echoes marks).

Nothing here sleeps: every step waits on a Deferred fired by the event it needs.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.backends.elevenlabs_session import ConversationSocket
from mediaproxy.testing.fake_elevenlabs import FakeElevenLabsConnection, FakeElevenLabsServer
from mediaproxy.testing.fake_realtime import LOUD_FRAME, pattern
from tests.agent_loopback import barge_in_drops_the_cut_answer, mulaw_passes_through
from tests.support import twilio_to_backend
from tests.test_loopback_openai import TwilioCallersLoopback, quiet_frames

FRAME_BYTES = 160
LOUD = LOUD_FRAME["audio/pcmu"]
API_KEY = "dummy-elevenlabs-key"
AGENT = "agent_0123"


def proxy_config(ws_url: str, api_url: str, **backend: str) -> Any:
    """The service's config: Twilio → ElevenLabs agent at the fake service."""
    return twilio_to_backend("elevenlabs", {"type": "elevenlabs", "agent_id": AGENT, "url": ws_url, "api_url": api_url,
                                            "api_key": API_KEY, "keepalive_seconds": "0", **backend})


def of_type(connection: FakeElevenLabsConnection, kind: str) -> list[dict[str, Any]]:
    return [m for m in connection.received if m.get("type") == kind]


class ElevenLabsLoopbackTests(TwilioCallersLoopback, TestCase):
    fake: FakeElevenLabsServer

    def setUp(self) -> None:
        self.use_fake(FakeElevenLabsServer(reactor, agent_id=AGENT, api_key=API_KEY), ConversationSocket)
        self.ws_url, self.api_url = self.fake.listen()

    def start_proxy(self, **backend: str) -> None:
        self.serve(proxy_config(self.ws_url, self.api_url, **backend))

    def started(self) -> list[FakeElevenLabsConnection]:
        return [c for c in self.fake.connections if c.initiation is not None]

    # --- the tests -------------------------------------------------------------------------------

    @inlineCallbacks
    def test_signed_url_then_a_reply_with_mulaw_passed_through_both_ways(self) -> Any:
        self.start_proxy(call_context_keys="customer")
        factory = self.call(custom_parameters={"customer": "Ada", "secret": "never sent"})
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.started()) == 1)
        # The key went to the HTTP API only; the WebSocket was dialled at the signed URL.
        self.assertEqual(self.fake.http_requests, [("/v1/convai/conversation/get-signed-url", AGENT, API_KEY)])
        self.assertEqual(self.fake.handshakes[0]["conversation_signature"], "sig-1")
        conn = self.fake.connection(0)
        self.assertEqual(conn.received[0], {"type": "conversation_initiation_client_data",
                                            "dynamic_variables": {"customer": "Ada"}})
        # Up: every caller byte, unaltered (the agent takes ulaw_8000), one chunk per frame.
        yield mulaw_passes_through(self, factory, client, conn, lambda: conn.chunks)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("frames_total", {"platform": "twilio", "direction": "out"}), 50)

    @inlineCallbacks
    def test_a_pcm_16k_agent_is_transcoded_per_call(self) -> Any:
        self.fake.input_format = self.fake.output_format = "pcm_16000"
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        caller = quiet_frames(5, seed=1) + [LOUD] * 10 + quiet_frames(12, seed=2)
        client.send_audio(caller)
        yield self.fake.when(lambda: bool(self.started()) and len(self.fake.connection(0).turns) == 1)
        # 1 s of 16 kHz PCM down becomes 1 s of 8 kHz µ-law (50 frames), and the caller's 27
        # frames of µ-law go up as 16 kHz PCM (twice the samples, two bytes each).
        yield factory.when(lambda: len(client.audio()) >= 8000)
        conn = self.fake.connection(0)
        yield self.fake.when(lambda: len(conn.input_audio) >= len(caller) * FRAME_BYTES * 4 - 64)
        self.assertEqual(len(client.audio()), 8000)
        self.assertLess(abs(len(conn.input_audio) - len(caller) * FRAME_BYTES * 4), 64)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_interruption_clears_twilio_and_drops_chunks_at_or_before_its_event_id(self) -> Any:
        # A 4 s answer held after 2 s; three more chunks of it are "in flight" after the
        # interruption and must never be played; the next answer (a later event id) plays whole.
        yield barge_in_drops_the_cut_answer(self)

    @inlineCallbacks
    def test_every_ping_is_answered_with_its_event_id(self) -> Any:
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.started()) == 1)
        conn = self.fake.connection(0)
        ids = [conn.ping(), conn.ping(ping_ms=None), conn.ping(ping_ms=120)]
        yield self.fake.when(lambda: all(conn.pings.values()))
        self.assertEqual([m["event_id"] for m in of_type(conn, "pong")], ids)
        self.assertEqual(of_type(conn, "pong")[0], {"type": "pong", "event_id": ids[0]})
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_end_call_tool_after_the_goodbye(self) -> Any:
        self.fake.next_tool_call = ("end_call", {"reason": "the caller is done"})
        self.fake.speak_before_tool_call = True
        self.start_proxy(tools="end_call")
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.started()) == 1)
        conn = self.fake.connection(0)
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        yield factory.closed
        # The goodbye was played to its last frame before the call ended.
        self.assertEqual(client.audio(), conn.turns[0])
        self.assertEqual(list(conn.tool_calls.values()), ["end_call"])
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "bot_hangup"}), 1)

    @inlineCallbacks
    def test_a_webhook_less_unknown_tool_is_answered_as_an_error(self) -> Any:
        self.fake.next_tool_call = ("lookup_order", {"order": "42"})
        self.start_proxy(tools="end_call")
        factory = self.call()
        client = yield factory.opened
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        yield self.fake.when(lambda: bool(self.fake.connections) and bool(self.fake.connection(0).tool_results))
        [result] = self.fake.connection(0).tool_results
        self.assertEqual(result["tool_call_id"], "tc_0_1")
        self.assertTrue(result["is_error"])
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_the_agent_ending_the_conversation_ends_the_call_after_its_last_words(self) -> Any:
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        client.send_audio([LOUD] * 5 + quiet_frames(12, seed=1))
        yield self.fake.when(lambda: bool(self.fake.connections) and len(self.fake.connection(0).turns) == 1
                             and self.fake.connection(0).turn is None)
        conn = self.fake.connection(0)
        conn.end_conversation()
        yield factory.closed
        self.assertEqual(client.audio(), conn.turns[0])
        self.assertEqual(len(self.fake.connections), 1)  # no new conversation
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "bot_hangup"}), 1)

    @inlineCallbacks
    def test_a_drop_starts_a_new_conversation_told_the_recent_exchange(self) -> Any:
        self.fake.allowed_overrides = {"agent.first_message"}
        self.start_proxy(greet_on_reconnect="false")
        factory = self.call()
        client = yield factory.opened
        client.send_audio([LOUD] * 3 + quiet_frames(12, seed=1))
        first = pattern(1000 * 8, 1)
        yield factory.when(lambda: len(client.audio()) >= len(first))
        self.fake.connection(0).drop()
        yield self.fake.when(lambda: len(self.started()) == 2 and bool(self.fake.connection(1).contextual_updates))
        second = self.fake.connection(1)
        # A fresh signed URL, no greeting this time, the exchange so far as background.
        self.assertEqual(len(self.fake.http_requests), 2)
        self.assertEqual(second.initiation["conversation_config_override"],  # type: ignore[index]
                         {"agent": {"first_message": ""}})
        [update] = second.contextual_updates
        self.assertIn("do not greet the caller again", update)
        self.assertIn("assistant: answer 1", update)
        words = quiet_frames(3, seed=4) + [LOUD] * 5 + quiet_frames(12, seed=5)
        client.send_audio(words)
        answer = pattern(1000 * 8, 11)
        yield factory.when(lambda: len(client.audio()) >= len(first) + len(answer))
        self.assertEqual(client.audio(), first + answer)
        self.assertFalse(factory.closed.called)
        self.assertEqual(self.metric("backend_reconnects_total", {"backend": "elevenlabs"}), 1)
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "completed"}), 1)

    @inlineCallbacks
    def test_a_bad_key_ends_the_call_cleanly_and_twilio_is_told(self) -> Any:
        self.start_proxy(api_key="wrong-key-wrong-key")
        factory = self.call()
        yield factory.opened
        code = yield factory.closed
        self.assertEqual(code, 1000)  # the stream closed normally: Twilio runs the next TwiML verb
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        self.assertEqual(self.metric("backend_reconnects_total", {"backend": "elevenlabs"}), 0)
        self.assertEqual(len(self.fake.http_requests), 1)
        self.assertEqual(self.fake.connections, [])

    @inlineCallbacks
    def test_an_override_the_agent_refuses_ends_the_call(self) -> Any:
        self.start_proxy(greeting="Hi!")
        factory = self.call()
        yield factory.opened
        yield factory.closed
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        self.assertEqual(self.metric("backend_reconnects_total", {"backend": "elevenlabs"}), 0)

    @inlineCallbacks
    def test_a_public_agent_is_dialled_by_agent_id_without_a_key(self) -> Any:
        self.fake.private = False
        self.start_proxy(api_key="")
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.started()) == 1)
        self.assertEqual(self.fake.http_requests, [])
        self.assertEqual(self.fake.handshakes, [{"agent_id": AGENT}])
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_caller_keys_reach_the_agent_as_one_user_message(self) -> Any:
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.started()) == 1)
        conn = self.fake.connection(0)
        for digit in "42#":
            client.send({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": digit}})
        yield self.fake.when(lambda: bool(of_type(conn, "user_message")))
        self.assertEqual(of_type(conn, "user_message"), [{"type": "user_message",
                                                          "text": "(The caller pressed the keys: 42)"}])
        yield factory.when(lambda: len(client.audio()) >= 8000)  # the agent answers them
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_errors_and_unknown_messages_are_counted_and_ignored(self) -> Any:
        self.start_proxy()
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: len(self.started()) == 1)
        conn = self.fake.connection(0)
        conn.send({"type": "error", "error_event": {"code": 1011, "message": "boom"}})
        conn.send({"type": "brand_new_event"})
        conn.send({"type": "audio", "audio_event": {"audio_base_64": "***", "event_id": 3}})
        conn.send({"type": "vad_score", "vad_score_event": {"vad_score": 0.9}})
        conn.ping()
        yield self.fake.when(lambda: all(conn.pings.values()))
        errors = "mediaproxy_backend_errors_total"
        self.assertEqual(self.metric(errors, {"backend": "elevenlabs", "code": "error"}), 1)
        self.assertEqual(self.metric(errors, {"backend": "elevenlabs", "code": "unknown_message"}), 1)
        self.assertEqual(self.metric(errors, {"backend": "elevenlabs", "code": "malformed_message"}), 1)
        self.assertFalse(factory.closed.called)
        client.stop()
        yield factory.closed
