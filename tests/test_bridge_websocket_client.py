"""CallBridge + the WebSocket platform's session + the playout on a ``task.Clock``: bot audio
leaves paced at real time plus the lead, in 20 ms binary frames with marks between them; a
barge-in sends ``clear`` at once; the client's ``pause`` stops the sending while the playout keeps
the audio (dropping beyond ``max_buffer_ms``, counted) and ``resume`` restarts it where it was."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import PlayoutSettings
from mediaproxy.platforms import websocket_client as ws
from tests.support import BridgedCall

LEAD_MS = 60
RATE = 16000
BYTES_PER_MS = RATE // 1000 * 2


def audio(ms: int, seed: int = 1) -> bytes:
    return bytes((seed * 31 + i * 7 + (i >> 9)) % 251 for i in range(ms * BYTES_PER_MS))


class Fixture(BridgedCall):
    """Mixed into a SynchronousTestCase: a started call on a real bridge, and its helpers."""

    max_buffer_ms = 30000

    def setUp(self) -> None:
        start = {"type": "start", "call_id": "c1", "format": {"encoding": "l16", "rate_hz": RATE}}
        self.start_bridged_call(ws.new_session(ws.WebSocketClientOptions()), [json.dumps(start)], platform="browser",
                                settings=PlayoutSettings(lead_ms=LEAD_MS, max_buffer_ms=self.max_buffer_ms))

    def receive(self, message: dict[str, Any] | bytes) -> None:
        if isinstance(message, bytes):
            events = self.session.receive_binary(message)
        else:
            events = self.session.receive_text(json.dumps(message))
        self.bridge.handle(events)
        self.leg.flush()

    def marks(self) -> list[str]:
        return [m["name"] for _, m in self.leg.sent if isinstance(m, dict) and m["type"] == "mark"]

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value("mediaproxy_" + name, labels) or 0.0


class BridgeTests(Fixture, SynchronousTestCase):
    def test_paced_at_real_time(self) -> None:
        reply = audio(2000)
        start = self.clock.seconds()
        self.bridge.backend_audio("r1", reply)
        self.bridge.backend_response_done("r1")
        self.run_ms(2600)
        media = self.media()
        self.assertEqual(b"".join(p for _, p in media), reply)
        self.assertEqual({len(p) for _, p in media}, {20 * BYTES_PER_MS})
        times_ms = [round((t - start) * 1000, 6) for t, _ in media]
        self.assertEqual(times_ms, [float(max(0, 20 * k - LEAD_MS)) for k in range(len(media))])
        self.assertTrue(self.marks())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_barge_in_clears_at_once(self) -> None:
        self.bridge.backend_audio("r1", audio(3000))
        self.run_ms(400)
        echoed = [n for n in self.marks() if int(n.partition(":")[2]) <= 300]
        for name in echoed:
            self.receive({"type": "mark", "name": name})
        before = len(self.leg.sent)
        now = self.clock.seconds()
        self.bridge.backend_speech_started()
        barge = self.leg.sent[before:]
        self.assertEqual(barge, [(now, {"type": "clear"})])
        self.run_ms(3000)
        self.assertEqual(len(self.leg.sent), before + 1)  # nothing of the dropped reply follows
        [(response, played_ms)] = self.backend_session.interrupts
        self.assertEqual(response, "r1")
        self.assertLessEqual(played_ms, 400)
        self.assertGreaterEqual(played_ms, max(int(n.partition(":")[2]) for n in echoed))

    def test_pause_keeps_the_audio_and_resume_sends_it(self) -> None:
        reply = audio(1000)
        self.bridge.backend_audio("r1", reply)
        self.bridge.backend_response_done("r1")
        self.run_ms(200)
        sent_before = len(self.media())
        self.receive({"type": "pause"})
        self.receive({"type": "pause"})  # once per pause
        self.assertEqual(self.metric("flow_pauses_total", leg="platform"), 1)
        self.run_ms(5000)
        self.assertEqual(len(self.media()), sent_before)  # nothing sent while paused
        self.assertEqual(self.clock.getDelayedCalls(), [])  # and the paused call left the clock
        resumed_at = self.clock.seconds()
        self.receive({"type": "resume"})
        self.run_ms(1500)
        media = self.media()
        self.assertEqual(b"".join(p for _, p in media), reply)  # every byte, in order
        # The rest starts a new spurt at once, paced again (the lead's worth first).
        later = [round((t - resumed_at) * 1000, 6) for t, _ in media[sent_before:]]
        self.assertEqual(later[:4], [0.0, 0.0, 0.0, 0.0])
        self.assertEqual(later[4], 20.0)
        self.assertEqual(self.metric("frames_dropped_total", direction="out", reason="overflow"), 0)

    def test_barge_in_while_paused(self) -> None:
        self.bridge.backend_audio("r1", audio(1000))
        self.run_ms(100)
        self.receive({"type": "pause"})
        self.bridge.backend_speech_started()
        self.assertEqual(self.leg.sent[-1][1], {"type": "clear"})
        self.receive({"type": "resume"})
        before = len(self.media())
        self.run_ms(1000)
        self.assertEqual(len(self.media()), before)  # the cut reply stays cut

    def test_transport_resume_does_not_lift_the_clients_pause(self) -> None:
        self.bridge.backend_audio("r1", audio(1000))
        self.run_ms(100)
        playout = self.bridge.playout
        assert playout is not None
        playout.pauseProducing()  # the socket filled up
        self.receive({"type": "pause"})
        playout.resumeProducing()  # the socket drained
        before = len(self.media())
        self.run_ms(500)
        self.assertEqual(len(self.media()), before)
        self.receive({"type": "resume"})
        self.run_ms(100)
        self.assertGreater(len(self.media()), before)

    def test_dtmf_and_caller_audio_reach_the_backend(self) -> None:
        frame = audio(20, seed=5)
        self.receive(frame)
        self.receive({"type": "dtmf", "digits": "7#"})
        self.assertEqual(bytes(self.backend_session.audio), frame)
        self.assertEqual(self.backend_session.dtmf, ["7"])  # "#" ends the entry

    def test_protocol_violation_ends_the_call(self) -> None:
        self.receive({"type": "dtmf", "digits": "x"})
        self.assertTrue(self.leg.hung_up)
        self.assertEqual(self.leg.sent[-1][1]["reason"], "wrong_type")
        self.assertEqual(self.metric("protocol_errors_total", platform="browser", kind="wrong_type"), 1)
        self.assertEqual(self.metric("calls_total", platform="browser", outcome="protocol_error"), 1)

    def test_unknown_type_is_counted(self) -> None:
        self.receive({"type": "newThing"})
        self.assertFalse(self.leg.hung_up)
        self.assertEqual(self.metric("protocol_errors_total", platform="browser", kind="unknown_type"), 1)


class PausedOverflowTests(Fixture, SynchronousTestCase):
    """While paused the queue stays bounded by ``max_buffer_ms``: the rest is dropped, counted."""

    max_buffer_ms = 1000

    def test_overflow_while_paused(self) -> None:
        t = self
        t.receive({"type": "pause"})
        reply = audio(3000)
        t.bridge.backend_audio("r1", reply)
        t.bridge.backend_response_done("r1")
        t.run_ms(2000)
        self.assertEqual(t.media(), [])
        self.assertEqual(t.metric("frames_dropped_total", direction="out", reason="overflow"), 100)  # 2 s of 20 ms
        t.receive({"type": "resume"})
        t.run_ms(2000)
        self.assertEqual(b"".join(p for _, p in t.media()), reply[: 1000 * BYTES_PER_MS])  # an exact prefix
