"""The playout's packet queue: exact packets, tail padding, response order, barge-in cuts."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.playout.queue import PacketQueue

FRAME = 160  # 20 ms of µ-law


def drain(queue: PacketQueue, position_ms: float = 0.0) -> list[tuple[bytes, bool]]:
    packets = []
    while (cut := queue.next_packet(position_ms)) is not None:
        packets.append(cut)
        position_ms += len(cut[0]) / 8
    return packets


class PacketCuttingTests(SynchronousTestCase):
    def test_irregular_writes_cut_byte_exact_packets(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        data = bytes(range(256)) * 5  # 1280 bytes: 8 packets
        for start, end in ((0, 7), (7, 170), (170, 171), (171, 800), (800, 1280)):
            self.assertTrue(queue.write("r1", data[start:end]))
        self.assertEqual(queue.queued_bytes, 1280)
        self.assertEqual(queue.queued_ms, 160)
        packets = drain(queue)
        self.assertEqual([p for p, _ in packets], [data[i:i + FRAME] for i in range(0, 1280, FRAME)])
        self.assertEqual([ended for _, ended in packets], [False] * 8)  # not finished yet
        self.assertEqual(queue.queued_bytes, 0)

    def test_unfinished_partial_packet_waits(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x10" * 200)
        self.assertEqual(queue.next_packet(0.0), (b"\x10" * 160, False))
        self.assertIsNone(queue.next_packet(20.0))
        queue.write("r1", b"\x11" * 120)
        self.assertEqual(queue.next_packet(20.0), (b"\x10" * 40 + b"\x11" * 120, False))

    def test_finished_tail_padded_to_a_frame_with_ulaw_silence(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x10" * 200)
        self.assertTrue(queue.finish("r1"))
        self.assertFalse(queue.finish("r1"))  # already finished
        self.assertEqual(drain(queue), [(b"\x10" * 160, False), (b"\x10" * 40 + b"\xff" * 120, True)])

    def test_big_packets_pad_the_tail_to_a_frame_not_a_packet(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 200)
        queue.write("r1", b"\x10" * 1700)  # 212.5 ms
        queue.finish("r1")
        packets = drain(queue)
        self.assertEqual([len(p) for p, _ in packets], [1600, 160])
        self.assertEqual(packets[1], (b"\x10" * 100 + b"\xff" * 60, True))

    def test_exact_last_packet_ends_the_response(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x10" * 320)
        queue.finish("r1")
        self.assertEqual([ended for _, ended in drain(queue)], [False, True])

    def test_response_finished_after_its_last_packet_settles(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x10" * 160)
        self.assertEqual(drain(queue), [(b"\x10" * 160, False)])
        self.assertFalse(queue.settle_finished())  # not finished yet
        queue.finish("r1")
        self.assertTrue(queue.settle_finished())
        self.assertFalse(queue.settle_finished())


class ResponseOrderTests(SynchronousTestCase):
    def test_new_response_finishes_the_previous_and_plays_after_it(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x01" * 200)
        self.assertFalse(queue.has_finished_response())
        queue.write("r2", b"\x02" * 160)
        self.assertTrue(queue.has_finished_response())  # r1 is done: the backend moved on
        queue.finish("r2")
        self.assertEqual(drain(queue), [
            (b"\x01" * 160, False),
            (b"\x01" * 40 + b"\xff" * 120, True),
            (b"\x02" * 160, True),
        ])

    def test_empty_finished_head_ends_without_a_packet(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x01" * 160)
        self.assertEqual(queue.next_packet(0.0), (b"\x01" * 160, False))
        queue.write("r2", b"\x02" * 160)  # r1 finished, with nothing left
        self.assertEqual(queue.next_packet(20.0), (b"", True))
        self.assertEqual(queue.next_packet(20.0), (b"\x02" * 160, False))

    def test_cut_reports_what_was_heard_and_drops_late_audio(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x01" * 320)
        queue.finish("r1")
        drain(queue, 0.0)  # r1 sent at positions 0..40 ms
        queue.write("r2", b"\x02" * 1600)
        drain(queue, 40.0)  # r2 sent from 40 ms: 200 ms
        queue.write("r2", b"\x02" * 800)
        heard = queue.cut(100.0)
        assert heard is not None
        self.assertEqual((heard.response_id, heard.played_ms, heard.done), ("r2", 60, False))
        self.assertEqual(queue.queued_bytes, 0)
        self.assertFalse(queue.write("r2", b"\x02" * 160))  # cut: refused
        self.assertEqual(queue.queued_bytes, 0)
        self.assertFalse(queue.finish("r2"))
        self.assertTrue(queue.write("r3", b"\x03" * 160))

    def test_heard_is_capped_at_what_was_sent(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x01" * 160)
        queue.finish("r1")
        drain(queue)
        heard = queue.cut(500.0)
        assert heard is not None
        self.assertEqual((heard.played_ms, heard.done), (20, True))

    def test_cut_before_anything_played_reports_nothing(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x01" * 100)
        self.assertIsNone(queue.cut(0.0))

    def test_reset_forgets_without_cutting(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20)
        queue.write("r1", b"\x01" * 100)
        queue.reset()
        self.assertEqual(queue.queued_bytes, 0)
        self.assertTrue(queue.write("r1", b"\x01" * 100))


class MultiPacketMessageTests(SynchronousTestCase):
    """``message_ms``: whole packets up to it in one cut, never waiting to fill it."""

    def test_full_messages_then_the_finished_rest_in_one(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20, 60)
        data = bytes(range(256)) * 5  # 1280 bytes: 160 ms
        queue.write("r1", data)
        queue.finish("r1")
        packets = drain(queue)
        self.assertEqual([p for p, _ in packets], [data[:480], data[480:960], data[960:]])
        self.assertEqual([ended for _, ended in packets], [False, False, True])

    def test_unfinished_response_sends_the_whole_packets_it_has(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20, 100)
        queue.write("r1", b"\x10" * 400)  # 50 ms: two whole packets now, the rest waits
        self.assertEqual(queue.next_packet(0.0), (b"\x10" * 320, False))
        self.assertIsNone(queue.next_packet(40.0))
        self.assertEqual(queue.queued_bytes, 80)

    def test_finished_tail_padded_to_a_frame(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20, 60)
        queue.write("r1", b"\x10" * 500)  # 62.5 ms
        queue.finish("r1")
        self.assertEqual(drain(queue), [(b"\x10" * 480, False), (b"\x10" * 20 + b"\xff" * 140, True)])

    def test_sent_ms_counts_every_packet_of_a_message(self) -> None:
        queue = PacketQueue(MULAW_8K, 20, 20, 60)
        queue.write("r1", b"\x10" * 960)
        drain(queue)
        heard = queue.cut(70.0)
        assert heard is not None
        self.assertEqual(heard.played_ms, 70)
