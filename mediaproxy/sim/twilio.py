"""A scripted Twilio Media Streams caller (the platform side of ``<Connect><Stream>``).

It speaks what Twilio sends: ``connected``, ``start`` (a
unique ``callSid``/``streamSid``, ``audio/x-mulaw`` 8 kHz mono), one ``media`` message of 160
µ-law bytes every 20 ms on an absolute schedule (``start + n * 20 ms``; after a stall it sends
every frame that came due, as Twilio's bunched frames do), then ``stop``; and it behaves like
Twilio's player toward the proxy (:class:`~mediaproxy.sim.twilio_player.TwilioPlayer`): received
audio is queued and "played" at real time, a ``mark`` is echoed when the audio queued before it
has played, and ``clear`` empties the queue and echoes every pending mark at once.

Every received media frame is recorded with its arrival time (:class:`CallRecord`), as are
``clear`` messages and mark echoes. Analysis (lateness, gaps the caller would hear, latency)
lives in :mod:`mediaproxy.sim.report`.

Time comes from the injected ``IReactorTime``; the client may run on the real reactor.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from mediaproxy.sim.script import FRAME_BYTES, FRAME_MS, CallScript
from mediaproxy.sim.twilio_player import TwilioPlayer

_FRAME_S = FRAME_MS / 1000.0


@dataclass
class CallRecord:
    """What one simulated call sent and received. Times are reactor seconds."""

    index: int
    call_sid: str
    stream_sid: str
    script_start: float = 0.0
    """When frame 0 of the script was due."""
    opened_at: float | None = None
    closed_at: float | None = None
    close_reason: str = ""
    frames_sent: int = 0
    send_late_max_s: float = 0.0
    """Worst lateness of our own sends (a busy simulator shows here, not in the proxy)."""
    arrivals: array[float] = field(default_factory=lambda: array("d"))
    """Arrival time of every received media frame."""
    odd_frames: int = 0
    """Received media payloads that were not exactly 160 bytes."""
    clears: array[float] = field(default_factory=lambda: array("d"))
    marks_received: int = 0
    marks_echoed: int = 0
    other_messages: int = 0
    stalls: list[tuple[float, float]] = field(default_factory=list)
    """``(start, end)`` of every time this call stopped reading its socket (``--stall-every``)."""

    @property
    def completed(self) -> bool:
        return self.opened_at is not None and self.closed_at is not None and self.close_reason == "stop"


class TwilioCallerProtocol(WebSocketClientProtocol):
    """One simulated Twilio call (Autobahn calls the camelCase methods)."""

    factory: TwilioCallerFactory

    def __init__(self) -> None:
        super().__init__()
        self._reactor: IReactorTime | None = None
        self._send_call: IDelayedCall | None = None
        self._next = 0
        self._seq = 0
        self._player: TwilioPlayer | None = None
        self._stopped = False
        self._stall_call: IDelayedCall | None = None

    # --- Autobahn callbacks ---------------------------------------------------------------------

    def onOpen(self) -> None:
        # Autobahn's own tcpNoDelay option fails silently on Twisted; without it a mark echo can
        # wait ~40 ms for a delayed ACK, as real Twilio's would not.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        factory = self.factory
        record = factory.record
        reactor = factory.clock
        self._reactor = reactor
        self._player = TwilioPlayer(reactor, self._echo_mark)
        record.opened_at = reactor.seconds()
        factory.live = self
        self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._seq = 1
        self._send_json({
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": record.stream_sid,
            "start": {
                "streamSid": record.stream_sid,
                "accountSid": "AC" + "0" * 32,
                "callSid": record.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"sim": "1", "call": str(record.index)},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        })
        # The script starts on the factory's schedule (calls are spread over the ramp), or now
        # if the connection came up after that time.
        record.script_start = max(factory.start_at, reactor.seconds())
        self._media_prefix = '{"event":"media","sequenceNumber":"'
        self._media_mid = '","streamSid":' + json.dumps(record.stream_sid) + ',"media":{"track":"inbound","chunk":"'
        self._arm(record.script_start)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        reactor, player = self._reactor, self._player
        if reactor is None or player is None:
            return
        now = reactor.seconds()
        record = self.factory.record
        try:
            message = json.loads(payload)
            event = message["event"]
        except (ValueError, KeyError, TypeError):
            record.other_messages += 1
            return
        if event == "media":
            try:
                text = message["media"]["payload"]
            except (KeyError, TypeError):
                record.other_messages += 1
                return
            # The payload is never decoded: its size is all the player needs. A message of
            # several frames (the proxy's [playout] message_ms) counts as that many arrivals.
            nbytes = len(text) * 3 // 4 - text[-2:].count("=")
            frames, rest = divmod(nbytes, FRAME_BYTES)
            if rest or not frames:
                record.odd_frames += 1
            for _ in range(max(frames, 1)):
                record.arrivals.append(now)
            player.queue_bytes(nbytes)
        elif event == "mark":
            record.marks_received += 1
            try:
                name = message["mark"]["name"]
            except (KeyError, TypeError):
                record.other_messages += 1
                return
            player.mark(name)
        elif event == "clear":
            record.clears.append(now)
            player.clear()
        else:
            record.other_messages += 1

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        record = self.factory.record
        if self._reactor is not None:
            record.closed_at = self._reactor.seconds()
        if not self._stopped:
            record.close_reason = f"closed by proxy ({code} {reason or ''})".strip()
        if self._send_call is not None and self._send_call.active():
            self._send_call.cancel()
        self._send_call = None
        if self._stall_call is not None and self._stall_call.active():
            self._stall_call.cancel()
        self._stall_call = None
        if self._player is not None:
            self._player.stop()
        self.factory.live = None
        self.factory.finished()

    # --- stalls (chaos) ---------------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return self._stall_call is not None

    def stall(self, seconds: float) -> None:
        """Stop reading the socket for ``seconds`` (a caller whose network or host froze), then
        read again. Sending goes on. Recorded in :attr:`CallRecord.stalls`."""
        reactor = self._reactor
        if reactor is None or self._stall_call is not None or self.transport is None:
            return
        transport: Any = self.transport
        transport.pauseProducing()
        started = reactor.seconds()
        self.factory.record.stalls.append((started, started + seconds))

        def resume() -> None:
            self._stall_call = None
            if self.transport is not None:
                transport.resumeProducing()

        self._stall_call = reactor.callLater(seconds, resume)

    # --- sending ----------------------------------------------------------------------------------

    def _arm(self, at: float) -> None:
        assert self._reactor is not None
        self._send_call = self._reactor.callLater(max(0.0, at - self._reactor.seconds()), self._send_due)

    def _send_due(self) -> None:
        self._send_call = None
        reactor = self._reactor
        assert reactor is not None
        record = self.factory.record
        script = self.factory.script
        payloads = script.payloads
        now = reactor.seconds()
        start = record.script_start
        total = len(payloads)
        # Absolute schedule: every frame due by now goes out (frame n at start + n * 20 ms).
        while self._next < total and start + self._next * _FRAME_S <= now + 1e-6:
            n = self._next
            late = now - (start + n * _FRAME_S)
            if late > record.send_late_max_s:
                record.send_late_max_s = late
            self._seq += 1
            self.sendMessage((
                self._media_prefix + str(self._seq) + self._media_mid + str(n + 1)
                + '","timestamp":"' + str(n * FRAME_MS) + '","payload":"' + payloads[n] + '"}}'
            ).encode("ascii"))
            self._next += 1
            record.frames_sent += 1
        if self._next < total:
            self._arm(start + self._next * _FRAME_S)
        else:
            self._stop()

    def _stop(self) -> None:
        record = self.factory.record
        self._seq += 1
        self._send_json({
            "event": "stop",
            "sequenceNumber": str(self._seq),
            "streamSid": record.stream_sid,
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": record.call_sid},
        })
        self._stopped = True
        record.close_reason = "stop"
        self.sendClose(1000)

    def _send_json(self, message: dict[str, object]) -> None:
        self.sendMessage(json.dumps(message, separators=(",", ":")).encode())

    # --- marks ------------------------------------------------------------------------------------

    def _echo_mark(self, name: str) -> None:
        record = self.factory.record
        record.marks_echoed += 1
        self._seq += 1
        self._send_json({
            "event": "mark",
            "sequenceNumber": str(self._seq),
            "streamSid": record.stream_sid,
            "mark": {"name": name},
        })


class TwilioCallerFactory(WebSocketClientFactory):
    """One simulated call: connect it with any client endpoint (``TCP4ClientEndpoint``).

    ``clock`` is the reactor's time face; ``start_at`` is when the script's frame 0 is due.
    ``done`` fires with the :class:`CallRecord` when the connection has closed.
    """

    protocol = TwilioCallerProtocol  # type: ignore[assignment]  # Autobahn's factories take a protocol class

    def __init__(self, url: str, script: CallScript, clock: IReactorTime, index: int, start_at: float,
                 run_id: str = "sim") -> None:
        super().__init__(url)
        self.setProtocolOptions(openHandshakeTimeout=30, closeHandshakeTimeout=5, autoPingInterval=0)
        self.script = script
        self.clock = clock
        self.start_at = start_at
        tag = f"{run_id}{index:08d}"
        self.record = CallRecord(index=index, call_sid="CA" + tag.rjust(32, "0")[-32:],
                                 stream_sid="MZ" + tag.rjust(32, "0")[-32:])
        self.done: Deferred[CallRecord] = Deferred()
        #: The open connection of this call, if any.
        self.live: TwilioCallerProtocol | None = None

    def finished(self) -> None:
        if not self.done.called:
            self.done.callback(self.record)

    def clientConnectionFailed(self, connector: object, reason: object) -> None:
        self.record.close_reason = f"connect failed: {reason}"
        self.finished()
