"""CallBridge + the Asterisk and FreeSWITCH sessions + the playout on a ``task.Clock``.

Asterisk: bot audio leaves as binary frames of exactly the optimal frame size, paced at real
time plus the ``[playout] lead_ms`` cushion, with ``MARK_MEDIA`` between them on JSON calls; a
barge-in sends ``FLUSH_MEDIA`` at once, drops the queue and tells the backend what the caller
heard (from the ``MEDIA_MARK_PROCESSED`` echoes); ``MEDIA_XOFF`` stops the sending with nothing
lost and ``MEDIA_XON`` restarts it. FreeSWITCH: ``streamAudio`` messages of ``packet_ms``, at most
one frame ahead of real time (no flush); a barge-in sends ``killAudio`` and nothing of the dropped
reply follows."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import PlayoutSettings
from mediaproxy.platforms import asterisk, freeswitch
from mediaproxy.platforms.base import PlatformSession
from tests.pbx_dialects import (
    ASTERISK_SLIN16_JSON,
    ASTERISK_SLIN_PLAIN,
    ASTERISK_ULAW_JSON,
    FREESWITCH_8K,
    FREESWITCH_16K,
    AsteriskDialect,
    FreeswitchDialect,
)
from tests.support import BridgedCall, RecordingLeg

LEAD_MS = 60


class RawLeg(RecordingLeg):
    """Records text frames as sent (Asterisk's plain-text commands are not JSON)."""

    def flush(self) -> None:
        self.flushes += 1
        now = self.clock.seconds()
        self.sent.extend((now, item) for item in self.session.take_output())


def audio(ms: int, fmt: Any, seed: int = 1) -> bytes:
    return bytes((seed * 31 + i * 7 + (i >> 9)) % 251 for i in range(fmt.bytes_for_ms(ms)))


class PbxBridge(BridgedCall):
    assertEqual: Any
    assertTrue: Any
    assertGreater: Any
    assertLessEqual: Any
    assertGreaterEqual: Any

    def start_bridge(self, session: PlatformSession, opening: str, platform: str) -> None:
        self.start_bridged_call(session, [opening], platform=platform, settings=PlayoutSettings(lead_ms=LEAD_MS),
                                leg_type=RawLeg)

    def receive(self, message: str) -> None:
        self.receive_frame(message)

    def texts(self, since: int = 0) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.leg.sent[since:] if isinstance(m, str)]


class AsteriskBridgeTests(PbxBridge, SynchronousTestCase):
    dialect: AsteriskDialect = ASTERISK_SLIN16_JSON

    def setUp(self) -> None:
        self.start_bridge(asterisk.new_session(asterisk.AsteriskOptions()), self.dialect.media_start(), "asterisk")

    def commands(self, since: int = 0) -> list[tuple[str, str | None]]:
        return [self.dialect.command(m) for _, m in self.texts(since)]

    def test_paced_at_real_time_in_exact_frames(self) -> None:
        fmt = self.dialect.fmt
        reply = audio(2010, fmt)  # not a whole number of frames: the tail is padded
        start = self.clock.seconds()
        self.bridge.backend_audio("r1", reply)
        self.bridge.backend_response_done("r1")
        self.run_ms(2600)
        media = self.media()
        self.assertEqual({len(p) for _, p in media}, {fmt.bytes_for_ms(20)})
        self.assertEqual(b"".join(p for _, p in media)[:len(reply)], reply)
        self.assertEqual(len(media), 101)
        times_ms = [round((t - start) * 1000, 6) for t, _ in media]
        self.assertEqual(times_ms, [float(max(0, 20 * k - LEAD_MS)) for k in range(len(media))])
        marks = [c for c in self.commands() if c[0] == "MARK_MEDIA"]
        self.assertEqual(bool(marks), self.dialect.json)  # auto: marks on JSON calls only
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_barge_in_flushes_at_once(self) -> None:
        self.bridge.backend_audio("r1", audio(3000, self.dialect.fmt))
        self.run_ms(400)
        marks = [i for c, i in self.commands() if c == "MARK_MEDIA"]
        echoed = [n for n in marks if n and int(n.partition(":")[2]) <= 300]
        for name in echoed:
            self.receive(self.dialect.mark_echo(name))
        before = len(self.leg.sent)
        now = self.clock.seconds()
        self.bridge.backend_speech_started()
        barge = self.leg.sent[before:]
        self.assertEqual([self.dialect.command(m) for _, m in barge], [("FLUSH_MEDIA", None)])
        self.assertEqual({t for t, _ in barge}, {now})
        self.run_ms(3000)
        self.assertEqual(len(self.leg.sent), before + 1)  # nothing of the dropped reply follows
        [(response, played_ms)] = self.backend_session.interrupts
        self.assertEqual(response, "r1")
        self.assertLessEqual(played_ms, min(len(self.media()) * 20, 400))
        if echoed:
            self.assertGreaterEqual(played_ms, max(int(n.partition(":")[2]) for n in echoed))

    def test_xoff_pauses_and_xon_resumes(self) -> None:
        fmt = self.dialect.fmt
        reply = audio(2000, fmt)
        self.bridge.backend_audio("r1", reply)
        self.bridge.backend_response_done("r1")
        self.run_ms(500)
        sent_before = len(self.media())
        self.receive(self.dialect.event("MEDIA_XOFF"))
        self.run_ms(1000)
        self.assertEqual(len(self.media()), sent_before)  # nothing while Asterisk's queue is full
        self.assertEqual(self.metrics.registry.get_sample_value(
            "mediaproxy_flow_pauses_total", {"leg": "platform"}), 1)
        self.receive(self.dialect.event("MEDIA_XON"))
        self.run_ms(3000)
        media = self.media()
        self.assertEqual(b"".join(p for _, p in media)[:len(reply)], reply)  # nothing lost
        self.assertGreater(media[sent_before][0] - media[sent_before - 1][0], 0.9)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_dtmf_reaches_the_backend(self) -> None:
        self.receive(self.dialect.dtmf("7"))
        self.receive(self.dialect.dtmf("#"))
        self.assertEqual(self.backend_session.dtmf, ["7"])  # "#" ends the entry

    def test_caller_audio_reaches_the_backend(self) -> None:
        frame = audio(20, self.dialect.fmt, seed=5)
        self.bridge.handle(self.session.receive_binary(frame))
        self.assertTrue(self.backend_session.audio)

    def test_platform_errors_are_counted(self) -> None:
        self.bridge.handle(self.session.receive_text(self.dialect.event("ERROR", error_text="x")))
        self.assertEqual(self.metrics.registry.get_sample_value(
            "mediaproxy_platform_errors_total", {"platform": "asterisk", "code": "command_error"}), 1)


class AsteriskPlainBridgeTests(AsteriskBridgeTests):
    dialect = ASTERISK_SLIN_PLAIN


class AsteriskUlawBridgeTests(AsteriskBridgeTests):
    dialect = ASTERISK_ULAW_JSON


class FreeswitchBridgeTests(PbxBridge, SynchronousTestCase):
    dialect: FreeswitchDialect = FREESWITCH_8K

    def setUp(self) -> None:
        session = freeswitch.new_session(freeswitch.FreeswitchOptions(sample_rate=self.dialect.fmt.rate_hz))
        self.start_bridge(session, self.dialect.metadata_text(), "freeswitch")

    def streamed(self) -> list[tuple[float, bytes]]:
        out = []
        for t, m in self.texts():
            data = self.dialect.audio_of(m)
            if data is not None:
                out.append((t, data))
        return out

    def test_paced_one_frame_ahead_in_packets(self) -> None:
        fmt = self.dialect.fmt
        reply = audio(2010, fmt)
        start = self.clock.seconds()
        self.bridge.backend_audio("r1", reply)
        self.bridge.backend_response_done("r1")
        self.run_ms(2600)
        streamed = self.streamed()
        self.assertEqual(b"".join(p for _, p in streamed)[:len(reply)], reply)
        self.assertEqual([len(p) for _, p in streamed], [fmt.bytes_for_ms(200)] * 10 + [fmt.bytes_for_ms(20)])
        times_ms = [round((t - start) * 1000, 6) for t, _ in streamed]
        self.assertEqual(times_ms, [float(max(0, 200 * k - 20)) for k in range(len(streamed))])
        self.assertEqual(self.media(), [])  # never binary toward FreeSWITCH
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_barge_in_sends_kill_audio_and_drops_the_rest(self) -> None:
        self.bridge.backend_audio("r1", audio(3000, self.dialect.fmt))
        self.run_ms(500)
        before = len(self.leg.sent)
        self.bridge.backend_speech_started()
        self.assertEqual([m for _, m in self.leg.sent[before:]], ['{"type":"killAudio"}'])
        self.run_ms(3000)
        self.assertEqual(len(self.leg.sent), before + 1)
        [(response, played_ms)] = self.backend_session.interrupts
        self.assertEqual(response, "r1")
        self.assertLessEqual(abs(played_ms - 500), 20)  # estimated from the clock

    def test_dtmf_reaches_the_backend(self) -> None:
        self.receive(self.dialect.dtmf("3"))
        self.receive(self.dialect.dtmf("#"))
        self.assertEqual(self.backend_session.dtmf, ["3"])


class Freeswitch16kBridgeTests(FreeswitchBridgeTests):
    dialect = FREESWITCH_16K
