"""A lean path for the common WebSocket frame, beside Autobahn's general one.

Every call exchanges about a hundred small messages a second, and Autobahn spends more on each
than the proxy's own work on it: its Python frame parser walks a state machine per frame, creates
an XOR masker object per masked frame, fires a txaio observer per message and formats debug-log
arguments on every read and write even with debug off (about 13 µs to receive a masked 300-byte
text frame, 6 µs to send a masked one, measured on the development machine; bench/README.md).

A protocol class takes the lean path by naming these functions as its Autobahn methods
(``dataReceived = data_received``, ``_dataReceived = lean_data_received``, ``sendMessage =
lean_send_message``; under ``if not TYPE_CHECKING``, so callers keep Autobahn's signatures). It
handles only the frames that need none of that, and hands everything else to Autobahn unchanged:

* received: while the connection is open with nothing buffered or half-parsed, each complete,
  final, unfragmented text or binary frame without RSV bits, masked exactly as the peer's role
  requires, whose length is minimally encoded and within ``maxFramePayloadSize`` and
  ``maxMessagePayloadSize`` (and, for a text frame where ``utf8validateIncoming`` is on, valid
  UTF-8) is unmasked and delivered to ``onMessage`` at once. The first frame that is anything
  else (a control frame, a fragment, an oversize or malformed header, a partial frame) and all
  the bytes after it go to Autobahn's parser, which applies its own rules: the same close codes
  and errors as without this mixin.
* sent: a message to an open connection without compression, fragmentation, queued data or
  frame logging is written as one frame (masked on the client side with a random key, as RFC
  6455 requires); anything else goes through Autobahn's ``sendMessage``.

Traffic statistics are kept as Autobahn keeps them. No per-message ``message`` observer event is
fired (nothing in the proxy listens to it).
"""

from __future__ import annotations

import random
import struct
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

_OPEN = WebSocketProtocol.STATE_OPEN
_GROUND = WebSocketProtocol.SEND_STATE_GROUND
_LENGTH16 = struct.Struct("!H")
_LENGTH64 = struct.Struct("!Q")


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``mask`` repeated (RFC 6455 masking, its own inverse)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame_header(opcode: int, length: int, masked: bool) -> bytes:
    """The header of a final, unfragmented frame of ``length`` payload bytes (mask key excluded)."""
    bit = 0x80 if masked else 0
    if length < 126:
        return bytes((0x80 | opcode, bit | length))
    if length < 65536:
        return bytes((0x80 | opcode, bit | 126)) + _LENGTH16.pack(length)
    return bytes((0x80 | opcode, bit | 127)) + _LENGTH64.pack(length)


def data_received(protocol: Any, data: bytes) -> None:
    """``dataReceived`` of a lean protocol: Autobahn's Twisted one only adds a debug log whose
    arguments it formats on every read, even with debug off."""
    protocol._dataReceived(data)


def lean_data_received(protocol: Any, data: bytes) -> None:
    """``_dataReceived`` of a lean protocol: the common frames delivered here, the rest (and
    everything after the first that is not) by Autobahn's parser."""
    if (
        protocol.state != _OPEN or protocol.data or protocol.current_frame is not None or protocol.inside_message
        or protocol._perMessageCompress is not None or protocol.logOctets or protocol.logFrames
        or protocol.trackedTimings
    ):
        WebSocketProtocol._dataReceived(protocol, data)
        return
    server = protocol.factory.isServer
    max_frame = protocol.maxFramePayloadSize
    max_message = protocol.maxMessagePayloadSize
    validate = protocol.utf8validateIncoming
    stats = protocol.trafficStats
    pos, end = 0, len(data)
    while end - pos >= 2 and protocol.state == _OPEN:
        frame_start = pos
        b0, b1 = data[pos], data[pos + 1]
        opcode = b0 & 0x0F
        # Final (FIN set, no RSV bits), text or binary, masked as the peer's role requires.
        if (b0 & 0xF0) != 0x80 or opcode not in (1, 2) or bool(b1 & 0x80) is not server:
            break
        length = b1 & 0x7F
        i = frame_start + 2
        if length == 126:
            if end - i < 2:
                break
            length = _LENGTH16.unpack_from(data, i)[0]
            if length < 126:
                break  # not minimally encoded: Autobahn's protocol error
            i += 2
        elif length == 127:
            break  # 64 KiB or more: rare, left to Autobahn
        if (0 < max_frame < length) or (0 < max_message < length):
            break  # Autobahn closes with "message too big"
        start = i + 4 if server else i
        if end - start < length:
            break  # a partial frame: Autobahn buffers it
        payload = data[start:start + length]
        if server:
            payload = mask_payload(payload, data[i:i + 4])
        if opcode == 1 and validate:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                break  # Autobahn fails the connection its way
        pos = start + length
        stats.incomingOctetsWireLevel += pos - frame_start
        stats.incomingOctetsWebSocketLevel += length
        stats.incomingOctetsAppLevel += length
        stats.incomingWebSocketFrames += 1
        stats.incomingWebSocketMessages += 1
        if protocol.autoPingTimeoutCall and protocol.autoPingRestartOnAnyTraffic:
            protocol._cancelAutoPingTimeoutCall()
        protocol._onMessage(payload, opcode == 2)
    if pos < end:
        WebSocketProtocol._dataReceived(protocol, data[pos:] if pos else data)


def lean_send_message(protocol: Any, payload: bytes, isBinary: bool = False, fragmentSize: int | None = None,
                      sync: bool = False, doNotCompress: bool = False) -> None:
    """``sendMessage`` of a lean protocol: one frame written at once, or Autobahn's way."""
    n = len(payload)
    if (
        protocol.state != _OPEN or fragmentSize is not None or sync or protocol._perMessageCompress is not None
        or protocol.send_state != _GROUND or protocol.send_queue or protocol.trackedTimings or protocol.logFrames
        or protocol.logOctets or protocol.autoFragmentSize or 0 < protocol.maxMessagePayloadSize < n
        or protocol.transport is None
    ):
        WebSocketProtocol.sendMessage(protocol, payload, isBinary, fragmentSize, sync, doNotCompress)
        return
    if protocol.factory.isServer:
        frame = frame_header(2 if isBinary else 1, n, False) + payload
    else:
        mask = random.getrandbits(32).to_bytes(4, "big")
        frame = frame_header(2 if isBinary else 1, n, True) + mask + mask_payload(payload, mask)
    stats = protocol.trafficStats
    stats.outgoingWebSocketMessages += 1
    stats.outgoingWebSocketFrames += 1
    stats.outgoingOctetsAppLevel += n
    stats.outgoingOctetsWebSocketLevel += n
    stats.outgoingOctetsWireLevel += len(frame)
    protocol.transport.write(frame)
