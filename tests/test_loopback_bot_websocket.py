"""Loopback integration of the ``type = websocket`` backend (a team's own bot): the real service on
127.0.0.1:0 with ``[platform:twilio]`` wired to ``[backend:bot] type = websocket``, pointed at the
fake bot (mediaproxy/testing/fake_bot.py), and the scripted Twilio client of the OpenAI loopback
suite (plays what it receives at real time, echoes marks).

Nothing here sleeps: every step waits on a Deferred fired by the event it needs.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import MULAW_8K, AudioFormat
from mediaproxy.audio.transcode import Transcoder
from mediaproxy.backends.bot_websocket_session import BotClientProtocol
from mediaproxy.testing.fake_bot import FakeBotServer
from mediaproxy.testing.fake_realtime import LOUD_FRAME, pattern
from tests.support import twilio_to_backend
from tests.test_loopback_openai import TwilioCallersLoopback, quiet_frames

L16_16K = AudioFormat("l16", 16000)
LOUD = LOUD_FRAME["audio/pcmu"]
API_KEY = "dummy-bot-key"


def proxy_config(bot_url: str, platform: dict[str, str] | None = None, **backend: str) -> Any:
    """The service's config: Twilio → the bot at the fake server."""
    return twilio_to_backend("bot", {"type": "websocket", "url": bot_url, "api_key": API_KEY, "ping_seconds": "0",
                                     **backend}, platform=platform)


def converted(src: AudioFormat, dst: AudioFormat, data: bytes) -> bytes:
    """``data`` as the proxy's transcoder turns it into ``dst`` (chunking does not matter)."""
    return Transcoder(src, dst).convert(data)


class BotLoopbackTests(TwilioCallersLoopback, TestCase):
    fake: FakeBotServer

    def setUp(self) -> None:
        self.use_fake(FakeBotServer(reactor, api_key=API_KEY), BotClientProtocol)
        self.bot_url = self.fake.listen()

    def start_proxy(self, platform: dict[str, str] | None = None, **backend: str) -> None:
        self.serve(proxy_config(self.bot_url, platform, **backend))

    @inlineCallbacks
    def connected(self) -> Any:
        """The call's Twilio client and the bot's connection, once ``start`` arrived."""
        factory = self.call()
        client = yield factory.opened
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).start is not None)
        return factory, client, self.fake.connection(0)

    # --- the tests -------------------------------------------------------------------------------

    @inlineCallbacks
    def test_whole_call_converts_audio_both_ways(self) -> Any:
        self.start_proxy(call_context_keys="customer")
        factory = self.call(custom_parameters={"customer": "42", "pin": "1234"})
        client = yield factory.opened
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).start is not None)
        bot = self.fake.connection(0)
        self.assertEqual(bot.headers.get("authorization"), f"Bearer {API_KEY}")
        self.assertEqual(bot.start, {"type": "start", "version": 1, "call_id": "CA1", "platform": "twilio",
                                     "audio_format": "l16/16000", "context": {"customer": "42"},
                                     "resumed": False})
        # Up: the caller's µ-law, converted to 16 kHz linear PCM, every sample.
        caller = quiet_frames(25, seed=1)
        client.send_audio(caller)
        expected_up = converted(MULAW_8K, L16_16K, b"".join(caller))
        yield self.fake.when(lambda: len(bot.caller_audio) >= len(expected_up))
        self.assertEqual(bytes(bot.caller_audio), expected_up)
        # Down: 1 s of the bot's 16 kHz audio in odd-sized chunks reaches Twilio as 160-byte µ-law frames.
        speech = pattern(32000, 3)
        expected_down = converted(L16_16K, MULAW_8K, speech)
        bot.speak(speech)
        yield factory.when(lambda: len(client.audio()) >= len(expected_down))
        self.assertTrue(all(len(payload) == 160 for _, payload in client.media))
        self.assertEqual(client.audio()[: len(expected_down)], expected_down)
        # The caller hangs up: the bot is told why, then the connection closes.
        client.stop()
        yield factory.closed
        yield self.fake.when(lambda: bot.closed)
        self.assertEqual(bot.received[-1], {"type": "stop", "reason": "completed"})
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("backend_connect_seconds_count", {"backend": "bot"}), 1)

    @inlineCallbacks
    def test_an_echoing_bot_in_twilio_format_is_byte_exact_both_ways(self) -> Any:
        self.fake.echo = True
        self.start_proxy(audio_format="pcmu/8000")
        factory, client, bot = yield self.connected()
        self.assertEqual(bot.start["audio_format"], "pcmu/8000")  # type: ignore[index]
        caller = quiet_frames(30, seed=6)
        client.send_audio(caller)
        yield factory.when(lambda: len(client.audio()) >= len(caller) * 160)
        self.assertEqual(bytes(bot.caller_audio), b"".join(caller))
        self.assertEqual(client.audio(), b"".join(caller))
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_a_mark_is_answered_once_the_audio_before_it_was_played(self) -> Any:
        self.start_proxy(audio_format="pcmu/8000")
        factory, client, bot = yield self.connected()
        bot.mark("nothing-yet")  # no audio queued: answered at once
        yield self.fake.when(lambda: bool(bot.of_type("mark")))
        speech = pattern(8000, 5)  # 1 s of µ-law: passed through untouched
        bot.speak(speech, mark="after-one-second")
        yield self.fake.when(lambda: len(bot.of_type("mark")) == 2)
        answered_at = reactor.seconds()
        self.assertEqual(bot.of_type("mark"), [{"type": "mark", "name": "nothing-yet", "played": True},
                                               {"type": "mark", "name": "after-one-second", "played": True}])
        self.assertEqual(client.audio()[: len(speech)], speech)
        # Twilio received all of it well before (the playout runs 60 ms ahead), and it took the
        # second of real time to play: not answered when it was merely queued or sent.
        first_frame_at = client.media[0][0]
        self.assertGreater(answered_at - first_frame_at, 0.8)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_clear_flushes_twilio_and_answers_pending_marks_unplayed(self) -> Any:
        self.start_proxy(audio_format="pcmu/8000")
        factory, client, bot = yield self.connected()
        bot.speak(pattern(8 * 4000, 7), mark="end-of-long-answer")
        yield factory.when(lambda: len(client.media) >= 20)
        bot.clear()
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received))
        yield self.fake.when(lambda: bool(bot.of_type("mark")))
        self.assertEqual(bot.of_type("mark"), [{"type": "mark", "name": "end-of-long-answer", "played": False}])
        clear_index = max(i for i, m in enumerate(client.received) if m["event"] == "clear")
        # The bot speaks again: a new turn, played whole.
        second = pattern(8 * 300, 8)
        bot.speak(second, mark="second")
        yield self.fake.when(lambda: len(bot.of_type("mark")) == 2)
        after = b"".join(base64.b64decode(m["media"]["payload"])
                         for m in client.received[clear_index + 1:] if m["event"] == "media")
        self.assertEqual(after[: len(second)], second)
        self.assertLess(len(client.audio()), 8 * 4000)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_hangup_after_the_goodbye_ends_the_call_the_twilio_way(self) -> Any:
        self.start_proxy(audio_format="pcmu/8000", tools="end_call")
        factory, client, bot = yield self.connected()
        goodbye = pattern(8 * 500, 9)
        bot.speak(goodbye)
        yield factory.when(lambda: len(client.media) >= 2)
        bot.hangup("conversation over")
        yield factory.closed
        self.assertEqual(client.audio()[: len(goodbye)], goodbye)
        yield self.fake.when(lambda: bot.closed)
        self.assertEqual(bot.of_type("stop"), [{"type": "stop", "reason": "bot_hangup"}])
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "bot_hangup"}), 1)
        self.assertEqual(self.metric("call_actions_total", {"action": "end_call", "platform": "twilio",
                                                            "outcome": "ok"}), 1)

    @inlineCallbacks
    def test_hangup_without_the_end_call_tool_is_refused(self) -> Any:
        self.start_proxy()
        factory, client, bot = yield self.connected()
        bot.hangup()
        yield self.fake.when(lambda: bool(bot.of_type("action_result")))
        [result] = bot.of_type("action_result")
        self.assertEqual((result["action"], result["outcome"]), ("hangup", "refused"))
        self.assertFalse(factory.closed.called)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_transfer_to_a_configured_target(self) -> Any:
        self.start_proxy({"transfer_targets": "sales=+15550001"}, tools="transfer_call")
        factory, client, bot = yield self.connected()
        bot.transfer("billing")
        yield self.fake.when(lambda: bool(bot.of_type("action_result")))
        [refused] = bot.of_type("action_result")
        self.assertEqual((refused["action"], refused["outcome"]), ("transfer", "refused"))
        self.assertIn("sales", refused["detail"])
        bot.transfer("sales", "wants a quote")
        yield factory.closed
        yield self.fake.when(lambda: bot.closed)
        self.assertEqual(bot.of_type("stop"), [{"type": "stop", "reason": "transferred"}])
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "transferred"}), 1)

    @inlineCallbacks
    def test_caller_keys_reach_the_bot(self) -> Any:
        self.start_proxy()
        factory, client, bot = yield self.connected()
        for digit in "12#":
            client.send({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": digit}})
        yield self.fake.when(lambda: bool(bot.of_type("dtmf")))
        self.assertEqual(bot.of_type("dtmf"), [{"type": "dtmf", "digits": "12"}])
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_detect_speech_tells_the_bot_and_barges_in(self) -> Any:
        self.start_proxy(audio_format="pcmu/8000", detect_speech="true", speech_silence_ms="200")
        factory, client, bot = yield self.connected()
        bot.speak(pattern(8 * 4000, 11), mark="long")
        yield factory.when(lambda: len(client.media) >= 20)
        client.send_audio([LOUD] * 3)
        yield self.fake.when(lambda: bool(bot.of_type("speech_started")) and bool(bot.of_type("mark")))
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received))
        kinds = [m["type"] for m in bot.received]
        self.assertEqual(kinds[:2], ["speech_started", "mark"])  # the bot hears of the speech first
        self.assertEqual(bot.of_type("mark"), [{"type": "mark", "name": "long", "played": False}])
        self.assertEqual(self.metric("bargein_seconds_count"), 1)
        client.send_audio(quiet_frames(12, seed=2))
        yield self.fake.when(lambda: bool(bot.of_type("speech_stopped")))
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_malformed_and_unknown_messages_are_counted_and_the_call_goes_on(self) -> Any:
        self.start_proxy(audio_format="pcmu/8000")
        factory, client, bot = yield self.connected()
        bot.send_text("{not json")
        bot.send({"type": "mark"})
        bot.send({"type": "play_file", "url": "https://example.invalid/a.wav"})
        bot.mark("still-here")
        yield self.fake.when(lambda: bool(bot.of_type("mark")))
        self.assertEqual([e["code"] for e in bot.of_type("error")], ["malformed_message", "malformed_message"])
        self.assertEqual(self.metric("backend_errors_total", {"backend": "bot", "code": "malformed_message"}), 2)
        self.assertEqual(self.metric("backend_errors_total", {"backend": "bot", "code": "unknown_message"}), 1)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_a_dropped_bot_is_redialled_with_resumed_start(self) -> Any:
        self.start_proxy()
        factory, client, first = yield self.connected()
        first.drop()
        yield self.fake.when(lambda: len(self.fake.connections) == 2 and self.fake.connection(1).start is not None)
        second = self.fake.connection(1)
        assert second.start is not None
        self.assertEqual((second.start["call_id"], second.start["resumed"]), ("CA1", True))
        self.assertEqual(self.metric("backend_reconnects_total", {"backend": "bot"}), 1)
        client.send_audio(quiet_frames(5, seed=4))
        yield self.fake.when(lambda: len(second.caller_audio) > 0)
        client.stop()
        yield factory.closed

    @inlineCallbacks
    def test_refused_credentials_end_the_call(self) -> Any:
        self.fake.api_key = "another-key"
        self.start_proxy()
        factory = self.call()
        yield factory.opened
        yield factory.closed
        self.assertEqual(self.metric("calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)
        self.assertEqual(self.fake.connections, [])
