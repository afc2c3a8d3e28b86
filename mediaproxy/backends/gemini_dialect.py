"""The Gemini Live API (``BidiGenerateContent``) WebSocket protocol as a sans-IO object: server
messages in, neutral events out; neutral commands in, client messages queued for
:meth:`GeminiDialect.take_output`. No transport, no clock.

One dialect serves one WebSocket connection. The exchange it speaks (JSON text frames; each
client message has exactly one top-level field)::

    client: setup{model, generationConfig{responseModalities:[AUDIO], speechConfig},
                  systemInstruction, tools[{functionDeclarations}], sessionResumption{handle?},
                  contextWindowCompression?, inputAudioTranscription{}, outputAudioTranscription{}}
    server: setupComplete                                   → SessionReady
    client: [clientContent{turns, turnComplete:true}]       greeting, first connection only
    client: realtimeInput{audio{data, mimeType:"audio/pcm;rate=16000"}}*   caller audio
    server: serverContent{modelTurn{parts[inlineData]}}*    → ModelAudio (24 kHz PCM)
    server: serverContent{inputTranscription|outputTranscription{text}}   → TranscriptReceived
    server: serverContent{interrupted:true}                 → SpeechStarted + TurnEnded(cut)
    server: serverContent{generationComplete|turnComplete}  → TurnEnded
    server: toolCall{functionCalls[{id, name, args}]}       → ToolCalled
    client: toolResponse{functionResponses[{id, name, response}]}
    server: toolCallCancellation{ids}                       → ToolCallsCancelled
    server: sessionResumptionUpdate{newHandle, resumable}   → ResumptionHandle
    server: goAway{timeLeft}                                → GoingAway
    server: usageMetadata{...}                              → UsageReported

The model's turns have no ids on the wire; the dialect numbers them (``g<connection>_<n>``), and
those are the response ids the bridge sees. There is no truncation API: the server stops a turn
by itself when its VAD hears the caller (``interrupted``); :meth:`GeminiDialect.interrupt` only
drops what is still arriving for the turn and remembers how much of it was heard, so the bot's
final transcript says only what the caller heard.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mediaproxy import strict_json
from mediaproxy.backends.base import ToolSpec
from mediaproxy.backends.gemini_events import (
    ERROR_CODE_LABELS,
    GeminiEvent,
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
    usage_tokens,
)
from mediaproxy.transcripts import heard_part

if TYPE_CHECKING:
    from mediaproxy.backends.gemini import GeminiOptions

INPUT_MIME = "audio/pcm;rate=16000"
"""What caller audio is declared as (16-bit little-endian PCM, 16 kHz mono)."""

OUTPUT_BYTES_PER_MS = 48
"""The service's output, 16-bit PCM at 24 kHz, in bytes per ms."""

RESUME_NOTE = (
    "The connection to the caller was briefly interrupted and has been restored. This is the "
    "same call: continue the conversation where it left off and do not greet the caller again."
)

_REMEMBERED = 64

# The events and label vocabularies live in gemini_events; they stay importable from here, where
# the dialect's users (tests, fuzzers) have always found them.
__all__ = [
    "ERROR_CODE_LABELS", "IGNORED_FIELDS", "INPUT_MIME", "OUTPUT_BYTES_PER_MS", "RESUME_NOTE", "GeminiDialect",
    "GeminiEvent", "GoingAway", "ModelAudio", "ResumptionHandle", "ServerError", "SessionReady", "SpeechStarted",
    "SpeechStopped", "ToolCalled", "ToolCallsCancelled", "TranscriptReceived", "TurnEnded", "UnknownEventReceived",
    "UsageReported", "error_code_label", "model_name", "parse_duration_s", "setup_message", "usage_tokens",
]

_FIELDS = ("setupComplete", "serverContent", "toolCall", "toolCallCancellation", "sessionResumptionUpdate", "goAway",
           "usageMetadata")
"""The server message fields the dialect reads, in the order it reads them."""

IGNORED_FIELDS = frozenset({"voiceActivity", "voiceActivityDetectionSignal"})
"""Server message fields the dialect needs nothing from (newer VAD signals: ``interrupted`` is
what barge-in goes by)."""


# --- the setup message -------------------------------------------------------------------------


def model_name(model: str) -> str:
    """The ``models/{model}`` resource name the service requires."""
    return model if model.startswith("models/") else f"models/{model}"


def setup_message(options: GeminiOptions, tools: Sequence[ToolSpec], handle: str | None,
                  language: str = "") -> dict[str, Any]:
    """The ``setup`` message: audio out, the voice, the instruction, the tools as function
    declarations, both transcriptions on, session resumption on (with ``handle`` to resume)."""
    speech: dict[str, Any] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": options.voice}}}
    if language or options.language:
        speech["languageCode"] = language or options.language
    setup: dict[str, Any] = {
        "model": model_name(options.model),
        "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": {"handle": handle} if handle else {},
    }
    if options.instructions:
        setup["systemInstruction"] = {"parts": [{"text": options.instructions}]}
    if tools:
        setup["tools"] = [{"functionDeclarations": [
            {"name": t.name, "description": t.description, "parameters": dict(t.parameters)} for t in tools]}]
    if options.context_window_compression:
        setup["contextWindowCompression"] = {"slidingWindow": {}}
    return {"setup": setup}


def parse_duration_s(value: Any) -> float:
    """A protobuf JSON ``Duration`` (``"12.5s"``) in seconds; 0 when unreadable."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(value)) if value is not None else None
    return float(match.group(1)) if match else 0.0


# --- the dialect -------------------------------------------------------------------------------


class GeminiDialect:
    """One connection's worth of the Live API protocol.

    ``handle``: resume the session it names (the server keeps the conversation; no greeting, no
    note). ``resumed`` without a handle: a fresh session on a reconnect; the greeting is not
    repeated, and a note (plus ``resume_context``, the recent transcript) tells the model the
    conversation continues. ``connection`` numbers the turn ids.
    """

    def __init__(self, options: GeminiOptions, *, tools: Sequence[ToolSpec] = (), handle: str | None = None,
                 resumed: bool = False, resume_context: str = "", connection: int = 1, language: str = "") -> None:
        self._options = options
        self._handle = handle
        self._resumed = resumed
        self._resume_context = resume_context
        self._prefix = f"g{connection}_"
        self._turns = 0
        self._turn: str | None = None
        self._ready = False
        self._output: list[str] = []
        self._tool_calls: dict[str, str] = {}
        self._received_bytes: dict[str, int] = {}
        self._heard_ms: dict[str, int] = {}
        self._cut: dict[str, None] = {}
        self._bot_text = ""
        self._caller_text = ""
        self._send(setup_message(options, tools, handle, language))

    # --- state ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """``setupComplete`` arrived."""
        return self._ready

    @property
    def turn_active(self) -> str | None:
        """The model's turn in progress (audio arrived, not yet complete), if any."""
        return self._turn

    def take_output(self) -> list[str]:
        """The client messages queued since the last call, oldest first, as JSON text."""
        out, self._output = self._output, []
        return out

    def has_tool_call(self, call_id: str) -> bool:
        """``call_id`` was called on this connection (and not cancelled)."""
        return call_id in self._tool_calls

    # --- commands ------------------------------------------------------------------------------

    def send_audio(self, pcm16k: bytes) -> None:
        """Caller audio, 16-bit PCM at 16 kHz, any size."""
        if pcm16k:
            # The per-frame hot path: built as text (base64 needs no JSON escaping).
            self._output.append('{"realtimeInput":{"audio":{"data":"' + base64.b64encode(pcm16k).decode("ascii")
                                + '","mimeType":"' + INPUT_MIME + '"}}}')

    def send_text(self, text: str) -> None:
        """A text input in the conversation (DTMF, notes); the model may answer it."""
        self._send({"realtimeInput": {"text": text}})

    def nudge(self) -> None:
        """Tell the server the audio stream paused (``audioStreamEnd``): its VAD flushes what it
        holds and decides the turn. Audio sent later reopens the stream."""
        self._send({"realtimeInput": {"audioStreamEnd": True}})

    def tool_result(self, call_id: str, output: str) -> None:
        """The answer (JSON text) to ``call_id``, as ``toolResponse`` (a non-object answer is
        wrapped as ``{"output": ...}``: ``response`` must be an object)."""
        name = self._tool_calls.pop(call_id, "")
        try:
            # NaN and Infinity are not JSON (nor is 1e999, which Python reads as inf): such an
            # answer goes as text; so does one nested too deep to parse.
            response = strict_json.loads(output)
        except (ValueError, RecursionError):
            response = output
        if not isinstance(response, dict):
            response = {"output": response}
        self._send({"toolResponse": {"functionResponses": [{"id": call_id, "name": name, "response": response}]}})

    def interrupt(self, turn_id: str, played_ms: float) -> None:
        """Barge-in: the caller heard ``played_ms`` of ``turn_id``; drop the rest of it."""
        if turn_id not in self._received_bytes:
            return  # a turn of an earlier connection, or none
        _remember(self._cut, turn_id, None)
        # Not finite (no playout reports that, but it must not raise): NaN is nothing heard.
        heard = 0 if math.isnan(played_ms) else max(0, int(min(played_ms, 1e12)))
        _remember(self._heard_ms, turn_id, heard)

    # --- server messages -----------------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[GeminiEvent]:
        """Parse one server message; never raises (garbage becomes a ``ServerError``)."""
        try:
            event = strict_json.loads(message)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return [ServerError("malformed_event", "server sent a message that is not JSON")]
        if not isinstance(event, dict):
            return [ServerError("malformed_event", "server message is not an object")]
        events: list[GeminiEvent] = []
        known = False
        for field in _FIELDS:
            if field not in event:
                continue
            known = True
            try:
                self._field(field, event[field], events)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
                # One unusable field costs only its own events: a setupComplete or the audio
                # read before it still counts (the state they changed is already changed).
                events.append(ServerError("malformed_event", f"bad {field}: {e!r}"[:200]))
        if not known and not IGNORED_FIELDS.intersection(event):
            events.append(UnknownEventReceived(next(iter(event), "")))
        return events

    def _field(self, field: str, value: Any, events: list[GeminiEvent]) -> None:
        """Read one known top-level field of a server message into ``events``."""
        if field == "setupComplete":
            events += self._setup_complete()
        elif field == "serverContent":
            self._server_content(value, events)
        elif field == "toolCall":
            self._tool_call(value, events)
        elif field == "toolCallCancellation":
            ids = tuple(str(i) for i in value.get("ids") or ())
            for call_id in ids:
                self._tool_calls.pop(call_id, None)
            events.append(ToolCallsCancelled(ids))
        elif field == "sessionResumptionUpdate":
            handle = value.get("newHandle")
            if value.get("resumable", True) and isinstance(handle, str) and handle:
                events.append(ResumptionHandle(handle))
        elif field == "goAway":
            events.append(GoingAway(parse_duration_s((value or {}).get("timeLeft"))))
        else:
            tokens = usage_tokens(value)
            if tokens:
                events.append(UsageReported(tokens))

    def _setup_complete(self) -> list[GeminiEvent]:
        if self._ready:
            return []
        self._ready = True
        if self._handle:
            pass  # the server resumed the conversation itself
        elif self._resumed:
            note = RESUME_NOTE if not self._resume_context else f"{RESUME_NOTE}\n\n{self._resume_context}"
            self._send({"clientContent": {"turns": [{"role": "user", "parts": [{"text": note}]}],
                                          "turnComplete": False}})
        elif self._options.greeting and not self._options.listen_only:
            text = f"The call has just been answered. Greet the caller now by saying exactly: {self._options.greeting}"
            self._send({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}],
                                          "turnComplete": True}})
        return [SessionReady()]

    def _server_content(self, content: Mapping[str, Any], events: list[GeminiEvent]) -> None:
        caller = content.get("inputTranscription")
        if isinstance(caller, Mapping) and _text(caller.get("text")):
            self._caller_text += _text(caller.get("text"))
            events.append(TranscriptReceived("caller", self._caller_text.strip(), False))
        if content.get("interrupted"):
            events.append(SpeechStarted())
            turn, self._turn = self._turn, None
            if turn is not None:
                events += self._bot_final(turn, cut=True)
        turn_parts = (content.get("modelTurn") or {}).get("parts") or ()
        for part in turn_parts:
            data = (part.get("inlineData") or {}).get("data") if isinstance(part, Mapping) else None
            if not isinstance(data, str):
                continue
            try:
                audio = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                events.append(ServerError("malformed_event", "inlineData is not valid base64"))
                continue
            if self._turn is None:
                events += self._turn_started()
            turn = self._turn
            assert turn is not None
            self._received_bytes[turn] = self._received_bytes.get(turn, 0) + len(audio)
            if audio and turn not in self._cut:
                events.append(ModelAudio(turn, audio))
        bot = content.get("outputTranscription")
        if isinstance(bot, Mapping) and _text(bot.get("text")):
            if self._turn is None and not self._cut_recently():
                events += self._turn_started()
            self._bot_text += _text(bot.get("text"))
            if self._turn is not None:
                events.append(TranscriptReceived("bot", self._bot_text.strip(), False))
        if content.get("turnComplete") or content.get("generationComplete"):
            turn, self._turn = self._turn, None
            if turn is not None:
                events += self._bot_final(turn, cut=turn in self._cut)
            elif content.get("turnComplete") and self._bot_text and not self._cut_recently():
                events.append(TranscriptReceived("bot", self._bot_text.strip(), True))
                self._bot_text = ""
            if content.get("turnComplete"):
                self._last_cut = None

    _last_cut: str | None = None

    def _cut_recently(self) -> bool:
        """A turn was cut and its ``turnComplete`` has not come yet: late text belongs to it."""
        return self._last_cut is not None

    def _turn_started(self) -> list[GeminiEvent]:
        self._turns += 1
        self._turn = f"{self._prefix}{self._turns}"
        self._received_bytes[self._turn] = 0
        while len(self._received_bytes) > _REMEMBERED:
            del self._received_bytes[next(iter(self._received_bytes))]
        self._last_cut = None
        events: list[GeminiEvent] = []
        if self._caller_text.strip():
            # The model answers: the caller's turn is over.
            events += [TranscriptReceived("caller", self._caller_text.strip(), True), SpeechStopped()]
        self._caller_text = ""
        return events

    def _bot_final(self, turn: str, *, cut: bool) -> list[GeminiEvent]:
        """End of ``turn``: its final bot transcript (cut to what was heard) and ``TurnEnded``."""
        text, self._bot_text = self._bot_text.strip(), ""
        if cut:
            self._last_cut = turn
            _remember(self._cut, turn, None)
        if cut:
            return [TurnEnded(turn, True, text)]
        events: list[GeminiEvent] = [TranscriptReceived("bot", text, True)] if text else []
        events.append(TurnEnded(turn, False))
        return events

    def heard_text(self, turn: str, text: str) -> str:
        """``text`` of ``turn`` cut in proportion to what of its audio the caller heard, back to
        a word boundary (all of it when no barge-in was reported for the turn)."""
        heard = self._heard_ms.get(turn)
        if heard is None:
            return text
        return heard_part(text, heard, self._received_bytes.get(turn, 0) // OUTPUT_BYTES_PER_MS)

    def is_cut(self, turn_id: str) -> bool:
        """``turn_id`` was interrupted: any more of its audio is dropped."""
        return turn_id in self._cut

    def _tool_call(self, call: Mapping[str, Any], events: list[GeminiEvent]) -> None:
        for fc in call.get("functionCalls") or ():
            call_id, name = str(fc.get("id") or ""), str(fc["name"])
            if not call_id:
                call_id = f"{self._prefix}call{len(self._tool_calls) + 1}"
            self._tool_calls[call_id] = name
            args = fc.get("args")
            events.append(ToolCalled(call_id, name, json.dumps(args if isinstance(args, dict) else {})))

    # --- helpers -------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        self._output.append(json.dumps(message, separators=(",", ":")))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _remember(table: dict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    while len(table) > _REMEMBERED:
        del table[next(iter(table))]
