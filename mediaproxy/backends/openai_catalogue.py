"""What the OpenAI Realtime (GA) server's messages mean, as tables and pure functions: the event
types the dialect needs nothing from, the error codes and types after which retrying cannot
help, the text that marks the session limit, and the token counts in a ``response.usage``.

No state: :class:`~mediaproxy.backends.openai_dialect.RealtimeDialect` consults these while it
parses, and the per-call glue (:mod:`~mediaproxy.backends.openai_session`) uses
:func:`is_session_limit` on close reasons. Kept apart so that the protocol object reads as the
exchange and this module as the reference it checks against (the tests compare these tables with
the ``openai`` package's GA event models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "FATAL_ERROR_CODES",
    "FATAL_ERROR_TYPES",
    "IGNORED_EVENTS",
    "SESSION_LIMIT_TEXT",
    "TRANSIENT_ERROR_CODES",
    "USAGE_TOKEN_KINDS",
    "is_fatal_failure",
    "is_session_limit",
    "session_summary",
    "usage_tokens",
]

FATAL_ERROR_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "account_deactivated",
        "billing_hard_limit_reached",
        "model_not_found",
        "beta_api_shape_disabled",
    }
)
"""Error codes after which retrying cannot help: the call ends at once."""

FATAL_ERROR_TYPES = frozenset({"authentication_error", "permission_error", "insufficient_quota"})
"""Error types (when the code says nothing known) after which retrying cannot help."""

TRANSIENT_ERROR_CODES = frozenset({"rate_limit_exceeded", "server_error"})
"""Error codes worth a retry even when their type is in :data:`FATAL_ERROR_TYPES`."""

SESSION_LIMIT_TEXT = "maximum duration"
"""What the service's message says at the session limit ("Your session hit the maximum duration
of 60 minutes."), matched case-insensitively: recognised even without ``session_expired``."""

IGNORED_EVENTS = frozenset(
    {
        "conversation.created",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.deleted",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "input_audio_buffer.cleared",
        "input_audio_buffer.committed",
        "input_audio_buffer.dtmf_event_received",
        "input_audio_buffer.timeout_triggered",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "mcp_list_tools.in_progress",
        "output_audio_buffer.cleared",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "response.content_part.added",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        # The call is reported from response.output_item.done (the whole item, once); the
        # arguments' done event is also sent for interrupted calls, so it is not used.
        "response.function_call_arguments.done",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_text.done",
    }
)
"""GA server events the dialect needs nothing from (lifecycle, text, tools, WebRTC-only buffer
events). Any type neither handled nor listed here is reported as
:class:`~mediaproxy.backends.openai_events.UnknownEventReceived`."""


def is_session_limit(text: str | None) -> bool:
    """``text`` (an error message or close reason) says the session hit its maximum duration."""
    return bool(text) and SESSION_LIMIT_TEXT in str(text).lower()


def is_fatal_failure(code: str, kind: str) -> bool:
    """A failed response with error ``code`` and ``type`` ``kind`` cannot succeed on a retry."""
    return code in FATAL_ERROR_CODES or (code not in TRANSIENT_ERROR_CODES and kind in FATAL_ERROR_TYPES)


def session_summary(flavor: str, session: Mapping[str, Any]) -> str:
    """One log line of what ``session.updated`` says was applied: formats and turn detection
    (GA nests them under ``audio``; the older shape some flavors answer with has them flat)."""
    audio = session.get("audio") or {}
    detection = (audio.get("input") or {}).get("turn_detection", session.get("turn_detection"))
    return (
        f"flavor={flavor} "
        f"input={(audio.get('input') or {}).get('format', session.get('input_audio_format'))} "
        f"output={(audio.get('output') or {}).get('format', session.get('output_audio_format'))} "
        f"turn_detection={detection}"
    )


USAGE_TOKEN_KINDS = (
    ("input_token_details", "audio_tokens", "input_audio"),
    ("input_token_details", "text_tokens", "input_text"),
    ("input_token_details", "cached_tokens", "input_cached"),
    ("output_token_details", "audio_tokens", "output_audio"),
    ("output_token_details", "text_tokens", "output_text"),
)
"""Where each token kind sits in ``response.usage``: (details object, count field, kind label)."""


def usage_tokens(usage: Any) -> dict[str, int]:
    """Token counts by kind from a ``response.usage`` object (kinds with no tokens left out)."""
    if not isinstance(usage, Mapping):
        return {}
    tokens: dict[str, int] = {}
    for details_key, count_key, kind in USAGE_TOKEN_KINDS:
        details = usage.get(details_key)
        value = details.get(count_key) if isinstance(details, Mapping) else None
        if isinstance(value, int) and value > 0:
            tokens[kind] = value
    return tokens
