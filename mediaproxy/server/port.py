"""PlatformPort: one platform connection as its call sees it (the glue side of a call).

The port holds the connection's sans-IO platform session and the Autobahn protocol that carries
it. Frames from the socket go into the session and the session's events to the call; what the
session queues goes out as frames. The port is the call's :class:`~mediaproxy.calls.PlatformLeg`
and its playout's sink: packets are queued in the session and the socket is written once per
playout pass (:meth:`flush`), not once per packet.

It also owns the close handshake: :meth:`close` sends the WebSocket close once the session's
goodbye is out, or — for protocols with a close transaction (AudioHook ``disconnect`` → ``close``
→ ``closed``) — waits for the platform to finish it, bounded by ``CLOSE_TRANSACTION_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime

from mediaproxy.platforms.base import PlatformEvent, PlatformSession

if TYPE_CHECKING:
    from mediaproxy.calls.bridge import CallBridge

CLOSE_TRANSACTION_TIMEOUT_S = 10.0
"""How long a platform may take to finish its close transaction before we close ourselves."""


class Wire(Protocol):
    """What the port needs of the WebSocket connection (the Autobahn protocol)."""

    def send_frame(self, message: str | bytes) -> None:
        """Send ``str`` as a text frame, ``bytes`` as a binary frame (dropped once closing)."""

    def close_socket(self, code: int = 1000) -> None:
        """Start the WebSocket close handshake with ``code`` (or drop a connection that cannot
        have one)."""

    def drop_socket(self) -> None:
        """Abort the connection at once, without a close handshake."""

    def register_producer(self, producer: IPushProducer) -> None:
        """Make ``producer`` the transport's push producer."""

    def unregister_producer(self) -> None:
        """Forget the transport's push producer (if any)."""


class PlatformPort:
    """One platform connection: a session, its socket, and the call it carries."""

    def __init__(self, session: PlatformSession, wire: Wire, reactor: IReactorTime) -> None:
        self._session = session
        self._wire = wire
        self._reactor = reactor
        self.call: CallBridge | None = None
        self._closing = False
        self._close_timer: IDelayedCall | None = None
        self._gone = False
        self._close_code = 1000
        self.messages_received = 0
        """Messages the platform sent on this connection: the registry's idle check compares
        it between its passes (a counter, so a message costs no clock read)."""

    @property
    def session(self) -> PlatformSession:
        return self._session

    # --- from the socket ----------------------------------------------------------------------------

    def received(self, payload: bytes, binary: bool) -> None:
        """One WebSocket message from the platform."""
        if self._gone:
            return
        self.messages_received += 1
        session = self._session
        if self._closing and not session.awaits_close:
            # The call is over and the close under way: what the platform still had in flight is
            # not read (a text frame would otherwise reach a session the port, not the session,
            # found at fault: a non-UTF-8 frame).
            return
        if binary:
            events = session.receive_binary(payload)
        else:
            try:
                # Autobahn's own UTF-8 check is off (utf8validateIncoming): this decode is it.
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                events = self._invalid_text(payload)
            else:
                events = session.receive_text(text)
        if events and self.call is not None:
            self.call.handle(events)
        self.flush()
        session = self._session  # a resume may have brought the call's own session
        if (self._closing or session.finished) and not session.awaits_close:
            self._close_now()

    def _invalid_text(self, payload: bytes) -> list[PlatformEvent]:
        """A text frame that is not UTF-8: the session answers it its protocol's way (an error
        message, a disconnect) or, with nothing to say, the socket closes with 1007 (invalid
        frame payload data)."""
        session = self._session
        if self._closing or session.finished:
            # Input after the end like any other (the sessions ignore it): not one more error.
            return []
        events = session.invalid_text(payload)
        output = session.take_output()
        if events and not output:
            self._close_code = 1007
        for message in output:
            self._wire.send_frame(message)
        return events

    def lost(self) -> None:
        """The socket is gone (cleanly or not)."""
        self._gone = True
        self._cancel_close_timer()

    # --- PlatformLeg ------------------------------------------------------------------------------

    def adopt(self, call: CallBridge, session: PlatformSession) -> None:
        self.call = call
        self._session = session

    def flush(self) -> None:
        output = self._session.take_output()
        if not output or self._gone:
            return
        send = self._wire.send_frame
        for message in output:
            send(message)

    def close(self) -> None:
        """Close once the session's close transaction (if any) is done."""
        self.flush()
        if self._closing or self._gone:
            return
        self._closing = True
        if self._session.awaits_close:
            self._close_timer = self._reactor.callLater(CLOSE_TRANSACTION_TIMEOUT_S, self._close_now)
        else:
            self._close_now()

    def give_up(self) -> None:
        """Another connection took this one's call: forget it and drop the socket, without this
        connection's loss ending the call or stopping its playout (it moves with the call)."""
        self._session.connection_lost()
        self.call = None
        self._closing = True
        self._wire.unregister_producer()
        self._wire.drop_socket()

    def register_producer(self, producer: IPushProducer) -> None:
        if not self._gone:
            self._wire.register_producer(producer)

    # --- the playout's sink ---------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        self._session.play(packet)

    def mark(self, name: str) -> None:
        self._session.mark(name)

    def playback_finished(self) -> None:
        self._session.playback_finished()

    # --- closing -----------------------------------------------------------------------------------

    def _close_now(self) -> None:
        self._cancel_close_timer()
        if not self._gone:
            self._wire.close_socket(self._close_code)

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
