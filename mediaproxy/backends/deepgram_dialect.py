"""The Deepgram Voice Agent WebSocket protocol as a sans-IO object: server frames in, neutral
events out; neutral commands in, client frames queued for :meth:`AgentDialect.take_output`. No
transport, no clock.

One dialect serves one WebSocket connection (a reconnect builds a fresh one and sends a fresh
``Settings``: the service keeps nothing across connections). The exchange it speaks::

    server: Welcome{request_id}
    client: Settings                     (audio formats, agent listen/think/speak, functions)
    server: SettingsApplied              (→ SettingsAccepted: caller audio may flow)
    client: binary caller audio*         (as it comes, in the session format)
    server: UserStartedSpeaking          (→ SpeechStarted: barge-in)
    server: ConversationText{role, content}
    server: AgentThinking, AgentStartedSpeaking, binary agent audio*, AgentAudioDone
    server: FunctionCallRequest{functions:[{id, name, arguments, client_side}]}
    client: FunctionCallResponse{id, name, content}
    client: InjectUserMessage{content}    the caller's keys, as text
    client: KeepAlive                    while no other message flows
    server: Error{code, description}, Warning{code, description}

Agent audio carries no id: the dialect numbers the agent's turns itself. A turn opens with the
first audio frame after the previous turn ended and closes at ``AgentAudioDone``. When the caller
starts speaking over an open turn (``UserStartedSpeaking``) or the bridge interrupts it, the turn
is *cut*: the service stops synthesising by itself, and the frames still in flight are dropped
here (counted in :attr:`AgentDialect.late_audio_bytes_dropped`) until the next sign of a new
turn (``AgentThinking``, ``AgentStartedSpeaking``, an assistant ``ConversationText``, a
``FunctionCallRequest`` or ``AgentAudioDone``). The API has no truncate: the service's own history
keeps the whole reply it generated, which the connector cannot correct.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from mediaproxy import strict_json
from mediaproxy.backends.deepgram_events import (
    ERROR_CODE_LABELS,
    ERROR_CODES,
    FATAL_ERROR_CODES,
    OTHER,
    UNKNOWN_MESSAGE,
    WARNING_CODES,
    AgentAudio,
    AgentAudioFinished,
    AgentEvent,
    ServerError,
    SettingsAccepted,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    TranscriptLine,
    UnknownMessage,
    Welcomed,
    error_code_label,
)
from mediaproxy.backends.deepgram_settings import settings_message, wire_encoding
from mediaproxy.backends.json_frames import text_frame

IGNORED_MESSAGES = frozenset({
    "PromptUpdated",
    "SpeakUpdated",
    "ListenUpdated",
    "ThinkUpdated",
    "InjectionRefused",
    "History",
    "FunctionCallResponse",  # the server's own, for a server-side function
    "AgentThinking",
    "AgentStartedSpeaking",
    "FunctionCallCancelled",
})
"""Server messages handled without an event (some mark turn boundaries, see the module doc)."""

_TURN_BOUNDARIES = frozenset({"AgentThinking", "AgentStartedSpeaking", "FunctionCallRequest"})

_REMEMBERED = 64
"""Function calls (and cancelled ones) remembered per connection, oldest out first."""

KEEPALIVE = json.dumps({"type": "KeepAlive"})

# The events, label vocabularies and the Settings message live in deepgram_events and
# deepgram_settings; they stay importable from here, where the dialect's users (tests, fuzzers)
# have always found them.
__all__ = [
    "AgentAudio", "AgentAudioFinished", "AgentDialect", "AgentEvent", "ERROR_CODES", "ERROR_CODE_LABELS",
    "FATAL_ERROR_CODES", "IGNORED_MESSAGES", "KEEPALIVE", "OTHER", "ServerError", "SettingsAccepted",
    "SpeechStarted", "SpeechStopped", "ToolCalled", "TranscriptLine", "UNKNOWN_MESSAGE", "UnknownMessage",
    "WARNING_CODES", "Welcomed", "error_code_label", "settings_message", "wire_encoding",
]

# --- the dialect ------------------------------------------------------------------------------------


class AgentDialect:
    """One connection's worth of the Voice Agent protocol.

    ``settings`` is the ``Settings`` message (see
    :func:`~mediaproxy.backends.deepgram_settings.settings_message`), sent as the first client
    message once ``Welcome`` arrived. ``response_prefix`` makes turn ids unique across the
    connections of a call. Output is a list of frames: ``str`` for text, ``bytes`` for audio.
    """

    def __init__(self, settings: Mapping[str, Any], *, response_prefix: str = "t") -> None:
        self._settings = settings
        self._prefix = response_prefix
        self._output: list[str | bytes] = []
        self._settings_sent = False
        self._ready = False
        self._turns = 0
        self._turn: str | None = None
        self._cut = False
        self._caller_speaking = False
        self._sent_since_poll = False
        self._calls: OrderedDict[str, str] = OrderedDict()
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self.late_audio_bytes_dropped = 0
        """Agent audio that arrived for a cut turn, in bytes."""

    # --- state ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """``SettingsApplied`` arrived: caller audio is heard."""
        return self._ready

    @property
    def open_turn(self) -> str | None:
        """The agent turn whose audio is arriving (not cut, not done), if any."""
        return self._turn

    def has_tool_call(self, call_id: str) -> bool:
        """The function call ``call_id`` was requested on this connection."""
        return call_id in self._calls

    def take_output(self) -> list[str | bytes]:
        """Client frames queued since the last call, oldest first."""
        out, self._output = self._output, []
        return out

    # --- commands ---------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in the session format, forwarded as one binary frame (only once ready;
        the glue holds earlier audio)."""
        if self._ready and data:
            self._output.append(data)
            self._sent_since_poll = True

    def interrupt(self, response_id: str) -> None:
        """The bridge cut ``response_id`` (barge-in): drop the rest of it. The API has no
        truncate; the service stops on its own ``UserStartedSpeaking``."""
        if response_id == self._turn:
            self._cut_turn()

    def tool_result(self, call_id: str, output: str) -> None:
        """``FunctionCallResponse`` for the call ``call_id`` made on this connection (a cancelled
        call is not answered, as the vendor asks)."""
        name = self._calls.get(call_id)
        if name is None or call_id in self._cancelled:
            return
        self._send({"type": "FunctionCallResponse", "id": call_id, "name": name, "content": output})

    def send_dtmf(self, digits: str) -> None:
        """The caller's keys as an ``InjectUserMessage`` (the agent answers as if they spoke)."""
        if self._ready and digits:
            self._send({"type": "InjectUserMessage", "content": f"(The caller pressed the keys: {digits})"})

    def poll_keepalive(self) -> bool:
        """Called every half keep-alive interval: queue a ``KeepAlive`` when nothing was sent
        since the previous poll (so at most one interval passes without a client message).
        Returns whether one was queued."""
        sent, self._sent_since_poll = self._sent_since_poll, False
        if sent or not self._settings_sent:
            return False
        self._output.append(KEEPALIVE)
        return True

    # --- server frames -------------------------------------------------------------------------

    def receive(self, payload: bytes | str, is_binary: bool) -> list[AgentEvent]:
        """One server frame; the events it means, in order."""
        if is_binary:
            return self._audio(payload if isinstance(payload, bytes) else payload.encode())
        try:
            message = strict_json.loads(payload)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
            return [UnknownMessage("(not JSON)")]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [UnknownMessage("(no type)")]
        kind: str = message["type"]
        if kind in _TURN_BOUNDARIES:
            self._cut = False
        if kind == "Welcome":
            if not self._settings_sent:
                self._settings_sent = True
                self._send(dict(self._settings))
            return [Welcomed(_text(message.get("request_id")))]
        if kind == "SettingsApplied":
            if not self._settings_sent:
                # Before Welcome no Settings went out: nothing was applied, and caller audio
                # before Settings is an error the service ends the connection for.
                return [UnknownMessage(kind)]
            self._ready = True
            return [SettingsAccepted()]
        if kind == "UserStartedSpeaking":
            self._caller_speaking = True
            if self._turn is not None:
                self._cut_turn()
            return [SpeechStarted()]
        if kind == "ConversationText":
            return self._conversation_text(message)
        if kind == "AgentAudioDone":
            self._cut = False
            turn, self._turn = self._turn, None
            return [] if turn is None else [AgentAudioFinished(turn)]
        if kind == "FunctionCallRequest":
            return self._function_call_request(message)
        if kind == "FunctionCallCancelled":
            self._function_call_cancelled(message)
            return []
        if kind in ("Error", "Warning"):
            code = _text(message.get("code")) or "unknown"
            description = _text(message.get("description") or message.get("message"))
            warning = kind == "Warning"
            return [ServerError(code, description, fatal=not warning and code in FATAL_ERROR_CODES, warning=warning)]
        if kind in IGNORED_MESSAGES:
            return []
        return [UnknownMessage(kind)]

    def _audio(self, data: bytes) -> list[AgentEvent]:
        if self._cut:
            self.late_audio_bytes_dropped += len(data)
            return []
        if self._turn is None:
            self._turns += 1
            self._turn = f"{self._prefix}{self._turns}"
        return [AgentAudio(self._turn, data)]

    def _cut_turn(self) -> None:
        self._turn = None
        self._cut = True

    def _conversation_text(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        role = message.get("role")
        text = _text(message.get("content"))
        if role == "assistant":
            self._cut = False  # the next reply is starting
            return [TranscriptLine("bot", text)]
        if role == "user":
            events: list[AgentEvent] = [TranscriptLine("caller", text)]
            if self._caller_speaking:
                self._caller_speaking = False
                events.append(SpeechStopped())
            return events
        return [UnknownMessage("ConversationText")]

    def _function_call_request(self, message: Mapping[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        functions = message.get("functions")
        for function in functions if isinstance(functions, list) else ():
            if not isinstance(function, Mapping) or function.get("client_side") is False:
                continue  # a server-side function: the service runs it itself
            call_id, name = _text(function.get("id")), _text(function.get("name"))
            if not call_id or not name:
                continue
            arguments = function.get("arguments", "")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            _remember(self._calls, call_id, name)
            events.append(ToolCalled(call_id, name, arguments))
        return events

    def _function_call_cancelled(self, message: Mapping[str, Any]) -> None:
        ids = [message.get("id")]
        functions = message.get("functions")
        if isinstance(functions, list):
            ids += [f.get("id") for f in functions if isinstance(f, Mapping)]
        for call_id in ids:
            if isinstance(call_id, str):
                _remember(self._cancelled, call_id, None)

    def _send(self, message: Mapping[str, Any]) -> None:
        self._output.append(text_frame(message))
        self._sent_since_poll = True


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > _REMEMBERED:
        table.popitem(last=False)
