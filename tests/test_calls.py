"""The call lifecycle on a ``task.Clock``: the registry's admission, hold for resume, take-over
and drain, and what the bridge writes to the log."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.calls import CallContext, CallRegistry, Endpoint, Outcome
from mediaproxy.config import PlayoutSettings
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.audiocodes import AUDIOCODES, AudioCodesOptions
from mediaproxy.platforms.twilio import TWILIO, TwilioOptions
from mediaproxy.playout import PlayoutClock
from mediaproxy.transcripts import Transcript
from tests.support import RecordingBackend, RecordingLeg, make_bridge


def twilio_start(call_sid: str = "CA1") -> str:
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": {
        "streamSid": "MZ1", "accountSid": "AC1", "callSid": call_sid, "tracks": ["inbound"],
        "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


class Fixture:
    def __init__(self, max_calls: int = 2) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        context = CallContext(self.clock, PlayoutClock(self.clock, 20, self.metrics), self.metrics, PlayoutSettings())
        self.registry = CallRegistry(context, max_calls)
        self.backend = RecordingBackend()
        self.twilio = Endpoint("twilio", TWILIO, TwilioOptions(), self.backend)
        self.audiocodes = Endpoint("audiocodes", AUDIOCODES, AudioCodesOptions(resume_seconds=5), self.backend)

    def connect(self, endpoint: Endpoint) -> RecordingLeg:
        leg = RecordingLeg(self.clock, endpoint.platform.new_session(endpoint.options, ()))
        leg.call = self.registry.connect(leg, endpoint)
        return leg

    def receive(self, leg: RecordingLeg, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        leg.call.handle(leg.session.receive_text(text))
        leg.flush()

    def audiocodes_call(self, conversation: str = "conv-1") -> RecordingLeg:
        leg = self.connect(self.audiocodes)
        self.receive(leg, {"type": "session.initiate", "conversationId": conversation,
                           "supportedMediaFormats": ["raw/mulaw"]})
        self.receive(leg, {"type": "activities", "conversationId": conversation,
                           "activities": [{"type": "event", "name": "start"}]})
        return leg

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value("mediaproxy_" + name, labels) or 0.0


class AdmissionTests(SynchronousTestCase):
    def test_refusal_reasons(self) -> None:
        f = Fixture(max_calls=1)
        self.assertIsNone(f.registry.refusal())
        f.connect(f.twilio)
        self.assertEqual(f.registry.refusal(), "at capacity (1 calls)")
        f.registry.draining = True
        self.assertEqual(f.registry.refusal(), "draining: not accepting new calls")

    def test_in_band_refusal_over_capacity(self) -> None:
        f = Fixture(max_calls=1)
        f.connect(f.twilio)
        leg = f.connect(f.audiocodes)
        self.receive_initiate(f, leg)
        self.assertEqual([m for _, m in leg.sent], [{"type": "session.error", "reason": "no capacity (1 calls)"}])

    def receive_initiate(self, f: Fixture, leg: RecordingLeg) -> None:
        f.receive(leg, {"type": "session.initiate", "conversationId": "c", "supportedMediaFormats": ["raw/mulaw"]})

    def test_a_lost_connection_ends_its_call(self) -> None:
        f = Fixture()
        leg = f.connect(f.twilio)
        f.receive(leg, twilio_start())
        bridge = leg.call
        f.registry.disconnect(leg)
        self.assertEqual(bridge.outcome, Outcome.DISCONNECTED)
        self.assertEqual(f.registry.connected_calls(), [])
        self.assertEqual(f.sample("calls_total", platform="twilio", outcome="disconnected"), 1)


class ResumeTests(SynchronousTestCase):
    def test_held_for_the_grace_period_then_ended(self) -> None:
        f = Fixture()
        leg = f.audiocodes_call()
        bridge = leg.call
        f.registry.disconnect(leg)
        self.assertEqual(list(f.registry.held_calls()), [("audiocodes", "conv-1")])
        self.assertIsNone(bridge.outcome)
        f.clock.advance(4.999)
        self.assertIsNone(bridge.outcome)
        f.clock.advance(0.001)
        self.assertEqual(bridge.outcome, Outcome.DISCONNECTED)
        self.assertEqual(f.registry.held_calls(), {})
        self.assertEqual(f.sample("call_resumes_total", platform="audiocodes", outcome="expired"), 1)
        self.assertEqual(f.clock.getDelayedCalls(), [])

    def test_resume_moves_the_call_and_its_session(self) -> None:
        f = Fixture()
        old = f.audiocodes_call()
        bridge, session = old.call, old.session
        f.registry.disconnect(old)
        new = f.connect(f.audiocodes)
        f.receive(new, {"type": "session.resume", "conversationId": "conv-1"})
        self.assertIs(new.call, bridge)
        self.assertIs(bridge.leg, new)
        self.assertIs(new.session, session, "the call's own session keeps its protocol state")
        self.assertEqual([m for _, m in new.sent], [{"type": "session.accepted"}])
        self.assertIs(new.producer, bridge.playout)
        self.assertEqual(f.registry.held_calls(), {})
        self.assertEqual(f.clock.getDelayedCalls(), [], "the grace timer is cancelled")
        self.assertEqual(f.sample("call_resumes_total", platform="audiocodes", outcome="resumed"), 1)

    def test_resume_takes_the_call_from_a_connection_that_still_looks_open(self) -> None:
        f = Fixture()
        stale = f.audiocodes_call()
        bridge = stale.call
        new = f.connect(f.audiocodes)
        f.receive(new, {"type": "session.resume", "conversationId": "conv-1"})
        self.assertTrue(stale.given_up)
        self.assertIs(new.call, bridge)
        f.registry.disconnect(stale)  # the dropped socket's close arrives later: no effect
        self.assertIsNone(bridge.outcome)
        self.assertEqual(f.registry.connected_calls(), [bridge])

    def test_unknown_resume_is_refused(self) -> None:
        f = Fixture()
        new = f.connect(f.audiocodes)
        f.receive(new, {"type": "session.resume", "conversationId": "nobody"})
        self.assertEqual([m["type"] for _, m in new.sent], ["session.error"])


class DrainTests(SynchronousTestCase):
    def test_drain_lets_calls_run_then_ends_them_the_platforms_way(self) -> None:
        f = Fixture()
        twilio = f.connect(f.twilio)
        f.receive(twilio, twilio_start())
        audiocodes = f.audiocodes_call()
        done = f.registry.drain(30)
        self.assertTrue(f.registry.draining)
        f.clock.advance(29.9)
        self.assertFalse(done.called)
        self.assertFalse(twilio.hung_up)
        f.clock.advance(0.1)
        self.assertTrue(twilio.hung_up and audiocodes.hung_up)
        self.assertEqual(twilio.call.outcome, Outcome.DRAINED)
        hangup = [m for _, m in audiocodes.sent if m["type"] == "activities"][-1]
        self.assertEqual(hangup["activities"][0]["name"], "hangup")
        self.assertFalse(done.called, "connections are still open until their sockets close")
        f.registry.disconnect(twilio)
        f.registry.disconnect(audiocodes)
        self.assertTrue(done.called)
        self.assertEqual(f.sample("calls_total", platform="twilio", outcome="drained"), 1)

    def test_drain_of_an_idle_registry_fires_at_once_and_arms_nothing(self) -> None:
        f = Fixture()
        self.assertTrue(f.registry.drain(30).called)
        self.assertEqual(f.clock.getDelayedCalls(), [])

    def test_drain_ends_held_calls(self) -> None:
        f = Fixture()
        leg = f.audiocodes_call()
        bridge = leg.call
        f.registry.disconnect(leg)
        done = f.registry.drain(0)
        f.clock.advance(0)
        self.assertEqual(bridge.outcome, Outcome.DRAINED)
        self.assertTrue(done.called)
        self.assertEqual(f.clock.getDelayedCalls(), [])


class TranscriptLogTests(SynchronousTestCase):
    """Transcripts are personal data: logged only when the operator opts in, and then once."""

    def transcript_events(self, log_transcripts: bool) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        session = TWILIO.new_session(TwilioOptions(), ())
        leg = RecordingLeg(clock, session)
        bridge = make_bridge(leg, RecordingBackend(), clock, log_transcripts=log_transcripts)
        bridge.handle(session.receive_text(twilio_start()))
        bridge.backend_transcript(Transcript("caller", "my card number is 4111 1111", True))
        bridge.backend_transcript(Transcript("bot", "thank you", False))
        bridge.end(Outcome.COMPLETED)
        # Not the timestamps: a log_time such as 1796125079.9341116 holds "4111" too.
        shown = [(e, repr({k: v for k, v in e.items() if k not in ("log_time", "time")})) for e in events]
        return [e for e, text in shown if "4111" in text or "thank you" in text]

    def test_not_logged_by_default(self) -> None:
        self.assertEqual(self.transcript_events(False), [])

    def test_logged_once_when_opted_in(self) -> None:
        (event,) = self.transcript_events(True)
        self.assertEqual((event["role"], event["text"]), ("caller", "my card number is 4111 1111"))


class LogSafetyTests(SynchronousTestCase):
    def test_peer_text_with_a_lone_surrogate_is_logged_escaped(self) -> None:
        from mediaproxy.calls.context import loggable

        self.assertEqual(loggable("CA\ud800x"), "CA\\ud800x")
        self.assertEqual(len(loggable("x" * 1000)), 200)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        session = TWILIO.new_session(TwilioOptions(), ())
        leg = RecordingLeg(clock, session)
        bridge = make_bridge(leg, RecordingBackend(), clock)
        bridge.handle(session.receive_text(twilio_start("CA\ud800")))  # JSON carries it as an escape
        bridge.end(Outcome.COMPLETED, "bye \ud800")
        for event in events:
            for value in event.values():
                if isinstance(value, str):
                    value.encode("utf-8")  # raises on a lone surrogate
        self.assertEqual(bridge.call_id, "CA\ud800", "the id itself is kept as sent (resume matches on it)")
