"""A trivial WebSocket server for measuring a load generator's own limit (not a proxy).

It accepts any upgrade, skips every client frame without unmasking it (counting text frames),
answers a close with a close and drops the connection. With ``--reply-ms N`` it also plays the
proxy's part cheaply: from one shared 20 ms timer it sends every open connection a pre-built
Twilio ``media`` message of N ms of µ-law silence each N ms, and a ``mark`` every 100 ms, so the
generator's receive path and mark echoes are loaded as by a proxy that never stops talking (the
echo parrot answers about a third of the time).

    python -m mediaproxy.testing.ws_sink --port 9300 --reply-ms 20 --stats sink.json --max-seconds 120

Counts go to ``--stats`` (JSON) when it stops (SIGTERM, or ``--max-seconds``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


class SinkProtocol(Protocol):
    """One client connection: upgrade, then skip frames (see the module docstring)."""

    factory: SinkFactory

    def __init__(self) -> None:
        self._head = b""
        self._open = False
        self._buffer = b""

    def connectionMade(self) -> None:
        self.factory.stats["connections"] += 1

    def dataReceived(self, data: bytes) -> None:
        if not self._open:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            key = b""
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"  # type: ignore[union-attr]
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self._open = True
            self.factory.live.add(self)
        buffer = self._buffer + data if self._buffer else data
        pos, size, stats = 0, len(buffer), self.factory.stats
        while size - pos >= 6:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 8:
                    break
                length, header = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 14:
                    break
                length, header = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            header += 4 if b1 & 0x80 else 0
            if pos + header + length > size:
                break
            opcode = b0 & 0x0F
            if opcode == 0x1:
                stats["text_frames"] += 1
                stats["bytes"] += length
            elif opcode == 0x8:
                stats["closes"] += 1
                self.transport.write(server_frame(b"\x03\xe8", 0x8))  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]
            pos += header + length
        self._buffer = buffer[pos:]

    def connectionLost(self, reason: object = None) -> None:
        self.factory.live.discard(self)


class SinkFactory(Factory):
    """Counts in :attr:`stats`; the open connections in :attr:`live`."""

    protocol = SinkProtocol  # type: ignore[assignment]  # Twisted's factories take a protocol class

    def __init__(self, reply_ms: int = 0) -> None:
        self.stats = {"connections": 0, "text_frames": 0, "bytes": 0, "closes": 0, "media_sent": 0, "marks_sent": 0}
        self.live: set[SinkProtocol] = set()
        self.reply_ms = reply_ms
        payload = base64.b64encode(b"\xff" * (8 * reply_ms)).decode() if reply_ms else ""
        self._media = server_frame(json.dumps({"event": "media", "streamSid": "MZ" + "0" * 32,
                                               "media": {"payload": payload}}, separators=(",", ":")).encode())
        self._ticks = 0

    def tick(self) -> None:
        """Every 20 ms: media to every open connection when its message is due, a mark each 100 ms."""
        self._ticks += 1
        send_media = self._ticks * 20 % self.reply_ms == 0
        send_mark = self._ticks % 5 == 0
        mark = server_frame(b'{"event":"mark","streamSid":"MZ","mark":{"name":"m%d"}}' % self._ticks)
        for conn in self.live:
            if send_media:
                conn.transport.write(self._media)  # type: ignore[union-attr]
                self.stats["media_sent"] += 1
            if send_mark:
                conn.transport.write(mark)  # type: ignore[union-attr]
                self.stats["marks_sent"] += 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink until SIGTERM or ``--max-seconds``."""
    from twisted.internet import reactor

    p = argparse.ArgumentParser(description="A trivial WebSocket sink for load-generator measurements.")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply-ms", type=int, default=0, help="send a media message of this many ms each this many ms "
                   "(a multiple of 20; default 0: send nothing)")
    p.add_argument("--stats", default="", help="write counts here as JSON on exit")
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args(argv)
    if args.reply_ms % 20:
        p.error("--reply-ms must be a multiple of 20")
    factory = SinkFactory(args.reply_ms)
    r: Any = reactor
    r.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1")
    if args.reply_ms:
        LoopingCall(factory.tick).start(0.02, now=False)

    def write_stats() -> None:
        if args.stats:
            with open(args.stats, "w") as f:
                json.dump(factory.stats, f)

    r.addSystemEventTrigger("before", "shutdown", write_stats)
    signal.signal(signal.SIGTERM, lambda *_: r.callFromThread(r.stop))
    r.callLater(args.max_seconds, r.stop)
    r.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
