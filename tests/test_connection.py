"""Unit tests of what every network backend session shares (mediaproxy/backends/connection.py),
on a ``task.Clock``: no socket is opened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import L16_16K, MULAW_8K
from mediaproxy.backends.connection import (
    AlwaysReading,
    BackendSocket,
    CallLog,
    HeldAudio,
    KeepAliveTimer,
    ReadyReporter,
    WriteBackpressure,
    backoff_redialer,
    hang_up,
    open_until_ready,
    refused_dial_reason,
)
from mediaproxy.backends.reconnect import HandshakeRejected
from mediaproxy.metrics import Metrics
from mediaproxy.testing.recording_listener import RecordingListener


@dataclass(frozen=True)
class Options:
    connect_timeout_seconds: float = 2.0
    reconnect_attempts: int = 2
    reconnect_backoff_ms: int = 500
    reconnect_max_backoff_ms: int = 800


class RedialerFromOptionsTests(TestCase):
    def test_timeout_backoff_and_attempts_come_from_the_options(self) -> None:
        clock = Clock()
        dials: list[float] = []
        gave_up: list[str] = []
        redials: list[None] = []

        def dial() -> Deferred[str]:
            dials.append(clock.seconds())
            return Deferred()  # never ready: each attempt times out

        redialer = backoff_redialer(clock, Options(), dial, on_up=lambda conn: None, on_give_up=gave_up.append,
                                    is_fatal=lambda f: None, on_redial=lambda: redials.append(None),
                                    random=lambda: 0.5)
        redialer.start()
        clock.advance(2.0)  # the attempt timeout, then 0.5 s backoff
        self.assertEqual(dials, [0.0])
        clock.advance(0.5)
        self.assertEqual(dials, [0.0, 2.5])
        clock.advance(2.0)
        clock.advance(0.8)  # doubled to 1.0 s, capped at 0.8 s
        self.assertEqual(dials, [0.0, 2.5, 4.5 + 0.8])
        self.assertEqual(len(redials), 2)
        clock.advance(2.0)
        self.assertEqual(len(gave_up), 1)
        self.assertIn("after 2 attempts", gave_up[0])
        self.assertIn("within 2 s", gave_up[0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_fatal_failure_gives_up_at_once(self) -> None:
        clock = Clock()
        gave_up: list[str] = []
        redialer = backoff_redialer(clock, Options(), lambda: _failed(HandshakeRejected(401, "Unauthorized")),
                                    on_up=lambda conn: None, on_give_up=gave_up.append,
                                    is_fatal=refused_dial_reason, on_redial=lambda: None)
        redialer.start()
        self.assertEqual(gave_up, ["backend refused the credentials (HTTP 401)"])
        self.assertEqual(clock.getDelayedCalls(), [])


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


class RefusedDialReasonTests(TestCase):
    def reason(self, error: Exception, **kwargs: str) -> str | None:
        return refused_dial_reason(Failure(error), **kwargs)

    def test_credentials_and_url_refusals_are_fatal(self) -> None:
        self.assertEqual(self.reason(HandshakeRejected(401, "Unauthorized")),
                         "backend refused the credentials (HTTP 401)")
        self.assertEqual(self.reason(HandshakeRejected(403, "Forbidden")),
                         "backend refused the credentials (HTTP 403)")
        self.assertEqual(self.reason(HandshakeRejected(404, "")), "backend URL not found (HTTP 404)")
        self.assertEqual(self.reason(HandshakeRejected(404, ""), not_found="backend URL or model"),
                         "backend URL or model not found (HTTP 404)")

    def test_anything_else_is_retried(self) -> None:
        self.assertIsNone(self.reason(HandshakeRejected(503, "Service Unavailable")))
        self.assertIsNone(self.reason(HandshakeRejected(429, "Too Many Requests")))
        self.assertIsNone(self.reason(ConnectionRefusedError()))


class RecordingSocket(BackendSocket):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []

    def dropConnection(self, abort: bool = False) -> None:
        self.actions.append(f"drop abort={abort}")

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        self.actions.append(f"close {code}")


class Owner:
    def __init__(self) -> None:
        self.closed: list[tuple[BackendSocket, int | None, str | None]] = []

    def connection_closed(self, proto: BackendSocket, code: int | None, reason: str | None) -> None:
        self.closed.append((proto, code, reason))


class BackendSocketTests(TestCase):
    def test_the_end_reaches_the_session_until_it_lets_go(self) -> None:
        owner = Owner()
        proto = RecordingSocket()
        proto.session = owner
        proto.link_closed(False, 1006, "gone")
        self.assertEqual(owner.closed, [(proto, 1006, "gone")])
        hang_up(proto, abort=False)
        self.assertIsNone(proto.session)
        proto.link_closed(True, 1000, None)
        self.assertEqual(len(owner.closed), 1)

    def test_hang_up_closes_or_aborts(self) -> None:
        closed, aborted = RecordingSocket(), RecordingSocket()
        hang_up(closed, abort=False)
        hang_up(aborted, abort=True)
        self.assertEqual(closed.actions, ["close 1000"])
        self.assertEqual(aborted.actions, ["drop abort=True"])


class OpenUntilReadyTests(TestCase):
    def setUp(self) -> None:
        self.opened_cancelled: list[None] = []
        self.opened: Deferred[RecordingSocket] = Deferred(lambda d: self.opened_cancelled.append(None))
        self.adopted: list[tuple[RecordingSocket, Deferred[RecordingSocket]]] = []
        self.abandoned: list[RecordingSocket] = []
        self.ready = open_until_ready(self.opened, lambda p, r: self.adopted.append((p, r)),
                                      self.abandoned.append)
        self.results: list[Any] = []
        self.ready.addBoth(self.results.append)

    def test_fires_when_the_session_says_ready(self) -> None:
        proto = RecordingSocket()
        self.opened.callback(proto)
        self.assertEqual(self.adopted, [(proto, self.ready)])
        self.assertEqual(self.results, [])  # open is not ready
        self.adopted[0][1].callback(proto)
        self.assertEqual(self.results, [proto])

    def test_a_websocket_that_does_not_open_fails_the_attempt(self) -> None:
        self.opened.errback(Failure(ConnectionRefusedError()))
        self.assertEqual(self.adopted, [])
        self.assertIsInstance(self.results[0], Failure)
        self.assertIsInstance(self.results[0].value, ConnectionRefusedError)

    def test_cancelled_while_opening_aborts_the_opening(self) -> None:
        self.ready.cancel()
        self.assertEqual(self.opened_cancelled, [None])
        self.assertEqual(self.abandoned, [])
        self.assertTrue(self.results[0].check(CancelledError))

    def test_cancelled_once_open_abandons_the_connection(self) -> None:
        proto = RecordingSocket()
        self.opened.callback(proto)
        self.ready.cancel()
        self.assertEqual(self.opened_cancelled, [])
        self.assertEqual(self.abandoned, [proto])
        self.assertTrue(self.results[0].check(CancelledError))


class ReadyReporterTests(TestCase):
    def test_each_attempt_is_timed_and_only_the_first_ready_is_reported(self) -> None:
        clock, metrics, listener = Clock(), Metrics(), RecordingListener()
        ready = ReadyReporter(clock, metrics, "openai", listener)
        ready.dialling()
        clock.advance(0.25)
        self.assertFalse(ready.ever_ready)
        self.assertTrue(ready.up())
        self.assertTrue(ready.ever_ready)
        clock.advance(60.0)
        ready.dialling()
        clock.advance(0.5)
        self.assertFalse(ready.up())  # a resumption: the bridge is not told
        self.assertEqual(listener.kinds(), ["ready"])

        def sample(name: str) -> float:
            return metrics.registry.get_sample_value(f"mediaproxy_backend_connect_seconds_{name}",
                                                     {"backend": "openai"}) or 0.0

        self.assertEqual(sample("count"), 2)
        self.assertAlmostEqual(sample("sum"), 0.75)


class HeldAudioTests(TestCase):
    def dropped(self, metrics: Metrics, reason: str) -> float:
        return metrics.registry.get_sample_value(
            "mediaproxy_frames_dropped_total", {"direction": "in", "reason": reason}) or 0.0

    def test_oldest_dropped_and_counted_in_whole_frames(self) -> None:
        metrics = Metrics()
        held = HeldAudio(MULAW_8K, 100, metrics)  # 800 bytes, 160-byte frames
        self.assertEqual(held.hold(bytes(range(200)) * 4, "backend_not_ready"), 0)  # exactly full
        self.assertEqual(len(held), 800)
        self.assertEqual(held.hold(b"\x01" * 100, "backend_not_ready"), 100)
        self.assertEqual(self.dropped(metrics, "backend_not_ready"), 0)  # not a whole frame yet
        self.assertEqual(held.hold(b"\x02" * 100, "backend_stalled"), 100)
        self.assertEqual(self.dropped(metrics, "backend_stalled"), 1)  # 200 bytes: one frame, 40 carried
        held.hold(b"\x03" * 120, "backend_not_ready")
        self.assertEqual(self.dropped(metrics, "backend_not_ready"), 1)  # 40 + 120
        self.assertEqual(held.take(), (bytes(range(200)) * 4)[320:] + b"\x01" * 100 + b"\x02" * 100 + b"\x03" * 120)
        self.assertEqual(len(held), 0)

    def test_frames_follow_the_format(self) -> None:
        metrics = Metrics()
        held = HeldAudio(L16_16K, 20, metrics)  # 640 bytes: one frame
        held.hold(b"\x00" * 640 * 3, "backend_not_ready")
        self.assertEqual(self.dropped(metrics, "backend_not_ready"), 2)


class WriteBackpressureTests(TestCase):
    def test_the_transport_pauses_and_resumes_the_writes(self) -> None:
        states: list[bool] = []
        proto = RecordingSocket()
        transport = StringTransport()
        proto.transport = transport
        WriteBackpressure.watch(proto, states.append)
        self.assertTrue(transport.streaming)
        transport.producer.pauseProducing()
        transport.producer.resumeProducing()
        transport.producer.stopProducing()
        self.assertEqual(states, [True, False])

    def test_no_transport_nothing_to_watch(self) -> None:
        proto = RecordingSocket()
        proto.transport = None
        WriteBackpressure.watch(proto, lambda paused: None)  # does not raise


class ClosingSession(AlwaysReading):
    def __init__(self) -> None:
        self.closes = 0

    def close(self) -> None:
        self.closes += 1


class AlwaysReadingTests(TestCase):
    def test_pausing_is_ignored_and_stopping_closes(self) -> None:
        session = ClosingSession()
        self.assertTrue(IPushProducer.providedBy(session))
        session.pauseProducing()
        session.resumeProducing()
        self.assertEqual(session.closes, 0)
        session.stopProducing()
        self.assertEqual(session.closes, 1)


class CallLogTests(TestCase):
    def test_fields_name_the_call_and_the_secrets_are_taken_out(self) -> None:
        events: list[dict[str, Any]] = []
        logger = Logger(namespace="test", observer=events.append)
        call_log = CallLog(logger, "CA1", "openai", ("sk-secret-key", "k", "token-123456"))
        call_log.log("warn", "closed: {reason}", reason="bad sk-secret-key and token-123456", code=4001)
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual((event["call_id"], event["backend"]), ("CA1", "openai"))
        self.assertEqual(event["reason"], "bad [api key] and [api key]")
        self.assertEqual(event["code"], 4001)
        # A secret too short to be one is left alone (it would only mangle the text).
        self.assertEqual(call_log.redact("keep"), "keep")
        self.assertEqual(call_log.redact("x sk-secret-key"), "x [api key]")


class KeepAliveTimerTests(TestCase):
    def test_polls_at_the_interval_until_stopped(self) -> None:
        clock = Clock()
        polls: list[float] = []
        timer = KeepAliveTimer(clock, 4.0, lambda: polls.append(clock.seconds()))
        timer.start()
        timer.start()  # once only
        clock.advance(4.0)
        clock.advance(4.0)
        self.assertEqual(polls, [4.0, 8.0])
        timer.stop()
        clock.advance(10.0)
        self.assertEqual(polls, [4.0, 8.0])
        self.assertEqual(clock.getDelayedCalls(), [])
        timer.start()
        clock.advance(4.0)
        self.assertEqual(polls, [4.0, 8.0, 22.0])
        timer.stop()

    def test_a_poll_may_stop_the_timer(self) -> None:
        clock = Clock()
        timer: KeepAliveTimer

        def poll() -> None:
            timer.stop()

        timer = KeepAliveTimer(clock, 1.0, poll)
        timer.start()
        clock.advance(1.0)
        self.assertEqual(clock.getDelayedCalls(), [])
