"""The lean WebSocket frame path (mediaproxy/wsframe.py) against Autobahn's own: byte-exact frames
out, the same messages in over any split of the stream, and Autobahn's rules for everything else."""

from __future__ import annotations

import os
import random
import struct
from typing import Any

from autobahn.exception import Disconnected
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy import wsframe

UPGRADE = (
    b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class PlainServer(WebSocketServerProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[bytes, bool]] = []
        self.closed: list[Any] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed.append(code)


class LeanServer(PlainServer):
    dataReceived = wsframe.data_received
    _dataReceived = wsframe.lean_data_received
    sendMessage = wsframe.lean_send_message


class LeanClient(WebSocketClientProtocol):
    dataReceived = wsframe.data_received
    _dataReceived = wsframe.lean_data_received
    sendMessage = wsframe.lean_send_message

    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[bytes, bool]] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append((payload, isBinary))


def server(cls: type[PlainServer], **options: Any) -> tuple[PlainServer, StringTransport]:
    factory = WebSocketServerFactory(reactor=Clock())  # Autobahn's close timers: not the real reactor
    factory.protocol = cls
    # No timers (txaio's batched timers run on the global reactor, whatever the factory's).
    factory.setProtocolOptions(autoPingInterval=0, failByDrop=False, openHandshakeTimeout=0,
                               closeHandshakeTimeout=0, **options)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    transport.clear()
    transport.registerProducer(protocol, True)  # as on a real transport: Autobahn unregisters it
    return protocol, transport


def client() -> tuple[LeanClient, StringTransport]:
    factory = WebSocketClientFactory("ws://127.0.0.1:9/x", reactor=Clock())
    factory.protocol = LeanClient
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    # Open without a handshake peer: the state Autobahn leaves after a 101 response.
    protocol.state, protocol.websocket_version = protocol.STATE_OPEN, 13
    protocol.inside_message, protocol.current_frame, protocol.data = False, None, b""
    transport.clear()
    transport.registerProducer(protocol, True)
    return protocol, transport


def frame(payload: bytes, opcode: int = 1, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    n = len(payload)
    b1 = 0x80 if masked else 0
    if n < 126:
        header = bytes([(0x80 if fin else 0) | rsv << 4 | opcode, b1 | n])
    elif n < 65536:
        header = bytes([(0x80 if fin else 0) | rsv << 4 | opcode, b1 | 126]) + struct.pack("!H", n)
    else:
        header = bytes([(0x80 if fin else 0) | rsv << 4 | opcode, b1 | 127]) + struct.pack("!Q", n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class MaskTests(SynchronousTestCase):
    def test_rfc_6455_example(self) -> None:
        # RFC 6455 5.7: "Hello" masked with 37 fa 21 3d.
        masked = wsframe.mask_payload(b"Hello", bytes.fromhex("37fa213d"))
        self.assertEqual(masked, bytes.fromhex("7f9f4d5158"))
        self.assertEqual(wsframe.mask_payload(masked, bytes.fromhex("37fa213d")), b"Hello")
        self.assertEqual(wsframe.mask_payload(b"", b"abcd"), b"")

    def test_headers_of_each_length_encoding(self) -> None:
        self.assertEqual(wsframe.frame_header(1, 5, False), b"\x81\x05")
        self.assertEqual(wsframe.frame_header(2, 300, True), b"\x82\xfe\x01\x2c")
        self.assertEqual(wsframe.frame_header(1, 70000, False), b"\x81\x7f" + struct.pack("!Q", 70000))


class SendTests(SynchronousTestCase):
    def test_server_frames_are_autobahns_bytes(self) -> None:
        for payload, binary in ((b"x" * 10, False), (b"\x00\xff" * 200, True), (b"y" * 70000, False)):
            lean, lean_t = server(LeanServer)
            plain, plain_t = server(PlainServer)
            lean.sendMessage(payload, binary)
            plain.sendMessage(payload, binary)
            self.assertEqual(lean_t.value(), plain_t.value())
            self.assertEqual(lean.trafficStats.outgoingOctetsWireLevel, plain.trafficStats.outgoingOctetsWireLevel)

    def test_client_frames_are_masked_and_decode_to_the_payload(self) -> None:
        protocol, transport = client()
        payload = b'{"type":"input_audio_buffer.append","audio":"' + b"A" * 300 + b'"}'
        protocol.sendMessage(payload, False)
        data = transport.value()
        self.assertEqual(data[:4], b"\x81\xfe" + struct.pack("!H", len(payload)))
        self.assertEqual(wsframe.mask_payload(data[8:], data[4:8]), payload)

    def test_not_open_goes_autobahns_way(self) -> None:
        protocol, transport = server(LeanServer)
        protocol.sendClose(1000)
        transport.clear()
        with self.assertRaises(Disconnected):
            protocol.sendMessage(b"late", False)
        self.assertEqual(transport.value(), b"")


class ReceiveTests(SynchronousTestCase):
    def stream(self) -> tuple[bytes, list[tuple[bytes, bool]]]:
        rng = random.Random(7)
        data, expected = b"", []
        for n in range(60):
            size = rng.choice((0, 5, 125, 126, 300, 4000, 70000))
            payload = bytes(rng.randrange(32, 127) for _ in range(min(size, 64))) * (size // 64 + 1)
            payload = payload[:size]
            binary = n % 3 == 0
            if n % 7 == 3:
                # A fragmented message with a ping between its frames: Autobahn's path.
                data += frame(payload[:3], 2 if binary else 1, fin=False) + frame(b"hi", 9)
                data += frame(payload[3:], 0)
            else:
                data += frame(payload, 2 if binary else 1)
            expected.append((payload, binary))
        return data, expected

    def test_any_split_delivers_what_autobahn_delivers(self) -> None:
        data, expected = self.stream()
        rng = random.Random(3)
        for _ in range(20):
            lean, lean_t = server(LeanServer)
            plain, _ = server(PlainServer)
            pos = 0
            while pos < len(data):
                step = rng.choice((1, 2, 7, 200, 5000, 100000))
                chunk = data[pos:pos + step]
                lean.dataReceived(chunk)
                plain.dataReceived(chunk)
                pos += step
            self.assertEqual(lean.got, expected)
            self.assertEqual(plain.got, expected)
            self.assertEqual(lean.trafficStats.incomingOctetsWireLevel, len(data))
            self.assertEqual(lean.trafficStats.incomingWebSocketMessages,
                             plain.trafficStats.incomingWebSocketMessages)
            self.assertIn(b"\x8a\x02hi", lean_t.value())  # the pings were answered

    def test_client_receives_unmasked_frames(self) -> None:
        protocol, _ = client()
        protocol.dataReceived(frame(b'{"type":"x"}', masked=False) + frame(b"\x01\x02", 2, masked=False))
        self.assertEqual(protocol.got, [(b'{"type":"x"}', False), (b"\x01\x02", True)])

    def test_client_bad_utf8_fails_the_connection_autobahns_way(self) -> None:
        protocol, transport = client()
        protocol.dataReceived(frame(b"ok", masked=False) + frame(b"\xff\xfe", masked=False))
        self.assertEqual(protocol.got, [(b"ok", False)])
        # Autobahn's client default (failByDrop): the connection is dropped, nothing delivered.
        self.assertTrue(protocol.wasNotCleanReason and "UTF-8" in protocol.wasNotCleanReason)

    def assertCloses(self, data: bytes, code: int, **options: Any) -> PlainServer:
        protocol, transport = server(LeanServer, **options)
        protocol.dataReceived(data)
        sent = transport.value()
        self.assertEqual(sent[0], 0x88, sent[:4])
        self.assertEqual(struct.unpack("!H", sent[2:4])[0], code)
        return protocol

    def test_protocol_violations_close_as_autobahn_does(self) -> None:
        self.assertCloses(frame(b"x", masked=False), 1002)  # unmasked client frame
        self.assertCloses(frame(b"x", rsv=1), 1002)  # RSV bit without an extension
        self.assertCloses(frame(b"x", opcode=3), 1002)  # reserved opcode
        self.assertCloses(frame(b"x", opcode=0), 1002)  # continuation outside a message
        # Non-minimal length encoding: 5 bytes with a 16-bit length.
        mask = b"\x00\x00\x00\x00"
        self.assertCloses(b"\x81\xfe\x00\x05" + mask + b"hello", 1002)

    def test_oversize_is_1009_and_nothing_delivered(self) -> None:
        protocol = self.assertCloses(frame(b"ok") + frame(b"x" * 2000), 1009, maxMessagePayloadSize=1000)
        self.assertEqual(protocol.got, [(b"ok", False)])

    def test_bad_utf8_on_a_validating_server_is_1007(self) -> None:
        protocol = self.assertCloses(frame(b"\xc3\x28"), 1007, utf8validateIncoming=True)
        self.assertEqual(protocol.got, [])

    def test_after_the_close_began_autobahn_decides(self) -> None:
        # The lean path stops at the close; Autobahn then reads what follows as it always does.
        got = []
        for base in (LeanServer, PlainServer):
            class Closer(base):  # type: ignore[valid-type,misc]
                def onMessage(self, payload: bytes, isBinary: bool) -> None:
                    super().onMessage(payload, isBinary)
                    if self.state == self.STATE_OPEN:
                        self.sendClose(1000)

            protocol, _ = server(Closer)
            protocol.dataReceived(frame(b"one") + frame(b"two"))
            got.append(protocol.got)
        self.assertEqual(got[0], got[1])

