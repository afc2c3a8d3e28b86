"""Unit tests of the pieces the OpenAI Realtime session and dialect are built from: the
conversation memory a replacement connection is told (openai_memory), the response retry
backoff (openai_retries, on a Clock), the input timeline and the part-chunk flush
(openai_caller_input), and the coalescing of caller audio (openai_client_messages). The whole
behaviour is covered by the dialect and session tests; these pin each part's contract."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial import unittest

from mediaproxy.backends.openai_caller_input import InputTimeline, PartChunkFlush
from mediaproxy.backends.openai_client_messages import CallerAudioChunks, audio_append, resume_note
from mediaproxy.backends.openai_memory import HISTORY_CHARS, HISTORY_LINES, TOOL_CALLS, RealtimeMemory
from mediaproxy.backends.openai_retries import ResponseRetries


class MemoryTests(unittest.TestCase):
    def test_resume_context_lists_the_newest_lines_oldest_first(self) -> None:
        memory = RealtimeMemory()
        self.assertEqual(memory.resume_context(), "")
        for n in range(HISTORY_LINES + 3):
            memory.final_line(f"item{n}", 1, n % 2 == 0, f"line {n}")
        lines = memory.resume_context().splitlines()
        self.assertEqual(lines[0], "Recent conversation, oldest first:")
        self.assertEqual(lines[1:], [f"{'caller' if n % 2 == 0 else 'assistant'}: line {n}"
                                     for n in range(3, HISTORY_LINES + 3)])

    def test_the_note_is_cut_to_its_newest_characters(self) -> None:
        memory = RealtimeMemory()
        memory.final_line("a", 1, True, "x" * (HISTORY_CHARS + 50))
        memory.final_line("b", 1, False, "the end")
        context = memory.resume_context()
        self.assertEqual(len(context), HISTORY_CHARS)
        self.assertTrue(context.endswith("assistant: the end"))

    def test_a_barge_in_rewrites_the_bot_line_to_what_was_heard(self) -> None:
        memory = RealtimeMemory()
        memory.final_line("bot1", 1, False, "Hello there, how can I help")
        memory.final_line("bot2", 1, False, "Never heard")
        memory.bot_line_heard("bot1", "Hello there,")
        memory.bot_line_heard("bot2", "")
        memory.bot_line_heard("unknown", "ignored")
        self.assertEqual(memory.resume_context().splitlines()[1:], ["assistant: Hello there,"])

    def test_lines_without_an_item_id_are_each_kept(self) -> None:
        memory = RealtimeMemory()
        memory.final_line(None, 1, True, "one")
        memory.final_line(None, 2, True, "two")
        self.assertEqual(memory.resume_context().splitlines()[1:], ["caller: one", "caller: two"])

    def test_result_note_names_the_function_and_is_bounded(self) -> None:
        memory = RealtimeMemory()
        memory.tool_called("c1", "lookup_order")
        note = memory.result_note("c1", "y" * (HISTORY_CHARS + 10))
        self.assertIn("function call lookup_order made before", note)
        self.assertTrue(note.endswith("y" * HISTORY_CHARS))
        self.assertNotIn("y" * (HISTORY_CHARS + 1), note)
        self.assertIn("function call a function made before", memory.result_note("c2", "{}"))

    def test_tool_names_are_bounded(self) -> None:
        memory = RealtimeMemory()
        for n in range(TOOL_CALLS + 1):
            memory.tool_called(f"c{n}", f"tool{n}")
        self.assertIn("a function", memory.result_note("c0", "{}"))
        self.assertIn(f"tool{TOOL_CALLS}", memory.result_note(f"c{TOOL_CALLS}", "{}"))

    def test_held_results_are_taken_once_in_order(self) -> None:
        memory = RealtimeMemory()
        memory.hold_result("c1", "1")
        memory.hold_result("c2", "2")
        self.assertEqual(memory.take_held_results(), [("c1", "1"), ("c2", "2")])
        self.assertEqual(memory.take_held_results(), [])


class RetryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.retried: list[float] = []
        self.retries = ResponseRetries(self.clock, 2, 500, lambda: self.retried.append(self.clock.seconds()))

    def test_backoff_doubles_then_the_retries_run_out(self) -> None:
        self.assertEqual(self.retries.failed(), 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.retries.failed(), 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.retried, [0.5, 1.5])
        self.assertIsNone(self.retries.failed())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_completed_response_starts_the_count_again(self) -> None:
        self.retries.failed()
        self.retries.failed()
        self.retries.succeeded()
        self.assertEqual(self.retries.failed(), 0.5)

    def test_cancel_drops_the_pending_retry(self) -> None:
        self.retries.failed()
        self.retries.cancel()
        self.clock.advance(10)
        self.assertEqual(self.retried, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_new_failure_replaces_the_pending_retry(self) -> None:
        self.retries.failed()
        self.clock.advance(0.2)
        self.retries.failed()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0)
        self.assertEqual(self.retried, [1.2])


class InputTimelineTests(unittest.TestCase):
    def test_a_connection_starts_at_its_first_held_sample(self) -> None:
        timeline = InputTimeline(8)  # µ-law: 8 bytes a millisecond
        self.assertEqual(timeline.on_call(100), 100)
        timeline.bridged(8 * 1000)
        timeline.connection_starts(8 * 200)  # 200 ms held go out first
        self.assertEqual(timeline.offset_ms, 800)
        self.assertEqual(timeline.on_call(50), 850)
        self.assertIsNone(timeline.on_call(None))

    def test_audio_dropped_while_stalled_shifts_later_times(self) -> None:
        timeline = InputTimeline(8)
        timeline.stall_dropped(8 * 60)
        timeline.stall_dropped(8 * 40 + 3)
        timeline.stall_over()
        self.assertEqual(timeline.offset_ms, 100)
        timeline.stall_over()  # counted once
        self.assertEqual(timeline.offset_ms, 100)


class PartChunkFlushTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.flushed: list[float] = []
        self.flush = PartChunkFlush(self.clock, 100, lambda: self.flushed.append(self.clock.seconds()))

    def test_a_part_chunk_goes_a_chunk_after_its_first_frame(self) -> None:
        self.flush.audio_queued(True)
        self.clock.advance(0.06)
        self.flush.audio_queued(True)  # a later frame does not move the deadline
        self.clock.advance(0.04)
        self.assertEqual(self.flushed, [0.1])

    def test_a_filled_chunk_disarms_the_timer(self) -> None:
        self.flush.audio_queued(True)
        self.flush.audio_queued(False)
        self.clock.advance(1)
        self.assertEqual(self.flushed, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        self.flush.audio_queued(True)
        self.flush.cancel()
        self.clock.advance(1)
        self.assertEqual(self.flushed, [])


class CallerAudioChunkTests(unittest.TestCase):
    def test_without_a_chunk_every_frame_goes_as_it_arrives(self) -> None:
        chunks = CallerAudioChunks(0)
        self.assertEqual(chunks.add(b"abc"), [b"abc"])
        self.assertEqual(chunks.add(b""), [])
        self.assertFalse(chunks.pending)

    def test_audio_is_cut_into_whole_chunks_and_the_rest_waits(self) -> None:
        chunks = CallerAudioChunks(4)
        self.assertEqual(chunks.add(b"abc"), [])
        self.assertTrue(chunks.pending)
        self.assertEqual(chunks.add(b"defghij"), [b"abcd", b"efgh"])
        self.assertEqual(chunks.flush(), b"ij")
        self.assertFalse(chunks.pending)
        self.assertEqual(chunks.flush(), b"")

    def test_the_append_text_is_the_json_it_stands_for(self) -> None:
        self.assertEqual(json.loads(audio_append(b"\x00\xff", "c1_7")),
                         {"type": "input_audio_buffer.append", "audio": "AP8=", "event_id": "c1_7"})

    def test_the_resume_note_carries_the_context(self) -> None:
        self.assertTrue(resume_note("ctx").endswith("\n\nctx"))
        self.assertNotIn("\n", resume_note(""))
