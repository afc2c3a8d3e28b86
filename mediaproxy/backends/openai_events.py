"""Neutral events the OpenAI Realtime dialect (:mod:`mediaproxy.backends.openai_dialect`) turns
server messages into, and the fixed vocabularies their server-supplied words are reduced to before
they become metric labels.

The session glue maps the events onto :class:`~mediaproxy.backends.base.BackendListener` calls,
metrics and log events; tests read them as a transcript of what the server said.

Label vocabularies: a string the server chose (an error code, a rate-limit name) is never a label
value as such, or a misbehaving peer could create series without bound. Each label has one table
below (from the Realtime GA API reference plus the codes this connector makes up itself); anything
else is counted as ``other``. Event type names never become labels: events the dialect does not
know are counted as the single error code ``unknown_event``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SessionReady:
    """``session.updated`` confirmed the formats asked for; caller audio may flow.

    ``interrupt_response``: the server cancels responses by itself on caller speech.
    ``summary``: the effective audio formats and turn detection, for the log line that proves
    what the server actually configured.
    """

    interrupt_response: bool
    summary: str


@dataclass(frozen=True)
class AudioReceived:
    """Bot audio (already base64-decoded, in the session format) for assistant item
    ``item_id`` of response ``response_id``."""

    item_id: str
    response_id: str
    data: bytes


@dataclass(frozen=True)
class AudioFinished:
    """All audio of assistant item ``item_id`` has arrived (never sent for an interrupted item)."""

    item_id: str


@dataclass(frozen=True)
class ResponseEnded:
    """``response.done``: ``status`` is completed, cancelled, incomplete or failed; ``reason``
    says why when the server gives one (turn_detected, client_cancelled, max_output_tokens...)."""

    response_id: str
    status: str
    reason: str


@dataclass(frozen=True)
class ResponseFailed:
    """``response.done`` with ``status: failed``: the cause from ``status_details.error``.
    ``code`` is the error's code (its type when it has none, ``unknown`` when neither): a peer
    string, see :func:`error_code_label`. ``fatal``: retrying cannot help (bad key, no quota);
    otherwise the turn may be retried (rate limit, server error)."""

    response_id: str
    code: str
    message: str
    fatal: bool


@dataclass(frozen=True)
class SpeechStarted:
    """The server's VAD heard the caller start speaking (barge-in). ``audio_start_ms`` counts
    from the start of all audio appended on this connection."""

    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    """The server's VAD heard the caller stop speaking."""

    audio_end_ms: int


@dataclass(frozen=True)
class TranscriptReceived:
    """Transcript text; ``role`` is ``caller`` or ``bot``; ``final`` for a complete utterance,
    else a partial: the whole text of the item so far (deltas accumulated), never a fragment.
    ``item_id``: the conversation item. ``start_ms``/``end_ms``: for the caller, where the
    utterance lies on this connection's input audio (ms since its first append), None when the
    server did not say."""

    role: str
    text: str
    final: bool
    item_id: str = ""
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True)
class ToolCalled:
    """The model called the function ``name`` (``arguments``: JSON text, as the model wrote it)
    under ``call_id``; reported once per call."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class UsageReported:
    """Tokens a response used, by kind (input_audio, input_text, input_cached, output_audio,
    output_text)."""

    tokens: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RateLimitsReported:
    """``rate_limits.updated``: remaining amount per limit name (requests, tokens)."""

    remaining: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerError:
    """An error the server reported, or a message we could not understand.

    ``code`` is the server's code (or its error type when it sends no code), or one of the
    connector's own: ``malformed_event``, ``format_mismatch``, ``transcription_failed``,
    ``unknown``. It comes from the peer: use :func:`error_code_label` before it becomes a metric
    label. ``fatal`` errors end the call: retrying cannot help (bad key, no quota, session refused).
    """

    code: str
    message: str
    fatal: bool = False


@dataclass(frozen=True)
class SessionExpired:
    """The server ended the session at its maximum duration; reconnecting starts a new one."""

    message: str


@dataclass(frozen=True)
class UnknownEventReceived:
    """The server sent an event type the dialect does not know (a newer protocol revision, or a
    misbehaving peer); it was ignored. ``event_type`` is the peer's string, for debugging only."""

    event_type: str


RealtimeEvent = (
    SessionReady
    | AudioReceived
    | AudioFinished
    | ResponseEnded
    | ResponseFailed
    | SpeechStarted
    | SpeechStopped
    | TranscriptReceived
    | UsageReported
    | RateLimitsReported
    | ServerError
    | SessionExpired
    | UnknownEventReceived
    | ToolCalled
)
"""Everything :meth:`~mediaproxy.backends.openai_dialect.RealtimeDialect.receive` can return."""

# --- metric label vocabularies ---------------------------------------------------------------

OTHER = "other"
"""The label value of every server-supplied word not in its table."""

ERROR_CODE_LABELS = frozenset(
    {
        # error.code values the Realtime GA reference documents or the service is known to send
        "invalid_api_key",
        "insufficient_quota",
        "rate_limit_exceeded",
        "session_expired",
        "account_deactivated",
        "billing_hard_limit_reached",
        "model_not_found",
        "beta_api_shape_disabled",
        "invalid_event",
        "invalid_value",
        "invalid_type",
        "unknown_parameter",
        "missing_required_parameter",
        "decimal_below_min_value",
        "decimal_above_max_value",
        "integer_below_min_value",
        "integer_above_max_value",
        "string_above_max_length",
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
        # error.type values, used when the server sends no code
        "invalid_request_error",
        "server_error",
        "authentication_error",
        "permission_error",
        "rate_limit_error",
        # the connector's own
        "malformed_event",
        "format_mismatch",
        "transcription_failed",
        "unknown_event",
        "unknown",
    }
)
"""Values of the ``code`` label of ``backend_errors_total``."""

RATE_LIMIT_LABELS = frozenset({"requests", "tokens"})
"""Values of the ``name`` label of ``backend_rate_limit_remaining`` (``rate_limits.updated``)."""

TOKEN_KIND_LABELS = frozenset({"input_audio", "input_text", "input_cached", "output_audio", "output_text"})
"""Values of the ``kind`` label of ``backend_tokens_total`` (what :class:`UsageReported` holds)."""


def error_code_label(code: str) -> str:
    """``code`` as a ``backend_errors_total`` label value: itself when known, else ``other``."""
    return code if code in ERROR_CODE_LABELS else OTHER


def rate_limit_label(name: str) -> str:
    """A rate-limit name as a ``backend_rate_limit_remaining`` label value."""
    return name if name in RATE_LIMIT_LABELS else OTHER


def token_kind_label(kind: str) -> str:
    """A token kind as a ``backend_tokens_total`` label value."""
    return kind if kind in TOKEN_KIND_LABELS else OTHER
