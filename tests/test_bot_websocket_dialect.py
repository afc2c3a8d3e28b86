"""The bot protocol dialect (``type = websocket`` backend) fed whole session transcripts (sans-IO),
its start message, and the option checks of the backend type."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import MULAW_8K, AudioFormat
from mediaproxy.backends.bot_websocket import AUDIO_FORMATS, BotWebSocketOptions, validate
from mediaproxy.backends.bot_websocket_dialect import (
    BotAudio,
    BotDialect,
    ClearRequested,
    HangupRequested,
    MalformedMessage,
    MarkRequested,
    TranscriptReceived,
    TransferRequested,
    TurnFinished,
    UnknownMessage,
    start_message,
)
from mediaproxy.options import OptionError

L16_16K = AudioFormat("l16", 16000)


def text(message: Any) -> bytes:
    return json.dumps(message).encode()


def sent(dialect: BotDialect) -> list[Any]:
    """The queued frames, JSON decoded (binary frames as they are)."""
    return [frame if isinstance(frame, bytes) else json.loads(frame) for frame in dialect.take_output()]


def start(resumed: bool = False) -> dict[str, Any]:
    return start_message("CA1", "twilio", L16_16K, {"customer": "42"}, resumed=resumed)


class StartTests(TestCase):
    def test_the_start_message_is_queued_first(self) -> None:
        dialect = BotDialect(start(), L16_16K)
        self.assertEqual(sent(dialect), [{
            "type": "start", "version": 1, "call_id": "CA1", "platform": "twilio", "audio_format": "l16/16000",
            "context": {"customer": "42"}, "resumed": False,
        }])

    def test_format_names_are_the_audio_format_names(self) -> None:
        for name, fmt in AUDIO_FORMATS.items():
            self.assertEqual(str(fmt), name)
            self.assertEqual(start_message("c", "p", fmt, {}, resumed=True)["audio_format"], name)


class SessionTranscriptTests(TestCase):
    def test_a_whole_session(self) -> None:
        dialect = BotDialect(start(), L16_16K, response_prefix="c1t")
        sent(dialect)
        # Caller audio and keys go out as they come.
        dialect.send_audio(b"\x01\x00" * 320)
        dialect.send_dtmf("12")
        self.assertEqual(sent(dialect), [b"\x01\x00" * 320, {"type": "dtmf", "digits": "12"}])
        # Bot audio opens turn 1; an odd byte is carried to the next frame.
        self.assertEqual(dialect.receive(b"\x02\x00\x03", True), [BotAudio("c1t1", b"\x02\x00")])
        self.assertEqual(dialect.receive(b"\x00\x04\x00", True), [BotAudio("c1t1", b"\x03\x00\x04\x00")])
        self.assertEqual(dialect.open_turn, "c1t1")
        self.assertEqual(dialect.receive(text({"type": "mark", "name": "greeting-done"}), False),
                         [MarkRequested("greeting-done")])
        dialect.mark_played("greeting-done", True)
        self.assertEqual(sent(dialect), [{"type": "mark", "name": "greeting-done", "played": True}])
        # The glue says the bot went quiet: the turn ends; new audio is turn 2.
        self.assertEqual(dialect.finish_turn(), TurnFinished("c1t1"))
        self.assertIsNone(dialect.finish_turn())
        self.assertEqual(dialect.receive(b"\x05\x00", True), [BotAudio("c1t2", b"\x05\x00")])
        # clear cuts turn 2 (no TurnFinished); the next audio is turn 3.
        self.assertEqual(dialect.receive(text({"type": "clear"}), False), [ClearRequested()])
        self.assertIsNone(dialect.open_turn)
        self.assertEqual(dialect.receive(b"\x06\x00", True), [BotAudio("c1t3", b"\x06\x00")])
        # A barge-in on turn 3 cuts it too.
        dialect.speech(True)
        dialect.interrupt("c1t3")
        dialect.speech(False)
        self.assertEqual(sent(dialect), [{"type": "speech_started"}, {"type": "speech_stopped"}])
        self.assertEqual(dialect.receive(b"\x07\x00", True), [BotAudio("c1t4", b"\x07\x00")])
        dialect.interrupt("c1t3")  # an old turn: nothing changes
        self.assertEqual(dialect.open_turn, "c1t4")
        # A transcript, then the goodbye's end and the hangup in one go.
        self.assertEqual(dialect.receive(text({"type": "transcript", "role": "bot", "text": "Bye."}), False),
                         [TranscriptReceived("bot", "Bye.", True)])
        self.assertEqual(dialect.receive(text({"type": "hangup", "reason": "done"}), False),
                         [TurnFinished("c1t4"), HangupRequested("done")])
        dialect.action_result("hangup", "cancelled", "the caller spoke")
        dialect.stop("bot_hangup")
        dialect.send_audio(b"\x00\x00")
        dialect.send_dtmf("3")
        self.assertEqual(sent(dialect), [
            {"type": "action_result", "action": "hangup", "outcome": "cancelled", "detail": "the caller spoke"},
            {"type": "stop", "reason": "bot_hangup"},
        ])

    def test_transfer(self) -> None:
        dialect = BotDialect(start(), MULAW_8K)
        self.assertEqual(dialect.receive(text({"type": "transfer", "target": "sales"}), False),
                         [TransferRequested("sales", "")])
        dialect.receive(b"\xff" * 3, True)
        self.assertEqual(dialect.receive(text({"type": "transfer", "target": "sales", "summary": "wants a quote",
                                               "extra": 1}), False),
                         [TurnFinished("t1"), TransferRequested("sales", "wants a quote")])

    def test_malformed_messages_are_answered_with_error(self) -> None:
        cases = [
            (b"{not json", "not JSON"),
            (text([1, 2]), "not an object with a string type"),
            (text({"type": 3}), "not an object with a string type"),
            (text({"type": "mark"}), "mark needs a name"),
            (text({"type": "mark", "name": "x" * 257}), "mark needs a name"),
            (text({"type": "hangup", "reason": 5}), "hangup reason"),
            (text({"type": "transfer", "target": ""}), "transfer needs a target"),
            (text({"type": "transfer", "target": "a", "summary": []}), "transfer needs a target"),
            (text({"type": "transcript", "role": "agent", "text": "x"}), "transcript needs"),
            (text({"type": "transcript", "role": "bot", "text": "x", "final": "yes"}), "transcript needs"),
            (b"[" * 100000, "not JSON"),
        ]
        dialect = BotDialect(start(), L16_16K)
        sent(dialect)
        for payload, detail in cases:
            [event] = dialect.receive(payload, False)
            assert isinstance(event, MalformedMessage), (payload[:40], event)
            self.assertTrue(event.detail.startswith(detail), (event.detail, detail))
            [error] = sent(dialect)
            self.assertEqual((error["type"], error["code"]), ("error", "malformed_message"))

    def test_unknown_types_are_reported_and_nothing_is_sent(self) -> None:
        dialect = BotDialect(start(), L16_16K)
        sent(dialect)
        self.assertEqual(dialect.receive(text({"type": "play_file", "url": "x"}), False), [UnknownMessage("play_file")])
        self.assertEqual(sent(dialect), [])

    def test_a_lone_surrogate_in_a_mark_name_goes_out_as_ascii(self) -> None:
        dialect = BotDialect(start(), L16_16K)
        sent(dialect)
        [event] = dialect.receive(b'{"type": "mark", "name": "\\ud800"}', False)
        assert isinstance(event, MarkRequested)
        dialect.mark_played(event.name, False)
        [frame] = dialect.take_output()
        assert isinstance(frame, str)
        frame.encode("utf-8")
        self.assertEqual(json.loads(frame)["name"], "\ud800")


class OptionTests(TestCase):
    def test_credentials_on(self) -> None:
        with self.assertRaises(OptionError) as caught:
            validate(BotWebSocketOptions(url="ws://127.0.0.1/bot"))
        self.assertEqual(caught.exception.key, "api_key")
        validate(BotWebSocketOptions(url="ws://127.0.0.1/bot", allow_unauthenticated=True))
        validate(BotWebSocketOptions(url="ws://127.0.0.1/bot", api_key="k"))

    def test_default_format(self) -> None:
        self.assertEqual(BotWebSocketOptions(url="ws://h/").format, L16_16K)
