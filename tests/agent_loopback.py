"""A loopback scenario shared by the agent backends whose fakes stream answers in held, cuttable
chunks (:class:`~mediaproxy.testing.fake_ws_server.StreamedAnswers`: Deepgram, ElevenLabs), run
from their :class:`~tests.test_loopback_openai.TwilioCallersLoopback` suites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import inlineCallbacks

from mediaproxy.testing.fake_audio import LOUD_FRAME, pattern
from tests.test_loopback_openai import quiet_frames

LOUD = LOUD_FRAME["audio/pcmu"]
FRAME_BYTES = 160
"""A Twilio frame: 20 ms of PCMU."""


@inlineCallbacks
def mulaw_passes_through(case: Any, factory: Any, client: Any, conn: Any, frames_received: Callable[[], int]) -> Any:
    """A Twilio caller's PCMU reaches the fake's connection ``conn`` byte for byte, one message
    per platform frame (``frames_received`` counts them), and the fake's first answer on its
    first connection comes back byte-identical in exact 160-byte frames, whatever its chunks."""
    caller = quiet_frames(10, seed=1) + [LOUD] * 10 + quiet_frames(12, seed=2)
    client.send_audio(caller)
    expected = pattern(1000 * 8, 1)  # the fake's first answer on connection 0
    yield factory.when(lambda: len(client.audio()) >= len(expected))
    yield case.fake.when(lambda: len(conn.input_audio) >= len(caller) * FRAME_BYTES)
    case.assertEqual(bytes(conn.input_audio), b"".join(caller))
    case.assertEqual(frames_received(), len(caller))
    # Down: the irregular chunks arrive as exact 160-byte frames, byte-identical.
    case.assertTrue(all(len(payload) == FRAME_BYTES for _, payload in client.media))
    case.assertEqual(client.audio(), expected)


@inlineCallbacks
def barge_in_drops_the_cut_answer(case: Any) -> Any:
    """A Twilio (PCMU) caller talks over a 4 s answer held after 2 s, so that it is still in
    progress; three more chunks of it are "in flight" after the barge-in and must never be
    played: Twilio is cleared, nothing of the cut answer follows the clear, and the caller's next
    turn gets the next answer, whole."""
    case.fake.turn_audio = lambda conn, n, bpm: pattern(4000 * bpm, conn * 10 + n)
    case.fake.pause_after_ms = 2000
    case.fake.late_chunks = 3
    case.start_proxy()
    factory = case.call()
    client = yield factory.opened
    client.send_audio(quiet_frames(5, seed=1) + [LOUD] * 10 + quiet_frames(12, seed=2))
    yield case.fake.when(lambda: bool(case.fake.connections) and case.fake.connection(0).turn is not None
                         and bool(case.fake.connection(0).turn["paused"]))
    conn = case.fake.connection(0)
    yield factory.when(lambda: len(client.media) >= 20)
    seen = len(client.received)
    client.send_audio([LOUD])
    yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
    yield case.fake.when(lambda: conn.turn is None)
    clear_index = max(i for i, m in enumerate(client.received) if m["event"] == "clear")
    # A round trip after the clear proves everything before it was handled.
    client.send_audio(quiet_frames(1, seed=9))
    yield case.fake.when(lambda: len(conn.input_audio) >= len(client.sent_audio))
    case.assertEqual([m for m in client.received[clear_index + 1:] if m["event"] == "media"], [])
    case.assertEqual(client.audio(), conn.turns[0][: len(client.audio())])
    case.assertLess(len(client.audio()), 2000 * 8)
    case.assertEqual(case.metric("bargein_seconds_count"), 1)
    # The caller's new turn gets the next answer, whole.
    case.fake.pause_after_ms = None
    client.send_audio(quiet_frames(12, seed=3))
    before = len(client.audio())
    yield factory.when(lambda: len(client.audio()) >= before + 4000 * 8)
    case.assertEqual(client.audio()[before:], conn.turns[1])
    client.stop()
    yield factory.closed
