"""CallBridge + the Telnyx, Plivo and Exotel sessions + the playout on a ``task.Clock``: bot audio
leaves paced at real time plus the ``[playout] lead_ms`` cushion, in the platform's packets, with
marks (checkpoints) between them; a barge-in sends the platform's clear at once, drops the queue
and tells the backend what the caller heard, measured from the mark echoes."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import PlayoutSettings
from mediaproxy.platforms import exotel, plivo, telnyx
from mediaproxy.platforms.base import PlatformSession
from tests.cousins import EXOTEL, PLIVO, TELNYX, Dialect, text
from tests.support import BridgedCall

LEAD_MS = 60


def audio(ms: int, dialect: Dialect, seed: int = 1) -> bytes:
    return bytes((seed * 31 + i * 7 + (i >> 9)) % 251 for i in range(dialect.fmt.bytes_for_ms(ms)))


class BridgeContract(BridgedCall):
    """Mixed into a SynchronousTestCase: ``dialect`` and ``make`` set."""

    dialect: Dialect
    assertEqual: Any
    assertLessEqual: Any
    assertGreaterEqual: Any
    assertTrue: Any

    def make(self) -> PlatformSession:
        raise NotImplementedError

    def setUp(self) -> None:
        self.start_bridged_call(self.make(), [text(m) for m in self.dialect.opening()], platform=self.dialect.name,
                                settings=PlayoutSettings(lead_ms=LEAD_MS))
        self.packet_ms = self.session.capabilities.packet_ms

    def receive(self, message: dict[str, Any]) -> None:
        self.receive_frame(text(message))

    def media(self) -> list[tuple[float, bytes]]:
        return [(t, self.dialect.payload_of(m)) for t, m in self.leg.sent if m["event"] == self.dialect.media_event]

    def test_paced_at_real_time(self) -> None:
        reply = audio(2000, self.dialect)
        start = self.clock.seconds()
        self.bridge.backend_audio("r1", reply)
        self.bridge.backend_response_done("r1")
        self.run_ms(2600)
        media = self.media()
        self.assertEqual(b"".join(p for _, p in media), reply)
        self.assertEqual({len(p) for _, p in media}, {self.dialect.fmt.bytes_for_ms(self.packet_ms)})
        times_ms = [round((t - start) * 1000, 6) for t, _ in media]
        self.assertEqual(times_ms, [float(max(0, self.packet_ms * k - LEAD_MS)) for k in range(len(media))])
        self.assertTrue(any(m["event"] == self.dialect.mark_event for _, m in self.leg.sent))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_barge_in_clears_at_once(self) -> None:
        self.bridge.backend_audio("r1", audio(3000, self.dialect))
        self.run_ms(400)
        marks = [self.dialect.mark_name(m) for _, m in self.leg.sent if m["event"] == self.dialect.mark_event]
        # The vendor played what came before the first marks: echo them.
        echoed = [n for n in marks if int(n.partition(":")[2]) <= 300]
        for name in echoed:
            self.receive(self.dialect.mark_echo(name))
        before = len(self.leg.sent)
        now = self.clock.seconds()
        self.bridge.backend_speech_started()
        barge = self.leg.sent[before:]
        self.assertEqual([m["event"] for _, m in barge], [self.dialect.flush_event])
        self.assertEqual({t for t, _ in barge}, {now})
        self.run_ms(3000)
        self.assertEqual(len(self.leg.sent), before + 1)  # nothing of the dropped reply follows
        [(response, played_ms)] = self.backend_session.interrupts
        self.assertEqual(response, "r1")
        sent_ms = len(self.media()) * self.packet_ms
        self.assertLessEqual(played_ms, min(sent_ms, 400))
        self.assertGreaterEqual(played_ms, max(int(n.partition(":")[2]) for n in echoed) if echoed else 0)
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_bargein_seconds_count"), 1)

    def test_dtmf_reaches_the_backend(self) -> None:
        self.receive(self.dialect.dtmf("7#"))
        self.assertEqual(self.backend_session.dtmf, ["7"])  # "#" ends the entry

    def test_caller_audio_reaches_the_backend(self) -> None:
        frame = audio(20, self.dialect, seed=5)
        self.receive(self.dialect.media(frame))
        self.assertEqual(bytes(self.backend_session.audio), frame)


class TelnyxBridgeTests(BridgeContract, SynchronousTestCase):
    dialect = TELNYX

    def make(self) -> PlatformSession:
        return telnyx.new_session(telnyx.TelnyxOptions())


class PlivoBridgeTests(BridgeContract, SynchronousTestCase):
    dialect = PLIVO

    def make(self) -> PlatformSession:
        return plivo.new_session(plivo.PlivoOptions())


class ExotelBridgeTests(BridgeContract, SynchronousTestCase):
    dialect = EXOTEL

    def make(self) -> PlatformSession:
        return exotel.new_session(exotel.ExotelOptions())
