"""Neutral events the Deepgram Voice Agent dialect (:mod:`mediaproxy.backends.deepgram_dialect`)
turns server frames into, and the vendor's error and warning codes as the fixed vocabulary of the
``code`` label.

The session glue (:mod:`mediaproxy.backends.deepgram_session`) maps the events onto
:class:`~mediaproxy.backends.base.BackendListener` calls, metrics and log events. A code the
vendor sends is never a label value as such (a misbehaving peer could create series without
bound): anything outside the tables below is counted as ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Welcomed:
    """``Welcome``: the connection is open; ``request_id`` names it at the vendor (for logs)."""

    request_id: str


@dataclass(frozen=True)
class SettingsAccepted:
    """``SettingsApplied``: the agent is configured; caller audio is heard from now on."""


@dataclass(frozen=True)
class AgentAudio:
    """Agent audio in the session format, part of the agent turn ``response_id``."""

    response_id: str
    data: bytes


@dataclass(frozen=True)
class AgentAudioFinished:
    """``AgentAudioDone`` for the turn ``response_id``: all its audio has arrived (never
    reported for a cut turn)."""

    response_id: str


@dataclass(frozen=True)
class SpeechStarted:
    """``UserStartedSpeaking``: the caller started talking (barge-in)."""


@dataclass(frozen=True)
class SpeechStopped:
    """The caller's utterance is over: its ``ConversationText`` arrived after it started talking
    (the API has no message of its own for the end of the caller's turn)."""


@dataclass(frozen=True)
class TranscriptLine:
    """``ConversationText``: ``role`` is ``caller`` (the vendor's ``user``) or ``bot``
    (``assistant``); ``text`` is the whole statement."""

    role: str
    text: str


@dataclass(frozen=True)
class ToolCalled:
    """One client-side function of a ``FunctionCallRequest``; ``arguments`` is JSON text."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ServerError:
    """``Error`` (``fatal``: retrying cannot help) or, with ``warning``, ``Warning``. ``code``
    is the vendor's string; see :func:`error_code_label` before it becomes a label."""

    code: str
    description: str
    fatal: bool = False
    warning: bool = False


@dataclass(frozen=True)
class UnknownMessage:
    """A text frame of a type the dialect does not know (or not JSON at all)."""

    message_type: str


AgentEvent = (
    Welcomed | SettingsAccepted | AgentAudio | AgentAudioFinished | SpeechStarted | SpeechStopped
    | TranscriptLine | ToolCalled | ServerError | UnknownMessage
)

# --- vocabularies ---------------------------------------------------------------------------------

ERROR_CODES = frozenset({
    "INTERNAL_SERVER_ERROR",
    "CLIENT_MESSAGE_TIMEOUT",
    "UNPARSABLE_CLIENT_MESSAGE",
    "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS",
    "SETTINGS_ALREADY_APPLIED",
    "INVALID_SETTINGS",
})
"""``Error`` codes from the vendor's "Errors & Warnings" page (the ones this connector knows)."""

WARNING_CODES = frozenset({
    "INJECT_AGENT_MESSAGE_DURING_USER_SPEECH",
    "INJECT_AGENT_MESSAGE_DURING_AGENT_SPEECH",
    "PROMPT_TOO_LONG",
    "THINK_REQUEST_FAILED",
    "SPEAK_REQUEST_FAILED",
    "FUNCTION_CALL_FAILED",
})
"""``Warning`` codes from the same page."""

FATAL_ERROR_CODES = frozenset({
    "UNPARSABLE_CLIENT_MESSAGE",
    "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS",
    "SETTINGS_ALREADY_APPLIED",
    "INVALID_SETTINGS",
})
"""Errors a reconnect would only repeat (the same Settings, the same client): the call ends."""

OTHER = "other"
UNKNOWN_MESSAGE = "unknown_message"
"""The one error label for every message type the dialect does not know."""

ERROR_CODE_LABELS = ERROR_CODES | WARNING_CODES | {OTHER, UNKNOWN_MESSAGE}


def error_code_label(code: str) -> str:
    """``code`` as a ``backend_errors_total`` label value: itself when known, else ``other``."""
    return code if code in ERROR_CODE_LABELS else OTHER
