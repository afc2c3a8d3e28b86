"""The load generator's wire: pre-built, pre-masked Twilio client frames and a cheap receive parser.

Sans IO. A load generator must cost far less per message than the proxy it measures, so:

* **Sending.** Every caller frame of the script is rendered once, for every call, as a complete
  masked WebSocket text frame, except for the last bytes of the message: ``streamSid`` comes last
  in Twilio's ``media`` message, so a frame is ``shared prefix + per-call tail``. RFC 6455 lets a
  client pick any masking key; one fixed key (:data:`MASK_KEY`) for every frame and connection
  makes the prefix identical across calls. Masking is positional (byte ``i`` is XORed with key
  byte ``i % 4``), so the per-call tail (``<streamSid>"}``) exists in four pre-masked variants,
  one per offset modulo 4. A send is one concatenation and one ``write``.
* **Receiving.** The proxy's frames are unmasked. :class:`ServerFrameReader` splits them
  (continuation frames joined); :func:`classify` finds ``"event":"<name>"`` with byte searches and
  returns the decoded size of a ``media`` payload from the base64 length (never decoding it) or
  the raw JSON string token of a ``mark`` name (echoed back verbatim).

Sequence numbers: ``start`` is 1 and ``media`` frame ``n`` (0-based) is ``n + 2``, fixed in the
shared prefix; a ``mark`` echo repeats the number of the last media frame sent (real Twilio
numbers echoes from the same counter; the proxy does not read sequence numbers).
"""

from __future__ import annotations

import base64
import hashlib
import json

__all__ = [
    "CLEAR", "MARK", "MASK_KEY", "MEDIA", "OTHER", "WS_KEY", "ServerFrameReader", "StreamFrames", "classify",
    "client_frame", "control_message", "frame_header", "handshake_request", "mark_echo", "mask",
    "media_message_prefix", "response_accept",
]

MASK_KEY = b"\x5a\x3c\xa7\x11"
"""The masking key of every client frame (any key is legal; a fixed one allows pre-masking)."""
WS_KEY = "bWVkaWFwcm94eS1sb2FkMQ=="
"""The ``Sec-WebSocket-Key`` of every connection (16 bytes, base64)."""

MEDIA, MARK, CLEAR, OTHER = 0, 1, 2, 3
"""Kinds :func:`classify` returns."""

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def mask(data: bytes, key: bytes = MASK_KEY, offset: int = 0) -> bytes:
    """``data`` XORed with ``key`` as if it began ``offset`` bytes into a masked payload."""
    n = len(data)
    if not n:
        return b""
    turn = offset % 4
    rotated = key[turn:] + key[:turn]
    stream = (rotated * (n // 4 + 1))[:n]
    # One big-integer XOR: C speed without numpy for a few hundred bytes.
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame_header(length: int, opcode: int = OP_TEXT, key: bytes = MASK_KEY) -> bytes:
    """The header of one final, masked client frame of ``length`` payload bytes."""
    first = bytes([0x80 | opcode])
    if length < 126:
        return first + bytes([0x80 | length]) + key
    if length < 65536:
        return first + b"\xfe" + length.to_bytes(2, "big") + key
    return first + b"\xff" + length.to_bytes(8, "big") + key


def client_frame(payload: bytes, opcode: int = OP_TEXT, key: bytes = MASK_KEY) -> bytes:
    """One complete masked client frame."""
    return frame_header(len(payload), opcode, key) + mask(payload, key)


def handshake_request(host: str, port: int, path: str) -> bytes:
    """The HTTP upgrade request every generated call sends."""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode("ascii")


def response_accept(key: str = WS_KEY) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode("ascii")


def media_message_prefix(n: int, payload_b64: str) -> str:
    """Twilio's ``media`` message for script frame ``n`` up to the ``streamSid`` value."""
    return (f'{{"event":"media","sequenceNumber":"{n + 2}","media":{{"track":"inbound","chunk":"{n + 1}",'
            f'"timestamp":"{n * 20}","payload":"{payload_b64}"}},"streamSid":"')


class StreamFrames:
    """Every ``media`` frame of a script, pre-built once and shared by all calls.

    ``shared[n]`` is the masked frame of script frame ``n`` without its tail; ``phase[n]`` is the
    offset (mod 4) its tail starts at. A call's tails come from :meth:`tails`; frame ``n`` of that
    call is ``shared[n] + tails[phase[n]]``. Every call's ``streamSid`` is ``sid_length`` ASCII
    characters (so frame lengths, hence headers, are shared).
    """

    def __init__(self, payloads: tuple[str, ...] | list[str], sid_length: int = 34) -> None:
        self.sid_length = sid_length
        tail_length = sid_length + 2  # <sid>"}
        shared: list[bytes] = []
        phase: list[int] = []
        for n, text in enumerate(payloads):
            body = media_message_prefix(n, text).encode("ascii")
            shared.append(frame_header(len(body) + tail_length) + mask(body))
            phase.append(len(body) % 4)
        self.shared: tuple[bytes, ...] = tuple(shared)
        self.phase: bytes = bytes(phase)

    def tails(self, stream_sid: str) -> tuple[bytes, bytes, bytes, bytes]:
        """The four pre-masked ``<streamSid>"}`` tails of one call, by starting offset mod 4."""
        raw = stream_sid.encode("ascii")
        if len(raw) != self.sid_length or b'"' in raw or b"\\" in raw:
            raise ValueError(f"streamSid must be {self.sid_length} plain ASCII characters")
        tail = raw + b'"}'
        return (mask(tail, offset=0), mask(tail, offset=1), mask(tail, offset=2), mask(tail, offset=3))

    def frame(self, n: int, tails: tuple[bytes, bytes, bytes, bytes]) -> bytes:
        """Frame ``n`` of the call whose tails are ``tails``."""
        return self.shared[n] + tails[self.phase[n]]


def control_message(message: dict[str, object]) -> bytes:
    """A masked text frame of ``message`` (JSON, compact): connected, start, stop."""
    return client_frame(json.dumps(message, separators=(",", ":")).encode())


def mark_echo(seq: int, stream_sid: str, name_token: bytes) -> bytes:
    """A masked ``mark`` echo; ``name_token`` is the JSON string token received (quotes included)."""
    body = (b'{"event":"mark","sequenceNumber":"' + str(seq).encode() + b'","streamSid":"'
            + stream_sid.encode("ascii") + b'","mark":{"name":' + name_token + b"}}")
    return client_frame(body)


def _string_token(message: bytes, start: int) -> bytes | None:
    """The JSON string token starting at ``message[start]`` (a quote), or None."""
    if start >= len(message) or message[start] != 0x22:
        return None
    i = start + 1
    while True:
        i = message.find(b'"', i)
        if i < 0:
            return None
        backslashes = 0
        while message[i - 1 - backslashes] == 0x5C:
            backslashes += 1
        if backslashes % 2 == 0:
            return message[start : i + 1]
        i += 1


def _value_at(message: bytes, key: bytes) -> int:
    """Index of the first non-blank byte after ``key`` and its colon, or -1."""
    i = message.find(key)
    if i < 0:
        return -1
    i += len(key)
    n = len(message)
    while i < n and message[i] in b" \t\r\n":
        i += 1
    if i >= n or message[i] != 0x3A:
        return -1
    i += 1
    while i < n and message[i] in b" \t\r\n":
        i += 1
    return i


def classify(message: bytes) -> tuple[int, int, bytes]:
    """``(kind, media_bytes, mark_name_token)`` of one text message from the proxy.

    ``media_bytes`` is the payload's decoded size (from its base64 length; -1 when a media message
    has no payload string); ``mark_name_token`` is the JSON string token of a mark's name (b""
    when absent). Anything else is :data:`OTHER`.
    """
    i = message.find(b'"event":"')
    if i >= 0:
        i += 9
    else:  # tolerate blanks around the colon
        i = _value_at(message, b'"event"')
        if i < 0 or message[i] != 0x22:
            return OTHER, 0, b""
        i += 1
    if message.startswith(b'media"', i):
        j = message.find(b'"payload":"')
        if j < 0:
            j = _value_at(message, b'"payload"')
            if j < 0 or message[j] != 0x22:
                return MEDIA, -1, b""
            j += 1
        else:
            j += 11
        end = message.find(b'"', j)
        if end < 0:
            return MEDIA, -1, b""
        chars = end - j
        pad = (message[end - 1] == 0x3D) + (chars > 1 and message[end - 2] == 0x3D)
        return MEDIA, chars * 3 // 4 - pad, b""
    if message.startswith(b'mark"', i):
        j = _value_at(message, b'"name"')
        token = _string_token(message, j) if j >= 0 else None
        return MARK, 0, token or b""
    if message.startswith(b'clear"', i):
        return CLEAR, 0, b""
    return OTHER, 0, b""


class ServerFrameReader:
    """Splits the proxy's (unmasked) WebSocket frames into ``(opcode, payload)`` messages.

    Fragmented messages are joined. A masked or oversized frame from the server is a protocol
    error: :attr:`error` is set and nothing more is returned.
    """

    def __init__(self, max_message_bytes: int = 1 << 22) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._max = max_message_bytes
        self.error = ""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Messages completed by ``data``, in order."""
        if self.error:
            return []
        buffer = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            if b1 & 0x80:
                self.error = "masked frame from the server"
                return out
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            if length > self._max:
                self.error = f"frame of {length} bytes"
                return out
            end = pos + head + length
            if end > size:
                break
            payload = buffer[pos + head : end]
            pos = end
            opcode, final = b0 & 0x0F, b0 & 0x80
            if opcode >= OP_CLOSE:  # control frames may come between fragments
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                self._fragments.append(payload)
                if final:
                    out.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif final:
                out.append((opcode, payload))
            else:
                self._fragment_opcode, self._fragments = opcode, [payload]
        self._buffer = buffer[pos:] if pos < size else b""
        return out
