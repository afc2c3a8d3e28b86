"""Tests for the AudioCodes Bot API session (mediaproxy.platforms.audiocodes): whole-session
transcripts, barge-in, resume, DTMF, validation, bearer auth, and malformed input."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import L16_8K, L16_16K, L16_24K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.options import option_keys
from mediaproxy.outcome import Outcome
from mediaproxy.platforms import audiocodes
from mediaproxy.platforms.audiocodes import AudioCodesOptions, AudioCodesSession
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MessageIgnored,
    PlatformEvent,
    ProtocolViolation,
    ResumeRequested,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.transcripts import Transcript

ALL_FORMATS = ["wav/lpcm16", "raw/lpcm16", "raw/mulaw", "raw/lpcm16_8", "raw/lpcm16_24"]


def FakeBackend(*preference: AudioFormat) -> FormatPreference:
    """A backend's format preference, cheapest first (what the session negotiates with)."""
    return preference


def settings(**options: Any) -> AudioCodesOptions:
    return AudioCodesOptions(**options)


def request(authorization: str | None = None) -> UpgradeRequest:
    headers = {} if authorization is None else {"authorization": authorization}
    return UpgradeRequest(target="/audiocodes", host="proxy.example.com", headers=headers)


class Peer:
    """Plays VAIC against a session: sends dicts as JSON, collects parsed replies."""

    def __init__(self, session: AudioCodesSession) -> None:
        self.session = session

    def send(self, message: dict[str, Any] | str) -> list[PlatformEvent]:
        text = message if isinstance(message, str) else json.dumps(message)
        return self.session.receive_text(text)

    def replies(self) -> list[dict[str, Any]]:
        out = self.session.take_output()
        for item in out:
            assert isinstance(item, str), "the Bot API is text frames only"
        return [json.loads(item) for item in out]

    def initiate(self, formats: list[str] | None = None, conversation: str = "conv-1") -> list[PlatformEvent]:
        message: dict[str, Any] = {"type": "session.initiate", "conversationId": conversation,
                                   "botName": "cc-ai", "caller": "+14155550123",
                                   "expectAudioMessages": True}
        if formats is not None:
            message["supportedMediaFormats"] = formats
        return self.send(message)

    def start(self, **parameters: Any) -> list[PlatformEvent]:
        return self.send({"type": "activities", "conversationId": "conv-1", "activities": [
            {"type": "event", "name": "start", "parameters": parameters, "id": "a1",
             "timestamp": "2026-05-01T10:00:00.000Z"}]})

    def chunk(self, data: bytes) -> list[PlatformEvent]:
        return self.send({"type": "userStream.chunk", "conversationId": "conv-1",
                          "audioChunk": base64.b64encode(data).decode()})


def open_call(backend: FormatPreference | None = None, formats: list[str] | None = None,
              **options: Any) -> Peer:
    """A session past initiate, start and userStream.start, with its output drained."""
    session = audiocodes.new_session(settings(**options), backend or FakeBackend(MULAW_8K))
    peer = Peer(session)
    peer.initiate(ALL_FORMATS if formats is None else formats)
    peer.start(callee="cc-bot")
    peer.send({"type": "userStream.start", "conversationId": "conv-1"})
    peer.replies()
    return peer


def check_play_streams(replies: list[dict[str, Any]], closed_at_end: bool = True) -> list[str]:
    """Assert play streams never overlap, chunks only go to the open one, ids are unique; return
    the ids in order."""
    open_id: str | None = None
    ids: list[str] = []
    for message in replies:
        kind = message["type"]
        if kind == "playStream.start":
            assert open_id is None, f"{message['streamId']} opened while {open_id} is open"
            assert message["streamId"] not in ids, "streamId reused"
            open_id = message["streamId"]
            ids.append(open_id)
        elif kind == "playStream.chunk":
            assert message["streamId"] == open_id, "chunk outside its open stream"
        elif kind == "playStream.stop":
            assert message["streamId"] == open_id, "stop of a stream that is not open"
            open_id = None
    if closed_at_end:
        assert open_id is None, f"{open_id} left open"
    return ids


class WholeSessionTests(SynchronousTestCase):
    """A whole conversation in each media format."""

    def run_session(self, chosen: AudioFormat, name: str) -> None:
        backend = FakeBackend(chosen)
        session = audiocodes.new_session(settings(), backend)
        peer = Peer(session)
        self.assertFalse(session.survives_disconnect)

        self.assertEqual(peer.initiate(ALL_FORMATS), [])
        self.assertEqual(peer.replies(), [{"type": "session.accepted", "mediaFormat": name}])
        self.assertEqual(session.audio_format, chosen)
        self.assertTrue(session.survives_disconnect)

        events = peer.start(callee="cc-bot", locale="en-US")
        self.assertEqual(events, [CallStarted("conv-1", chosen, {
            "conversationId": "conv-1", "caller": "+14155550123", "botName": "cc-ai",
            "callee": "cc-bot", "locale": "en-US"})])

        self.assertEqual(peer.send({"type": "userStream.start", "conversationId": "conv-1"}), [])
        self.assertEqual(peer.replies(), [{"type": "userStream.started"}])
        audio = bytes(range(256)) * 4
        self.assertEqual(peer.chunk(audio), [CallerAudio(audio)])

        packet = chosen.silence(chosen.bytes_for_ms(20))
        session.play(packet)
        session.play(packet[::-1])
        session.playback_finished()
        replies = peer.replies()
        self.assertEqual(replies[0], {"type": "playStream.start", "streamId": "play-1",
                                      "mediaFormat": name})
        self.assertEqual([base64.b64decode(m["audioChunk"]) for m in replies[1:3]],
                         [packet, packet[::-1]])
        self.assertEqual(replies[3], {"type": "playStream.stop", "streamId": "play-1"})
        self.assertEqual(len(replies), 4)

        self.assertEqual(peer.send({"type": "userStream.stop", "conversationId": "conv-1"}), [])
        self.assertEqual(peer.replies(), [{"type": "userStream.stopped"}])
        events = peer.send({"type": "session.end", "conversationId": "conv-1",
                            "reasonCode": "client-disconnected", "reason": "Client Side"})
        self.assertEqual(events, [CallEnded("client-disconnected")])
        self.assertFalse(session.survives_disconnect)
        self.assertTrue(session.finished)
        self.assertEqual(peer.replies(), [])

    def test_mulaw(self) -> None:
        self.run_session(MULAW_8K, "raw/mulaw")

    def test_lpcm16(self) -> None:
        self.run_session(L16_16K, "raw/lpcm16")

    def test_lpcm16_8(self) -> None:
        self.run_session(L16_8K, "raw/lpcm16_8")

    def test_lpcm16_24(self) -> None:
        self.run_session(L16_24K, "raw/lpcm16_24")

    def test_offer_reaches_backend_in_vaic_order_without_wav(self) -> None:
        backend = FakeBackend(L16_24K)
        peer = Peer(audiocodes.new_session(settings(), backend))
        peer.initiate(["wav/mulaw", "raw/lpcm16_24", "raw/mulaw", "raw/lpcm16_24", "opus", 7])
        self.assertEqual(peer.replies(), [{"type": "session.accepted", "mediaFormat": "raw/lpcm16_24"}])

    def test_unranked_formats_keep_vaic_order(self) -> None:
        """A backend indifferent to format (the echo) takes VAIC's first usable offer."""
        peer = Peer(audiocodes.new_session(settings(), FakeBackend()))
        peer.initiate(["wav/mulaw", "raw/lpcm16_24", "raw/mulaw"])
        self.assertEqual(peer.replies(), [{"type": "session.accepted", "mediaFormat": "raw/lpcm16_24"}])

    def test_missing_offer_means_lpcm16(self) -> None:
        backend = FakeBackend(L16_16K)
        peer = Peer(audiocodes.new_session(settings(), backend))
        peer.initiate(None)
        self.assertEqual(peer.replies(), [{"type": "session.accepted", "mediaFormat": "raw/lpcm16"}])

    def test_nothing_fits(self) -> None:
        for formats, backend in [(["wav/lpcm16", "wav/mulaw"], FakeBackend(L16_16K)),
                                 ([], FakeBackend(L16_16K))]:
            session = audiocodes.new_session(settings(), backend)
            peer = Peer(session)
            events = peer.initiate(formats)
            self.assertEqual([type(e) for e in events], [ProtocolViolation])
            assert isinstance(events[0], ProtocolViolation)
            self.assertEqual(events[0].kind, "no_media_format")
            replies = peer.replies()
            self.assertEqual([m["type"] for m in replies], ["session.error"])
            self.assertIn("media format", replies[0]["reason"])
            self.assertTrue(session.finished)
            self.assertFalse(session.survives_disconnect)

    def test_call_starts_early_when_audio_precedes_start_activity(self) -> None:
        session = audiocodes.new_session(settings(), FakeBackend(MULAW_8K))
        peer = Peer(session)
        peer.initiate(["raw/mulaw"])
        events = peer.send({"type": "userStream.start", "conversationId": "conv-1"})
        self.assertEqual(events, [CallStarted("conv-1", MULAW_8K, {
            "conversationId": "conv-1", "caller": "+14155550123", "botName": "cc-ai"})])
        self.assertEqual(peer.start(callee="late"), [])  # CallStarted is emitted once

    def test_start_parameters_are_flattened_and_bounded(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        peer.initiate(["raw/mulaw"])
        params: dict[str, Any] = {"conversationId": "spoofed", "participants": [{"participant": "caller"}],
                                  "vip": True, "n": 3, "none": None, "long": "x" * 5000}
        params.update({f"k{i}": "v" for i in range(100)})
        (started,) = peer.start(**params)
        assert isinstance(started, CallStarted)
        self.assertEqual(started.metadata["conversationId"], "conv-1")
        self.assertEqual(started.metadata["participants"], '[{"participant":"caller"}]')
        self.assertEqual(started.metadata["vip"], "true")
        self.assertEqual(started.metadata["n"], "3")
        self.assertNotIn("none", started.metadata)
        self.assertEqual(len(started.metadata["long"]), 1024)
        self.assertLessEqual(len(started.metadata), 3 + 64)

    def test_odd_sized_l16_chunks_keep_samples_whole(self) -> None:
        peer = open_call(FakeBackend(L16_16K))
        self.assertEqual(peer.chunk(b"\x01\x02\x03"), [CallerAudio(b"\x01\x02")])
        self.assertEqual(peer.chunk(b"\x04"), [CallerAudio(b"\x03\x04")])
        self.assertEqual(peer.chunk(b""), [])
        mulaw = open_call(FakeBackend(MULAW_8K))
        self.assertEqual(mulaw.chunk(b"\x01\x02\x03"), [CallerAudio(b"\x01\x02\x03")])

    def test_participant_is_echoed(self) -> None:
        peer = open_call()
        peer.send({"type": "userStream.start", "conversationId": "conv-1", "participant": "caller"})
        peer.send({"type": "userStream.stop", "conversationId": "conv-1", "participant": "caller"})
        self.assertEqual(peer.replies(), [{"type": "userStream.started", "participant": "caller"},
                                          {"type": "userStream.stopped", "participant": "caller"}])

    def test_capabilities(self) -> None:
        """playStream.stop discards what VAIC holds, so [playout] lead_ms applies (a cushion
        against late ticks); transfer and sendDtmf exist."""
        caps = AudioCodesSession.capabilities
        self.assertEqual((caps.can_flush, caps.has_marks, caps.max_lead_ms, caps.packet_ms),
                         (True, False, None, 20))
        self.assertEqual((caps.can_transfer, caps.can_send_dtmf), (True, True))

    def test_text_bot_mode_is_refused_naming_the_setting(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        events = peer.send({"type": "session.initiate", "conversationId": "conv-1",
                            "supportedMediaFormats": ["raw/mulaw"], "expectAudioMessages": False})
        self.assertEqual([type(e) for e in events], [ProtocolViolation])
        assert isinstance(events[0], ProtocolViolation)
        self.assertEqual(events[0].kind, "audio_not_expected")
        (error,) = peer.replies()
        self.assertEqual(error["type"], "session.error")
        self.assertIn("expectAudioMessages", error["reason"])
        self.assertTrue(peer.session.finished)
        # Absent means audio (the SDK's default); true is accepted as before.
        for extra in ({}, {"expectAudioMessages": True}):
            peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
            peer.send({"type": "session.initiate", "conversationId": "conv-1",
                       "supportedMediaFormats": ["raw/mulaw"], **extra})
            self.assertEqual([m["type"] for m in peer.replies()], ["session.accepted"])

    def test_hypotheses_carry_the_whole_partial_text(self) -> None:
        """Each hypothesis is the whole text so far (the backend accumulates it), never a
        fragment; an empty or missing text sends nothing (never "None")."""
        peer = open_call()
        for text in ("I", "I want", "I want to pay", "", "   ", None):
            peer.session.transcript(Transcript("caller", text, final=False))  # type: ignore[arg-type]
        peer.session.transcript(Transcript("caller", None, final=True))  # type: ignore[arg-type]
        peer.session.transcript(Transcript("caller", "I want to pay my bill", final=True))
        self.assertEqual(peer.replies(), [
            {"type": "userStream.speech.hypothesis", "alternatives": [{"text": "I"}]},
            {"type": "userStream.speech.hypothesis", "alternatives": [{"text": "I want"}]},
            {"type": "userStream.speech.hypothesis", "alternatives": [{"text": "I want to pay"}]},
            {"type": "userStream.speech.recognition",
             "alternatives": [{"text": "I want to pay my bill", "confidence": 1.0}]},
        ])

    def test_user_streams_are_tracked_per_participant(self) -> None:
        """Agent assist: two user streams, named by participant. The first is the caller's; the
        other party's audio is not the caller's and is dropped (counted once per stream)."""
        session = audiocodes.new_session(settings(), FakeBackend(MULAW_8K))
        peer = Peer(session)
        peer.initiate(["raw/mulaw"])
        peer.start()
        peer.replies()
        self.assertEqual(peer.send({"type": "userStream.start", "participant": "caller"}), [])
        self.assertEqual(peer.send({"type": "userStream.start", "participant": "agent"}),
                         [MessageIgnored("other_participant")])
        self.assertEqual(peer.send({"type": "userStream.start", "participant": "agent"}), [], "counted once")

        def chunk(data: bytes, participant: str | None) -> list[PlatformEvent]:
            message: dict[str, Any] = {"type": "userStream.chunk", "audioChunk": base64.b64encode(data).decode()}
            if participant is not None:
                message["participant"] = participant
            return peer.send(message)

        self.assertEqual(chunk(b"\x01", "caller"), [CallerAudio(b"\x01")])
        self.assertEqual(chunk(b"\x02", "agent"), [])
        self.assertEqual(chunk(b"\x03", None), [CallerAudio(b"\x03")], "unnamed: the caller's stream")
        self.assertEqual(chunk(b"\x04", "supervisor"), [MessageIgnored("chunk_outside_stream")])
        session.transcript(Transcript("caller", "hello", final=False))
        replies = peer.replies()
        self.assertEqual(replies[-1], {"type": "userStream.speech.hypothesis", "participant": "caller",
                                       "alternatives": [{"text": "hello"}]})
        peer.send({"type": "userStream.stop", "participant": "agent"})
        self.assertEqual(chunk(b"\x05", "caller"), [CallerAudio(b"\x05")], "the caller's stream stays open")
        self.assertEqual(chunk(b"\x06", "agent"), [MessageIgnored("chunk_outside_stream")])
        peer.send({"type": "userStream.stop", "participant": "caller"})
        self.assertEqual(chunk(b"\x07", "caller"), [MessageIgnored("chunk_outside_stream")])
        self.assertFalse(session.finished)

    def test_transfer_activity(self) -> None:
        peer = open_call()
        peer.session.play(b"\xff" * 160)
        peer.replies()
        self.assertTrue(peer.session.transfer("tel:+18005550100", "Billing question; " + "x" * 2000))
        stop, transfer = peer.replies()
        self.assertEqual(stop["type"], "playStream.stop")
        (activity,) = transfer["activities"]
        self.assertEqual((transfer["type"], activity["type"], activity["name"]), ("activities", "event", "transfer"))
        self.assertEqual(activity["activityParams"]["transferTarget"], "tel:+18005550100")
        self.assertEqual(len(activity["activityParams"]["handoverReason"]), 500)
        self.assertTrue(activity["activityParams"]["handoverReason"].startswith("Billing question"))
        self.assertTrue(peer.session.awaits_close, "VAIC transfers, then sends session.end")
        peer.session.play(b"\xff" * 160)
        self.assertEqual(peer.replies(), [])
        self.assertFalse(peer.session.transfer("tel:+1", "again"))
        self.assertEqual(peer.send({"type": "session.end", "reasonCode": "transferred"}), [CallEnded("transferred")])
        # Nothing to transfer before the session is accepted, nor to an empty target.
        self.assertFalse(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)).transfer("tel:+1", ""))
        self.assertFalse(open_call().session.transfer("  ", "x"))

    def test_config_keys(self) -> None:
        keys = option_keys(AudioCodesOptions)
        self.assertEqual(keys["token"].default, "")
        self.assertIs(keys["barge_in"].parse("true"), True)
        self.assertEqual(keys["resume_seconds"].default, 30)
        self.assertRaises(ValueError, keys["resume_seconds"].parse, "-1")


class PlayStreamTests(SynchronousTestCase):
    """Play streams: barge-in, never overlapping, always closed."""

    def test_barge_in_mid_stream(self) -> None:
        peer = open_call()
        session = peer.session
        session.play(b"\xff" * 160)
        session.play(b"\xfe" * 160)
        session.caller_speech(True)
        session.clear()
        self.assertIsNone(session.play_stream_id)
        session.caller_speech(False)
        session.transcript(Transcript("caller", "I want to", final=False))
        session.transcript(Transcript("caller", "I want to pay", final=True))
        session.transcript(Transcript("bot", "Sure", final=True))
        session.play(b"\x7f" * 160)  # the next response
        session.playback_finished()
        replies = peer.replies()
        self.assertEqual([m["type"] for m in replies], [
            "playStream.start", "playStream.chunk", "playStream.chunk",
            "userStream.speech.started", "playStream.stop",
            "userStream.speech.stopped", "userStream.speech.committed",
            "userStream.speech.hypothesis", "userStream.speech.recognition",
            "playStream.start", "playStream.chunk", "playStream.stop"])
        ids = check_play_streams(replies)
        self.assertEqual(ids, ["play-1", "play-2"])
        stop_at = replies.index({"type": "playStream.stop", "streamId": "play-1"})
        self.assertFalse([m for m in replies[stop_at + 1:] if m.get("streamId") == "play-1"])
        self.assertEqual(replies[7]["alternatives"], [{"text": "I want to"}])
        self.assertEqual(replies[8]["alternatives"][0]["text"], "I want to pay")

    def test_clear_without_open_stream_sends_nothing(self) -> None:
        peer = open_call()
        peer.session.clear()
        peer.session.playback_finished()
        self.assertEqual(peer.replies(), [])

    def test_streams_never_overlap_and_always_close(self) -> None:
        rng = random.Random(5)
        for _ in range(50):
            peer = open_call()
            session = peer.session
            for _ in range(rng.randrange(1, 60)):
                action = rng.choice(["play", "play", "play", "finished", "clear", "speech"])
                if action == "play":
                    session.play(b"\xff" * 160)
                elif action == "finished":
                    session.playback_finished()
                elif action == "clear":
                    session.clear()
                else:
                    session.caller_speech(rng.random() < 0.5)
            if rng.random() < 0.5:
                session.hangup(Outcome.BOT_HANGUP, "done")
            else:
                peer.send({"type": "session.end", "conversationId": "conv-1", "reasonCode": "error"})
            session.play(b"\xff" * 160)  # late audio after the end goes nowhere
            check_play_streams(peer.replies())

    def test_session_end_closes_open_stream(self) -> None:
        peer = open_call()
        peer.session.play(b"\xff" * 160)
        events = peer.send({"type": "session.end", "conversationId": "conv-1", "reasonCode": "transferred"})
        self.assertEqual(events, [CallEnded("transferred")])
        self.assertEqual(peer.replies()[-1], {"type": "playStream.stop", "streamId": "play-1"})

    def test_no_audio_before_acceptance(self) -> None:
        session = audiocodes.new_session(settings(), FakeBackend(MULAW_8K))
        session.play(b"\xff" * 160)
        session.caller_speech(True)
        session.transcript(Transcript("caller", "hi", True))
        session.send_dtmf("1")
        self.assertEqual(session.take_output(), [])


class BargeInConfigTests(SynchronousTestCase):
    def test_config_activity_after_start_when_enabled(self) -> None:
        session = audiocodes.new_session(settings(barge_in=True), FakeBackend(MULAW_8K))
        peer = Peer(session)
        peer.initiate(["raw/mulaw"])
        peer.start()
        peer.start()
        self.assertEqual(peer.replies(), [
            {"type": "session.accepted", "mediaFormat": "raw/mulaw"},
            {"type": "activities", "activities": [
                {"type": "event", "name": "config", "sessionParams": {"bargeIn": True}}]}])

    def test_no_config_activity_by_default(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        peer.initiate(["raw/mulaw"])
        peer.start()
        self.assertEqual([m["type"] for m in peer.replies()], ["session.accepted"])


class DtmfTests(SynchronousTestCase):
    def dtmf(self, peer: Peer, value: Any, name: str = "DTMF") -> list[PlatformEvent]:
        return peer.send({"type": "activities", "conversationId": "conv-1", "activities": [
            {"type": "event", "name": name, "value": value}]})

    def test_dtmf_in(self) -> None:
        peer = open_call()
        self.assertEqual(self.dtmf(peer, "42#"), [DtmfReceived("42#")])
        self.assertEqual(self.dtmf(peer, "a"), [DtmfReceived("A")])
        self.assertEqual(self.dtmf(peer, "5", name="noUserInput"), [])

    def test_dtmf_before_start_starts_the_call(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        peer.initiate(["raw/mulaw"])
        events = self.dtmf(peer, "1")
        self.assertEqual([type(e) for e in events], [CallStarted, DtmfReceived])

    def test_bad_dtmf_value(self) -> None:
        for value in (4, "", "12x", None):
            peer = open_call()
            events = self.dtmf(peer, value)
            self.assertEqual([type(e) for e in events], [ProtocolViolation])

    def test_bad_activity_after_good_ones_keeps_their_events(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        peer.initiate(["raw/mulaw"])
        events = peer.send({"type": "activities", "activities": [
            {"type": "event", "name": "start"}, {"type": "event", "name": "DTMF", "value": "1"},
            {"type": "event", "name": "DTMF", "value": []}]})
        self.assertEqual([type(e) for e in events], [CallStarted, DtmfReceived, ProtocolViolation])
        self.assertEqual(peer.replies()[-1]["type"], "session.error")

    def test_send_dtmf(self) -> None:
        peer = open_call()
        peer.session.send_dtmf("12x*#")
        peer.session.send_dtmf("0123456789" * 2 + "99#")
        peer.session.send_dtmf("xyz")
        replies = peer.replies()
        self.assertEqual(replies, [
            {"type": "activities", "activities": [
                {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "12*#"}}]},
            {"type": "activities", "activities": [
                {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "0123456789" * 2}},
                {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": "99#"}}]}])


class ResumeTests(SynchronousTestCase):
    def test_resume_after_drop_keeps_state(self) -> None:
        for told_of_drop in (True, False):
            old = open_call()
            old.session.play(b"\xff" * 160)
            old.replies()
            self.assertTrue(old.session.survives_disconnect)
            if told_of_drop:
                old.session.connection_lost()
                old.session.play(b"\xff" * 160)  # paced audio during the drop is lost
                self.assertEqual(old.session.take_output(), [])
            else:
                old.session.play(b"\xff" * 160)  # queued for the dead socket

            new = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
            events = new.send({"type": "session.resume", "conversationId": "conv-1"})
            self.assertEqual(events, [ResumeRequested("conv-1")])
            self.assertEqual(new.replies(), [])

            old.session.resumed()
            self.assertEqual(old.replies(), [{"type": "session.accepted"},
                                             {"type": "playStream.stop", "streamId": "play-1"}])
            # State kept: same conversation, format, open user stream; fresh stream ids.
            self.assertEqual(old.session.conversation_id, "conv-1")
            self.assertEqual(old.session.audio_format, MULAW_8K)
            self.assertEqual(old.chunk(b"\x01\x02"), [CallerAudio(b"\x01\x02")])
            old.session.play(b"\xff" * 160)
            self.assertEqual(old.replies()[0]["streamId"], "play-2")
            self.assertTrue(old.session.survives_disconnect)

    def test_resume_rejected(self) -> None:
        new = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        new.send({"type": "session.resume", "conversationId": "gone"})
        new.session.resume_rejected()
        self.assertEqual(new.replies(), [{"type": "session.error", "conversationId": "gone",
                                          "reason": "conversation not found"}])
        self.assertTrue(new.session.finished)
        self.assertEqual(new.chunk(b"\x00"), [])

    def test_resume_on_same_socket(self) -> None:
        peer = open_call()
        self.assertEqual(peer.send({"type": "session.resume", "conversationId": "conv-1"}), [])
        self.assertEqual(peer.replies(), [{"type": "session.accepted"}])

    def test_hangup_ends_survival(self) -> None:
        peer = open_call()
        peer.session.play(b"\xff" * 160)
        peer.replies()
        peer.session.hangup(Outcome.BOT_HANGUP, "done", {"ignored": "x"})
        self.assertEqual(peer.replies(), [
            {"type": "playStream.stop", "streamId": "play-1"},
            {"type": "activities", "activities": [
                {"type": "event", "name": "hangup", "activityParams": {"hangupReason": "done"}}]}])
        self.assertFalse(peer.session.survives_disconnect)
        self.assertTrue(peer.session.awaits_close)
        self.assertEqual(peer.chunk(b"\x01"), [])  # audio after our hangup is ignored
        self.assertEqual(peer.send({"type": "session.end", "conversationId": "conv-1",
                                    "reasonCode": "bot-disconnected"}),
                         [CallEnded("bot-disconnected")])
        self.assertFalse(peer.session.awaits_close)
        self.assertTrue(peer.session.finished)


class RefusalTests(SynchronousTestCase):
    def test_refuse_before_initiate(self) -> None:
        session = audiocodes.new_session(settings(), FakeBackend(MULAW_8K))
        session.refuse("no capacity")
        peer = Peer(session)
        self.assertEqual(peer.initiate(["raw/mulaw"]), [])
        self.assertEqual(peer.replies(), [{"type": "session.error", "reason": "no capacity"}])
        self.assertTrue(session.finished)
        self.assertFalse(session.survives_disconnect)

    def test_hangup_before_initiate_refuses(self) -> None:
        session = audiocodes.new_session(settings(), FakeBackend(MULAW_8K))
        session.hangup(Outcome.DRAINED, "draining")
        peer = Peer(session)
        peer.initiate(["raw/mulaw"])
        self.assertEqual(peer.replies(), [{"type": "session.error", "reason": "draining"}])

    def test_refuse_after_accept(self) -> None:
        peer = open_call()
        peer.session.play(b"\xff" * 160)
        peer.session.refuse("shutting down")
        replies = peer.replies()
        self.assertEqual(replies[-2:], [{"type": "playStream.stop", "streamId": "play-1"},
                                        {"type": "session.error", "reason": "shutting down"}])


class ValidationTests(SynchronousTestCase):
    def test_validate_message(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        self.assertEqual(peer.send({"type": "connection.validate", "conversationId": "x"}), [])
        self.assertEqual(peer.replies(), [{"type": "connection.validated", "success": True}])

    def test_plain_get(self) -> None:
        self.assertEqual(audiocodes.plain_get(request(), settings(token="")),
                         (200, b'{"type":"ac-bot-api","success":true}'))
        self.assertEqual(audiocodes.plain_get(request("Bearer s3cret"), settings(token="s3cret"))[0], 200)
        for header in (None, "Bearer wrong", "Basic s3cret"):
            status, body = audiocodes.plain_get(request(header), settings(token="s3cret"))
            self.assertEqual(status, 401)
            self.assertFalse(json.loads(body)["success"])


class BearerAuthTests(SynchronousTestCase):
    def test_no_token_configured(self) -> None:
        audiocodes.check_upgrade(request(), settings(token=""), 0.0)
        audiocodes.check_upgrade(request("Bearer anything"), settings(token=""), 0.0)

    def test_token_matches(self) -> None:
        audiocodes.check_upgrade(request("Bearer s3cret"), settings(token="s3cret"), 0.0)
        audiocodes.check_upgrade(request("bearer s3cret"), settings(token="s3cret"), 0.0)

    def test_token_refused(self) -> None:
        for header in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret",
                       "s3cret", "Bearer sëcret"):
            with self.assertRaises(UpgradeRefused) as caught:
                audiocodes.check_upgrade(request(header), settings(token="s3cret"), 0.0)
            self.assertEqual(caught.exception.code, 401)


class MalformedInputTests(SynchronousTestCase):
    """Every malformed input: one ProtocolViolation, a session.error, no exception, session ended."""

    INITIATE = {"type": "session.initiate", "conversationId": "conv-1",
                "supportedMediaFormats": ["raw/mulaw"]}

    def assert_violation(self, peer: Peer, events: list[PlatformEvent], kind: str) -> None:
        self.assertEqual(len(events), 1, events)
        violation = events[0]
        assert isinstance(violation, ProtocolViolation)
        self.assertEqual(violation.kind, kind)
        replies = peer.replies()
        self.assertEqual(replies[-1]["type"], "session.error")
        check_play_streams(replies)
        self.assertTrue(peer.session.finished)
        self.assertFalse(peer.session.survives_disconnect)
        # Nothing more comes out of an ended session, whatever is sent.
        self.assertEqual(peer.chunk(b"\x00"), [])
        self.assertEqual(peer.send("garbage"), [])
        self.assertEqual(peer.session.receive_binary(b"\x00"), [])
        self.assertEqual(peer.replies(), [])

    def test_on_an_open_call(self) -> None:
        cases: list[tuple[str | dict[str, Any], str]] = [
            ("not json", "bad_json"),
            ("{\"type\": \"userStream.chunk\"", "bad_json"),
            ("[" * 100000, "bad_json"),
            ("1" * 5000, "bad_json"),  # beyond int_max_str_digits
            ("42", "bad_message"),
            ("[1, 2]", "bad_message"),
            ("\"session.end\"", "bad_message"),
            ({"type": 7}, "bad_message"),
            ({"conversationId": "conv-1"}, "bad_message"),
            ({"type": "userStream.chunk", "audioChunk": "!!!!"}, "bad_base64"),
            ({"type": "userStream.chunk", "audioChunk": "AAA"}, "bad_base64"),
            ({"type": "userStream.chunk", "audioChunk": "ÄÄÄÄ"}, "bad_base64"),
            ({"type": "userStream.chunk"}, "bad_message"),
            ({"type": "userStream.chunk", "audioChunk": 12}, "bad_message"),
            ({"type": "activities", "activities": {"name": "DTMF"}}, "bad_message"),
            ({"type": "activities", "activities": ["start"]}, "bad_message"),
            ({"type": "session.resume", "conversationId": "other"}, "out_of_order"),
            ({"type": "session.resume"}, "bad_message"),
            (self.INITIATE, "out_of_order"),
        ]
        for message, kind in cases:
            peer = open_call()
            peer.session.play(b"\xff" * 160)  # a play stream is open: it must be closed first
            self.assert_violation(peer, peer.send(message), kind)

    def test_binary_frame(self) -> None:
        peer = open_call()
        self.assert_violation(peer, peer.session.receive_binary(b"\x01\x02"), "binary_frame")

    def test_before_acceptance(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "userStream.start"}, "out_of_order"),
            ({"type": "userStream.chunk", "audioChunk": "AAAA"}, "out_of_order"),
            ({"type": "userStream.stop"}, "out_of_order"),
            ({"type": "activities", "activities": []}, "out_of_order"),
            ({"type": "session.initiate"}, "bad_message"),
            ({"type": "session.initiate", "conversationId": ""}, "bad_message"),
            ({**self.INITIATE, "supportedMediaFormats": "raw/mulaw"}, "bad_message"),
        ]
        for message, kind in cases:
            peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
            self.assert_violation(peer, peer.send(message), kind)

    def test_unknown_type_is_counted_and_the_call_goes_on(self) -> None:
        """VAIC adds message types; the SDK logs and ignores them. So do we (counted)."""
        for message in ({"type": "playStream.mark.reached"}, {"type": "x" * 10000}, {"type": "session.ping"}):
            peer = open_call()
            peer.session.play(b"\xff" * 160)
            peer.replies()
            self.assertEqual(peer.send(message), [MessageIgnored("unknown_event")])
            self.assertEqual(peer.replies(), [])
            self.assertFalse(peer.session.finished)
            self.assertEqual(peer.chunk(b"\x01"), [CallerAudio(b"\x01")])
            peer.session.play(b"\xff" * 160)
            self.assertEqual([m["type"] for m in peer.replies()], ["playStream.chunk"])
        # While our hangup is pending too, it is not a violation.
        peer = open_call()
        peer.session.hangup(Outcome.BOT_HANGUP, "bye")
        peer.replies()
        self.assertEqual(peer.send({"type": "later.thing"}), [MessageIgnored("unknown_event")])

    def test_chunk_before_user_stream_started_is_dropped_and_counted(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        peer.send(self.INITIATE)
        peer.start()
        peer.replies()
        self.assertEqual(peer.chunk(b"\xff"), [MessageIgnored("chunk_outside_stream")])
        self.assertEqual(peer.replies(), [])
        self.assertFalse(peer.session.finished)

    def test_start_parameters_not_an_object(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        peer.send(self.INITIATE)
        events = peer.send({"type": "activities", "activities": [
            {"type": "event", "name": "start", "parameters": ["x"]}]})
        self.assert_violation(peer, events, "bad_message")

    def test_chunk_after_user_stream_stopped_is_dropped_and_counted(self) -> None:
        peer = open_call()
        peer.send({"type": "userStream.stop"})
        peer.replies()
        self.assertEqual(peer.chunk(b"\xff"), [MessageIgnored("chunk_outside_stream")])
        self.assertFalse(peer.session.finished)

    def test_while_resuming(self) -> None:
        peer = Peer(audiocodes.new_session(settings(), FakeBackend(MULAW_8K)))
        peer.send({"type": "session.resume", "conversationId": "conv-1"})
        self.assert_violation(peer, peer.chunk(b"\xff"), "out_of_order")
