"""The load generator's calls: a raw Twisted protocol per call, one shared timer for all of them.

:class:`LoadCall` does the WebSocket upgrade and framing itself (client frames pre-masked, see
:mod:`mediaproxy.sim.load_wire`), speaks Twilio Media Streams like :mod:`mediaproxy.sim.twilio`
(``connected``, ``start``, a ``media`` frame every 20 ms on an absolute schedule, ``stop``) and
behaves like Twilio's player: received audio is "played" at real time, a ``mark`` is echoed when
playback reaches it (at once when nothing is queued), ``clear`` empties the queue and echoes every
pending mark. On receipt it only records the arrival time and decoded size of each media message
(any multiple of 20 ms) and the time of each ``clear``; analysis comes after the run
(:mod:`mediaproxy.sim.load_report`). On a real TCP socket, arrival times are the kernel's receive
timestamps (``SO_TIMESTAMPNS``), so time this process spent waiting for a CPU is not counted as
the proxy's lateness; and a write goes straight to the socket when Twisted holds nothing unsent.

:class:`~mediaproxy.sim.load_grid.SendGrid` is the only timer: it calls :meth:`LoadCall.send_due`
on the call's 1 ms slot of the 20 ms frame and :meth:`LoadCall.release_marks` when a mark's
playback time has come.
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import main
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

from mediaproxy.sim import load_wire as wire
from mediaproxy.sim.load_grid import LATE_BIN_S, SendGrid

__all__ = ["LATE_BIN_S", "LoadCall", "LoadCallFactory", "LoadCallPlan", "LoadRecord", "SendGrid", "start_calls"]

FRAME_S = 0.020
BYTES_PER_S = 8000.0
_EPSILON_S = 1e-6
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value where the module lacks it


@dataclass
class LoadRecord:
    """What one generated call sent and received. Times are reactor seconds."""

    index: int
    call_sid: str
    stream_sid: str
    script_start: float = 0.0
    opened_at: float | None = None
    closed_at: float | None = None
    close_reason: str = ""
    frames_sent: int = 0
    send_times: array[float] = field(default_factory=lambda: array("d"))
    """When each script frame was actually written (for echoes: the earliest an echo could leave)."""
    arrivals: array[float] = field(default_factory=lambda: array("d"))
    """Arrival time of every received media message."""
    sizes: array[int] = field(default_factory=lambda: array("i"))
    """Decoded payload bytes of every received media message (-1: no payload)."""
    clears: array[float] = field(default_factory=lambda: array("d"))
    marks_received: int = 0
    marks_echoed: int = 0
    other_messages: int = 0

    @property
    def completed(self) -> bool:
        return self.opened_at is not None and self.closed_at is not None and self.close_reason == "stop"


class LoadCallPlan:
    """What every call of a run shares: where to dial, the script frames, the grid, the clock."""

    def __init__(self, clock: IReactorTime, grid: SendGrid, frames: wire.StreamFrames, host: str, port: int,
                 path: str, on_finished: Callable[[LoadRecord], None]) -> None:
        self.clock = clock
        self.grid = grid
        self.frames = frames
        self.request = wire.handshake_request(host, port, path)
        self.accept = wire.response_accept().encode("ascii")
        self.on_finished = on_finished


class LoadCall(Protocol):
    """One generated Twilio call (see the module docstring)."""

    def __init__(self, plan: LoadCallPlan, record: LoadRecord, start_at: float) -> None:
        self.plan = plan
        self.record = record
        self._start_at = start_at
        self._handshake = b""
        self._open = False
        self._closing = False
        self._reader = wire.ServerFrameReader()
        self._tails = plan.frames.tails(record.stream_sid)
        self._total = len(plan.frames.shared)
        self._next = 0
        self._script_start = 0.0
        self._play_end = 0.0
        self._marks: deque[tuple[float, bytes]] = deque()
        self._socket: Any = None
        self._rx_time = 0.0
        """The kernel's receive time of the data being handled (0: unknown, use the clock)."""

    # --- connection ----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)  # a mark echo must not wait for a delayed ACK
        # Twisted's TCP transports (FileDescriptor) expose their socket and write buffer; any
        # other transport (tests' StringTransport) is written through.
        if all(hasattr(transport, name) for name in ("socket", "_tempDataLen", "dataBuffer", "offset")):
            self._socket = transport.socket
            _stamp_reads(self, transport)
        transport.write(self.plan.request)

    def dataReceived(self, data: bytes) -> None:
        if not self._open:
            self._handshake += data
            end = self._handshake.find(b"\r\n\r\n")
            if end < 0:
                if len(self._handshake) > 16384:
                    self._fail("oversized upgrade response")
                return
            head, data = self._handshake[:end], self._handshake[end + 4 :]
            self._handshake = b""
            if not head.startswith(b"HTTP/1.1 101") or self.plan.accept not in head:
                self._fail("upgrade refused: " + head.split(b"\r\n", 1)[0].decode("latin-1"))
                return
            self._opened()
            if not data:
                return
        now = self.plan.clock.seconds()
        self.plan.grid.poll(now)
        if self._rx_time:
            now, self._rx_time = min(now, self._rx_time), 0.0
        record = self.record
        for opcode, payload in self._reader.feed(data):
            if opcode == wire.OP_TEXT:
                kind, nbytes, token = wire.classify(payload)
                if kind == wire.MEDIA:
                    record.arrivals.append(now)
                    record.sizes.append(nbytes)
                    if nbytes > 0:
                        self._play_end = max(self._play_end, now) + nbytes / BYTES_PER_S
                elif kind == wire.MARK:
                    record.marks_received += 1
                    self._mark(now, token)
                elif kind == wire.CLEAR:
                    record.clears.append(now)
                    self._play_end = min(self._play_end, now)
                    while self._marks:
                        self._echo(self._marks.popleft()[1])
                else:
                    record.other_messages += 1
            elif opcode == wire.OP_CLOSE:
                if not self._closing:
                    record.close_reason = record.close_reason or "closed by proxy"
                    self._closing = True
                    self._write(wire.client_frame(payload[:2], wire.OP_CLOSE))
                if self.transport is not None:
                    self.transport.loseConnection()
            elif opcode == wire.OP_PING:
                self._write(wire.client_frame(payload, wire.OP_PONG))
            elif opcode != wire.OP_PONG:
                record.other_messages += 1
        if self._reader.error:
            self._fail(self._reader.error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        record = self.record
        record.closed_at = self.plan.clock.seconds()
        if not record.close_reason:
            record.close_reason = f"connection lost: {reason.getErrorMessage()}"
        self.plan.grid.leave(self)
        self._marks.clear()
        self.plan.on_finished(record)

    def _fail(self, why: str) -> None:
        self.record.close_reason = why
        self._closing = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _write(self, data: bytes) -> None:
        """Send ``data``: straight to the socket when Twisted holds nothing unsent for it (a
        ``transport.write`` costs an epoll registration and a second reactor dispatch per
        message, which was a third of the generator's CPU), else through the transport."""
        transport: Any = self.transport
        if transport is None:
            return
        sock = self._socket
        if sock is not None and not transport._tempDataLen and len(transport.dataBuffer) == transport.offset:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # the transport's own write will meet the error and close
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def _opened(self) -> None:
        self._open = True
        record = self.record
        record.opened_at = self.plan.clock.seconds()
        self._write(wire.control_message({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        self._write(wire.control_message({
            "event": "start", "sequenceNumber": "1", "streamSid": record.stream_sid,
            "start": {"streamSid": record.stream_sid, "accountSid": "AC" + "0" * 32, "callSid": record.call_sid,
                      "tracks": ["inbound"], "customParameters": {"sim": "load", "call": str(record.index)},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }))
        self._script_start = record.script_start = self.plan.grid.join(self, max(self._start_at, record.opened_at))

    # --- sending (called by the grid) --------------------------------------------------------------

    def send_due(self, now: float) -> None:
        """Send every frame due by ``now`` (frame n at ``script_start + n * 20 ms``)."""
        n = self._next
        due = self._script_start + n * FRAME_S
        if due > now + _EPSILON_S or self._closing:
            return
        grid, frames, tails, total = self.plan.grid, self.plan.frames, self._tails, self._total
        shared, phase = frames.shared, frames.phase
        write = self._write
        send_times = self.record.send_times
        while n < total and due <= now + _EPSILON_S:
            grid.record_late(now - due)
            send_times.append(now)
            write(shared[n] + tails[phase[n]])
            n += 1
            due = self._script_start + n * FRAME_S
        self._next = self.record.frames_sent = n
        if n >= total:
            self._finish()

    def _finish(self) -> None:
        record = self.record
        self.plan.grid.leave(self)
        self._write(wire.control_message({
            "event": "stop", "sequenceNumber": str(self._next + 2), "streamSid": record.stream_sid,
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": record.call_sid}}))
        record.close_reason = "stop"
        self._closing = True
        self._write(wire.client_frame((1000).to_bytes(2, "big"), wire.OP_CLOSE))

    # --- the player's marks -------------------------------------------------------------------------

    def _mark(self, now: float, token: bytes) -> None:
        if not self._marks and self._play_end <= now + _EPSILON_S:
            self._echo(token)  # nothing queued before it: already "played"
            return
        self._marks.append((self._play_end, token))
        self.plan.grid.mark_due(self._play_end, self)

    def release_marks(self, now: float) -> None:
        """Echo the marks whose audio has played by ``now``."""
        marks = self._marks
        while marks and marks[0][0] <= now + _EPSILON_S:
            self._echo(marks.popleft()[1])

    def _echo(self, token: bytes) -> None:
        if self._closing or not token:
            return
        self.record.marks_echoed += 1
        self._write(wire.mark_echo(self._next + 1, self.record.stream_sid, token))


def _stamp_reads(call: LoadCall, transport: Any) -> None:
    """Read ``transport``'s socket with ``recvmsg`` and ``SO_TIMESTAMPNS``, so that arrival times
    are when the kernel received the data, not when this process got a CPU to read it: a
    generator waiting behind other processes does not add its wait to the proxy's lateness.
    (The kernel stamps a read with its last segment's time; reactor seconds are wall-clock, as
    these stamps.) Where the option is missing, reads stay as they were."""
    sock = transport.socket
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except (OSError, AttributeError):
        return
    size, space = transport.bufferSize, socket.CMSG_SPACE(16)

    def do_read() -> object:
        try:
            data, ancillary, _, _ = sock.recvmsg(size, space)
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                call._rx_time = seconds + nanoseconds * 1e-9
        return transport._dataReceived(data)

    transport.doRead = do_read


class LoadCallFactory(ClientFactory):
    """Builds the one :class:`LoadCall` of ``record`` (a factory per call: its own failure)."""

    def __init__(self, plan: LoadCallPlan, record: LoadRecord, start_at: float) -> None:
        self.plan = plan
        self.record = record
        self.start_at = start_at

    def buildProtocol(self, addr: object) -> LoadCall:
        return LoadCall(self.plan, self.record, self.start_at)

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.record.close_reason = f"connect failed: {reason.getErrorMessage()}"
        self.plan.on_finished(self.record)


def start_calls(clock: IReactorTime, connect: Callable[[str, int, ClientFactory], object], host: str, port: int,
                path: str, frames: wire.StreamFrames, calls: int, first_index: int, start_at: float, ramp_s: float,
                run_id: str) -> tuple[SendGrid, list[LoadRecord], Deferred[list[LoadRecord]]]:
    """Dial ``calls`` calls, spread over ``ramp_s`` from ``start_at`` (reactor seconds); each
    plays from half a second after its dial (or from when it opened, if later). ``connect(host,
    port, factory)`` dials (``reactor.connectTCP``). The Deferred fires when every call ended."""
    grid = SendGrid(clock)
    records: list[LoadRecord] = []
    done: Deferred[list[LoadRecord]] = Deferred()
    pending = [calls]

    def finished(record: LoadRecord) -> None:
        pending[0] -= 1
        if pending[0] == 0 and not done.called:
            grid.stop()
            done.callback(records)

    plan = LoadCallPlan(clock, grid, frames, host, port, path, finished)
    now = clock.seconds()
    for i in range(calls):
        tag = f"{run_id}{first_index + i:08d}"
        record = LoadRecord(first_index + i, "CA" + tag.rjust(32, "0")[-32:], "MZ" + tag.rjust(32, "0")[-32:])
        records.append(record)
        dial_at = start_at + ramp_s * i / calls
        clock.callLater(max(0.0, dial_at - now), connect, host, port, LoadCallFactory(plan, record, dial_at + 0.5))
    return grid, records, done
