"""The platform-neutral half of a simulated call: the send schedule, the playout, the record.

A :class:`SimCall` is one call as a platform places it. It is an Autobahn client factory, so it
outlives its connections (a platform that resumes dials again on the same call). Each platform
mode subclasses it and writes only what its platform says: the handshake (:meth:`on_open`), one
message of caller audio (:meth:`send_chunk`), what it does with each message from the proxy
(:meth:`on_text`, :meth:`on_binary`) and how the call ends (:meth:`end_call`). Everything else is
here:

* caller audio on an absolute schedule: the chunk holding script frames ``[n, n + k)`` leaves when
  its last frame is due, at ``script_start + (n + k - 1) * 20 ms``; after a stall every chunk that
  came due goes at once, as a platform's bunched frames do;
* bot audio into a :class:`~mediaproxy.sim.playout.Playout` at real time, each message recorded as
  (arrival time, ms of audio, playout depth just before it) in a :class:`CallRecord`;
* protocol errors (anything the platform would not accept), counted and kept (the first few);
* chaos stalls (the socket is not read for a while).

Time comes from the injected reactor (real sockets need the real one).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from mediaproxy.audio.format import MULAW_8K, AudioFormat
from mediaproxy.sim.call_record import COMPLETED, CallRecord
from mediaproxy.sim.playout import Playout
from mediaproxy.sim.script import FRAME_MS, CallScript

__all__ = ["CallRecord", "SimCall", "SimConnection", "COMPLETED"]

_FRAME_S = FRAME_MS / 1000.0
_KEPT_ERRORS = 20


class SimConnection(WebSocketClientProtocol):
    """One WebSocket of a :class:`SimCall`: hands every Autobahn callback to the call."""

    factory: SimCall
    #: Whether the WebSocket opening handshake completed.
    opened = False

    def onOpen(self) -> None:
        self.opened = True
        # Autobahn's own tcpNoDelay option fails silently on Twisted; without it a mark echo can
        # wait ~40 ms for a delayed ACK, as the real platform's would not.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.factory.connection_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.message(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connection_closed(self, code, reason)


class SimCall(WebSocketClientFactory):
    """One simulated call (see the module docstring). ``clock`` is the reactor; ``start_at``
    when the script's frame 0 is due; ``options`` the parsed command line (the mode's own
    options included). ``done`` fires with the :class:`CallRecord` once the call is over."""

    protocol = SimConnection  # type: ignore[assignment]  # Autobahn's factories take a protocol class
    #: The platform's name in reports.
    platform = "?"
    #: The audio format on the wire, both ways (the caller's script is converted to it).
    audio_format: AudioFormat = MULAW_8K

    def __init__(self, url: str, script: CallScript, clock: Any, index: int, start_at: float,
                 options: argparse.Namespace, run_id: str = "sim", keep_audio: bool = False) -> None:
        super().__init__(url)
        self.setProtocolOptions(openHandshakeTimeout=30, closeHandshakeTimeout=5, autoPingInterval=0)
        self.url_text = url
        self.script = script
        self.clock = clock
        self.start_at = start_at
        self.options = options
        self.run_id = run_id
        self.record = CallRecord(index=index, call_id=self.make_call_id(run_id, index), platform=self.platform,
                                 heard_format=self.audio_format)
        self.frames: Sequence[bytes] = script.frames_in(self.audio_format)
        self.chunk_frames = max(1, int(getattr(options, "chunk_ms", FRAME_MS)) // FRAME_MS)
        fmt = self.audio_format
        self.playout = Playout(clock, self.on_mark_due, keep_audio, fmt.bytes_per_ms, fmt.frame_bytes)
        self.keep_audio = keep_audio
        self.done: Deferred[CallRecord] = Deferred()
        #: The open connection, if any.
        self.live: SimConnection | None = None
        self._next = 0
        self._send_call: IDelayedCall | None = None
        self._stall_call: IDelayedCall | None = None
        self._ending = False
        self._script_started = False

    # --- what a mode writes ---------------------------------------------------------------------

    def make_call_id(self, run_id: str, index: int) -> str:
        """The call's id on the platform (unique across processes with distinct run ids)."""
        return f"{run_id}-{index:08d}"

    def upgrade_headers(self) -> dict[str, str]:
        """Extra headers of the upgrade request, computed at dial time (signatures expire)."""
        return {}

    def on_open(self) -> None:
        """The socket is open: say hello; call :meth:`begin_script` when audio may flow."""
        self.begin_script()

    def on_text(self, message: dict[str, Any]) -> None:
        """One JSON object from the proxy."""
        self.protocol_error(f"unexpected text message {str(message)[:80]}")

    def on_binary(self, payload: bytes) -> None:
        """One binary frame from the proxy."""
        self.protocol_error("unexpected binary frame")

    def send_chunk(self, first: int, frames: Sequence[bytes]) -> None:
        """Send script frames ``first ...`` (in :attr:`audio_format`) as one message."""
        raise NotImplementedError

    def withhold(self, first: int) -> bool:
        """Whether the platform keeps the chunk starting at frame ``first`` to itself."""
        return False

    def end_call(self) -> None:
        """The script is over: end the call the platform's way (then :meth:`hang_up`)."""
        self.hang_up()

    def on_mark_due(self, name: str) -> None:
        """Playback reached a mark (only platforms that send marks get here)."""

    # --- connection events ------------------------------------------------------------------------

    def dial(self) -> Deferred[Any]:
        """Connect to the URL (again, for a resume); the upgrade carries :meth:`upgrade_headers`."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
        from twisted.internet.interfaces import IStreamClientEndpoint
        from twisted.internet.ssl import optionsForClientTLS

        url = urlparse(self.url_text)
        host = url.hostname or "127.0.0.1"
        port = url.port or (443 if url.scheme == "wss" else 80)
        self.headers = self.upgrade_headers()
        if self.record.dialed_at is None:
            self.record.dialed_at = self.clock.seconds()
        endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(self.clock, host, port, timeout=30)
        if url.scheme == "wss":
            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        d: Deferred[Any] = endpoint.connect(self)
        d.addErrback(lambda failure: self.clientConnectionFailed(None, failure.value))
        return d

    def connection_opened(self, connection: SimConnection) -> None:
        self.live = connection
        if self.record.opened_at is None:
            self.record.opened_at = self.clock.seconds()
        self.on_open()

    def message(self, connection: SimConnection, payload: bytes, is_binary: bool) -> None:
        if connection is not self.live:
            return
        if is_binary:
            self.record.received["binary"] += 1
            self.on_binary(payload)
            return
        try:
            message = json.loads(payload)
        except ValueError:
            self.record.received["?"] += 1
            self.protocol_error("a text message that is not JSON")
            return
        if not isinstance(message, dict):
            self.record.received["?"] += 1
            self.protocol_error("a JSON message that is not an object")
            return
        self.on_text(message)

    def connection_closed(self, connection: SimConnection, code: int | None, reason: str | None) -> None:
        if not connection.opened:
            # The upgrade was refused (a wrong credential, a full proxy) or never answered.
            if not self.record.close_reason:
                self.record.close_reason = f"upgrade failed ({code} {reason or ''})".strip()
            self.record.close_code = code
            self._finish()
            return
        if connection is not self.live:
            return
        self.live = None
        record = self.record
        record.closed_at = self.clock.seconds()
        record.close_code = code
        if not self._ending:
            record.close_reason = f"closed by proxy ({code} {reason or ''})".strip()
        if not self.reconnecting():
            self._finish()

    def reconnecting(self) -> bool:
        """Whether the call goes on after its socket closed (a mode that resumes says so)."""
        return False

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        if not self.record.close_reason:
            self.record.close_reason = f"connect failed: {reason}"
        self._finish()

    def _finish(self) -> None:
        self._cancel_timers()
        self.playout.stop()
        if self.keep_audio:
            self.record.heard = self.playout.segments()
        if not self.done.called:
            self.done.callback(self.record)

    def _cancel_timers(self) -> None:
        for call in (self._send_call, self._stall_call):
            if call is not None and call.active():
                call.cancel()
        self._send_call = self._stall_call = None

    # --- helpers for modes --------------------------------------------------------------------------

    def send_json(self, message: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.sendMessage(json.dumps(message, separators=(",", ":")).encode())

    def send_text(self, text: str) -> None:
        if self.live is not None:
            self.live.sendMessage(text.encode())

    def send_binary(self, data: bytes) -> None:
        if self.live is not None:
            self.live.sendMessage(data, True)

    def bot_audio(self, payload: bytes | int) -> None:
        """Bot audio arrived: ``payload`` bytes (kept when recording) or only their count."""
        now = self.clock.seconds()
        nbytes = payload if isinstance(payload, int) else len(payload)
        ms = self.audio_format.ms_for_bytes(nbytes)
        record = self.record
        record.arrivals.append(now)
        record.arrival_ms.append(ms)
        record.depth_ms.append(self.playout.queued_ms)
        if nbytes == 0 or abs(ms / FRAME_MS - round(ms / FRAME_MS)) > 1e-6:
            record.odd_messages += 1
        if isinstance(payload, int) or not self.keep_audio:
            self.playout.queue_bytes(nbytes)
        else:
            self.playout.media(payload)

    def clear_playout(self) -> None:
        """The proxy told the platform to drop what it holds (a barge-in)."""
        self.record.clears.append(self.clock.seconds())
        self.playout.clear()

    def protocol_error(self, text: str) -> None:
        """Something a real platform would refuse or not understand; the call goes on."""
        record = self.record
        record.protocol_errors += 1
        if len(record.errors) < _KEPT_ERRORS:
            record.errors.append(text)

    def hang_up(self, code: int = 1000) -> None:
        """Close the socket as the end of the script (``close_reason`` ``stop``)."""
        self._ending = True
        if not self.record.close_reason:
            self.record.close_reason = COMPLETED
        if self._send_call is not None and self._send_call.active():
            self._send_call.cancel()
        self._send_call = None
        if self.live is not None:
            self.live.sendClose(code)

    # --- the send schedule --------------------------------------------------------------------------

    def begin_script(self) -> None:
        """Start (or, after a resume, continue) sending the script; frame 0 is due at
        ``start_at``, or now when the call came up later."""
        if not self._script_started:
            self._script_started = True
            self.record.script_start = max(self.start_at, self.clock.seconds())
        if self._send_call is None and not self._ending:
            self._arm()

    def _due_at(self, n: int) -> float:
        last = min(n + self.chunk_frames, len(self.frames)) - 1
        return self.record.script_start + last * _FRAME_S

    def _arm(self) -> None:
        if self._next >= len(self.frames):
            self._send_call = self.clock.callLater(0, self._send_due)
            return
        delay = max(0.0, self._due_at(self._next) - self.clock.seconds())
        self._send_call = self.clock.callLater(delay, self._send_due)

    def _send_due(self) -> None:
        self._send_call = None
        if self.live is None:
            return  # between connections: a resume continues the schedule
        record = self.record
        now = self.clock.seconds()
        total = len(self.frames)
        while self._next < total and self._due_at(self._next) <= now + 1e-6:
            n = self._next
            chunk = self.frames[n:n + self.chunk_frames]
            late = now - self._due_at(n)
            if late > record.send_late_max_s:
                record.send_late_max_s = late
            if self.withhold(n):
                record.frames_withheld += len(chunk)
            else:
                self.send_chunk(n, chunk)
                record.frames_sent += len(chunk)
            self._next += len(chunk)
        if self._next < total:
            self._arm()
        else:
            self.end_call()

    @property
    def script_position_ms(self) -> int:
        """Milliseconds of script sent (or withheld) so far."""
        return self._next * FRAME_MS

    # --- stalls (chaos) ---------------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return self._stall_call is not None

    def stall(self, seconds: float) -> None:
        """Stop reading the socket for ``seconds`` (a platform whose network or host froze), then
        read again. Sending goes on. Recorded in :attr:`CallRecord.stalls`."""
        live = self.live
        if live is None or self._stall_call is not None or live.transport is None:
            return
        transport: Any = live.transport
        transport.pauseProducing()
        started = self.clock.seconds()
        self.record.stalls.append((started, started + seconds))

        def resume() -> None:
            self._stall_call = None
            if live.transport is not None:
                transport.resumeProducing()

        self._stall_call = self.clock.callLater(seconds, resume)
