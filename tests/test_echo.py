"""The embedded echo backend, driven by task.Clock."""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mediaproxy.audio.format import ALAW_8K, L16_16K, MULAW_8K, AudioFormat
from mediaproxy.backends.base import CallInfo
from mediaproxy.backends.echo import EchoBackend, EchoOptions

LOUD = bytes([0x10, 0x90]) * 80  # 20 ms of loud µ-law
QUIET = b"\xff" * 160


class RecordingListener:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def backend_ready(self) -> None:
        self.events.append(("ready",))

    def backend_audio(self, response_id: str, data: bytes) -> None:
        self.events.append(("audio", response_id, data))

    def backend_response_done(self, response_id: str) -> None:
        self.events.append(("done", response_id))

    def backend_speech_started(self) -> None:
        self.events.append(("speech_started",))

    def backend_speech_stopped(self) -> None:
        self.events.append(("speech_stopped",))

    def backend_transcript(self, transcript: Any) -> None:
        self.events.append(("transcript", transcript.role, transcript.text))

    def backend_tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self.events.append(("tool_call", call_id, name))

    def backend_hangup(self, reason: str, variables: Any = None) -> None:
        self.events.append(("hangup", reason))

    def backend_failed(self, reason: str) -> None:
        self.events.append(("failed", reason))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def audio(self, response_id: str) -> bytes:
        return b"".join(e[2] for e in self.events if e[0] == "audio" and e[1] == response_id)


class EchoTestCase(SynchronousTestCase):
    def open(self, fmt: AudioFormat = MULAW_8K, **options: Any):  # type: ignore[no-untyped-def]
        self.clock = Clock()
        self.listener = RecordingListener()
        backend = EchoBackend("echo", EchoOptions(**options), self.clock)
        self.session = backend.open_session(CallInfo("CA1", "twilio"), self.listener, fmt)
        self.clock.advance(0)
        return self.session


class ParrotTests(EchoTestCase):
    def test_ready_then_utterance_replayed_in_one_irregular_burst(self) -> None:
        session = self.open(silence_ms=200)
        self.assertEqual(self.listener.kinds(), ["ready"])
        utterance = b"".join(bytes([0x10 + i % 8, 0x90]) * 80 for i in range(25))  # 500 ms of speech
        for i in range(0, len(utterance), 160):
            session.send_audio(utterance[i : i + 160])
        self.assertEqual(self.listener.kinds(), ["ready", "speech_started"])
        for _ in range(10):
            session.send_audio(QUIET)
        self.assertEqual(self.listener.kinds()[-1], "speech_stopped")
        self.clock.advance(0)  # delivered from the reactor, not inside send_audio
        chunks = [e[2] for e in self.listener.events if e[0] == "audio"]
        self.assertGreater(len({len(c) for c in chunks}), 1)  # irregular sizes
        self.assertEqual(self.listener.events[-1], ("done", "echo-1"))
        # The whole utterance comes back, followed by the quiet that ended it.
        self.assertEqual(self.listener.audio("echo-1"), utterance + QUIET * 10)

    def test_clicks_are_not_speech(self) -> None:
        session = self.open()
        for _ in range(20):
            session.send_audio(LOUD)  # one loud frame at a time ...
            session.send_audio(QUIET)  # ... never two in a row
        self.assertEqual(self.listener.kinds(), ["ready"])

    def test_speech_while_playing_is_reported_for_barge_in(self) -> None:
        session = self.open(silence_ms=200)
        for frame in [LOUD] * 10 + [QUIET] * 10 + [LOUD] * 3:
            session.send_audio(frame)
        self.assertEqual(self.listener.kinds().count("speech_started"), 2)

    def test_interrupted_response_is_not_delivered_further(self) -> None:
        session = self.open(silence_ms=200)
        session.pauseProducing()
        for frame in [LOUD] * 50 + [QUIET] * 10:
            session.send_audio(frame)
        self.clock.advance(0)
        self.assertNotIn("audio", self.listener.kinds())
        session.interrupt("echo-1", 0)
        session.resumeProducing()
        self.assertNotIn("audio", self.listener.kinds())

    def test_interrupting_keeps_no_state_per_response(self) -> None:
        """Interrupted responses leave nothing behind: a call of a thousand barge-ins holds no
        more than a call of one (a set of cancelled ids grew for the whole call once)."""
        def sizes(session: Any) -> dict[str, int]:
            return {name: len(value) for name, value in vars(session).items()
                    if isinstance(value, (set, dict, list, deque))}

        session = self.open(silence_ms=200)
        session.pauseProducing()  # replies stay queued, so each interrupt has something to drop
        for n in range(1, 1001):
            for frame in [LOUD] * 5 + [QUIET] * 10:
                session.send_audio(frame)
            session.interrupt(f"echo-{n}", 0)
            if n == 1:
                after_one = sizes(session)
        self.assertEqual(sizes(session), after_one)
        session.resumeProducing()
        self.assertNotIn("audio", self.listener.kinds())

    def test_pause_holds_delivery_and_resume_continues(self) -> None:
        session = self.open(silence_ms=200)
        self.assertTrue(verifyObject(IPushProducer, session))
        for frame in [LOUD] * 50 + [QUIET] * 10:
            session.send_audio(frame)
        session.pauseProducing()
        self.clock.advance(0)
        self.assertNotIn("audio", self.listener.kinds())
        session.resumeProducing()
        self.assertEqual(self.listener.audio("echo-1"), LOUD * 50 + QUIET * 10)

    def test_utterance_length_is_bounded(self) -> None:
        session = self.open(max_utterance_ms=1000)
        for _ in range(100):
            session.send_audio(LOUD)
        self.clock.advance(0)
        self.assertEqual(len(self.listener.audio("echo-1")), 8000)

    def test_other_formats(self) -> None:
        loud_l16 = (12000).to_bytes(2, "little", signed=True) * 320
        for fmt, loud in ((ALAW_8K, bytes([0x2A, 0xAA]) * 80), (L16_16K, loud_l16)):
            session = self.open(fmt, silence_ms=200)
            for frame in [loud] * 5 + [fmt.silence(len(loud))] * 10:
                session.send_audio(frame)
            self.clock.advance(0)
            self.assertEqual(self.listener.audio("echo-1")[: len(loud) * 5], loud * 5, fmt)

    def test_close_cancels_everything(self) -> None:
        session = self.open(silence_ms=200)
        for frame in [LOUD] * 10 + [QUIET] * 10:
            session.send_audio(frame)
        session.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1)
        self.assertNotIn("audio", self.listener.kinds())


class StreamModeTests(EchoTestCase):
    def test_audio_returns_after_delay(self) -> None:
        session = self.open(mode="stream", delay_ms=200)
        session.send_audio(b"\x01" * 160)
        self.clock.advance(0.1)
        session.send_audio(b"\x02" * 160)
        self.clock.advance(0.099)
        self.assertEqual(self.listener.audio("stream"), b"")
        self.clock.advance(0.001)
        self.assertEqual(self.listener.audio("stream"), b"\x01" * 160)
        self.clock.advance(0.1)
        self.assertEqual(self.listener.audio("stream"), b"\x01" * 160 + b"\x02" * 160)
        session.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_delay_is_immediate(self) -> None:
        session = self.open(mode="stream")
        session.send_audio(b"\x07" * 160)
        self.assertEqual(self.listener.audio("stream"), b"\x07" * 160)


class StreamEndTests(EchoTestCase):
    def test_stream_ends_after_silence_and_restarts_on_loud_audio(self) -> None:
        session = self.open(mode="stream", silence_ms=200)
        for _ in range(5):
            session.send_audio(LOUD)
        for _ in range(9):  # 180 ms of quiet: not yet
            session.send_audio(QUIET)
        self.assertNotIn("done", self.listener.kinds())
        session.send_audio(QUIET)  # 200 ms
        self.assertEqual(self.listener.events[-1], ("done", "stream"))
        self.assertEqual(self.listener.audio("stream"), LOUD * 5 + QUIET * 10)
        # Quiet between responses is not echoed; the next loud audio opens a new response.
        for _ in range(20):
            session.send_audio(QUIET)
        self.assertEqual(self.listener.events[-1], ("done", "stream"))
        session.send_audio(LOUD)
        self.assertEqual(self.listener.events[-1], ("audio", "stream-2", LOUD))
        for _ in range(10):
            session.send_audio(QUIET)
        self.assertEqual(self.listener.events[-1], ("done", "stream-2"))
        self.assertEqual(self.listener.kinds().count("done"), 2)

    def test_stream_end_follows_the_delayed_audio(self) -> None:
        session = self.open(mode="stream", silence_ms=100, delay_ms=300)
        session.send_audio(LOUD)
        for _ in range(5):
            session.send_audio(QUIET)
        self.assertEqual(self.listener.kinds(), ["ready"])
        self.clock.advance(0.3)
        self.assertEqual(self.listener.kinds(), ["ready"] + ["audio"] * 6 + ["done"])
        session.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
