"""One WebSocket connection to the Gemini Live API, and how the service's closes are read.

:class:`GeminiClientProtocol` is the Autobahn client protocol; it forwards every frame and the
close to its :class:`~mediaproxy.backends.gemini_session.GeminiLiveSession`. The functions below
turn a close code and reason into what the session does next: give up on a setup the service
refused, redial at once after a planned end, or count the close as a backend error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.python.failure import Failure

from mediaproxy.backends.connection import BackendSocket, refused_dial_reason

if TYPE_CHECKING:
    from mediaproxy.backends.gemini_dialect import GeminiDialect
    from mediaproxy.backends.gemini_session import GeminiLiveSession

SETUP_REFUSED_CODES = frozenset({1007, 1008})
"""Close codes with which the service refuses a connection before ``setupComplete``: 1007 (invalid
argument: a bad setup or key), 1008 (policy violation: key, permission). Retrying cannot help."""

CLOSE_CODE_LABELS = {1007: "invalid_argument", 1008: "policy_violation", 1011: "internal_error",
                     1013: "unavailable"}
"""The service's close codes counted in ``backend_errors_total``, with their ``code`` label."""


class SetupRefused(ConnectError):
    """The service closed the connection before ``setupComplete`` in a way retrying cannot fix."""


class GeminiClientProtocol(BackendSocket):
    """The WebSocket of one connection; forwards everything to its session."""

    session: GeminiLiveSession | None = None
    dialect: GeminiDialect | None = None
    ready: Deferred[GeminiClientProtocol] | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # The service sends its JSON as text frames, some deployments as binary frames.
        if self.session is not None:
            self.session.message_received(self, payload)


Connect = Callable[[str], "Deferred[Any]"]
"""Opens one WebSocket to a URL; fires with the open protocol (tests pass their own)."""


def close_error_label(code: int | None) -> str | None:
    """The ``backend_errors_total`` ``code`` label of a close with ``code``, when it is counted."""
    return CLOSE_CODE_LABELS.get(code) if code is not None else None


def is_setup_refusal(code: int | None, reason: str | None) -> bool:
    """A close before ``setupComplete`` that says the setup or the key was refused."""
    return code in SETUP_REFUSED_CODES or "api key" in (reason or "").lower()


def is_planned_close(code: int | None, reason: str | None) -> bool:
    """The service ended a live connection on purpose (going away, its session deadline): the
    session redials at once instead of backing off."""
    return code == 1001 or "deadline" in (reason or "").lower()


def fatal_dial_reason(failure: Failure) -> str | None:
    """Failures of a dial attempt that retrying cannot fix: those of every backend, and a setup
    the service refused."""
    error = failure.value
    if isinstance(error, SetupRefused):
        return str(error.args[0]) if error.args else "backend refused the session"
    return refused_dial_reason(failure)
