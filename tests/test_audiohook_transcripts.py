"""AudioHook: what ``open`` adds to the call's metadata, language updates, the disconnect reason
of every outcome, Audio Connector transfers, and Monitor transcripts shaped as a Genesys
Transcription Connector takes them (tokens, offsets on each channel's stream timeline across
pauses and discarded spans, utterances closed by ``update``/``paused``)."""

from __future__ import annotations

from typing import Any

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.audiohook_messages import parse_duration
from mediaproxy.platforms.audiohook_session import DISCONNECT_REASONS
from mediaproxy.platforms.base import CallerStreamPaused, CallStarted, LanguageChanged
from mediaproxy.transcripts import Transcript, Word
from tests.test_audiohook import EXTERNAL, SessionTestCase, open_parameters

S = 1_000_000  # µs


def seconds(duration: str) -> float:
    us = parse_duration(duration)
    assert us is not None
    return us / S


class OpenMetadataTests(SessionTestCase):
    def test_participant_language_and_custom_config_reach_the_metadata(self) -> None:
        session, genesys, _ = self.make("connector")
        custom = {"tenant": "acme", "n": 3, "nested": {"a": 1}, "long": "x" * 5000}
        custom.update({f"k{i}": "v" for i in range(100)})
        (started,) = genesys.send("open", open_parameters(
            [EXTERNAL], inputVariables={"Lang": "en", "audiohook.language": "spoofed"}, customConfig=custom))
        assert isinstance(started, CallStarted)
        metadata = dict(started.metadata)
        self.assertEqual(metadata["Lang"], "en")
        self.assertEqual(metadata["audiohook.participant.ani"], "+15550100")
        self.assertEqual(metadata["audiohook.participant.aniName"], "Pat")
        self.assertEqual(metadata["audiohook.participant.dnis"], "+18005550199")
        self.assertEqual(metadata["audiohook.language"], "en-US", "Genesys's fields win over a variable")
        self.assertEqual(metadata["audiohook.customConfig.tenant"], "acme")
        self.assertNotIn("audiohook.customConfig.n", metadata, "strings only")
        self.assertNotIn("audiohook.customConfig.nested", metadata)
        self.assertEqual(len(metadata["audiohook.customConfig.long"]), 1024)
        self.assertLessEqual(sum(k.startswith("audiohook.customConfig.") for k in metadata), 64)

    def test_custom_config_must_be_an_object(self) -> None:
        session, genesys, _ = self.make("connector")
        events = genesys.send("open", open_parameters([EXTERNAL], customConfig=["x"]))
        self.assertViolation(events, "invalid_parameters")
        self.assertEqual(genesys.last()["parameters"]["reason"], "error")

    def test_update_with_a_new_language_is_reported(self) -> None:
        session, genesys, _ = self.opened()
        self.assertEqual(genesys.send("update", {"language": "fr-FR"}), [LanguageChanged("fr-FR")])
        self.assertEqual(genesys.send("update", {"language": "fr-FR"}), [], "no change, nothing to say")
        self.assertEqual(genesys.send("update", {}), [])
        self.assertEqual(genesys.types(), ["opened", "updated", "updated", "updated"])


class DisconnectReasonTests(SessionTestCase):
    def test_every_outcome_has_a_reason(self) -> None:
        """Architect takes the success path only on ``completed``: a finished conversation or a
        hand-over says it; a failure, a drain, a timeout or a dropped platform says ``error``."""
        expected = {
            Outcome.COMPLETED: "completed", Outcome.BOT_HANGUP: "completed", Outcome.TRANSFERRED: "completed",
            Outcome.BACKEND_FAILED: "error", Outcome.PROTOCOL_ERROR: "error", Outcome.DISCONNECTED: "error",
            Outcome.DRAINED: "error", Outcome.TIMEOUT: "error",
        }
        self.assertEqual(set(expected), set(Outcome))
        self.assertEqual(dict(DISCONNECT_REASONS), expected)
        for outcome in Outcome:
            session, genesys, _ = self.opened("connector")
            session.hangup(outcome)
            genesys.drain()
            params = genesys.last("disconnect")["parameters"]
            self.assertEqual((params["reason"], params["info"]), (expected[outcome], outcome.value))


class TransferTests(SessionTestCase):
    def test_connector_transfer_returns_output_variables(self) -> None:
        session, genesys, _ = self.opened("connector")
        self.assertTrue(session.capabilities.can_transfer)
        self.assertTrue(session.transfer("Billing Queue", "Wants to dispute a charge. " + "x" * 3000,
                                         {"Intent": "billing"}))
        genesys.drain()
        params = genesys.last("disconnect")["parameters"]
        self.assertEqual(params["reason"], "completed")
        output = params["outputVariables"]
        self.assertEqual((output["Intent"], output["transferTarget"]), ("billing", "Billing Queue"))
        self.assertEqual(len(output["transferSummary"]), 1000)
        self.assertTrue(all(isinstance(v, str) for v in output.values()))
        self.assertFalse(session.transfer("again", ""))
        self.assertCloseTransaction(session, genesys)

    def test_monitor_cannot_transfer(self) -> None:
        session, genesys, _ = self.opened()
        self.assertFalse(session.capabilities.can_transfer)
        self.assertFalse(session.capabilities.plays_audio)
        self.assertFalse(session.transfer("queue", "x"))
        genesys.drain()
        self.assertEqual(genesys.types(), ["opened"])


def stereo(ms: int) -> bytes:
    """``ms`` of stereo PCMU (external 0x11, internal 0x22)."""
    return b"\x11\x22" * (ms * 8)


class TimelineTests(SessionTestCase):
    def transcripts(self, genesys: Any) -> list[dict[str, Any]]:
        genesys.drain()
        return [m["parameters"]["entities"][0]["data"] for m in genesys.messages if m["type"] == "event"]

    def test_offsets_follow_each_channel_across_a_pause_and_a_discarded_span(self) -> None:
        """Backend times (forwarded audio) are mapped onto the stream timeline, which also
        counts the paused and the discarded spans; both channels, utterance and word offsets."""
        session, genesys, _ = self.opened()
        genesys.binary(stereo(2000))                   # stream 0-2 s = backend 0-2 s
        genesys.send("paused")                         # nothing forwarded while paused
        genesys.send("resumed", {"start": "PT2S", "discarded": "PT3S"})  # stream jumps to 5 s
        genesys.binary(stereo(1000))                   # stream 5-6 s = backend 2-3 s
        genesys.send("discarded", {"start": "PT6S", "discarded": "PT2S"})  # stream jumps to 8 s
        genesys.binary(stereo(2000))                   # stream 8-10 s = backend 3-5 s
        self.assertEqual(session.position_us, 10 * S)

        session.transcript(Transcript("caller", "hello there", True, start_ms=500, end_ms=1500))
        session.transcript(Transcript("agent", "how can I help", True, start_ms=2200, end_ms=2800))
        session.transcript(Transcript("caller", "yes please", True, start_ms=3500, end_ms=4500, words=(
            Word("yes", 3500, 3900, 0.9), Word("please", 4000, 4500))))
        first, agent, second = self.transcripts(genesys)
        where = [(d["channelId"], seconds(d["offset"]), seconds(d["duration"])) for d in (first, agent, second)]
        for (channel, offset, duration), (want_channel, want_offset, want_duration) in zip(
                where, [(0, 0.5, 1.0), (1, 5.2, 0.6), (0, 8.5, 1.0)], strict=True):
            self.assertEqual(channel, want_channel)
            self.assertAlmostEqual(offset, want_offset, delta=0.5)
            self.assertAlmostEqual(duration, want_duration, delta=0.5)
        self.assertEqual(where, [(0, 0.5, 1.0), (1, 5.2, 0.6), (0, 8.5, 1.0)])  # in fact exact
        tokens = second["alternatives"][0]["interpretations"][0]["tokens"]
        self.assertEqual([(t["value"], seconds(t["offset"]), seconds(t["duration"]), t["confidence"])
                          for t in tokens], [("yes", 8.5, 0.4, 0.9), ("please", 9.0, 0.5, 1.0)])
        # Without word timings the words are spread over the mapped utterance by length.
        tokens = agent["alternatives"][0]["interpretations"][0]["tokens"]
        self.assertEqual([t["value"] for t in tokens], ["how", "can", "I", "help"])
        self.assertEqual(seconds(tokens[0]["offset"]), 5.2)
        self.assertAlmostEqual(seconds(tokens[-1]["offset"]) + seconds(tokens[-1]["duration"]), 5.8, delta=0.002)

    def test_without_times_the_old_estimate_stays(self) -> None:
        session, genesys, _ = self.opened()
        genesys.binary(stereo(500))
        session.caller_speech(True)
        genesys.binary(stereo(1000))
        session.transcript(Transcript("caller", "hi", True))
        session.transcript(Transcript("agent", "hello", True))
        caller, agent = self.transcripts(genesys)
        self.assertEqual((caller["offset"], caller["duration"]), ("PT0.5S", "PT1S"))
        self.assertEqual((agent["offset"], agent["duration"]), ("PT0S", "PT1.5S"))

    def test_update_mid_utterance_closes_it_first(self) -> None:
        session, genesys, _ = self.opened()
        genesys.binary(stereo(1000))
        session.transcript(Transcript("caller", "I would like", False, start_ms=300, end_ms=900))
        events = genesys.send("update", {"language": "de-DE"})
        self.assertEqual(events, [LanguageChanged("de-DE")])
        self.assertEqual(genesys.types(), ["opened", "event", "updated"], "the transcript goes out first")
        (closed,) = self.transcripts(genesys)
        self.assertEqual((closed["isFinal"], closed["offset"], closed["duration"]), (True, "PT0.3S", "PT0.6S"))
        self.assertEqual(closed["alternatives"][0]["interpretations"][0]["transcript"], "I would like")
        self.assertEqual(closed["alternatives"][0]["languages"], ["en-US"], "said before the update")
        # The rest of that utterance is dropped; the next one is sent in the new language.
        session.transcript(Transcript("caller", "I would like to pay", False, start_ms=300, end_ms=1000))
        session.transcript(Transcript("caller", "I would like to pay", True, start_ms=300, end_ms=1000))
        genesys.binary(stereo(1000))
        session.transcript(Transcript("caller", "danke", True, start_ms=1200, end_ms=1600))
        texts = [d["alternatives"][0]["interpretations"][0]["transcript"] for d in self.transcripts(genesys)]
        self.assertEqual(texts, ["I would like", "danke"])
        self.assertEqual(self.transcripts(genesys)[-1]["alternatives"][0]["languages"], ["de-DE"])

    def test_paused_mid_utterance_closes_it_first(self) -> None:
        session, genesys, _ = self.opened()
        genesys.binary(stereo(400))
        session.caller_speech(True)
        genesys.binary(stereo(600))
        session.transcript(Transcript("caller", "my account", False))
        session.transcript(Transcript("agent", "one", False))
        events = genesys.send("paused")
        self.assertEqual(events, [CallerStreamPaused(True)])
        caller, agent = self.transcripts(genesys)
        self.assertEqual((caller["channelId"], caller["offset"], caller["duration"]), (0, "PT0.4S", "PT0.6S"))
        self.assertEqual(agent["alternatives"][0]["interpretations"][0]["transcript"], "one")
        # Without times, the backend's final of the closed utterance is recognised and dropped.
        session.transcript(Transcript("caller", "my account number", True))
        session.transcript(Transcript("agent", "one moment", True))
        self.assertEqual(len(self.transcripts(genesys)), 2)
        session.transcript(Transcript("caller", "next", True))
        self.assertEqual(len(self.transcripts(genesys)), 3)

    def test_connector_and_format(self) -> None:
        session, genesys, events = self.opened("connector")
        self.assertEqual(events[0].audio_format, MULAW_8K)
        session.transcript(Transcript("caller", "hi", True, start_ms=0, end_ms=100))
        genesys.drain()
        self.assertEqual(genesys.types(), ["opened"])
