"""CallBridge + the Vonage and jambonz sessions + the playout on a ``task.Clock``: bot audio
leaves as binary frames of exactly 20 ms, paced at real time plus the ``[playout] lead_ms``
cushion, with marks (Vonage ``notify``, jambonz ``mark``) between them; a barge-in sends the
platform's clear (Vonage ``clear``, jambonz ``killAudio``) at once, drops the queue and tells the
backend what the caller heard, measured from the mark echoes."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import PlayoutSettings
from mediaproxy.platforms import jambonz, vonage
from mediaproxy.platforms.base import PlatformSession
from tests.binary_dialects import JAMBONZ_8K, JAMBONZ_16K, VONAGE_8K, VONAGE_16K, BinaryDialect, text
from tests.support import BridgedCall

LEAD_MS = 60


def audio(ms: int, dialect: BinaryDialect, seed: int = 1) -> bytes:
    return bytes((seed * 31 + i * 7 + (i >> 9)) % 251 for i in range(dialect.fmt.bytes_for_ms(ms)))


class BinaryBridgeContract(BridgedCall):
    dialect: BinaryDialect
    assertEqual: Any
    assertLessEqual: Any
    assertGreaterEqual: Any
    assertTrue: Any

    def make(self) -> PlatformSession:
        raise NotImplementedError

    def setUp(self) -> None:
        self.start_bridged_call(self.make(), [text(self.dialect.opening())], platform=self.dialect.name,
                                settings=PlayoutSettings(lead_ms=LEAD_MS))

    def receive(self, message: dict[str, Any]) -> None:
        self.receive_frame(text(message))

    def controls(self, since: int = 0) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.leg.sent[since:] if not isinstance(m, bytes)]

    def test_paced_at_real_time_in_exact_frames(self) -> None:
        reply = audio(2010, self.dialect)  # not a whole number of frames: the tail is padded
        start = self.clock.seconds()
        self.bridge.backend_audio("r1", reply)
        self.bridge.backend_response_done("r1")
        self.run_ms(2600)
        media = self.media()
        frame_bytes = self.dialect.fmt.bytes_for_ms(20)
        self.assertEqual({len(p) for _, p in media}, {frame_bytes})
        self.assertEqual(b"".join(p for _, p in media)[:len(reply)], reply)
        self.assertEqual(len(media), 101)
        times_ms = [round((t - start) * 1000, 6) for t, _ in media]
        self.assertEqual(times_ms, [float(max(0, 20 * k - LEAD_MS)) for k in range(len(media))])
        self.assertTrue(any(self.dialect.kind_of(m) == "mark" for _, m in self.controls()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_barge_in_clears_at_once(self) -> None:
        self.bridge.backend_audio("r1", audio(3000, self.dialect))
        self.run_ms(400)
        marks = [self.dialect.mark_name(m) for _, m in self.controls() if self.dialect.kind_of(m) == "mark"]
        echoed = [n for n in marks if int(n.partition(":")[2]) <= 300]
        for name in echoed:
            self.receive(self.dialect.mark_echo(name))
        before = len(self.leg.sent)
        now = self.clock.seconds()
        self.bridge.backend_speech_started()
        barge = self.leg.sent[before:]
        self.assertEqual([self.dialect.kind_of(m) for _, m in barge], ["clear"])
        self.assertEqual({t for t, _ in barge}, {now})
        self.run_ms(3000)
        self.assertEqual(len(self.leg.sent), before + 1)  # nothing of the dropped reply follows
        [(response, played_ms)] = self.backend_session.interrupts
        self.assertEqual(response, "r1")
        sent_ms = len(self.media()) * 20
        self.assertLessEqual(played_ms, min(sent_ms, 400))
        self.assertGreaterEqual(played_ms, max(int(n.partition(":")[2]) for n in echoed))
        self.assertEqual(self.metrics.registry.get_sample_value("mediaproxy_bargein_seconds_count"), 1)

    def test_dtmf_reaches_the_backend(self) -> None:
        self.receive(self.dialect.dtmf("7"))
        self.receive(self.dialect.dtmf("#"))
        self.assertEqual(self.backend_session.dtmf, ["7"])  # "#" ends the entry

    def test_caller_audio_reaches_the_backend(self) -> None:
        frame = audio(20, self.dialect, seed=5)
        self.bridge.handle(self.session.receive_binary(frame))
        self.assertEqual(bytes(self.backend_session.audio), frame)


class VonageBridgeTests(BinaryBridgeContract, SynchronousTestCase):
    dialect = VONAGE_16K

    def make(self) -> PlatformSession:
        return vonage.new_session(vonage.VonageOptions())


class Vonage8kBridgeTests(VonageBridgeTests):
    dialect = VONAGE_8K


class JambonzBridgeTests(BinaryBridgeContract, SynchronousTestCase):
    dialect = JAMBONZ_8K

    def make(self) -> PlatformSession:
        return jambonz.new_session(jambonz.JambonzOptions())


class Jambonz16kBridgeTests(JambonzBridgeTests):
    dialect = JAMBONZ_16K
