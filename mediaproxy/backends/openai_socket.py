"""One WebSocket connection to an OpenAI Realtime service (any flavor): the Autobahn client
protocol, which forwards every frame and the close to its
:class:`~mediaproxy.backends.openai_session.OpenAIRealtimeSession`.

It carries the connection's own :class:`~mediaproxy.backends.openai_dialect.RealtimeDialect`
(a reconnect builds a fresh one) and the ``ready`` Deferred the dial waits on. What the session
does with a frame is the session's; this class only sorts text frames from binary ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from mediaproxy.backends.connection import BackendSocket

if TYPE_CHECKING:
    from mediaproxy.backends.openai_dialect import RealtimeDialect
    from mediaproxy.backends.openai_session import OpenAIRealtimeSession


class RealtimeClientProtocol(BackendSocket):
    """The WebSocket of one connection; forwards everything to its session."""

    session: OpenAIRealtimeSession | None = None
    dialect: RealtimeDialect | None = None
    ready: Deferred[RealtimeClientProtocol] | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is None:
            return
        if isBinary:
            # The Realtime protocol is text frames only: a binary one is a faulty peer. Counted
            # and ignored, like any other message we cannot understand.
            self.session.malformed_message(self)
        else:
            self.session.message_received(self, payload)
