"""End to end: AudioCodes VoiceAI Connect through the real ``twistd mediaproxy`` process against
every network backend's fake (OpenAI Realtime, Deepgram Voice Agent, Gemini Live).

For each backend, two calls, each through its own process (started as in
:mod:`tests.test_e2e_call_control`: the fakes in this process on 127.0.0.1, an ini file pointing
the proxy at them, ``twistd --nodaemon mediaproxy`` with this checkout first on its path):

- barge-in and a backend reconnect: the caller talks over the bot's long first answer (the
  proxy stops the play stream; the model stops), hears the answer to what it said, then the fake
  drops its connection without a close handshake; the proxy dials again and the call goes on on
  the new connection, the caller never noticing (no close, answers keep coming);
- a tool call through AudioCodes' own activities: ``end_call`` (OpenAI after its spoken
  goodbye, Gemini without one) becomes the ``hangup`` activity, ``transfer_call`` (Deepgram)
  the ``transfer`` activity naming the configured SIP URI; VAIC answers ``session.end`` and the
  call is counted under its outcome.

Nothing here sleeps: every step waits on a Deferred fired by the event it needs.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.testing.fake_deepgram import FakeDeepgramServer
from mediaproxy.testing.fake_gemini import FakeGeminiServer
from mediaproxy.testing.fake_http import FakeToolEndpoint
from mediaproxy.testing.fake_realtime import FakeRealtimeServer, pattern
from tests.test_e2e_call_control import API_KEY, AUDIOCODES_TOKEN, ORDER_REPLY, ProxyProcessCase
from tests.test_loopback_audiocodes import ScriptedVaic, VaicFactory, chunks_of, loud_frame, of_type, quiet_frame

LOUD, QUIET = loud_frame(MULAW_8K), quiet_frame(MULAW_8K)
FIRST_MS = 3000
"""The first answer: long enough to be talked over."""
LATER_MS = 400
SIP_AGENT = "sip:agents@pbx.example.com"
SUMMARY = "The caller wants a person about order A-17."


def answer_ms(conn: int, n: int) -> int:
    return FIRST_MS if (conn, n) == (0, 1) else LATER_MS


class AudioCodesBackendCase(ProxyProcessCase):
    """What each backend's tests share: the proxy's sections, the call, the caller's turns."""

    backend_type = ""
    timeout = 30

    def setUp(self) -> None:
        self.fake = self.make_fake()
        self.fake_url = self.fake.listen()
        self.tool = FakeToolEndpoint((200, ORDER_REPLY))
        self.tool.listen(reactor)
        self.rest = None
        self.process = None
        self.port = self.metrics_port = 0

    # --- per backend ----------------------------------------------------------------------------

    def make_fake(self) -> Any:
        raise NotImplementedError

    def backend_section(self) -> dict[str, str]:
        raise NotImplementedError

    def ready(self, index: int) -> bool:
        """The fake's connection ``index`` has been configured by the proxy."""
        raise NotImplementedError

    def model_stopped(self) -> bool:
        """The fake's model stopped its first answer for the caller's barge-in."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------

    def sections(self) -> dict[str, dict[str, str]]:
        return {
            "platform:audiocodes": {"path": "/audiocodes", "backend": "bot", "token": AUDIOCODES_TOKEN,
                                    "barge_in": "true", "transfer_targets": f"agent={SIP_AGENT}"},
            "backend:bot": {"type": self.backend_type, "url": self.fake_url, "api_key": API_KEY,
                            "tools": "end_call, transfer_call", "reconnect_backoff_ms": "0",
                            "reconnect_max_backoff_ms": "0", **self.backend_section()},
        }

    @inlineCallbacks
    def open_call(self) -> Any:
        """Dial as VAIC, initiate with µ-law, start, open the user stream, and wait until the
        backend's first connection is configured; fires with (factory, client)."""
        factory = VaicFactory(f"ws://127.0.0.1:{self.port}/audiocodes",
                              headers={"Authorization": f"Bearer {AUDIOCODES_TOKEN}"}, conversation="conv-e2e")
        connectWS(factory)
        client: ScriptedVaic = yield factory.opened
        client.initiate(["raw/mulaw"])
        yield factory.wait_for(of_type("session.accepted", mediaFormat="raw/mulaw"))
        client.start(caller="+14155550123")
        client.send({"type": "userStream.start"})
        yield factory.wait_for(of_type("userStream.started"))
        yield self.fake.when(lambda: len(self.fake.connections) >= 1 and self.ready(0))
        return factory, client

    @staticmethod
    def turn(client: ScriptedVaic) -> None:
        """One caller utterance: 200 ms of speech, then enough quiet to end the turn."""
        client.speak([LOUD] * 10 + [QUIET] * 15)

    @inlineCallbacks
    def barge_in_then_reconnect(self) -> Any:
        yield self.start_proxy(self.sections())
        factory, client = yield self.open_call()
        self.turn(client)
        yield factory.wait_for(lambda msgs: len(chunks_of(msgs, "play-1")) >= 10)
        # The caller talks over the bot: the play stream stops, and so does the model.
        barge_at = len(client.received)
        client.speak([LOUD] * 10, per_chunk=1)
        yield factory.wait_for(lambda msgs: of_type("playStream.stop", streamId="play-1")(msgs[barge_at:]))
        yield self.fake.when(self.model_stopped)
        heard = len(chunks_of(client.received, "play-1")) * 20
        self.assertLess(heard, FIRST_MS - 500, "the first answer was cut short")
        # The caller's turn ends: the answer to it is heard whole.
        client.speak([QUIET] * 15)
        yield factory.wait_for(of_type("playStream.stop", streamId="play-2"))
        self.assertGreaterEqual(len(chunks_of(client.received, "play-2")) * 20, LATER_MS)
        # The backend's connection drops; the proxy dials again and the call goes on.
        self.fake.connection(0).drop()
        yield self.fake.when(lambda: len(self.fake.connections) >= 2 and self.ready(1))
        self.turn(client)
        yield factory.wait_for(of_type("playStream.stop", streamId="play-3"))
        self.assertGreaterEqual(len(chunks_of(client.received, "play-3")) * 20, LATER_MS)
        self.assertFalse(factory.closed.called, "the caller never noticed")
        self.assertEqual([m for m in client.received if m["type"] in ("session.error", "activities")
                          and m.get("activities", [{}])[0].get("name") != "config"], [])
        client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="audiocodes", outcome="completed")
        samples = yield self.metrics()
        # The talk-over above; a caller turn just after an answer's last frame went out may be
        # one more (the platform may still be playing that frame).
        self.assertGreaterEqual(samples.get(("mediaproxy_bargein_seconds_count", ()), 0), 1)
        self.assertGreaterEqual(samples.get(("mediaproxy_backend_reconnects_total", (("backend", "bot"),)), 0), 1)

    @inlineCallbacks
    def tool_activity(self, activity: str) -> Any:
        """The model's tool call ends the call with AudioCodes' ``activity`` (``hangup`` or
        ``transfer``); returns (the activity, everything the client received)."""
        yield self.start_proxy(self.sections())
        factory, client = yield self.open_call()

        def vaic_ends_the_session(vaic: ScriptedVaic, message: dict[str, Any]) -> None:
            if message["type"] == "activities" and message["activities"][0]["name"] == activity:
                vaic.send({"type": "session.end", "reasonCode": f"bot-{activity}", "reason": "Bot Side"})

        factory.reactions.append(vaic_ends_the_session)
        self.turn(client)
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        at = [i for i, m in enumerate(client.received)
              if m["type"] == "activities" and m["activities"][0]["name"] == activity]
        self.assertEqual(len(at), 1, client.received)
        self.assertEqual(client.received[at[0] + 1:], [], "nothing after the activity")
        return client.received[at[0]]["activities"], client.received


class OpenAITests(AudioCodesBackendCase):
    """The OpenAI Realtime fake: truncation at the played position on barge-in; ``end_call``
    after the spoken goodbye."""

    backend_type = "openai-realtime"

    def make_fake(self) -> Any:
        fake = FakeRealtimeServer(reactor, api_key=API_KEY)
        fake.response_audio = lambda conn, n, bpm: pattern(answer_ms(conn, n) * bpm, 100 + n)
        return fake

    def backend_section(self) -> dict[str, str]:
        return {"transcription_model": "", "silence_duration_ms": "200", "keepalive_seconds": "0"}

    def ready(self, index: int) -> bool:
        return any(e.get("type") == "session.update" for e in self.fake.connection(index).received)

    def model_stopped(self) -> bool:
        return bool(self.fake.connection(0).truncations)

    def test_barge_in_then_the_backend_drops_and_the_call_goes_on(self) -> Any:
        return self.barge_in_then_reconnect()

    @inlineCallbacks
    def test_end_call_is_the_hangup_activity_after_the_goodbye(self) -> Any:
        goodbye = pattern(800 * 8, 77)
        self.fake.response_audio = lambda conn, n, bpm: goodbye
        self.fake.speak_before_function_call = True
        self.fake.next_function_call = ("end_call", json.dumps({"reason": "the caller is done"}))
        activities, received = yield self.tool_activity("hangup")
        self.assertEqual(activities, [{"type": "event", "name": "hangup",
                                       "activityParams": {"hangupReason": "the caller is done"}}])
        self.assertEqual(b"".join(chunks_of(received, "play-1")), goodbye, "the whole goodbye first")
        self.assertEqual(received[-2], {"type": "playStream.stop", "streamId": "play-1"})
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="audiocodes", outcome="bot_hangup")
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="end_call", platform="audiocodes",
                                outcome="ok")


class DeepgramTests(AudioCodesBackendCase):
    """The Deepgram Voice Agent fake: its VAD cuts the answer; ``transfer_call`` after the
    goodbye becomes the ``transfer`` activity."""

    backend_type = "deepgram"

    def make_fake(self) -> Any:
        fake = FakeDeepgramServer(reactor, api_key=API_KEY)
        fake.turn_audio = lambda conn, n, bpm: pattern(answer_ms(conn, n) * bpm, 100 + n)
        return fake

    def backend_section(self) -> dict[str, str]:
        return {"instructions": "You are a helpful agent.", "ping_seconds": "0"}

    def ready(self, index: int) -> bool:
        return self.fake.connection(index).settings is not None

    def model_stopped(self) -> bool:
        return self.fake.connection(0).turn is None

    def test_barge_in_then_the_backend_drops_and_the_call_goes_on(self) -> Any:
        return self.barge_in_then_reconnect()

    @inlineCallbacks
    def test_transfer_call_is_the_transfer_activity_after_the_goodbye(self) -> Any:
        goodbye = pattern(800 * 8, 77)
        self.fake.turn_audio = lambda conn, n, bpm: goodbye
        self.fake.speak_before_function_call = True
        self.fake.next_function_call = ("transfer_call", json.dumps({"target": "agent", "summary": SUMMARY}))
        activities, received = yield self.tool_activity("transfer")
        self.assertEqual(activities, [{"type": "event", "name": "transfer",
                                       "activityParams": {"transferTarget": SIP_AGENT, "handoverReason": SUMMARY}}])
        self.assertEqual(b"".join(chunks_of(received, "play-1")), goodbye, "the whole goodbye first")
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="audiocodes", outcome="transferred")
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="transfer_call", platform="audiocodes",
                                outcome="ok")


class GeminiTests(AudioCodesBackendCase):
    """The Gemini Live fake (16 kHz in, 24 kHz out: transcoded both ways): its VAD interrupts
    the answer; the redial resumes the session with its handle; ``end_call`` with nothing to
    say first is the ``hangup`` activity at once."""

    backend_type = "gemini"

    def make_fake(self) -> Any:
        fake = FakeGeminiServer(reactor, api_key=API_KEY)
        fake.answer_ms = FIRST_MS
        # The fake streams far faster than real time: the first answer is held after its first
        # second (still under way, as a real answer is while it plays) so the caller's speech
        # interrupts it.
        fake.hold_after_ms = 1000
        return fake

    def backend_section(self) -> dict[str, str]:
        return {"keepalive_seconds": "0"}

    def ready(self, index: int) -> bool:
        return self.fake.connection(index).setup is not None

    def model_stopped(self) -> bool:
        if self.fake.interruptions < 1:
            return False
        self.fake.answer_ms = LATER_MS  # the answers from here on are short, and not held
        self.fake.hold_after_ms = None
        return True

    @inlineCallbacks
    def test_barge_in_then_the_backend_drops_and_the_call_goes_on(self) -> Any:
        yield self.barge_in_then_reconnect()
        self.assertIsNotNone(self.fake.connection(1).resumed_from, "the redial resumed the session")

    @inlineCallbacks
    def test_end_call_is_the_hangup_activity(self) -> Any:
        self.fake.next_function_call = ("end_call", {"reason": "the caller is done"})
        activities, _ = yield self.tool_activity("hangup")
        self.assertEqual(activities, [{"type": "event", "name": "hangup",
                                       "activityParams": {"hangupReason": "the caller is done"}}])
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="audiocodes", outcome="bot_hangup")
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="end_call", platform="audiocodes",
                                outcome="ok")

