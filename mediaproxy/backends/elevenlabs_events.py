"""The events of the ElevenLabs Agents dialect (:mod:`~mediaproxy.backends.elevenlabs_dialect`)
and its vocabularies: the server messages it ignores, the bounded error labels, the vendor's
audio format names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import AudioFormat

# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationStarted:
    """``conversation_initiation_metadata``: the conversation is on. ``input_format`` and
    ``output_format`` are the agent's ``user_input_audio_format`` and
    ``agent_output_audio_format`` (None when the connector cannot exchange the named one;
    ``input_name``/``output_name`` say what it was)."""

    conversation_id: str
    input_format: AudioFormat | None
    output_format: AudioFormat | None
    input_name: str
    output_name: str


@dataclass(frozen=True)
class AgentAudio:
    """Agent audio in the conversation's output format, part of the response ``response_id``."""

    response_id: str
    data: bytes


@dataclass(frozen=True)
class AgentAudioFinished:
    """All the audio of ``response_id`` has arrived (never reported for a cut response)."""

    response_id: str


@dataclass(frozen=True)
class Interrupted:
    """``interruption``: the caller talked over the agent (barge-in); audio at or before
    ``event_id`` is dropped from now on."""

    event_id: int


@dataclass(frozen=True)
class TranscriptLine:
    """``role`` ``caller`` (``user_transcript``) or ``bot`` (``agent_response``; with
    ``corrected``, ``agent_response_correction``: the part of the reply the caller heard)."""

    role: str
    text: str
    corrected: bool = False


@dataclass(frozen=True)
class ToolCalled:
    """``client_tool_call``: the agent calls the client tool ``name``; ``arguments`` is JSON."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ServerError:
    """A message of type ``error`` (the vendor documents no shape: ``code`` is its code or
    type, see :func:`error_code_label` before it becomes a label)."""

    code: str
    message: str


@dataclass(frozen=True)
class MalformedMessage:
    """A known message type whose fields cannot be used (no event id, bad base64...)."""

    message_type: str


@dataclass(frozen=True)
class UnknownMessage:
    """A text frame of a type the dialect does not know (or not JSON at all)."""

    message_type: str


ConversationEvent = (
    ConversationStarted | AgentAudio | AgentAudioFinished | Interrupted | TranscriptLine | ToolCalled
    | ServerError | MalformedMessage | UnknownMessage
)

# --- vocabularies ---------------------------------------------------------------------------------

IGNORED_MESSAGES = frozenset({
    "vad_score",
    "internal_tentative_agent_response",
    "internal_turn_probability",
    "internal_vad_score",
    "agent_chat_response_part",
    "agent_tool_response",
    "agent_tool_request",
    "mcp_tool_call",
    "mcp_connection_status",
    "audio_alignment",
})
"""Server messages handled without an event (scores, text previews, server-side tool reports)."""

UNKNOWN_MESSAGE = "unknown_message"
MALFORMED_MESSAGE = "malformed_message"
UNSUPPORTED_FORMAT = "unsupported_audio_format"
OTHER = "other"
ERROR_CODE_LABELS = frozenset({"error", UNKNOWN_MESSAGE, MALFORMED_MESSAGE, UNSUPPORTED_FORMAT, OTHER})
"""Every ``backend_errors_total{code}`` value this backend uses."""


def error_code_label(code: str) -> str:
    """``code`` as a ``backend_errors_total`` label value: itself when known, else ``other``."""
    return code if code in ERROR_CODE_LABELS else OTHER


_FORMAT_NAME = re.compile(r"^(pcm|ulaw|alaw)_(\d{4,6})$")
_ENCODINGS: Mapping[str, Any] = {"pcm": "l16", "ulaw": "pcmu", "alaw": "pcma"}


def parse_format(name: str) -> AudioFormat | None:
    """The :class:`AudioFormat` of a vendor format name (``pcm_16000``, ``ulaw_8000``), or None
    when the connector cannot exchange it (``pcm_22050``/``pcm_44100``: not a whole number of
    samples per millisecond, which the pacing needs; G.711 at anything but 8 kHz)."""
    match = _FORMAT_NAME.match(name)
    if match is None:
        return None
    kind, rate = match.group(1), int(match.group(2))
    if rate % 1000 or (kind != "pcm" and rate != 8000) or not 8000 <= rate <= 48000:
        return None
    return AudioFormat(_ENCODINGS[kind], rate)


def format_name(fmt: AudioFormat) -> str:
    """The vendor's name of ``fmt`` (the inverse of :func:`parse_format`)."""
    kind = {"l16": "pcm", "pcmu": "ulaw", "pcma": "alaw"}[fmt.encoding]
    return f"{kind}_{fmt.rate_hz}"
