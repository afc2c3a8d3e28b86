"""Loopback: the load generator's calls against the real service (echo parrot) on 127.0.0.1.

Three calls play a short talk/silence script; the figures computed after the run must add up:
every expected reply received in full (0 lost), every frame sent counted by the proxy, marks
echoed. Timing figures are not asserted (the machine may be busy); their presence is."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import TestCase

from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from mediaproxy.sim.load_calls import start_calls
from mediaproxy.sim.load_report import analyse, mirror_replies
from mediaproxy.sim.load_wire import StreamFrames
from mediaproxy.sim.script import expected_replies, synthetic_script
from mediaproxy.testing.ws_sink import SinkFactory
from tests.support import LoopbackService

SILENCE_MS = 200


def config(mode: str = "parrot") -> Any:
    return parse_config(
        "test.ini",
        {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": "echo"},
            "backend:echo": {"type": "echo", "silence_ms": str(SILENCE_MS), "mode": mode},
        },
        {},
    )


class LoadLoopbackTests(LoopbackService, TestCase):
    timeout = 60

    @inlineCallbacks
    def run_calls(self, calls: int, script: Any, mode: str = "parrot") -> Any:
        address, _ = yield self.start_service(MediaProxyService(config(mode), reactor, tune_gc=False))
        clock: Any = reactor
        _, records, done = start_calls(clock, lambda h, p, f: clock.connectTCP(h, p, f, 10), "127.0.0.1",
                                       address.port, "/twilio", StreamFrames(script.payloads), calls, 0,
                                       clock.seconds(), 0.2, "t")
        yield done
        yield self.stop_service()
        return records

    @inlineCallbacks
    def test_parrot_replies_all_received(self) -> Any:
        script = synthetic_script(2.0, talk_ms=400, gap_ms=1000, silence_ms=SILENCE_MS, tail_ms=1200)
        replies = expected_replies(script, silence_ms=SILENCE_MS)
        self.assertEqual(len(replies), 2)
        records = yield self.run_calls(3, script)
        stats, samples = analyse(records, replies, lead_ms=60)
        self.assertEqual([r.close_reason for r in records], ["stop"] * 3)
        self.assertEqual((stats.calls, stats.completed), (3, 3))
        self.assertEqual(stats.frames_sent, 3 * len(script.frames))
        self.assertEqual(self.metric("frames_total", direction="in", platform="twilio"), stats.frames_sent)
        self.assertEqual((stats.replies_expected, stats.replies_received), (6, 6))
        self.assertEqual(stats.frames_expected, 3 * sum(r.frames for r in replies))
        self.assertEqual((stats.frames_lost, stats.frames_extra, stats.frames_unexpected), (0, 0, 0))
        self.assertEqual(stats.frames_received, stats.frames_expected)
        self.assertEqual(self.metric("frames_total", direction="out", platform="twilio"), stats.messages_received)
        self.assertEqual((stats.odd_frames, stats.other_messages), (0, 0))
        self.assertGreater(stats.marks_received, 0)
        self.assertEqual(stats.marks_echoed, stats.marks_received)
        self.assertEqual(len(samples["reply_latency"]), 6)
        self.assertTrue(len(samples["lateness_grid"]) > 0)

    @inlineCallbacks
    def test_mirror_of_the_stream_echo(self) -> Any:
        script = synthetic_script(1.0, talk_ms=1000, gap_ms=0, silence_ms=SILENCE_MS, tail_ms=600)
        records = yield self.run_calls(2, script, mode="stream")
        stats, samples = analyse(records, mirror_replies(script), lead_ms=60, mirror=True)
        self.assertEqual((stats.completed, stats.replies_received), (2, 2))
        self.assertEqual((stats.frames_expected, stats.frames_lost), (100, 0))
        # The stream echoes the speech and the quiet up to silence_ms after it, then stops.
        self.assertEqual(stats.frames_extra, 2 * SILENCE_MS // 20)
        self.assertEqual(len(samples["lateness_grid"]), stats.messages_received)
        self.assertEqual([len(r.send_times) for r in records], [len(script.frames)] * 2)


class SinkLoopbackTests(TestCase):
    """The generator against the trivial sink (the setup that measures the generator's limit)."""

    timeout = 30

    @inlineCallbacks
    def test_calls_against_the_sink(self) -> Any:
        factory = SinkFactory(reply_ms=100)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ticker = LoopingCall(factory.tick)
        ticker.start(0.02, now=False)
        script = synthetic_script(0.6, talk_ms=200, gap_ms=200, silence_ms=SILENCE_MS, tail_ms=200)
        clock: Any = reactor
        _, records, done = start_calls(clock, lambda h, p, f: clock.connectTCP(h, p, f, 10), "127.0.0.1",
                                       port.getHost().port, "/twilio", StreamFrames(script.payloads), 2, 0,
                                       clock.seconds(), 0.1, "s")
        yield done
        ticker.stop()
        yield port.stopListening()
        self.assertEqual([r.close_reason for r in records], ["stop", "stop"])
        self.assertEqual(factory.stats["connections"], 2)
        self.assertEqual(factory.stats["closes"], 2)
        # connected + start + every media frame + stop, and any mark echoes.
        sent = sum(r.frames_sent + 3 + r.marks_echoed for r in records)
        self.assertEqual(factory.stats["text_frames"], sent)
        self.assertEqual({s for r in records for s in r.sizes}, {800})
