"""Loopback integration for AudioCodes VoiceAI Connect (Bot API, streaming mode): the real
service on 127.0.0.1:0 with ``[platform:audiocodes]``, a scripted VAIC client speaking the
official SDK's message shapes (``audiocodes/ac-bot-api``), and either the echo parrot or the fake
OpenAI Realtime service (mediaproxy/testing/fake_realtime.py).

Nothing here waits on a timer: every step waits for the event it needs (a message from the proxy,
a closed socket, a held call, a backend call). The one timer under test, the resume grace period,
runs on a ``task.Clock`` (see :class:`GraceExpiryTests`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from mediaproxy.audio.format import L16_16K, L16_24K, MULAW_8K, AudioFormat
from mediaproxy.audio.g711 import ulaw_encode
from mediaproxy.backends.base import CallInfo
from mediaproxy.backends.echo import EchoBackend, EchoSession
from mediaproxy.calls import CallBridge, CallRegistry
from mediaproxy.config import Config, parse_config
from mediaproxy.platforms.audiocodes import VALIDATION_BODY
from mediaproxy.service import MediaProxyService
from mediaproxy.testing.fake_realtime import FakeRealtimeServer
from tests.support import LoopbackService
from tests.test_audiocodes import check_play_streams

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATH = "/audiocodes"
FORMATS: dict[str, AudioFormat] = {"raw/mulaw": MULAW_8K, "raw/lpcm16": L16_16K, "raw/lpcm16_24": L16_24K}


def loud_frame(fmt: AudioFormat) -> bytes:
    """20 ms of a 400 Hz tone at about -9 dBFS: speech to the echo's and the fake's VAD. 400 Hz
    fits 8 whole periods in 20 ms, so repeated frames make a continuous tone (and resample
    cleanly, unlike a Nyquist square wave)."""
    n = fmt.rate_hz // 50
    samples = (np.sin(2 * np.pi * 400 * np.arange(n) / fmt.rate_hz) * 12000).astype(np.int16)
    if fmt.encoding == "pcmu":
        return ulaw_encode(samples)
    return samples.astype("<i2").tobytes()


def quiet_frame(fmt: AudioFormat) -> bytes:
    return fmt.silence(fmt.bytes_for_ms(20))


def config(platform: dict[str, str] | None = None, backends: dict[str, dict[str, str]] | None = None,
           proxy: dict[str, str] | None = None) -> Config:
    sections: dict[str, dict[str, str]] = {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1", **(proxy or {})},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "platform:audiocodes": {"path": PATH, "backend": "echo", "token": TOKEN, **(platform or {})},
    }
    # silence_ms 100: a caller utterance ends after 5 quiet frames, so replies come quickly.
    for name, section in (backends or {"echo": {"type": "echo", "silence_ms": "100"}}).items():
        sections[f"backend:{name}"] = section
    return parse_config("test.ini", sections, {})


# --- the scripted VAIC client -------------------------------------------------------------------


class ScriptedVaic(WebSocketClientProtocol):
    """Speaks the Bot API as VoiceAI Connect does: every message carries ``conversationId``,
    audio goes as base64 ``audioChunk`` in ``userStream.chunk``."""

    factory: VaicFactory

    def onOpen(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.factory.opened.callback(self)

    def send(self, message: dict[str, Any]) -> None:
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            message = {**message, "conversationId": message.get("conversationId", self.factory.conversation)}
            self.sendMessage(json.dumps(message).encode(), False)

    def initiate(self, formats: list[str]) -> None:
        self.send({"type": "session.initiate", "botName": "cc-ai", "caller": "+14155550123",
                   "expectAudioMessages": True, "supportedMediaFormats": formats})

    def start(self, **parameters: Any) -> None:
        self.activity("start", parameters=parameters)

    def activity(self, name: str, **fields: Any) -> None:
        self.send({"type": "activities", "activities": [
            {"type": "event", "name": name, "id": f"act-{name}", "timestamp": "2026-05-01T10:00:00.000Z",
             **fields}]})

    def speak(self, frames: list[bytes], per_chunk: int = 5) -> int:
        """Send ``frames`` as chunks of ``per_chunk`` frames (VAIC's chunk size is its own);
        returns the number of chunks sent."""
        chunks = 0
        for i in range(0, len(frames), per_chunk):
            audio = b"".join(frames[i:i + per_chunk])
            self.send({"type": "userStream.chunk", "audioChunk": base64.b64encode(audio).decode()})
            chunks += 1
        return chunks

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        assert not isBinary, "the Bot API is text frames only"
        message = json.loads(payload)
        self.received.append(message)
        for reaction in list(self.factory.reactions):
            reaction(self, message)
        self.factory.check_waiters(self.received)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.closed.called:
            self.factory.closed.callback((code, reason))


class VaicFactory(WebSocketClientFactory):
    """One scripted conversation; ``opened``/``closed`` fire on the socket's events and
    :meth:`wait_for` on a condition over the messages received."""

    protocol = ScriptedVaic

    def __init__(self, url: str, headers: dict[str, str] | None = None, conversation: str = "conv-1") -> None:
        super().__init__(url, headers=AUTH if headers is None else headers)
        self.conversation = conversation
        self.opened: Deferred[ScriptedVaic] = Deferred()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.waiters: list[tuple[Callable[[list[dict[str, Any]]], bool], Deferred[Any]]] = []
        self.reactions: list[Callable[[ScriptedVaic, dict[str, Any]], None]] = []
        self.received: list[dict[str, Any]] = []

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiters.append((predicate, d))
        self.check_waiters(self.received)
        return d

    def check_waiters(self, received: list[dict[str, Any]]) -> None:
        self.received = received
        for predicate, d in list(self.waiters):
            if predicate(received):
                self.waiters.remove((predicate, d))
                d.callback(received)


def of_type(kind: str, **fields: Any) -> Callable[[list[dict[str, Any]]], bool]:
    """A wait_for predicate: a message of ``kind`` (with ``fields``) has arrived."""
    return lambda msgs: any(m["type"] == kind and all(m.get(k) == v for k, v in fields.items()) for m in msgs)


def chunks_of(messages: list[dict[str, Any]], stream_id: str) -> list[bytes]:
    return [base64.b64decode(m["audioChunk"]) for m in messages
            if m["type"] == "playStream.chunk" and m["streamId"] == stream_id]


def count_chunks(stream_id: str, at_least: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda msgs: len(chunks_of(msgs, stream_id)) >= at_least


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


class ServiceTestCase(LoopbackService, TestCase):
    """Runs the real service for each test; records what reaches the echo backend."""

    timeout = 15

    def make_config(self) -> Config:
        return config({"barge_in": "true"})

    @inlineCallbacks
    def setUp(self) -> Any:
        self.call_infos: list[CallInfo] = []
        self.echo_sessions: list[EchoSession] = []
        self.dtmf: list[str] = []
        self._dtmf_waiters: list[Deferred[None]] = []
        self.held: list[CallBridge] = []
        self._held_waiters: list[Deferred[CallBridge]] = []
        self._record_backend()
        self.service = MediaProxyService(self.make_config(), reactor, tune_gc=False)
        self._record_holds(self.service.registry)
        address, metrics_address = yield self.start_service(self.service)
        self.url = f"ws://127.0.0.1:{address.port}{PATH}"
        self.http_url = f"http://127.0.0.1:{address.port}{PATH}"
        self.metrics_url = f"http://127.0.0.1:{metrics_address.port}"

    def tearDown(self) -> Any:
        return self.stop_service()

    def _record_backend(self) -> None:
        open_session = EchoBackend.open_session
        send_dtmf = EchoSession.send_dtmf

        def recording_open(backend: EchoBackend, call: CallInfo, listener: Any, fmt: AudioFormat) -> EchoSession:
            self.call_infos.append(call)
            session = open_session(backend, call, listener, fmt)
            self.echo_sessions.append(session)
            return session

        def recording_dtmf(session: EchoSession, digits: str) -> None:
            self.dtmf.append(digits)
            waiters, self._dtmf_waiters = self._dtmf_waiters, []
            for d in waiters:
                d.callback(None)
            send_dtmf(session, digits)

        self.patch(EchoBackend, "open_session", recording_open)
        self.patch(EchoSession, "send_dtmf", recording_dtmf)

    def _record_holds(self, registry: CallRegistry) -> None:
        hold = registry.hold

        def recording_hold(held: CallBridge) -> None:
            hold(held)
            self.held.append(held)
            waiters, self._held_waiters = self._held_waiters, []
            for d in waiters:
                d.callback(held)

        self.patch(registry, "hold", recording_hold)

    def when_dtmf(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._dtmf_waiters.append(d)
        return d

    def when_held(self) -> Deferred[CallBridge]:
        """Fires when the glue holds a call whose socket dropped (its onClose has run)."""
        d: Deferred[CallBridge] = Deferred()
        self._held_waiters.append(d)
        return d

    def live_bridge(self) -> CallBridge:
        (bridge,) = [b for b in self.service.registry.connected_calls() if b.started]
        return bridge

    @inlineCallbacks
    def open_call(self, formats: list[str], conversation: str = "conv-1",
                  factory: VaicFactory | None = None) -> Any:
        """Connect, initiate, start and open the user stream; returns (factory, client)."""
        factory = factory or VaicFactory(self.url, conversation=conversation)
        connectWS(factory)
        client = yield factory.opened
        client.initiate(formats)
        yield factory.wait_for(of_type("session.accepted"))
        client.start(caller="+14155550123", callee="+18005550100", locale="en-US",
                     callerDisplayName="Ada")
        client.send({"type": "userStream.start"})
        yield factory.wait_for(of_type("userStream.started"))
        return factory, client


# --- the echo parrot --------------------------------------------------------------------------


class WholeCallTests(ServiceTestCase):
    """A whole conversation in each media format, on the echo parrot."""

    @inlineCallbacks
    def whole_call(self, name: str) -> Any:
        fmt = FORMATS[name]
        loud, quiet = loud_frame(fmt), quiet_frame(fmt)
        # VAIC's order of preference puts another format first: the echo takes the first it
        # can use, so offer the one under test first and a WAV one (never chosen) before it.
        factory, client = yield self.open_call(["wav/lpcm16", name, *[f for f in FORMATS if f != name]])
        received = client.received
        accepted = [m for m in received if m["type"] == "session.accepted"]
        self.assertEqual(accepted, [{"type": "session.accepted", "mediaFormat": name}])
        # barge_in = true: the config activity follows the start activity, before anything else.
        self.assertEqual(kinds(received)[:3], ["session.accepted", "activities", "userStream.started"])
        self.assertEqual(received[1]["activities"],
                         [{"type": "event", "name": "config", "sessionParams": {"bargeIn": True}}])
        # The start parameters reach the backend session, with the initiate's own fields.
        (info,) = self.call_infos
        self.assertEqual((info.call_id, info.platform), ("conv-1", "audiocodes"))
        self.assertEqual(info.metadata["callee"], "+18005550100")
        self.assertEqual(info.metadata["callerDisplayName"], "Ada")
        self.assertEqual(info.metadata["caller"], "+14155550123")
        self.assertEqual(info.metadata["botName"], "cc-ai")

        # An utterance of 200 ms then 100 ms quiet: the parrot replies with those 15 frames.
        utterance = [loud] * 10 + [quiet] * 5
        sent_chunks = client.speak(utterance)
        yield factory.wait_for(of_type("playStream.stop"))
        streams = check_play_streams(client.received, closed_at_end=True)
        self.assertEqual(streams, ["play-1"])
        (start,) = [m for m in client.received if m["type"] == "playStream.start"]
        self.assertEqual(start, {"type": "playStream.start", "streamId": "play-1", "mediaFormat": name})
        chunks = chunks_of(client.received, "play-1")
        self.assertEqual({len(c) for c in chunks}, {fmt.bytes_for_ms(20)})
        self.assertEqual(b"".join(chunks), b"".join(utterance))  # our words, parroted back exactly
        speech = [k for k in kinds(client.received) if k.startswith("userStream.speech")]
        self.assertEqual(speech, ["userStream.speech.started", "userStream.speech.stopped",
                                  "userStream.speech.committed"])

        # DTMF (upper-case name, as VAIC sends it) reaches the backend session as one entry; the
        # terminator ends it and is not passed on.
        dtmf = self.when_dtmf()
        client.activity("DTMF", value="12#")
        yield dtmf
        self.assertEqual(self.dtmf, ["12"])

        client.send({"type": "userStream.stop"})
        yield factory.wait_for(of_type("userStream.stopped"))
        client.send({"type": "session.end", "reasonCode": "client-disconnected", "reason": "Client Side"})
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertTrue(self.echo_sessions[0]._closed)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 1)
        self.assertEqual(self.metric("calls_active", platform="audiocodes"), 0)
        self.assertEqual(self.metric("frames_total", platform="audiocodes", direction="in"), sent_chunks)
        self.assertEqual(self.metric("frames_total", platform="audiocodes", direction="out"), len(chunks))
        self.assertEqual(self.metric("protocol_errors_total", platform="audiocodes", kind="unknown_event"), 0)

    def test_mulaw(self) -> Any:
        return self.whole_call("raw/mulaw")

    def test_lpcm16(self) -> Any:
        return self.whole_call("raw/lpcm16")

    def test_lpcm16_24(self) -> Any:
        return self.whole_call("raw/lpcm16_24")

    @inlineCallbacks
    def test_barge_in_mid_play_stream(self) -> Any:
        fmt = MULAW_8K
        loud, quiet = loud_frame(fmt), quiet_frame(fmt)
        factory, client = yield self.open_call(["raw/mulaw"])
        # A long utterance (1.1 s of reply, paced at real time) to talk over.
        client.speak([loud] * 50 + [quiet] * 5)
        yield factory.wait_for(count_chunks("play-1", 5))
        barge_at = len(client.received)
        client.speak([loud] * 4)
        yield factory.wait_for(lambda msgs: of_type("playStream.stop", streamId="play-1")(msgs[barge_at:])
                               and of_type("userStream.speech.started")(msgs[barge_at:]))
        stop_at = next(i for i, m in enumerate(client.received)
                       if m["type"] == "playStream.stop" and m["streamId"] == "play-1")
        self.assertGreaterEqual(stop_at, barge_at)
        # VAIC hears the caller first (that cuts its own playback), then the stop.
        self.assertEqual(client.received[stop_at - 1], {"type": "userStream.speech.started"})
        self.assertLess(len(chunks_of(client.received, "play-1")), 55)  # it was cut short
        self.assertEqual(self.metric("bargein_seconds_count"), 1)
        # The caller pauses: the barge-in utterance is parroted back in a new stream.
        client.speak([quiet] * 5)
        yield factory.wait_for(of_type("playStream.stop", streamId="play-2"))
        self.assertEqual(check_play_streams(client.received), ["play-1", "play-2"])
        # Not one chunk of the interrupted stream after its stop.
        self.assertEqual(chunks_of(client.received[stop_at:], "play-1"), [])
        self.assertEqual(b"".join(chunks_of(client.received, "play-2")), loud * 4 + quiet * 5)
        self.assertGreater(self.metric("frames_dropped_total", direction="out", reason="bargein"), 0)
        client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 1)

    @inlineCallbacks
    def test_bot_hangup_mid_play_stream(self) -> Any:
        loud, quiet = loud_frame(MULAW_8K), quiet_frame(MULAW_8K)
        factory, client = yield self.open_call(["raw/mulaw"])

        def vaic_ends_call(vaic: ScriptedVaic, message: dict[str, Any]) -> None:
            # What VAIC does after the bot's hangup activity: hang up, then session.end.
            if message["type"] == "activities" and message["activities"][0]["name"] == "hangup":
                vaic.send({"type": "session.end", "reasonCode": "bot-disconnected", "reason": "Bot Side"})

        factory.reactions.append(vaic_ends_call)
        client.speak([loud] * 50 + [quiet] * 5)
        yield factory.wait_for(count_chunks("play-1", 3))
        # The backend ends the call (what a bot's hang-up tool call does).
        self.live_bridge().backend_hangup("goodbye")
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        hangup_at = kinds(client.received).index("activities", 2)
        self.assertEqual(client.received[hangup_at]["activities"], [
            {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "goodbye"}}])
        # The open stream was stopped before the hangup; nothing followed it.
        self.assertEqual(client.received[hangup_at - 1], {"type": "playStream.stop", "streamId": "play-1"})
        self.assertEqual(client.received[hangup_at + 1:], [])
        check_play_streams(client.received)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="bot_hangup"), 1)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 0)

    @inlineCallbacks
    def test_send_dtmf_from_the_bot(self) -> Any:
        factory, client = yield self.open_call(["raw/mulaw"])
        self.live_bridge().leg.session.send_dtmf("1234")
        self.live_bridge().leg.flush()
        def send_dtmf_activities(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [m for m in msgs if m["type"] == "activities" and m["activities"][0]["name"] == "sendDtmf"]

        received = yield factory.wait_for(lambda msgs: bool(send_dtmf_activities(msgs)))
        (message,) = send_dtmf_activities(received)
        self.assertEqual(message["activities"],
                         [{"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "1234"}}])
        client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        yield factory.closed


class ResumeTests(ServiceTestCase):
    """A dropped socket is not a hang-up: VAIC reconnects with session.resume."""

    @inlineCallbacks
    def test_resume_after_drop_continues_the_call(self) -> Any:
        loud, quiet = loud_frame(MULAW_8K), quiet_frame(MULAW_8K)
        first, client = yield self.open_call(["raw/mulaw"], conversation="conv-R")
        client.speak([loud] * 50 + [quiet] * 5)
        yield first.wait_for(count_chunks("play-1", 3))
        held = self.when_held()
        client.transport.abortConnection()  # the network fails mid-play-stream
        yield first.closed
        yield held
        self.assertEqual(self.metric("calls_active", platform="audiocodes"), 1)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="disconnected"), 0)
        self.assertFalse(self.echo_sessions[0]._closed)  # the backend session is kept too

        second = VaicFactory(self.url, conversation="conv-R")
        connectWS(second)
        resumed = yield second.opened
        resumed.send({"type": "session.resume"})
        yield second.wait_for(of_type("session.accepted"))
        self.assertEqual(resumed.received[0], {"type": "session.accepted"})  # the SDK's shape
        self.assertEqual(self.metric("call_resumes_total", platform="audiocodes", outcome="resumed"), 1)
        # The call continues on the new socket: the user stream, the parrot, the play streams.
        resumed.send({"type": "userStream.start"})
        yield second.wait_for(of_type("userStream.started"))
        resumed.speak([loud] * 10 + [quiet] * 5)
        yield second.wait_for(lambda msgs: any(b"".join(chunks_of(msgs, m["streamId"])) == (loud * 10 + quiet * 5)
                                               for m in msgs if m["type"] == "playStream.stop"))
        # Streams on the new socket never overlap and all end closed (a stop of the stream the
        # drop cut off may come first: VAIC may still consider it open).
        after = [m for m in resumed.received
                 if not (m["type"] == "playStream.stop" and m["streamId"] == "play-1")]
        streams = check_play_streams(after)
        self.assertNotIn("play-1", streams)
        self.assertEqual(len(set(streams)), len(streams))
        resumed.send({"type": "session.end", "reasonCode": "client-disconnected"})
        code, _ = yield second.closed
        self.assertEqual(code, 1000)
        self.assertEqual(len(self.echo_sessions), 1)  # one call, one backend session throughout
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 1)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="disconnected"), 0)
        self.assertEqual(self.metric("calls_active", platform="audiocodes"), 0)

    @inlineCallbacks
    def test_resume_while_the_old_socket_still_looks_open(self) -> Any:
        # A half-open connection: the network failed without a FIN or RST reaching the proxy,
        # which notices nothing until a write times out (minutes). VAIC has given up on it and
        # resumes on a new socket: the call moves over and the old socket is dropped.
        loud, quiet = loud_frame(MULAW_8K), quiet_frame(MULAW_8K)
        first, stale = yield self.open_call(["raw/mulaw"], conversation="conv-H")
        stale.speak([loud] * 50 + [quiet] * 5)
        yield first.wait_for(count_chunks("play-1", 3))
        second = VaicFactory(self.url, conversation="conv-H")
        connectWS(second)
        resumed = yield second.opened
        resumed.send({"type": "session.resume"})
        yield second.wait_for(of_type("session.accepted"))
        yield first.closed  # the proxy dropped the stale socket
        self.assertEqual(self.metric("call_resumes_total", platform="audiocodes", outcome="resumed"), 1)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="disconnected"), 0)
        resumed.send({"type": "userStream.start"})
        resumed.speak([loud] * 10 + [quiet] * 5)
        yield second.wait_for(lambda msgs: any(b"".join(chunks_of(msgs, m["streamId"])) == (loud * 10 + quiet * 5)
                                               for m in msgs if m["type"] == "playStream.stop"))
        resumed.send({"type": "session.end", "reasonCode": "client-disconnected"})
        code, _ = yield second.closed
        self.assertEqual(code, 1000)
        self.assertEqual(len(self.echo_sessions), 1)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 1)
        self.assertEqual(self.metric("calls_active", platform="audiocodes"), 0)

    @inlineCallbacks
    def test_resume_of_unknown_conversation(self) -> Any:
        factory = VaicFactory(self.url, conversation="conv-nobody")
        connectWS(factory)
        client = yield factory.opened
        client.send({"type": "session.resume"})
        code, _ = yield factory.closed
        self.assertEqual(client.received, [
            {"type": "session.error", "reason": "conversation not found", "conversationId": "conv-nobody"}])
        self.assertEqual(code, 1000)
        self.assertEqual(self.metric("call_resumes_total", platform="audiocodes", outcome="resumed"), 0)
        self.assertEqual(self.call_infos, [])


class GraceExpiryTests(ServiceTestCase):
    """The grace period, on a ``task.Clock``.

    The glue arms the expiry with ``context.reactor.callLater``. The sockets need the real
    reactor, but a timer on it could only be waited out. So the platform factory gets a copy of
    the service's context whose ``reactor`` is a ``Clock`` (everything else shared): the test
    holds the call by dropping the socket, sees the timer armed for exactly ``resume_seconds``,
    and expires it by advancing the clock. Pacing keeps the real reactor (the playout clock is
    not in the context's reactor)."""

    def make_config(self) -> Config:
        return config({"resume_seconds": "5"})

    @inlineCallbacks
    def test_call_ends_when_not_resumed_in_time(self) -> Any:
        clock = Clock()
        registry = self.service.registry
        registry.context = dataclasses.replace(registry.context, reactor=clock)
        first, client = yield self.open_call(["raw/lpcm16"], conversation="conv-G")
        held = self.when_held()
        client.transport.abortConnection()
        yield first.closed
        yield held
        self.assertEqual(list(self.service.registry.held_calls()), [("audiocodes", "conv-G")])
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [5.0])
        clock.advance(4.999)
        self.assertEqual(list(self.service.registry.held_calls()), [("audiocodes", "conv-G")])
        self.assertFalse(self.echo_sessions[0]._closed)
        clock.advance(0.001)
        self.assertEqual(self.service.registry.held_calls(), {})
        self.assertTrue(self.echo_sessions[0]._closed)
        self.assertEqual(self.metric("call_resumes_total", platform="audiocodes", outcome="expired"), 1)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="disconnected"), 1)
        self.assertEqual(self.metric("calls_active", platform="audiocodes"), 0)
        # Too late now: the resume is refused.
        late = VaicFactory(self.url, conversation="conv-G")
        connectWS(late)
        again = yield late.opened
        again.send({"type": "session.resume"})
        yield late.closed
        self.assertEqual(kinds(again.received), ["session.error"])
        self.assertEqual(clock.getDelayedCalls(), [])


# --- validation, auth, capacity, malformed input -----------------------------------------------


class AdmissionTests(ServiceTestCase):
    @inlineCallbacks
    def get(self, headers: dict[str, str]) -> Any:
        response = yield Agent(reactor).request(
            b"GET", self.http_url.encode(), Headers({k: [v] for k, v in headers.items()}))
        body = yield readBody(response)
        return response, body

    @inlineCallbacks
    def test_validation_get(self) -> Any:
        response, body = yield self.get(AUTH)
        self.assertEqual((response.code, body), (200, VALIDATION_BODY))
        self.assertEqual(json.loads(body), {"type": "ac-bot-api", "success": True})
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response, body = yield self.get(headers)
            self.assertEqual(response.code, 401)
            self.assertFalse(json.loads(body)["success"])

    @inlineCallbacks
    def test_connection_validate_message(self) -> Any:
        factory = VaicFactory(self.url)
        connectWS(factory)
        client = yield factory.opened
        client.send({"type": "connection.validate"})
        yield factory.wait_for(of_type("connection.validated"))
        self.assertEqual(client.received, [{"type": "connection.validated", "success": True}])
        client.sendClose()
        yield factory.closed
        self.assertEqual(self.call_infos, [])  # a check, not a call
        self.assertEqual(self.metric("calls_active", platform="audiocodes"), 0)

    @inlineCallbacks
    def test_bearer_auth_refused_with_401(self) -> Any:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
            factory = VaicFactory(self.url, headers=headers)
            connectWS(factory)
            _, reason = yield factory.closed
            self.assertFalse(factory.opened.called)
            self.assertIn("401", reason or "")
        self.assertEqual(self.metric("protocol_errors_total", platform="audiocodes", kind="auth"), 3)
        self.assertEqual(self.call_infos, [])

    @inlineCallbacks
    def test_malformed_input_ends_only_that_call(self) -> Any:
        loud, quiet = loud_frame(MULAW_8K), quiet_frame(MULAW_8K)
        good, good_client = yield self.open_call(["raw/mulaw"], conversation="conv-good")
        bad_inputs = [
            ("{not json", "bad_json"),
            (json.dumps({"type": "userStream.chunk", "conversationId": "x", "audioChunk": "not base64!"}),
             "bad_base64"),
            (json.dumps({"type": "session.initiate", "conversationId": "again"}), "out_of_order"),
        ]
        for n, (text, kind) in enumerate(bad_inputs):
            bad, bad_client = yield self.open_call(["raw/mulaw"], conversation=f"conv-bad-{n}")
            bad_client.sendMessage(text.encode(), False)
            code, _ = yield bad.closed
            self.assertEqual(code, 1000)
            self.assertEqual(bad_client.received[-1]["type"], "session.error")
            self.assertTrue(bad_client.received[-1]["reason"].startswith("protocol error"))
            self.assertEqual(self.metric("protocol_errors_total", platform="audiocodes", kind=kind), 1)
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="protocol_error"), 3)
        # The other call is unharmed: it still gets its words back, and ends normally.
        good_client.speak([loud] * 10 + [quiet] * 5)
        yield good.wait_for(of_type("playStream.stop"))
        self.assertEqual(b"".join(chunks_of(good_client.received, "play-1")), loud * 10 + quiet * 5)
        good_client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        yield good.closed
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 1)


    @inlineCallbacks
    def test_unknown_message_and_stray_chunk_mid_call_are_counted_and_the_call_goes_on(self) -> Any:
        """VAIC adds message types (the SDK logs and carries on); a chunk of a stream that was
        never started is dropped (as the SDK does). Both are counted; the call is unharmed."""
        loud, quiet = loud_frame(MULAW_8K), quiet_frame(MULAW_8K)
        factory = VaicFactory(self.url, conversation="conv-early")
        connectWS(factory)
        client = yield factory.opened
        client.initiate(["raw/mulaw"])
        yield factory.wait_for(of_type("session.accepted"))
        client.start()
        client.speak([loud])  # before userStream.start: no stream to put it in
        client.send({"type": "userStream.start"})
        yield factory.wait_for(of_type("userStream.started"))
        client.send({"type": "userStream.speech.custom", "data": {"x": 1}})
        client.send({"type": "session.keepAlive"})
        client.speak([loud] * 10 + [quiet] * 5)
        yield factory.wait_for(of_type("playStream.stop"))
        self.assertEqual(b"".join(chunks_of(client.received, "play-1")), loud * 10 + quiet * 5)
        self.assertNotIn("session.error", kinds(client.received))
        self.assertEqual(self.metric("protocol_errors_total", platform="audiocodes", kind="unknown_event"), 2)
        self.assertEqual(self.metric("protocol_errors_total", platform="audiocodes", kind="chunk_outside_stream"), 1)
        client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        yield factory.closed
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 1)


class CapacityTests(ServiceTestCase):
    def make_config(self) -> Config:
        return config(proxy={"max_calls": "1"})

    @inlineCallbacks
    def test_refused_in_band_at_capacity(self) -> Any:
        first, first_client = yield self.open_call(["raw/mulaw"], conversation="conv-1")
        factory = VaicFactory(self.url, conversation="conv-2")
        connectWS(factory)
        client = yield factory.opened  # accepted: the refusal is the answer to session.initiate
        client.initiate(["raw/mulaw"])
        code, _ = yield factory.closed
        self.assertEqual(client.received, [{"type": "session.error", "reason": "no capacity (1 calls)"}])
        self.assertEqual(code, 1000)
        self.assertEqual(len(self.call_infos), 1)
        first_client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        yield first.closed


# --- the fake OpenAI Realtime service ---------------------------------------------------------


class RealtimeCallTests(ServiceTestCase):
    """Whole calls against the fake Realtime service: raw/lpcm16 (the bridge resamples 16 kHz
    to the session's 24 kHz and back) and raw/mulaw (pass-through to audio/pcmu)."""

    def setUp(self) -> Any:
        self.server = FakeRealtimeServer(reactor)
        self.server_url = self.server.listen()
        return super().setUp()

    @inlineCallbacks
    def tearDown(self) -> Any:
        yield super().tearDown()
        yield self.server.stop()
        self.assertEqual(self.server.violations, [])

    def make_config(self) -> Config:
        return config({"backend": "openai", "barge_in": "true"}, backends={"openai": {
            "type": "openai-realtime", "url": self.server_url, "api_key": "test-key",
            "transcription_model": "", "silence_duration_ms": "200",
            "reconnect_backoff_ms": "0", "reconnect_max_backoff_ms": "0"}})

    @inlineCallbacks
    def realtime_call(self, offer: list[str], expected: str) -> Any:
        fmt = FORMATS[expected]
        loud, quiet = loud_frame(fmt), quiet_frame(fmt)
        factory, client = yield self.open_call(offer)
        self.assertEqual(client.received[0], {"type": "session.accepted", "mediaFormat": expected})
        yield self.server.when(lambda: bool(self.server.connections))
        realtime = self.server.connection(0)
        # 300 ms of speech, 300 ms of quiet: the server's VAD ends the turn and responds.
        client.speak([loud] * 15 + [quiet] * 15)
        yield factory.wait_for(of_type("playStream.stop", streamId="play-1"))
        self.assertEqual(realtime.input_format, "audio/pcmu" if fmt == MULAW_8K else "audio/pcm")
        chunks = chunks_of(client.received, "play-1")
        self.assertEqual({len(c) for c in chunks}, {fmt.bytes_for_ms(20)})
        reply_ms = len(chunks) * 20
        self.assertTrue(1000 <= reply_ms <= 1040, reply_ms)  # 1 s of reply, at most a padded frame
        speech = [k for k in kinds(client.received) if k.startswith("userStream.speech")]
        self.assertEqual(speech[:3], ["userStream.speech.started", "userStream.speech.stopped",
                                      "userStream.speech.committed"])

        # Barge-in during the second reply: the fake's VAD hears the caller and cancels.
        dtmf = self.server.when(lambda: bool(realtime.items_created))
        client.activity("DTMF", value="5")
        yield dtmf
        self.assertIn("5", realtime.items_created[0]["content"][0]["text"])
        yield factory.wait_for(count_chunks("play-2", 10))
        barge_at = len(client.received)
        client.speak([loud] * 10, per_chunk=1)
        yield factory.wait_for(lambda msgs: of_type("playStream.stop", streamId="play-2")(msgs[barge_at:]))
        yield self.server.when(lambda: bool(realtime.truncations))
        (item_id, played_ms), = realtime.truncations
        played_chunks = len(chunks_of(client.received, "play-2"))
        # Truncated at what was played: behind what was sent by at most the frame in flight
        # and the lead frame, never beyond it.
        self.assertLessEqual(played_ms, played_chunks * 20)
        self.assertGreaterEqual(played_ms, played_chunks * 20 - 100)
        stop_at = max(i for i, m in enumerate(client.received)
                      if m["type"] == "playStream.stop" and m["streamId"] == "play-2")
        client.speak([quiet] * 15)
        yield factory.wait_for(of_type("playStream.stop", streamId="play-3"))
        self.assertEqual(chunks_of(client.received[stop_at:], "play-2"), [])
        check_play_streams(client.received)
        client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        yield self.server.when(lambda: realtime.closed)
        self.assertEqual(realtime.errors_sent, [])
        self.assertEqual(self.metric("calls_total", platform="audiocodes", outcome="completed"), 1)
        return client, realtime

    @inlineCallbacks
    def test_lpcm16_resampled_both_ways(self) -> Any:
        client, realtime = yield self.realtime_call(["raw/lpcm16"], "raw/lpcm16")
        # The caller's 16 kHz audio arrived as 24 kHz PCM, its duration kept.
        sent_ms = (15 + 15 + 10 + 15) * 20
        self.assertTrue(abs(realtime.input_ms - sent_ms) <= 5, realtime.input_ms)

    @inlineCallbacks
    def test_mulaw_pass_through(self) -> Any:
        client, realtime = yield self.realtime_call(["raw/lpcm16", "raw/mulaw"], "raw/mulaw")
        loud, quiet = loud_frame(MULAW_8K), quiet_frame(MULAW_8K)
        # Byte for byte both ways: what the caller said, and what the bot said.
        self.assertEqual(bytes(realtime.input_audio),
                         loud * 15 + quiet * 15 + loud * 10 + quiet * 15)
        self.assertEqual(b"".join(chunks_of(client.received, "play-1")),
                         self.server.response_audio(0, 1, 8))
