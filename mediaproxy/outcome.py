"""How a call ended: the fixed vocabulary of ``calls_total{outcome}``.

It sits at the bottom of the house because both sides speak it: the call bridge decides the
outcome, and a platform session, told to hang up with it, says it in its own protocol (an
AudioHook ``disconnect`` reason, an AudioCodes ``hangupReason``).
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """Why a call ended. The value is the metric label and the word in the log."""

    COMPLETED = "completed"
    """The platform ended the call (the caller hung up, the flow moved on)."""
    BOT_HANGUP = "bot_hangup"
    """The bot ended it (the conversation is over)."""
    TRANSFERRED = "transferred"
    """The bot handed the caller to a person (the platform routes the call on)."""
    BACKEND_FAILED = "backend_failed"
    """The backend failed for good (bad key, quota, reconnects exhausted)."""
    PROTOCOL_ERROR = "protocol_error"
    """The platform sent something its protocol does not allow."""
    DISCONNECTED = "disconnected"
    """The platform's socket went away without a goodbye (or was not resumed in time)."""
    DRAINED = "drained"
    """The proxy shut down."""
    TIMEOUT = "timeout"
    """The platform went quiet for longer than the idle timeout."""
