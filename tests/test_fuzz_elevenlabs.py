"""Property-based fuzzing of the ElevenLabs Agents dialect, in the style of
:mod:`tests.test_fuzz_dialects`: each example is a generated program (:mod:`tests.strategies`)
playing a hostile server (valid messages from the protocol's templates in any order, targeted
malformations, random mutations) interleaved with the commands the backend session issues.
Properties checked after every step:

- nothing raises out of the dialect;
- every event is one of the dialect's types, and error codes become bounded labels;
- a message that is not JSON, or has no type, is reported as unknown; a well-formed message of an
  unknown type is reported as unknown and nothing else happens;
- every client frame is strict JSON that can be encoded as UTF-8; the initiation goes out once,
  first; caller audio, keys and background only once the conversation started; every ``ping``
  with an event id is answered by exactly one ``pong`` with it; a tool result only for a call the
  server made;
- no audio at or before the last interruption's event id is ever reported; a response's end names
  the open response.
"""

from __future__ import annotations

import base64
import random
from typing import Any

from twisted.trial import unittest

from mediaproxy.backends.elevenlabs_dialect import (
    ConversationDialect,
    initiation_message,
)
from mediaproxy.backends.elevenlabs_events import (
    ERROR_CODE_LABELS,
    IGNORED_MESSAGES,
    MALFORMED_MESSAGE,
    AgentAudio,
    AgentAudioFinished,
    ConversationStarted,
    Interrupted,
    MalformedMessage,
    ServerError,
    ToolCalled,
    TranscriptLine,
    UnknownMessage,
    error_code_label,
)
from tests.strategies import (
    deep_nesting,
    dump,
    garbage_text,
    hostile_string,
    identifier,
    mutate,
    run_programs,
    steps,
    strict_json,
    with_hostile_fields,
)

EVENTS = (ConversationStarted, AgentAudio, AgentAudioFinished, Interrupted, TranscriptLine, ToolCalled,
          ServerError, MalformedMessage, UnknownMessage)
KNOWN = frozenset({
    "conversation_initiation_metadata", "audio", "interruption", "ping", "agent_response",
    "agent_response_correction", "user_transcript", "client_tool_call", "error",
}) | IGNORED_MESSAGES
FORMATS = ("ulaw_8000", "pcm_16000", "pcm_44100", "pcm_8000", "mp3_44100", "")


def valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(14)
    event_id = rng.choice((rng.randrange(12), str(rng.randrange(12))))
    if op == 0:
        return {"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
            "conversation_id": "conv_1", "user_input_audio_format": rng.choice(FORMATS),
            "agent_output_audio_format": rng.choice(FORMATS)}}
    if op <= 4:
        data = rng.randbytes(rng.choice((0, 1, 2, 160, 333)))
        encoded = base64.b64encode(data).decode()
        return {"type": "audio", "audio_event": {"audio_base_64": encoded, "event_id": event_id}}
    if op == 5:
        return {"type": "interruption", "interruption_event": {"event_id": event_id}}
    if op == 6:
        return {"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": rng.choice((None, 30, -1, 1e12))}}
    if op == 7:
        return {"type": "agent_response", "agent_response_event": {"agent_response": hostile_string(rng)}}
    if op == 8:
        return {"type": "agent_response_correction", "agent_response_correction_event": {
            "original_agent_response": "a", "corrected_agent_response": hostile_string(rng)}}
    if op == 9:
        return {"type": "user_transcript", "user_transcription_event": {"user_transcript": hostile_string(rng)}}
    if op == 10:
        return {"type": "client_tool_call", "client_tool_call": {
            "tool_name": rng.choice(("end_call", "\ud800")), "tool_call_id": "t" + str(rng.randrange(4)),
            "parameters": rng.choice(({"reason": "done"}, {}, "{}", [1]))}}
    if op == 11:
        code = rng.choice(("quota", 5, None))
        return {"type": "error", "error_event": {"code": code, "message": hostile_string(rng)}}
    if op == 12:
        return {"type": rng.choice(sorted(IGNORED_MESSAGES))}
    return {"type": "z_" + identifier(rng)}


def targeted(rng: random.Random) -> tuple[str | bytes, Any]:
    """A message the dialect cannot read, and what it must report (None: only that it does not
    raise; ``MALFORMED_MESSAGE``: a malformed report of some type)."""
    op = rng.randrange(6)
    if op == 0:
        return garbage_text(rng), UnknownMessage("(not JSON)")
    if op == 1:
        return deep_nesting(rng), UnknownMessage("(not JSON)")
    if op == 2:
        shapeless = rng.choice(([], 1, "audio", None, {}, {"type": 5}, {"type": ["ping"]}))
        return dump(shapeless), UnknownMessage("(no type)")
    if op == 3:
        bad = {"type": "audio", "audio_event": {"audio_base_64": "*not base64*", "event_id": 1}}
        return dump(bad), MALFORMED_MESSAGE
    return dump(with_hostile_fields(valid(rng), rng), rng), None


class ElevenLabsDialectFuzzTests(unittest.TestCase):
    """ConversationDialect against a generated hostile ElevenLabs server."""

    def run_program(self, program: bytes) -> None:
        dialect = ConversationDialect(initiation_message(dynamic_variables={"k": "v"}), response_prefix="e")
        opened = initiated = ready = False
        calls: set[str] = set()
        cut = -1
        open_response: str | None = None
        for op, rng in steps(program):
            pings: list[int] = []
            if op < 120:
                message = valid(rng)
                text = dump(message)
                if message["type"] == "ping" and initiated:
                    ping_id = message["ping_event"]["event_id"]
                    pings.append(int(ping_id))
                events = dialect.receive(text.encode() if rng.random() < 0.5 else text)
                if message["type"] not in KNOWN:
                    self.assertEqual(events, [UnknownMessage(message["type"])])
            elif op < 160:
                text_or_bytes, expected = targeted(rng)
                events = dialect.receive(text_or_bytes)
                if expected == MALFORMED_MESSAGE:
                    self.assertEqual([type(e) for e in events], [MalformedMessage])
                elif expected is not None:
                    self.assertEqual(events, [expected])
            elif op < 200:
                events = dialect.receive(mutate(valid(rng), rng))
            else:
                events = []
                if self._command(dialect, rng, open_response):
                    opened = True
            for event in events:
                self.assertIsInstance(event, EVENTS)
                if isinstance(event, ConversationStarted):
                    self.assertFalse(ready, "one conversation per dialect")
                    ready = True
                elif isinstance(event, Interrupted):
                    cut = max(cut, event.event_id)
                elif isinstance(event, AgentAudio):
                    event_id = int(event.response_id[1:].split(".")[0])
                    self.assertGreater(event_id, cut, "audio at or before an interruption is dropped")
                    self.assertTrue(event.data)
                elif isinstance(event, AgentAudioFinished):
                    self.assertEqual(event.response_id, open_response)
                elif isinstance(event, ToolCalled):
                    calls.add(event.call_id)
                    self.assertIsInstance(event.arguments, str)
                elif isinstance(event, ServerError):
                    self.assertIn(error_code_label(event.code), ERROR_CODE_LABELS)
            open_response = dialect.open_response
            self.assertEqual(dialect.ready, ready)
            pongs = []
            for item in dialect.take_output():
                out = strict_json(item)
                if "user_audio_chunk" in out:
                    self.assertTrue(ready, "caller audio only once the conversation started")
                    continue
                if out["type"] == "conversation_initiation_client_data":
                    self.assertTrue(opened and not initiated, "the initiation once, when opened")
                    initiated = True
                    continue
                self.assertTrue(initiated, "nothing of ours before the initiation")
                if out["type"] == "pong":
                    pongs.append(out["event_id"])
                elif out["type"] == "client_tool_result":
                    self.assertIn(out["tool_call_id"], calls, "an answer only to a call the server made")
                    self.assertIsInstance(out["is_error"], bool)
                else:
                    self.assertIn(out["type"], ("user_message", "contextual_update"))
                    self.assertTrue(ready)
            if op < 120:
                self.assertEqual(pongs, pings)

    @staticmethod
    def _command(dialect: ConversationDialect, rng: random.Random, response: str | None) -> bool:
        """One command of the backend session; True when it was ``opened``."""
        op = rng.randrange(7)
        if op == 0:
            dialect.opened()
            return True
        if op <= 2:
            dialect.send_audio(rng.randbytes(rng.choice((0, 1, 160, 800))))
        elif op == 3:
            dialect.interrupt(rng.choice((response or "e0", "e1", "nope")))
        elif op == 4:
            dialect.tool_result("t" + str(rng.randrange(4)), hostile_string(rng))
        elif op == 5:
            dialect.send_dtmf(rng.choice(("1", "12#", "", hostile_string(rng))))
        else:
            dialect.contextual_update(hostile_string(rng))
        return False

    def test_hostile_server(self) -> None:
        """Any mix of valid and hostile ElevenLabs messages: never an exception; unreadable messages
        and unknown types reported as such; the initiation once and first; every ping answered;
        no stale audio; every client message strict, UTF-8-encodable JSON."""
        run_programs(self, self.run_program)
