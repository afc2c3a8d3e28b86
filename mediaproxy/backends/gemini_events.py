"""Neutral events the Gemini Live dialect (:mod:`mediaproxy.backends.gemini_dialect`) turns
server messages into, and the fixed vocabularies server-supplied words are reduced to before they
become metric labels.

The session glue (:mod:`mediaproxy.backends.gemini_session`) maps the events onto
:class:`~mediaproxy.backends.base.BackendListener` calls, metrics and log events; tests read them
as a transcript of what the server said. A server's error text or token modality is never a label
value as such (a misbehaving peer could create series without bound): anything outside the tables
below is counted as ``other``, or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# --- label vocabularies ------------------------------------------------------------------------

ERROR_CODE_LABELS = frozenset(
    {
        # close codes the service is known to use, as labels
        "invalid_argument", "policy_violation", "internal_error", "unavailable",
        # the connector's own
        "malformed_event", "unknown_event", "model_stalled", "go_away", "setup_refused", "auth_failed",
        "tool_response_unmatched",
    }
)
"""Values of the ``code`` label of ``backend_errors_total`` for this backend; anything else is ``other``."""

TOKEN_KINDS = {"AUDIO": "audio", "TEXT": "text"}
"""``usageMetadata`` modalities counted, as the kind word of a token label."""


def error_code_label(code: str) -> str:
    """``code`` as a ``backend_errors_total`` label value: itself when known, else ``other``."""
    return code if code in ERROR_CODE_LABELS else "other"


def usage_tokens(usage: Any) -> dict[str, int]:
    """Token counts by kind from ``usageMetadata`` (``promptTokensDetails`` and
    ``responseTokensDetails`` per modality; ``cachedContentTokenCount``)."""
    if not isinstance(usage, Mapping):
        return {}
    tokens: dict[str, int] = {}
    for key, side in (("promptTokensDetails", "input"), ("responseTokensDetails", "output")):
        for detail in usage.get(key) or ():
            if not isinstance(detail, Mapping):
                continue
            kind = TOKEN_KINDS.get(str(detail.get("modality")))
            count = detail.get("tokenCount")
            if kind is not None and isinstance(count, int) and count > 0:
                tokens[f"{side}_{kind}"] = tokens.get(f"{side}_{kind}", 0) + count
    cached = usage.get("cachedContentTokenCount")
    if isinstance(cached, int) and cached > 0:
        tokens["input_cached"] = cached
    return tokens


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionReady:
    """``setupComplete``: the session is configured; caller audio is heard."""


@dataclass(frozen=True)
class ModelAudio:
    """Bot audio of turn ``turn_id``: 16-bit PCM at 24 kHz, base64-decoded."""

    turn_id: str
    data: bytes


@dataclass(frozen=True)
class TurnEnded:
    """The model's turn ``turn_id`` is over: complete (``cut`` false), or interrupted. For a cut
    turn, ``text`` is its whole bot transcript: the final line is only known once the bridge has
    said what was heard (``interrupt``, which follows the ``SpeechStarted`` before this event),
    so the session cuts it with :meth:`~mediaproxy.backends.gemini_dialect.GeminiDialect.heard_text`."""

    turn_id: str
    cut: bool
    text: str = ""


@dataclass(frozen=True)
class SpeechStarted:
    """The caller talked over the model (``interrupted``): barge-in."""


@dataclass(frozen=True)
class SpeechStopped:
    """The caller's turn is over (the model started answering it)."""


@dataclass(frozen=True)
class TranscriptReceived:
    """What was said: ``role`` ``caller`` or ``bot``; ``text`` the whole turn so far; ``final``
    once the turn is over (a bot turn's final is cut to what the caller heard)."""

    role: str
    text: str
    final: bool


@dataclass(frozen=True)
class ToolCalled:
    """The model calls ``name`` with ``arguments`` (JSON text); answer under ``call_id``."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCallsCancelled:
    """The server withdrew these tool calls (the caller interrupted); their results are ignored."""

    call_ids: tuple[str, ...]


@dataclass(frozen=True)
class ResumptionHandle:
    """``sessionResumptionUpdate``: a handle a new connection may resume this session with."""

    handle: str


@dataclass(frozen=True)
class GoingAway:
    """``goAway``: the server ends this connection in ``time_left_s`` seconds."""

    time_left_s: float


@dataclass(frozen=True)
class UsageReported:
    """Token counts by kind (``input_audio``, ``input_text``, ``output_audio``, ``output_text``,
    ``input_cached``), from one ``usageMetadata``."""

    tokens: Mapping[str, int]


@dataclass(frozen=True)
class ServerError:
    """A message that could not be used (``code`` from :data:`ERROR_CODE_LABELS`)."""

    code: str
    message: str


@dataclass(frozen=True)
class UnknownEventReceived:
    """A message with no field the dialect knows; ignored (``event_type``: its first key)."""

    event_type: str


GeminiEvent = (
    SessionReady | ModelAudio | TurnEnded | SpeechStarted | SpeechStopped | TranscriptReceived | ToolCalled
    | ToolCallsCancelled | ResumptionHandle | GoingAway | UsageReported | ServerError | UnknownEventReceived
)
