"""How a call ended: the fixed vocabulary of ``calls_total{outcome}``."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """Why a call ended. The value is the metric label and the word in the log."""

    COMPLETED = "completed"
    """The platform ended the call (the caller hung up, the flow moved on)."""
    BOT_HANGUP = "bot_hangup"
    """The backend ended it."""
    BACKEND_FAILED = "backend_failed"
    """The backend failed for good (bad key, quota, reconnects exhausted)."""
    PROTOCOL_ERROR = "protocol_error"
    """The platform sent something its protocol does not allow."""
    DISCONNECTED = "disconnected"
    """The platform's socket went away without a goodbye (or was not resumed in time)."""
    DRAINED = "drained"
    """The proxy shut down."""
