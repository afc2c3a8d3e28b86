"""The ElevenLabs Agents (Conversational AI) WebSocket protocol as a sans-IO object: server frames
in, neutral events out; neutral commands in, client frames queued for
:meth:`ConversationDialect.take_output`. No transport, no clock.

One dialect serves one WebSocket connection, which is one conversation: the service cannot resume
a conversation on a new connection, so a reconnect is a new conversation (see
:mod:`~mediaproxy.backends.elevenlabs_session`). The exchange it speaks (all text frames, JSON)::

    client: conversation_initiation_client_data   (dynamic variables, overrides), first
    server: conversation_initiation_metadata       (conversation_id and the agent's audio formats
                                                    → ConversationStarted: caller audio may flow)
    client: {"user_audio_chunk": "<base64>"}*      (no "type": the vendor's bare-key frame)
    server: audio{audio_event{audio_base_64, event_id}}*
    server: agent_response, agent_response_correction (after an interruption: what was heard)
    server: user_transcript
    server: interruption{interruption_event{event_id}}  barge-in: audio at or before it is stale
    server: ping{ping_event{event_id, ping_ms}}    → client: pong{event_id}, at once
    server: client_tool_call{tool_name, tool_call_id, parameters}
    client: client_tool_result{tool_call_id, result, is_error}
    client: user_message{text}                      the caller's keys, as text
    client: contextual_update{text}                 background the agent should know

Agent audio carries the ``event_id`` of the response it belongs to; the dialect names a response
``<prefix><event_id>``. The API has no "audio done": a response is over when audio of another
event arrives, when the caller's transcript or a tool call arrives, or when the session says its
audio went quiet (:meth:`ConversationDialect.finish_response`). Audio of a finished response that
still comes is a new response of its own (``<prefix><event_id>.<n>``), never lost. After
``interruption`` (or the bridge's own :meth:`interrupt`) every chunk whose ``event_id`` is at or
before the cut is dropped (counted in :attr:`late_audio_bytes_dropped`); later ones play.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from mediaproxy import strict_json
from mediaproxy.backends.elevenlabs_events import (
    IGNORED_MESSAGES,
    AgentAudio,
    AgentAudioFinished,
    ConversationEvent,
    ConversationStarted,
    Interrupted,
    MalformedMessage,
    ServerError,
    ToolCalled,
    TranscriptLine,
    UnknownMessage,
    parse_format,
)
from mediaproxy.backends.json_frames import text_frame

_BODY_KEYS = {"user_transcript": "user_transcription_event"}
"""Messages whose body is not under ``<type>_event``."""

_REMEMBERED = 64
"""Tool calls remembered per connection, oldest out first."""


def initiation_message(
    *,
    dynamic_variables: Mapping[str, str],
    prompt: str = "",
    first_message: str | None = None,
    language: str = "",
) -> dict[str, Any]:
    """The ``conversation_initiation_client_data`` message. Overrides go in only when set
    (``first_message`` None: none; "" silences the agent's greeting): the agent refuses
    overrides its security settings do not allow, so none are sent by default."""
    agent: dict[str, Any] = {}
    if prompt:
        agent["prompt"] = {"prompt": prompt}
    if first_message is not None:
        agent["first_message"] = first_message
    if language:
        agent["language"] = language
    message: dict[str, Any] = {"type": "conversation_initiation_client_data"}
    if agent:
        message["conversation_config_override"] = {"agent": agent}
    if dynamic_variables:
        message["dynamic_variables"] = dict(dynamic_variables)
    return message


# --- the dialect ------------------------------------------------------------------------------------


class ConversationDialect:
    """One connection's (one conversation's) worth of the protocol.

    ``initiation`` is the ``conversation_initiation_client_data`` message (see
    :func:`initiation_message`), queued by :meth:`opened`. ``response_prefix`` makes response ids
    unique across the conversations of a call. Output is a list of text frames.
    """

    def __init__(self, initiation: Mapping[str, Any], *, response_prefix: str = "e") -> None:
        self._initiation = initiation
        self._prefix = response_prefix
        self._output: list[str] = []
        self._opened = False
        self._ready = False
        self._open_event: int | None = None
        self._open_response: str | None = None
        self._finished: dict[int, int] = {}
        """Responses finished per event id (audio after that is a new response)."""
        self._cut_through = -1
        """Audio with an event id at or before this is dropped (interrupted)."""
        self._calls: OrderedDict[str, str] = OrderedDict()
        self.conversation_id = ""
        self.last_ping_ms: int | None = None
        """The round trip the service last measured (``ping_ms``), ms."""
        self.late_audio_bytes_dropped = 0
        """Agent audio that arrived for an interrupted response, in bytes (decoded)."""

    # --- state ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """``conversation_initiation_metadata`` arrived: caller audio is heard."""
        return self._ready

    @property
    def open_response(self) -> str | None:
        """The response whose audio is arriving (not cut, not finished), if any."""
        return self._open_response

    def has_tool_call(self, call_id: str) -> bool:
        """The tool call ``call_id`` was made in this conversation."""
        return call_id in self._calls

    def take_output(self) -> list[str]:
        """Client frames queued since the last call, oldest first."""
        out, self._output = self._output, []
        return out

    # --- commands ---------------------------------------------------------------------------

    def opened(self) -> None:
        """The WebSocket is open: the initiation message goes first (once)."""
        if not self._opened:
            self._opened = True
            self._send(self._initiation)

    def send_audio(self, data: bytes) -> None:
        """Caller audio in the conversation's input format, one ``user_audio_chunk`` (only once
        ready; the session holds earlier audio)."""
        if self._ready and data:
            self._output.append('{"user_audio_chunk":"' + base64.b64encode(data).decode("ascii") + '"}')

    def interrupt(self, response_id: str) -> None:
        """The bridge cut ``response_id`` (barge-in): drop the rest of it. The service truncates
        its own history (``agent_response_correction``), so nothing is sent."""
        if response_id == self._open_response and self._open_event is not None:
            self._cut_through = max(self._cut_through, self._open_event)
            self._open_event = self._open_response = None

    def finish_response(self) -> list[ConversationEvent]:
        """The open response is over (the session saw its audio go quiet): its end, if any."""
        return self._finish()

    def tool_result(self, call_id: str, output: str) -> None:
        """``client_tool_result`` for the call ``call_id`` made in this conversation; an output
        that is a JSON object with an ``error`` is sent as ``is_error``."""
        if call_id not in self._calls:
            return
        try:
            parsed = strict_json.loads(output)
        except (ValueError, RecursionError):
            parsed = None
        is_error = isinstance(parsed, dict) and "error" in parsed
        self._send({"type": "client_tool_result", "tool_call_id": call_id, "result": output, "is_error": is_error})

    def send_dtmf(self, digits: str) -> None:
        """The caller's keys as a ``user_message`` (the agent answers as if they were said)."""
        if self._ready and digits:
            self._send({"type": "user_message", "text": f"(The caller pressed the keys: {digits})"})

    def contextual_update(self, text: str) -> None:
        """Background for the agent that does not interrupt it (``contextual_update``)."""
        if self._ready and text:
            self._send({"type": "contextual_update", "text": text})

    # --- server frames -------------------------------------------------------------------------

    def receive(self, payload: bytes | str) -> list[ConversationEvent]:
        """One server frame; the events it means, in order."""
        try:
            message = strict_json.loads(payload)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
            return [UnknownMessage("(not JSON)")]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [UnknownMessage("(no type)")]
        kind: str = message["type"]
        body = message.get(_BODY_KEYS.get(kind, f"{kind}_event"))
        event: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        if kind == "audio":
            return self._audio(event)
        if kind == "ping":
            return self._ping(event)
        if kind == "interruption":
            return self._interruption(event)
        if kind == "conversation_initiation_metadata":
            return self._metadata(event)
        if kind == "agent_response":
            return _line("bot", event.get("agent_response"), kind)
        if kind == "agent_response_correction":
            return _line("bot", event.get("corrected_agent_response"), kind, corrected=True)
        if kind == "user_transcript":
            # The caller has had their turn: the agent's previous response is over.
            return self._finish() + _line("caller", event.get("user_transcript"), kind)
        if kind == "client_tool_call":
            return self._tool_call(message.get("client_tool_call"))
        if kind == "error":
            fields = event or message
            code = _text(fields.get("code")) or _text(fields.get("error_type")) or "error"
            return [ServerError(code, _text(fields.get("message")) or _text(fields.get("reason")))]
        if kind in IGNORED_MESSAGES:
            return []
        return [UnknownMessage(kind)]

    def _metadata(self, event: Mapping[str, Any]) -> list[ConversationEvent]:
        if self._ready or not self._opened:
            return [MalformedMessage("conversation_initiation_metadata")]
        input_name = _text(event.get("user_input_audio_format")) or "pcm_16000"
        output_name = _text(event.get("agent_output_audio_format")) or "pcm_16000"
        self._ready = True
        self.conversation_id = _text(event.get("conversation_id"))
        return [ConversationStarted(self.conversation_id, parse_format(input_name), parse_format(output_name),
                                    input_name, output_name)]

    def _audio(self, event: Mapping[str, Any]) -> list[ConversationEvent]:
        event_id = _event_id(event.get("event_id"))
        encoded = event.get("audio_base_64")
        if event_id is None or not isinstance(encoded, str) or not self._ready:
            return [MalformedMessage("audio")]
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return [MalformedMessage("audio")]
        if event_id <= self._cut_through:
            self.late_audio_bytes_dropped += len(data)
            return []
        events: list[ConversationEvent] = []
        if event_id != self._open_event:
            events = self._finish()
            parts = self._finished.get(event_id, 0)
            self._open_event = event_id
            self._open_response = f"{self._prefix}{event_id}" + (f".{parts + 1}" if parts else "")
        if data:
            assert self._open_response is not None
            events.append(AgentAudio(self._open_response, data))
        return events

    def _finish(self) -> list[ConversationEvent]:
        response, event_id = self._open_response, self._open_event
        if response is None or event_id is None:
            return []
        self._open_event = self._open_response = None
        self._finished[event_id] = self._finished.get(event_id, 0) + 1
        while len(self._finished) > _REMEMBERED:
            del self._finished[next(iter(self._finished))]
        return [AgentAudioFinished(response)]

    def _ping(self, event: Mapping[str, Any]) -> list[ConversationEvent]:
        event_id = _event_id(event.get("event_id"))
        if event_id is None:
            return [MalformedMessage("ping")]
        ping_ms = event.get("ping_ms")
        if isinstance(ping_ms, int | float) and not isinstance(ping_ms, bool) and 0 <= ping_ms < 1e9:
            self.last_ping_ms = int(ping_ms)
        # The vendor's clients answer at once; ping_ms is the round trip the service measured, not
        # a delay to wait (answering late would only inflate the next measurement).
        self._send({"type": "pong", "event_id": event_id})
        return []

    def _interruption(self, event: Mapping[str, Any]) -> list[ConversationEvent]:
        event_id = _event_id(event.get("event_id"))
        if event_id is None:
            return [MalformedMessage("interruption")]
        self._cut_through = max(self._cut_through, event_id)
        if self._open_event is not None and self._open_event <= self._cut_through:
            self._open_event = self._open_response = None
        return [Interrupted(event_id)]

    def _tool_call(self, call: Any) -> list[ConversationEvent]:
        if not isinstance(call, Mapping):
            return [MalformedMessage("client_tool_call")]
        call_id, name = _text(call.get("tool_call_id")), _text(call.get("tool_name"))
        if not call_id or not name:
            return [MalformedMessage("client_tool_call")]
        parameters = call.get("parameters", {})
        # All-ASCII JSON: a lone surrogate in the parameters stays an escape, safe to pass on.
        arguments = parameters if isinstance(parameters, str) else json.dumps(
            parameters if isinstance(parameters, Mapping) else {})
        self._calls[call_id] = name
        self._calls.move_to_end(call_id)
        while len(self._calls) > _REMEMBERED:
            self._calls.popitem(last=False)
        # The agent speaks before it calls: what it said is complete (a goodbye before end_call).
        return [*self._finish(), ToolCalled(call_id, name, arguments)]

    def _send(self, message: Mapping[str, Any]) -> None:
        if not self._opened:
            return  # the initiation goes first: nothing is owed to a server heard before it
        self._output.append(text_frame(message))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _event_id(value: Any) -> int | None:
    """An event id: a non-negative integer (the service sends numbers; a numeric string is
    accepted), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _line(role: str, value: Any, kind: str, *, corrected: bool = False) -> list[ConversationEvent]:
    if not isinstance(value, str):
        return [MalformedMessage(kind)]
    text = value.strip()
    return [TranscriptLine(role, text, corrected)] if text else []
