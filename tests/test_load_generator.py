"""The load generator's pieces: byte-exact frame templates, the receive parser and frame reader
(fed the proxy's own Twilio output), a whole call on a Clock (upgrade, sends on the shared grid,
mark echoes at playback time, clear), and the after-run analysis."""

from __future__ import annotations

import base64
import json
from array import array

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.platforms.twilio import TwilioSession
from mediaproxy.sim import load_wire as wire
from mediaproxy.sim.load_calls import LoadCallFactory, LoadCallPlan, LoadRecord, SendGrid
from mediaproxy.sim.load_report import analyse_record, histogram_percentiles, mirror_replies
from mediaproxy.sim.script import Reply, synthetic_script

SID = "MZ" + "1" * 32
OTHER_SID = "MZ" + "ab" * 16


def unmask(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of one masked client frame, decoded the slow, obvious way."""
    assert frame[1] & 0x80, "client frames must be masked"
    length, pos = frame[1] & 0x7F, 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(frame[2:10], "big"), 10
    key = frame[pos : pos + 4]
    body = frame[pos + 4 :]
    assert len(body) == length
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Every client frame in ``data``, unmasked."""
    out = []
    while data:
        length, pos = data[1] & 0x7F, 2
        if length == 126:
            length, pos = int.from_bytes(data[2:4], "big"), 4
        end = pos + 4 + length
        out.append(unmask(data[:end]))
        data = data[end:]
    return out


class FrameTemplateTests(SynchronousTestCase):
    def test_small_frame_vector(self) -> None:
        key = wire.MASK_KEY
        self.assertEqual(wire.client_frame(b"hi"),
                         b"\x81\x82" + key + bytes([ord("h") ^ key[0], ord("i") ^ key[1]]))
        self.assertEqual(wire.frame_header(300), b"\x81\xfe\x01\x2c" + key)
        self.assertEqual(wire.frame_header(70000, wire.OP_BINARY), b"\x82\xff" + (70000).to_bytes(8, "big") + key)

    def test_mask_is_positional_and_involutive(self) -> None:
        data = bytes(range(37))
        self.assertEqual(wire.mask(wire.mask(data)), data)
        whole = wire.mask(data)
        for cut in range(1, 9):
            self.assertEqual(wire.mask(data[:cut]) + wire.mask(data[cut:], offset=cut), whole)

    def test_media_frames_are_byte_exact_for_every_call(self) -> None:
        payloads = [base64.b64encode(bytes([i]) * 160).decode() for i in range(7)]
        frames = wire.StreamFrames(payloads)
        self.assertEqual(set(frames.phase), {0, 1, 2, 3} & set(frames.phase))
        for sid in (SID, OTHER_SID):
            tails = frames.tails(sid)
            for n, text in enumerate(payloads):
                message = (f'{{"event":"media","sequenceNumber":"{n + 2}","media":{{"track":"inbound",'
                           f'"chunk":"{n + 1}","timestamp":"{n * 20}","payload":"{text}"}},"streamSid":"{sid}"}}')
                self.assertEqual(frames.frame(n, tails), wire.client_frame(message.encode()))
                opcode, body = unmask(frames.frame(n, tails))
                self.assertEqual((opcode, json.loads(body)["streamSid"]), (wire.OP_TEXT, sid))

    def test_every_tail_phase_is_exercised(self) -> None:
        # Sequence numbers grow a digit at 8, 98, ...: the prefix length mod 4 takes every value.
        payloads = [base64.b64encode(b"\xff" * 160).decode()] * 1200
        frames = wire.StreamFrames(payloads)
        self.assertEqual(set(frames.phase), {0, 1, 2, 3})
        tails = frames.tails(SID)
        for n in (0, 8, 98, 998, 1199):
            self.assertEqual(json.loads(unmask(frames.frame(n, tails))[1])["sequenceNumber"], str(n + 2))

    def test_streamsid_of_another_length_is_refused(self) -> None:
        frames = wire.StreamFrames(["AAAA"])
        self.assertRaises(ValueError, frames.tails, "MZ1")
        self.assertRaises(ValueError, frames.tails, "MZ" + '"' * 32)

    def test_mark_echo_and_control_messages(self) -> None:
        self.assertEqual(unmask(wire.mark_echo(7, SID, b'"r1-3"')),
                         (wire.OP_TEXT, b'{"event":"mark","sequenceNumber":"7","streamSid":"' + SID.encode()
                          + b'","mark":{"name":"r1-3"}}'))
        self.assertEqual(unmask(wire.control_message({"event": "stop"})), (wire.OP_TEXT, b'{"event":"stop"}'))


class ClassifyTests(SynchronousTestCase):
    def proxy_output(self) -> list[str]:
        session = TwilioSession()
        session.receive_text(json.dumps({
            "event": "start", "streamSid": SID,
            "start": {"streamSid": SID, "callSid": "CA1", "accountSid": "AC1",
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        session.play(b"\x01" * 160)
        session.play(b"\x02" * 800)
        session.mark('odd "name"\\')
        session.clear()
        return [m if isinstance(m, str) else m.decode() for m in session.take_output()]

    def test_the_proxys_own_messages(self) -> None:
        media, bundle, mark, clear = (m.encode() for m in self.proxy_output())
        self.assertEqual(wire.classify(media), (wire.MEDIA, 160, b""))
        self.assertEqual(wire.classify(bundle), (wire.MEDIA, 800, b""))
        self.assertEqual(wire.classify(mark), (wire.MARK, 0, json.dumps('odd "name"\\').encode()))
        self.assertEqual(wire.classify(clear), (wire.CLEAR, 0, b""))

    def test_padding_blanks_and_strays(self) -> None:
        for n in (159, 161, 162):
            text = json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\0" * n).decode()}})
            self.assertEqual(wire.classify(text.encode()), (wire.MEDIA, n, b""))  # blanks after colons
        self.assertEqual(wire.classify(b'{"event":"media","media":{}}'), (wire.MEDIA, -1, b""))
        self.assertEqual(wire.classify(b'{"event":"mark","mark":{}}'), (wire.MARK, 0, b""))
        self.assertEqual(wire.classify(b'{"event":"dtmf"}')[0], wire.OTHER)
        self.assertEqual(wire.classify(b"not json")[0], wire.OTHER)


def server_frame(payload: bytes, opcode: int = wire.OP_TEXT, final: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if final else 0) | opcode
    if n < 126:
        return bytes([first, n]) + payload
    if n < 65536:
        return bytes([first, 126]) + n.to_bytes(2, "big") + payload
    return bytes([first, 127]) + n.to_bytes(8, "big") + payload


class ServerFrameReaderTests(SynchronousTestCase):
    def test_split_anywhere(self) -> None:
        messages = [b"a", b"b" * 200, b"c" * 70000]
        data = b"".join(server_frame(m) for m in messages)
        for step in (1, 3, 7, 1000, len(data)):
            reader = wire.ServerFrameReader()
            got = []
            for i in range(0, len(data), step):
                got.extend(reader.feed(data[i : i + step]))
            self.assertEqual(got, [(wire.OP_TEXT, m) for m in messages])

    def test_fragments_joined_around_a_ping(self) -> None:
        reader = wire.ServerFrameReader()
        data = (server_frame(b"he", wire.OP_TEXT, final=False) + server_frame(b"!", wire.OP_PING)
                + server_frame(b"llo", wire.OP_CONTINUATION))
        self.assertEqual(reader.feed(data), [(wire.OP_PING, b"!"), (wire.OP_TEXT, b"hello")])

    def test_masked_frame_is_an_error(self) -> None:
        reader = wire.ServerFrameReader()
        self.assertEqual(reader.feed(wire.client_frame(b"x")), [])
        self.assertEqual(reader.error, "masked frame from the server")
        self.assertEqual(reader.feed(server_frame(b"y")), [])


class LoadCallTests(SynchronousTestCase):
    """One call on a Clock, the test playing the proxy."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100.0)
        self.grid = SendGrid(self.clock)
        self.script = synthetic_script(0.2, talk_ms=100, gap_ms=100)  # 10 frames
        self.frames = wire.StreamFrames(self.script.payloads)
        self.finished: list[LoadRecord] = []
        plan = LoadCallPlan(self.clock, self.grid, self.frames, "127.0.0.1", 8080, "/twilio", self.finished.append)
        self.record = LoadRecord(0, "CA" + "0" * 32, SID)
        self.call = LoadCallFactory(plan, self.record, 100.0105).buildProtocol(None)
        self.transport = StringTransport()
        self.call.makeConnection(self.transport)

    def take(self) -> list[tuple[int, bytes]]:
        data = self.transport.value()
        self.transport.clear()
        return client_frames(data)

    def open(self) -> None:
        self.assertEqual(self.transport.value(), wire.handshake_request("127.0.0.1", 8080, "/twilio"))
        self.transport.clear()
        self.call.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               b"Sec-WebSocket-Accept: " + wire.response_accept().encode() + b"\r\n\r\n")
        events = [json.loads(body)["event"] for _, body in self.take()]
        self.assertEqual(events, ["connected", "start"])

    def test_frames_leave_on_the_grid_then_stop_and_close(self) -> None:
        self.open()
        self.assertAlmostEqual(self.record.script_start, 100.011, places=6)  # the next 1 ms slot
        sent = []
        for _ in range(250):  # the reactor wakes each 1 ms slot on time: every send is on time
            self.clock.advance(0.001)
            sent.append((round(self.clock.seconds() - 100.0, 3), len(self.take())))
        self.assertEqual([t for t, n in sent if n][:10], [round(0.011 + 0.02 * n, 3) for n in range(10)])
        self.assertEqual(self.record.frames_sent, 10)
        self.assertEqual(self.grid.sends, 10)
        self.assertEqual(histogram_percentiles(self.grid.late_hist, 1e-5, self.grid.late_max_s)["p99"], 0.0)
        self.call.dataReceived(server_frame(b"\x03\xe8", wire.OP_CLOSE))
        self.assertTrue(self.transport.disconnecting)
        self.call.connectionLost()
        self.assertEqual(self.finished, [self.record])
        self.assertTrue(self.record.completed)

    def test_bunched_frames_after_a_stall(self) -> None:
        self.open()
        self.clock.advance(0.1)  # the reactor froze 100 ms: every due frame goes at once
        self.assertEqual(len(self.take()), 5)
        self.assertAlmostEqual(self.grid.late_max_s, 0.089, places=6)

    def test_marks_echo_when_played_and_clear_flushes(self) -> None:
        self.open()
        self.take()
        media = server_frame(b'{"event":"media","streamSid":"x","media":{"payload":"' + b"A" * 1068 + b'"}}')
        self.call.dataReceived(media + server_frame(b'{"event":"mark","mark":{"name":"m1"}}'))
        self.assertEqual(list(self.record.sizes), [801])
        self.clock.advance(0.1)
        self.assertNotIn(b"m1", b"".join(body for _, body in self.take()))
        self.clock.advance(0.001)  # 801 bytes play for 100.125 ms
        echoes = [json.loads(body) for _, body in self.take() if b'"mark"' in body]
        self.assertEqual([m["mark"]["name"] for m in echoes], ["m1"])
        self.call.dataReceived(media + server_frame(b'{"event":"mark","mark":{"name":"m2"}}')
                               + server_frame(b'{"event":"clear"}'))
        echoes = [json.loads(body) for _, body in self.take() if b'"mark"' in body]
        self.assertEqual([m["mark"]["name"] for m in echoes], ["m2"])
        self.assertEqual((self.record.marks_received, self.record.marks_echoed, len(self.record.clears)), (2, 2, 1))

    def test_refused_upgrade(self) -> None:
        self.call.dataReceived(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        self.assertEqual(self.record.close_reason, "upgrade refused: HTTP/1.1 503 Service Unavailable")


class AnalysisTests(SynchronousTestCase):
    reply = Reply(utterance_start_frame=0, end_frame=5, frames=20, speech_end_frame=3)

    def record(self, arrivals: list[float], sizes: list[int]) -> LoadRecord:
        record = LoadRecord(0, "CA", "MZ", script_start=10.0, opened_at=9.9, closed_at=20.0, close_reason="stop")
        record.arrivals, record.sizes = array("d", arrivals), array("i", sizes)
        return record

    def test_bundles_on_the_grid(self) -> None:
        # 20 frames as one 60 ms lead bundle, then 20 ms and 100 ms messages, all on time.
        t0 = 10.2
        times, sizes, k = [t0], [480], 3
        for f in (1, 1, 5, 5, 5):
            times.append(t0 + (k - 3) * 0.02)
            sizes.append(160 * f)
            k += f
        stats, samples = analyse_record(self.record(times, sizes), [self.reply], lead_ms=60)
        self.assertEqual((stats.frames_expected, stats.frames_lost, stats.underruns, stats.late_frames), (20, 0, 0, 0))
        self.assertEqual(stats.messages_received, 6)
        self.assertAlmostEqual(float(samples["lateness_grid"].max()), 0.0)
        self.assertAlmostEqual(float(samples["reply_latency"][0]), 0.16)

    def test_lost_and_underrun(self) -> None:
        times = [10.2 + 0.02 * k for k in range(20)]
        times[12:] = [t + 0.03 for t in times[12:]]  # 30 ms late from frame 12: a dry buffer
        del times[19]
        stats, samples = analyse_record(self.record(times, [160] * 19), [self.reply], lead_ms=0)
        self.assertEqual((stats.frames_lost, stats.underruns), (1, 1))
        self.assertAlmostEqual(float(samples["underrun_gaps"][0]), 0.03, places=6)
        self.assertAlmostEqual(float(samples["lateness_grid"].max()), 0.03, places=6)

    def test_mirror_expectation(self) -> None:
        script = synthetic_script(1.0, talk_ms=1000, gap_ms=0, tail_ms=200)
        (reply,) = mirror_replies(script)
        self.assertEqual((reply.end_frame, reply.frames), (0, 50))

    def test_mirror_lateness_is_measured_from_the_callers_own_sends(self) -> None:
        # The caller's frame 5 left 30 ms late (a busy generator); its echo, 5 ms after each
        # send, is not the server's lateness. A 40 ms message leaves when its second frame came.
        sent = [10.0 + 0.02 * k + (0.03 if k >= 5 else 0.0) for k in range(10)]
        record = self.record([sent[1] + 0.005, sent[3] + 0.005, sent[5] + 0.005, sent[7] + 0.008, sent[9] + 0.005],
                             [320] * 5)
        record.send_times = array("d", sent)
        reply = Reply(utterance_start_frame=0, end_frame=0, frames=10, speech_end_frame=1)
        stats, samples = analyse_record(record, [reply], lead_ms=0, mirror=True)
        self.assertEqual((stats.frames_received, stats.frames_lost), (10, 0))
        self.assertEqual([round(v, 6) for v in samples["lateness_grid"]], [0.0, 0.0, 0.0, 0.003, 0.0])
        # The caller still heard both gaps: 30 ms (the late send) and 3 ms (the late echo).
        self.assertEqual([round(v, 6) for v in samples["underrun_gaps"]], [0.03, 0.003])
