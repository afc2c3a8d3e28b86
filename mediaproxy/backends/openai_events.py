"""Neutral events the OpenAI Realtime dialect (:mod:`mediaproxy.backends.openai_dialect`) turns
server messages into. The session glue maps them onto :class:`~mediaproxy.backends.base.BackendListener`
calls, metrics and log events; tests read them as a transcript of what the server said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union


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
    """Transcript text; ``role`` is ``caller`` or ``bot``; ``final`` for a complete utterance
    (partial deltas otherwise)."""

    role: str
    text: str
    final: bool


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

    ``code`` is a bounded word usable as a metric label (the server's code, or ``malformed_event``,
    ``format_mismatch``, ``session_update_rejected``). ``fatal`` errors end the call: retrying
    cannot help (bad key, no quota, session refused).
    """

    code: str
    message: str
    fatal: bool = False


@dataclass(frozen=True)
class SessionExpired:
    """The server ended the session at its maximum duration; reconnecting starts a new one."""

    message: str


RealtimeEvent = Union[
    SessionReady,
    AudioReceived,
    AudioFinished,
    ResponseEnded,
    SpeechStarted,
    SpeechStopped,
    TranscriptReceived,
    UsageReported,
    RateLimitsReported,
    ServerError,
    SessionExpired,
]
