"""What a call sees of its platform connection: the :class:`PlatformLeg` interface.

The server glue implements it (:class:`mediaproxy.server.port.PlatformPort`); clock-driven tests
implement it with a recording stand-in. The call bridge issues commands to the leg's sans-IO
``session`` and then calls :meth:`PlatformLeg.flush` once; the playout writes packets to the leg
directly (it is the playout's sink), so bot audio flows one way: backend → bridge → playout →
leg → socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IPushProducer

from mediaproxy.platforms.base import PlatformSession

if TYPE_CHECKING:
    from mediaproxy.calls.bridge import CallBridge


class PlatformLeg(Protocol):
    """One platform connection, as its call sees it."""

    messages_received: int
    """How many messages the platform has sent on this connection (the idle check reads it)."""

    @property
    def session(self) -> PlatformSession:
        """The connection's sans-IO platform session (after a resume: the call's old one)."""
        ...

    def adopt(self, call: CallBridge, session: PlatformSession) -> None:
        """Continue ``call`` on this connection with the call's own ``session`` (a resume)."""

    def flush(self) -> None:
        """Send everything the session has queued."""

    def close(self) -> None:
        """End the connection once the session's goodbye is sent, after the platform's close
        transaction where its protocol has one."""

    def give_up(self) -> None:
        """Another connection took this one's call: drop the socket without ending the call."""

    def register_producer(self, producer: IPushProducer) -> None:
        """Make ``producer`` (the call's playout) the transport's push producer."""

    # the playout's sink (see mediaproxy.playout.PlayoutSink)
    def play(self, packet: bytes) -> None:
        """Queue one packet of bot audio."""

    def mark(self, name: str) -> None:
        """Queue a playback mark."""

    def playback_finished(self) -> None:
        """The current bot utterance has been sent completely."""
