"""Property-based fuzzing of the backend dialects added since :mod:`tests.test_fuzz_platforms`: the
Deepgram Voice Agent dialect (JSON control plus binary audio), the OpenAI Realtime dialect under
its other flavors (Azure, Voice Live with its renamed events, xAI opening with
``conversation.created``), and the bot protocol of the ``type = websocket`` backend.

Each example is a generated program (:mod:`tests.strategies`) playing a hostile server: valid
messages from the protocol's real templates in any order, targeted malformations, random
mutations, binary frames of awkward sizes, and the commands the backend session issues. Properties
checked after every step:

- nothing raises out of the dialect;
- every event is one of the dialect's types, and error codes become bounded labels;
- a message that is not JSON, or has no type, is reported as such (Deepgram: ``UnknownMessage``;
  OpenAI: a ``malformed_event`` error); a well-formed message of an unknown type is reported as
  unknown and nothing else happens;
- every client text frame is strict JSON that can be encoded as UTF-8;
- Deepgram: ``Settings`` goes out once, first, on the first ``Welcome``; caller audio and keys
  only once the settings are applied; a function result only for a call the server made; agent
  audio is numbered by turn and a turn's end names the open turn;
- OpenAI flavors: the flavor's own session object goes out once, on the flavor's opening event;
  every event id is fresh; ``response.cancel`` names the response exactly when the flavor does;
- the bot protocol: ``start`` first and once; a malformed message is answered with ``error``, an
  unknown one with nothing; the bot's audio comes out as the exact whole-sample prefix of what it
  sent, numbered by turn; nothing after ``stop``.

Each test asserts it really ran :data:`~tests.strategies.FUZZ_EXAMPLES` cases.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.trial import unittest

from mediaproxy.audio.format import MULAW_8K, AudioFormat
from mediaproxy.backends.base import ToolSpec
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
    start_message,
)
from mediaproxy.backends.bot_websocket_dialect import (
    UnknownMessage as BotUnknownMessage,
)
from mediaproxy.backends.deepgram import DeepgramOptions
from mediaproxy.backends.deepgram_dialect import (
    ERROR_CODE_LABELS as AGENT_ERROR_LABELS,
)
from mediaproxy.backends.deepgram_dialect import (
    FATAL_ERROR_CODES as AGENT_FATAL_CODES,
)
from mediaproxy.backends.deepgram_dialect import (
    IGNORED_MESSAGES,
    AgentAudio,
    AgentAudioFinished,
    AgentDialect,
    SettingsAccepted,
    SpeechStarted,
    SpeechStopped,
    TranscriptLine,
    UnknownMessage,
    Welcomed,
    error_code_label,
    settings_message,
)
from mediaproxy.backends.deepgram_dialect import (
    ServerError as AgentError,
)
from mediaproxy.backends.deepgram_dialect import (
    ToolCalled as AgentToolCalled,
)
from mediaproxy.backends.openai_dialect import IGNORED_EVENTS, RealtimeDialect
from mediaproxy.backends.openai_events import ServerError, UnknownEventReceived
from mediaproxy.backends.openai_flavors import FLAVORS, VOICELIVE_EVENT_NAMES
from mediaproxy.backends.openai_session_config import RealtimeOptions
from tests.strategies import (
    binary_frame,
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
from tests.test_fuzz_platforms import (
    HANDLED,
    REALTIME_EVENTS,
    realtime_command,
    realtime_targeted,
    realtime_valid,
)

# --- Deepgram Voice Agent ---------------------------------------------------------------------------

AGENT_OPTIONS = DeepgramOptions(api_key="k", instructions="Be brief.", greeting="Hello!")
AGENT_TOOL = ToolSpec("end_call", "End the call.", {"type": "object", "properties": {"reason": {"type": "string"}}})
AGENT_EVENTS = (
    Welcomed, SettingsAccepted, AgentAudio, AgentAudioFinished, SpeechStarted, SpeechStopped, TranscriptLine,
    AgentToolCalled, AgentError, UnknownMessage,
)
AGENT_KNOWN = frozenset({
    "Welcome", "SettingsApplied", "UserStartedSpeaking", "ConversationText", "AgentAudioDone",
    "FunctionCallRequest", "FunctionCallCancelled", "Error", "Warning",
}) | IGNORED_MESSAGES
AGENT_CODES = ("INTERNAL_SERVER_ERROR", "INVALID_SETTINGS", "SETTINGS_ALREADY_APPLIED", "PROMPT_TOO_LONG",
               "FUNCTION_CALL_FAILED", "SOMETHING_NEW")


def agent_valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(16)
    if op <= 1:
        return {"type": "Welcome", "request_id": rng.choice(("r-1", hostile_string(rng)))}
    if op == 2:
        return {"type": "SettingsApplied"}
    if op == 3:
        return {"type": "UserStartedSpeaking"}
    if op <= 5:
        return {"type": "ConversationText", "role": rng.choice(("user", "assistant")), "content": hostile_string(rng)}
    if op == 6:
        return {"type": rng.choice(("AgentThinking", "AgentStartedSpeaking")), "content": "", "latency": 0.2}
    if op == 7:
        return {"type": "AgentAudioDone"}
    if op == 8:
        function = {"id": "fc-" + str(rng.randrange(4)), "name": rng.choice(("end_call", "\ud800")),
                    "arguments": rng.choice(('{"reason":"done"}', "{}", {"reason": "x"})),
                    "client_side": rng.choice((True, True, False))}
        return {"type": "FunctionCallRequest", "functions": [function]}
    if op == 9:
        return {"type": "FunctionCallCancelled", "id": "fc-" + str(rng.randrange(4))}
    if op == 10:
        return {"type": rng.choice(("Error", "Warning")), "code": rng.choice(AGENT_CODES),
                "description": hostile_string(rng)}
    if op == 11:
        return {"type": rng.choice(sorted(IGNORED_MESSAGES))}
    if op == 12:
        return {"type": "Z" + identifier(rng)}
    return {"type": "ConversationText", "role": "assistant", "content": "Hello there"}


def agent_targeted(rng: random.Random) -> tuple[str | bytes, UnknownMessage | None]:
    """A message the dialect cannot read, and what it must report; or a known type with fields
    of any type (``None``: only that it does not raise)."""
    op = rng.randrange(7)
    if op == 0:
        return garbage_text(rng), UnknownMessage("(not JSON)")
    if op == 1:
        return deep_nesting(rng), UnknownMessage("(not JSON)")
    if op == 2:
        return rng.choice((b"\xff\xfe{}", b'{"type":"Welcome\xc3"}')), UnknownMessage("(not JSON)")
    if op == 3:
        return dump(rng.choice(([], 1, "Welcome", None, {}, {"type": 5}, {"type": None}, {"type": ["Error"]}))), \
            UnknownMessage("(no type)")
    return dump(with_hostile_fields(agent_valid(rng), rng), rng), None


class AgentDialectFuzzTests(unittest.TestCase):
    """AgentDialect against a generated hostile Voice Agent server."""

    def run_program(self, program: bytes) -> None:
        dialect = AgentDialect(settings_message(AGENT_OPTIONS, MULAW_8K, (AGENT_TOOL,), prompt="Be brief.",
                                                greeting="Hello!", language="en"), response_prefix="t")
        settings_sent = ready = False
        calls: set[str] = set()
        turn: str | None = None
        turns = 0
        for op, rng in steps(program):
            sent_audio = False
            if op < 110:
                message = agent_valid(rng)
                text: str | bytes = dump(message)
                events = dialect.receive(text.encode() if rng.random() < 0.5 else text, False)
                if message["type"] not in AGENT_KNOWN:
                    self.assertEqual(events, [UnknownMessage(message["type"])])
            elif op < 150:
                text, expected = agent_targeted(rng)
                events = dialect.receive(text, False)
                if expected is not None:
                    self.assertEqual(events, [expected])
            elif op < 195:
                events = dialect.receive(mutate(agent_valid(rng), rng), False)
            elif op < 225:
                data = binary_frame(rng)
                events = dialect.receive(data, True)
                self.assertTrue(all(isinstance(e, AgentAudio) and e.data == data for e in events), events)
            else:
                events = []
                sent_audio = self._command(dialect, rng, turn)
            for event in events:
                self.assertIsInstance(event, AGENT_EVENTS)
                if isinstance(event, SettingsAccepted):
                    self.assertTrue(settings_sent, "ready only once our Settings went out")
                    ready = True
                elif isinstance(event, AgentError):
                    self.assertIn(error_code_label(event.code), AGENT_ERROR_LABELS)
                    self.assertEqual(event.fatal, not event.warning and event.code in AGENT_FATAL_CODES)
                elif isinstance(event, AgentToolCalled):
                    calls.add(event.call_id)
                elif isinstance(event, AgentAudio):
                    if turn is None:
                        turns += 1
                        turn = f"t{turns}"
                    self.assertEqual(event.response_id, turn)
                elif isinstance(event, AgentAudioFinished):
                    self.assertEqual(event.response_id, turn)
            if dialect.open_turn is None:
                turn = None  # done, or cut (by the caller's speech or by the bridge)
            self.assertEqual(dialect.ready, ready)
            for item in dialect.take_output():
                if isinstance(item, bytes):
                    self.assertTrue(sent_audio and ready and item, "caller audio only once ready")
                    continue
                out = strict_json(item)
                if out["type"] == "Settings":
                    self.assertFalse(settings_sent, "Settings once")
                    self.assertTrue(any(isinstance(e, Welcomed) for e in events), "Settings on Welcome")
                    settings_sent = True
                    continue
                if out["type"] == "FunctionCallResponse":
                    self.assertIn(out["id"], calls, "an answer only to a call the server made")
                    continue
                self.assertTrue(settings_sent, "nothing of ours before Settings")
                if out["type"] == "InjectUserMessage":
                    self.assertTrue(ready)
                else:
                    self.assertEqual(out["type"], "KeepAlive")

    @staticmethod
    def _command(dialect: AgentDialect, rng: random.Random, turn: str | None) -> bool:
        """One command of the backend session; True when it was caller audio."""
        op = rng.randrange(6)
        if op <= 1:
            dialect.send_audio(rng.randbytes(rng.choice((0, 1, 160, 800))))
            return True
        if op == 2:
            dialect.interrupt(rng.choice((turn or "t0", "t1", "nope")))
        elif op == 3:
            dialect.tool_result("fc-" + str(rng.randrange(4)), hostile_string(rng))
        elif op == 4:
            dialect.send_dtmf(rng.choice(("1", "12#", "", hostile_string(rng))))
        else:
            dialect.poll_keepalive()
        return False

    def test_hostile_server(self) -> None:
        """Any mix of valid and hostile Voice Agent messages and audio: never an exception;
        unreadable messages and unknown types reported as unknown; Settings once and first;
        every client message strict, UTF-8-encodable JSON of the types the dialect sends."""
        run_programs(self, self.run_program)


# --- OpenAI Realtime flavors -------------------------------------------------------------------------

VOICELIVE_OLD_NAMES = {ga: old for old, ga in VOICELIVE_EVENT_NAMES.items()}
"""GA event name → the Voice Live name it is sent under."""


def flavor_options(flavor: str) -> RealtimeOptions:
    return RealtimeOptions(api_key="k", flavor=flavor, url="wss://example.invalid/realtime", instructions="Be brief.",
                           greeting="Hello", transcription_model="whisper-1")


def flavor_valid(flavor: str, rng: random.Random) -> dict[str, Any]:
    """A valid server event of ``flavor``: the GA templates, Voice Live's old names, xAI's opening
    and each flavor's own ignored events."""
    spec = FLAVORS[flavor]
    roll = rng.random()
    if roll < 0.08:
        return {"type": rng.choice(sorted(spec.opening_events)), "conversation": {"id": "conv_1"}}
    if roll < 0.12 and spec.ignored_events:
        return {"type": rng.choice(sorted(spec.ignored_events))}
    message = realtime_valid(rng)
    if message["type"] == "session.updated":
        message["session"] = spec.session(flavor_options(flavor), MULAW_8K, ())
    if flavor == "voicelive" and message["type"] in VOICELIVE_OLD_NAMES and rng.random() < 0.7:
        message["type"] = VOICELIVE_OLD_NAMES[message["type"]]
    return message


class FlavorFuzzTests(unittest.TestCase):
    """RealtimeDialect under each non-GA flavor against a generated hostile server."""

    def run_program(self, flavor: str, program: bytes) -> None:
        spec = FLAVORS[flavor]
        options = flavor_options(flavor)
        dialect = RealtimeDialect(options, MULAW_8K, event_prefix="c1", tools=())
        known = HANDLED | spec.opening_events | set(spec.event_names) | IGNORED_EVENTS | spec.ignored_events
        first_session = spec.session(dialect._options, MULAW_8K, ())
        event_ids: set[str] = set()
        opened = False
        for op, rng in steps(program):
            malformed = False
            opening = False
            if op < 120:
                message = flavor_valid(flavor, rng)
                opening = message["type"] in spec.opening_events and not opened
                events = dialect.receive(dump(message))
                if message["type"] not in known:
                    self.assertEqual(events, [UnknownEventReceived(message["type"])])
                self.assertFalse(any(isinstance(e, UnknownEventReceived) for e in events) and
                                 message["type"] in known, message["type"])
            elif op < 160:
                events = dialect.receive(realtime_targeted(rng))
                malformed = True
            elif op < 210:
                events = dialect.receive(mutate(flavor_valid(flavor, rng), rng))
            elif op < 215:
                events = dialect.receive(rng.randbytes(rng.choice((0, 1, 9, 300))))
            else:
                events = []
                realtime_command(dialect, rng)
            for event in events:
                self.assertIsInstance(event, REALTIME_EVENTS)
            if malformed:
                self.assertEqual([type(e) for e in events], [ServerError])
                self.assertEqual(events[0].code, "malformed_event")  # type: ignore[union-attr]
            output = [strict_json(text) for text in dialect.take_output()]
            for message in output:
                self.assertIsInstance(message["type"], str)
                self.assertNotIn(message["event_id"], event_ids)
                event_ids.add(message["event_id"])
                if message["type"] == "response.cancel":
                    self.assertEqual("response_id" in message, spec.cancel_names_response)
            updates = [m for m in output if m["type"] == "session.update" and m["session"] == first_session]
            if opening:
                self.assertEqual(len(updates), 1, "the flavor's session goes out on its opening event")
            if updates:  # a mutated message may still be a valid opening event
                self.assertEqual((opened, len(updates)), (False, 1), "the session is configured once")
                opened = True

    def fuzz(self, flavor: str) -> None:
        run_programs(self, lambda program: self.run_program(flavor, program), cases_of="flavor, program")

    def test_azure_hostile_server(self) -> None:
        """Azure (GA events, no session model): never an exception; malformed events are
        ``malformed_event``; unknown types reported; the session once on ``session.created``."""
        self.fuzz("azure")

    def test_voicelive_hostile_server(self) -> None:
        """Voice Live: its old event names (``response.audio.delta``) read as the GA ones, its
        own events ignored, never reported unknown; the flat session once; cancels name no
        response."""
        self.fuzz("voicelive")

    def test_xai_hostile_server(self) -> None:
        """xAI: the session goes out once, on ``conversation.created`` or ``session.created``
        (whichever comes first); its ``ping`` ignored; the same properties as the GA dialect."""
        self.fuzz("xai")



# --- the bot protocol (type = websocket backend) ---------------------------------------------------

BOT_EVENTS = (BotAudio, ClearRequested, MarkRequested, HangupRequested, TransferRequested, TranscriptReceived,
              TurnFinished, BotUnknownMessage, MalformedMessage)
BOT_KNOWN = frozenset({"clear", "mark", "hangup", "transfer", "transcript"})
BOT_OUT = frozenset({"start", "dtmf", "speech_started", "speech_stopped", "mark", "action_result", "error", "stop"})


def bot_valid(rng: random.Random) -> dict[str, Any]:
    op = rng.randrange(8)
    if op == 0:
        return {"type": "clear"}
    if op <= 2:
        return {"type": "mark", "name": rng.choice(("m1", "\ud800", hostile_string(rng) or "x"))}
    if op == 3:
        return {"type": "hangup", "reason": hostile_string(rng)}
    if op == 4:
        return {"type": "transfer", "target": rng.choice(("sales", "\u202e")), "summary": hostile_string(rng)}
    if op == 5:
        return {"type": "transcript", "role": rng.choice(("bot", "caller")), "text": hostile_string(rng),
                "final": rng.choice((True, False))}
    return {"type": "z" + identifier(rng), "x": hostile_string(rng)}


class BotDialectFuzzTests(unittest.TestCase):
    """BotDialect against a generated hostile bot."""

    def run_program(self, program: bytes) -> None:
        l16 = AudioFormat("l16", 16000)
        dialect = BotDialect(start_message("CA1", "twilio", l16, {"k": "v"}, resumed=False), l16,
                             response_prefix="t")
        received, played = bytearray(), bytearray()
        turn: str | None = None
        turns = 0
        started = stopped = False
        for op, rng in steps(program):
            if op < 100:
                message = bot_valid(rng)
                events = dialect.receive(dump(message), False)
                if message["type"] not in BOT_KNOWN:
                    self.assertEqual(events, [BotUnknownMessage(message["type"])])
            elif op < 130:
                events = dialect.receive(rng.choice((garbage_text(rng), dump(rng.choice(([], 3, None, {"type": 1}))))),
                                         False)
                self.assertEqual([type(e) for e in events], [MalformedMessage])
            elif op < 170:
                events = dialect.receive(mutate(bot_valid(rng), rng), False)
            elif op < 215:
                data = binary_frame(rng)
                received += data
                events = dialect.receive(data, True)
            else:
                events = []
                self._command(dialect, rng, turn)
            malformed = any(isinstance(e, MalformedMessage) for e in events)
            for event in events:
                self.assertIsInstance(event, BOT_EVENTS)
                if isinstance(event, BotAudio):
                    if turn is None:
                        turns += 1
                        turn = f"t{turns}"
                    self.assertEqual(event.response_id, turn)
                    played += event.data
                elif isinstance(event, TurnFinished):
                    self.assertEqual(event.response_id, turn)
                    turn = None
            if dialect.open_turn is None:
                turn = None  # finished, cleared or interrupted
            self.assertEqual(len(played), len(received) - len(received) % 2)
            self.assertEqual(played, received[: len(played)])
            out = [strict_json(item) for item in dialect.take_output() if not isinstance(item, bytes)]
            if malformed and not stopped:
                self.assertIn("malformed_message", [o.get("code") for o in out if o["type"] == "error"])
            for message in out:
                self.assertFalse(stopped, "nothing after stop")
                self.assertIn(message["type"], BOT_OUT)
                self.assertEqual(message["type"] == "start", not started, "start first and once")
                started = True
                stopped = message["type"] == "stop"

    @staticmethod
    def _command(dialect: BotDialect, rng: random.Random, turn: str | None) -> None:
        op = rng.randrange(8)
        if op == 0:
            dialect.send_audio(rng.randbytes(rng.choice((0, 1, 640))))
        elif op == 1:
            dialect.interrupt(rng.choice((turn or "t0", "t1", "nope")))
        elif op == 2:
            dialect.send_dtmf(rng.choice(("1", "12#", "")))
        elif op == 3:
            dialect.speech(rng.random() < 0.5)
        elif op == 4:
            dialect.mark_played(hostile_string(rng), rng.random() < 0.5)
        elif op == 5:
            dialect.action_result("hangup", "refused", hostile_string(rng))
        elif op == 6:
            dialect.finish_turn()
        elif rng.random() < 0.2:
            dialect.stop("completed")

    def test_hostile_bot(self) -> None:
        """Any mix of valid and hostile bot messages and audio: never an exception; malformed
        messages answered with error, unknown ones reported; audio exact, whole samples, by turn;
        start first and once, nothing after stop, every text frame strict UTF-8 JSON."""
        run_programs(self, self.run_program)
