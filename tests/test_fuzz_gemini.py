"""Property-based fuzzing of the Gemini Live dialect (:mod:`mediaproxy.backends.gemini_dialect`),
in the style of :mod:`tests.test_fuzz_dialects`.

Each example is a generated program (:mod:`tests.strategies`) playing a hostile Live API server:
valid messages from the protocol's real templates in any order (audio before ``setupComplete``,
a second ``setupComplete``, ``turnComplete`` with no turn, a tool call cancelled twice), several
known fields in one message, targeted malformations (not JSON, not an object, deep nesting, a
known field of the wrong type, invalid base64 audio, huge and non-finite numbers), random
mutations of the templates, binary frames (the service sends JSON as binary frames too), and the
commands the backend session issues, with odd arguments (tool results that are not JSON, deeply
nested, or hold ``NaN``). Properties checked after every step:

- nothing raises out of the dialect (server message or command);
- every event is one of the dialect's types, and every error code is a bounded label;
- a message that is not a JSON object is one ``malformed_event`` error; a well-formed message
  with no field the dialect knows is one :class:`UnknownEventReceived` and nothing else;
- every client message is strict JSON (no ``NaN``) that can be encoded as UTF-8, with exactly
  one top-level field; ``setup`` goes out once, first; the greeting once, after ``setupComplete``;
- model audio is numbered by turn (``g1_1``, ``g1_2``, ...): audio names the open turn, a turn's
  end names the turn that was open, and a cut turn's audio is dropped.

Each test asserts it really ran :data:`~tests.strategies.FUZZ_EXAMPLES` cases.
"""

from __future__ import annotations

import base64
import random
from typing import Any

from twisted.trial import unittest

from mediaproxy.backends.base import ToolSpec
from mediaproxy.backends.gemini import GeminiOptions
from mediaproxy.backends.gemini_dialect import (
    ERROR_CODE_LABELS,
    IGNORED_FIELDS,
    GeminiDialect,
    GoingAway,
    ModelAudio,
    ResumptionHandle,
    ServerError,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    ToolCallsCancelled,
    TranscriptReceived,
    TurnEnded,
    UnknownEventReceived,
    UsageReported,
    error_code_label,
)
from tests.strategies import (
    binary_frame,
    deep_nesting,
    dump,
    garbage_text,
    hostile_string,
    hostile_value,
    identifier,
    mutate,
    run_programs,
    steps,
    strict_json,
)

OPTIONS = GeminiOptions(api_key="k", url="ws://127.0.0.1:9/ws/live", instructions="Be brief.", greeting="Hello!")
TOOL = ToolSpec("end_call", "End the call.", {"type": "object", "properties": {"reason": {"type": "string"}}})
EVENTS = (SessionReady, ModelAudio, TurnEnded, SpeechStarted, SpeechStopped, TranscriptReceived, ToolCalled,
          ToolCallsCancelled, ResumptionHandle, GoingAway, UsageReported, ServerError, UnknownEventReceived)
KNOWN = frozenset({"setupComplete", "serverContent", "toolCall", "toolCallCancellation", "sessionResumptionUpdate",
                   "goAway", "usageMetadata"}) | IGNORED_FIELDS
CLIENT_FIELDS = frozenset({"setup", "clientContent", "realtimeInput", "toolResponse"})
ODD_OUTPUTS = ("NaN", "[" * 30000, '{"a": Infinity}', "", "not json", '"text"', "5", '{"ok": true}', "\ud800",
               '{"a": 1e999}', "[1, 2]")
"""Tool results: not JSON, deeply nested, non-finite numbers, scalars, a lone surrogate."""


def audio_part(rng: random.Random) -> dict[str, Any]:
    data = base64.b64encode(rng.randbytes(rng.choice((0, 1, 480, 4800)))).decode()
    return {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}


def server_content(rng: random.Random) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        if op <= 2:
            content["modelTurn"] = {"parts": [audio_part(rng) for _ in range(rng.randint(1, 3))]}
        elif op == 3:
            content["inputTranscription"] = {"text": rng.choice((" hello", " there", hostile_string(rng)))}
        elif op == 4:
            content["outputTranscription"] = {"text": rng.choice((" Hi", " how can I help", hostile_string(rng)))}
        elif op == 5:
            content["interrupted"] = True
        elif op == 6:
            content["turnComplete"] = True
        else:
            content["generationComplete"] = True
    return content


def gemini_valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(16)
    if op <= 1:
        return {"setupComplete": {}}
    if op <= 7:
        return {"serverContent": server_content(rng)}
    if op == 8:
        calls = [{"id": rng.choice(("fc-1", "fc-2", "")), "name": rng.choice(("end_call", "\ud800")),
                  "args": rng.choice(({"reason": "done"}, {}, None, [1]))} for _ in range(rng.randint(1, 2))]
        return {"toolCall": {"functionCalls": calls}}
    if op == 9:
        return {"toolCallCancellation": {"ids": [rng.choice(("fc-1", "fc-2", "x"))]}}
    if op == 10:
        return {"sessionResumptionUpdate": {"newHandle": rng.choice(("h-1", "", hostile_string(rng))),
                                            "resumable": rng.choice((True, False))}}
    if op == 11:
        return {"goAway": {"timeLeft": rng.choice(("10s", "0.5s", "1e9s", "-1s", "s", "9" * 400 + "s"))}}
    if op == 12:
        return {"usageMetadata": {"promptTokenCount": 9, "promptTokensDetails": [
            {"modality": rng.choice(("AUDIO", "TEXT", "VIDEO")), "tokenCount": rng.choice((5, 0, -1, 2**63))}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 7}],
            "cachedContentTokenCount": rng.choice((0, 3, None))}}
    if op == 13:
        return {rng.choice(sorted(IGNORED_FIELDS)): {"speechActive": True}}
    if op == 14:
        return {"z" + identifier(rng): {"a": 1}}
    return {"setupComplete": {}, "usageMetadata": {"totalTokenCount": 3},
            "serverContent": {"outputTranscription": {"text": " ok"}, "turnComplete": True}}


def gemini_targeted(rng: random.Random) -> tuple[str | bytes, bool]:
    """A message the dialect must report as one ``malformed_event`` error (True), or a known
    field of any type, only not to raise (False)."""
    op = rng.randrange(8)
    if op == 0:
        return garbage_text(rng), True
    if op == 1:
        return dump(rng.choice(([], [1], "setupComplete", 3, None, True))), True
    if op == 2:
        return deep_nesting(rng), True
    if op == 3:
        return rng.choice((b"\xff\xfe{}", b'{"setupComplete":{}\xc3}', b"\x80")), True
    if op == 4:
        part = {"inlineData": {"data": rng.choice(("!!!!", "AAA", "A===", "\u00e9", "AA=A"))}}
        return dump({"serverContent": {"modelTurn": {"parts": [part]}}}), True
    field = rng.choice(sorted(KNOWN - IGNORED_FIELDS))
    message = gemini_valid(rng) if op == 5 else {}
    message[field] = hostile_value(rng)
    if op == 7 and isinstance(message[field], dict):
        message[field][rng.choice(("parts", "functionCalls", "ids", "modelTurn", "timeLeft"))] = hostile_value(rng)
    return dump(message, rng), False


def turn_number(turn_id: str) -> int:
    """The ``n`` of a turn id ``g1_n`` (connection 1)."""
    prefix, _, number = turn_id.rpartition("_")
    assert prefix == "g1" and number.isdigit(), turn_id
    return int(number)


class GeminiDialectFuzzTests(unittest.TestCase):
    """GeminiDialect (fresh, resumed with a handle, resumed without one) against a generated
    hostile Live API server."""

    def run_program(self, program: bytes) -> None:
        variant = len(program) % 3
        dialect = GeminiDialect(OPTIONS, tools=(TOOL,), handle="h-0" if variant == 1 else None,
                                resumed=variant == 2, resume_context="caller: hi" if variant == 2 else "",
                                connection=1, language=("", "fr-FR")[program[0] % 2])
        first = [strict_json(text) for text in dialect.take_output()]
        self.assertEqual([list(m) for m in first], [["setup"]], "setup first, alone")
        ready = False
        greeted = False
        highest = 0
        ended: set[str] = set()
        calls: set[str] = set()
        for op, rng in steps(program):
            if op < 110:
                message = gemini_valid(rng)
                raw: str | bytes = dump(message)
                events = dialect.receive(raw.encode() if rng.random() < 0.3 else raw)
                if not set(message) & KNOWN:
                    self.assertEqual(events, [UnknownEventReceived(next(iter(message)))])
            elif op < 150:
                raw, malformed = gemini_targeted(rng)
                events = dialect.receive(raw)
                if malformed:
                    self.assertEqual([(type(e), getattr(e, "code", "")) for e in events],
                                     [(ServerError, "malformed_event")], events)
            elif op < 195:
                events = dialect.receive(mutate(gemini_valid(rng), rng))
            elif op < 205:
                events = dialect.receive(binary_frame(rng))
            else:
                events = []
                self._command(dialect, rng, dialect.turn_active, calls)
            for event in events:
                self.assertIsInstance(event, EVENTS)
                if isinstance(event, SessionReady):
                    self.assertFalse(ready, "ready once")
                    ready = True
                elif isinstance(event, ServerError):
                    self.assertIn(error_code_label(event.code), ERROR_CODE_LABELS)
                elif isinstance(event, ModelAudio):
                    number = turn_number(event.turn_id)
                    self.assertGreaterEqual(number, highest, "turns are numbered in order")
                    highest = number
                    self.assertNotIn(event.turn_id, ended, "no audio after the turn's end")
                    self.assertTrue(event.data)
                    self.assertFalse(dialect.is_cut(event.turn_id), "a cut turn's audio is dropped")
                elif isinstance(event, TurnEnded):
                    self.assertNotIn(event.turn_id, ended, "a turn ends once")
                    self.assertGreaterEqual(turn_number(event.turn_id), highest, "only the latest turn ends")
                    highest = turn_number(event.turn_id)
                    ended.add(event.turn_id)
                elif isinstance(event, ToolCalled):
                    strict_json(event.arguments)
                    calls.add(event.call_id)
            if dialect.turn_active is not None:
                self.assertNotIn(dialect.turn_active, ended)
                highest = max(highest, turn_number(dialect.turn_active))
            self.assertEqual(dialect.ready, ready)
            for text in dialect.take_output():
                message = strict_json(text)
                self.assertEqual(len(message), 1, "one top-level field per client message")
                (field,) = message
                self.assertIn(field, CLIENT_FIELDS)
                self.assertNotEqual(field, "setup", "setup once")
                if field == "clientContent":
                    self.assertTrue(ready, "the greeting or the note only once set up")
                    self.assertFalse(greeted, "the greeting once")
                    self.assertNotEqual(variant, 1, "a resumed session is not greeted")
                    greeted = True
                elif field == "toolResponse":
                    (response,) = message["toolResponse"]["functionResponses"]
                    self.assertIsInstance(response["response"], dict)

    @staticmethod
    def _command(dialect: GeminiDialect, rng: random.Random, turn: str | None, calls: set[str]) -> None:
        op = rng.randrange(7)
        if op <= 1:
            dialect.send_audio(rng.randbytes(rng.choice((0, 1, 640, 3200))))
        elif op == 2:
            dialect.send_text(rng.choice(("1#", hostile_string(rng), "x" * 5000)))
        elif op == 3:
            dialect.nudge()
        elif op == 4:
            call_id = rng.choice(sorted(calls) or ["fc-9"])
            dialect.tool_result(call_id, rng.choice(ODD_OUTPUTS + (hostile_string(rng),)))
        elif op == 5:
            dialect.interrupt(rng.choice((turn or "g1_0", "g1_1", "nope")),
                              rng.choice((0.0, 20.0, 1e9, -5.0, float("inf"), float("nan"))))
        else:
            target = rng.choice((turn or "g1_1", "g1_2"))
            text = dialect.heard_text(target, rng.choice(("Hi there how can I help", "", "x" * 300)))
            assert isinstance(text, str)

    def test_hostile_server(self) -> None:
        """Any mix of valid and hostile Live API messages and commands: never an exception;
        unreadable messages are ``malformed_event``; unknown fields reported as unknown; strict
        single-field client messages; setup once and first, the greeting once after it; audio
        numbered by turn, a cut turn's audio dropped."""
        run_programs(self, self.run_program)
