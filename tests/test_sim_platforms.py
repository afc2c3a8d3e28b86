"""The simulator's modes for Telnyx, Plivo, Exotel, Vonage, jambonz, Asterisk, FreeSWITCH and the
generic WebSocket (and Twilio's DTMF), tested like the product: each places a real call through the real proxy
service on 127.0.0.1 (echo parrot backend, the development credentials of etc/mediaproxy.ini),
driven by the simulator's own code on the real reactor. Each call barges in on the first reply
and presses keys (``--dtmf``); the tests check the replies came, the barge-in was answered by
the platform's clear, the recording holds the bot's audio where the caller heard it, the JSON
has its fields, no protocol error on either side (the proxy's counter included), and the proxy
counted the keys. Also:
Asterisk's MEDIA_XOFF/XON, the WebSocket client's pause, other formats, and ``--dtmf`` on the
command line."""

from __future__ import annotations

import io
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mediaproxy.config import parse_config
from mediaproxy.sim import asterisk, cli, exotel, freeswitch, jambonz, telnyx, vonage
from tests.test_sim import SILENCE_MS, SimLoopback

#: mode -> (path of etc/mediaproxy.ini, the platform's section as that file has it).
PLATFORMS: dict[str, tuple[str, dict[str, str]]] = {
    "twilio": ("/twilio", {}),
    "telnyx": ("/telnyx", {"stream_auth_token": telnyx.DEV_TOKEN}),
    "plivo": ("/plivo", {}),
    "exotel": ("/exotel", {"api_key": exotel.DEV_API_KEY, "api_token": exotel.DEV_API_TOKEN}),
    "vonage": ("/vonage", {"authorization": vonage.DEV_AUTHORIZATION}),
    "jambonz": ("/jambonz", {"username": jambonz.DEV_USERNAME, "password": jambonz.DEV_PASSWORD}),
    "asterisk": ("/asterisk", {"username": asterisk.DEV_USERNAME, "password": asterisk.DEV_PASSWORD}),
    "freeswitch": ("/freeswitch", {"authorization": freeswitch.DEV_AUTHORIZATION, "sample_rate": "16000"}),
    "websocket": ("/browser", {}),
}
#: What each platform's barge-in reaction is called in the simulator's ``received`` counts.
CLEAR = {"twilio": "clear", "telnyx": "clear", "plivo": "clearAudio", "exotel": "clear", "vonage": "clear",
         "jambonz": "killAudio", "asterisk": "FLUSH_MEDIA", "freeswitch": "killAudio", "websocket": "clear"}
#: The rate of each platform's recording at the simulator's defaults.
RATE = {"twilio": 8000, "telnyx": 8000, "plivo": 8000, "exotel": 8000, "vonage": 16000, "jambonz": 16000,
        "asterisk": 16000, "freeswitch": 16000, "websocket": 16000}
DTMF = ["--dtmf", "12@300", "--dtmf", "#@1000"]


def platforms_config() -> Any:
    sections: dict[str, dict[str, str]] = {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "backend:echo": {"type": "echo", "silence_ms": str(SILENCE_MS)},
    }
    for mode, (path, keys) in PLATFORMS.items():
        name = "browser" if mode == "websocket" else mode
        sections[f"platform:{name}"] = {"type": mode, "path": path, "backend": "echo", **keys}
    return parse_config("test.ini", sections, {})


class PlatformSimulatorTests(SimLoopback, TestCase):
    def service_config(self) -> Any:
        return platforms_config()

    def proxy_errors(self, platform: str) -> dict[str, float]:
        """``mediaproxy_protocol_errors_total`` of ``platform``, by kind (counted ones only)."""
        return {sample.labels["kind"]: sample.value
                for family in self.service.metrics.registry.collect() for sample in family.samples
                if sample.name == "mediaproxy_protocol_errors_total" and sample.labels["platform"] == platform}

    @inlineCallbacks
    def converse(self, mode: str, *extra: str) -> Any:
        """One call of ``mode`` with a barge-in and keys; checks what every platform shares and
        returns the call's JSON entry."""
        path = PLATFORMS[mode][0]
        report, document, out = yield self.simulate(mode, path, *DTMF, *extra)
        self.assertConversation(report, document, out, mode, RATE[mode])
        call: dict[str, Any] = document["calls"][0]
        received = call["received"]
        self.assertGreaterEqual(received[CLEAR[mode]], 1, received)
        self.assertEqual(call["dtmf_sent"], 3)
        platform = "browser" if mode == "websocket" else mode
        self.assertEqual(self.metric("dtmf_keys_total", platform=platform), 3.0)
        # Nothing the proxy refused or ignored, not even an acknowledgement (cleared, clearedAudio).
        self.assertEqual(self.proxy_errors(platform), {})
        self.assertEqual(self.metric("calls_total", platform=platform, outcome="protocol_error"), 0.0)
        if mode != "freeswitch":  # mod_audio_stream has no marks
            self.assertGreater(call["marks_received"], 0)
        return call

    @inlineCallbacks
    def test_twilio_dtmf(self) -> Any:
        call = yield self.converse("twilio")
        self.assertEqual(call["marks_echoed"], call["marks_received"])

    @inlineCallbacks
    def test_telnyx(self) -> Any:
        call = yield self.converse("telnyx")
        self.assertEqual(call["marks_echoed"], call["marks_received"])  # a clear answers its marks

    @inlineCallbacks
    def test_telnyx_l16(self) -> Any:
        report, document, out = yield self.simulate("telnyx", "/telnyx", "--codec", "L16")
        self.assertConversation(report, document, out, "telnyx", 16000)

    @inlineCallbacks
    def test_plivo(self) -> Any:
        call = yield self.converse("plivo")
        # The checkpoints a clearAudio dropped are never answered.
        self.assertLessEqual(call["marks_echoed"], call["marks_received"])
        self.assertGreater(call["marks_echoed"], 0)

    @inlineCallbacks
    def test_exotel(self) -> Any:
        call = yield self.converse("exotel")
        self.assertEqual(call["marks_echoed"], call["marks_received"])

    @inlineCallbacks
    def test_vonage(self) -> Any:
        call = yield self.converse("vonage")
        self.assertEqual(call["marks_echoed"], call["marks_received"])

    @inlineCallbacks
    def test_vonage_8k(self) -> Any:
        report, document, out = yield self.simulate("vonage", "/vonage", "--rate", "8000")
        self.assertConversation(report, document, out, "vonage", 8000)

    @inlineCallbacks
    def test_jambonz(self) -> Any:
        call = yield self.converse("jambonz")
        self.assertEqual(call["marks_echoed"], call["marks_received"])  # killAudio answers them as cleared

    @inlineCallbacks
    def test_asterisk(self) -> Any:
        call = yield self.converse("asterisk")
        self.assertLessEqual(call["marks_echoed"], call["marks_received"])
        self.assertEqual(self.metric("flow_pauses_total", leg="platform"), 0.0)  # a real queue never fills

    @inlineCallbacks
    def test_asterisk_ulaw(self) -> Any:
        report, document, out = yield self.simulate("asterisk", "/asterisk", "--format", "ulaw")
        self.assertConversation(report, document, out, "asterisk", 8000)

    @inlineCallbacks
    def test_asterisk_xoff_xon(self) -> Any:
        """A queue of three frames: MEDIA_XOFF once 54 ms are held, MEDIA_XON below 48 ms; the
        proxy stops sending and starts again, and every reply still plays whole."""
        report, document, _ = yield self.simulate("asterisk", "/asterisk", "--queue-frames", "3")
        (call,) = document["calls"]
        self.assertEqual((report.total.completed, report.total.protocol_errors), (1, 0), call["errors"])
        self.assertEqual(report.total.replies_received, 2, self.text)
        self.assertGreater(self.metric("flow_pauses_total", leg="platform"), 0.0)

    @inlineCallbacks
    def test_freeswitch(self) -> Any:
        yield self.converse("freeswitch")

    @inlineCallbacks
    def test_websocket(self) -> Any:
        call = yield self.converse("websocket")
        self.assertEqual(call["marks_echoed"], call["marks_received"])

    @inlineCallbacks
    def test_websocket_pause(self) -> Any:
        """The client pauses the proxy's sending in the middle of the second reply: the proxy
        keeps the rest and sends it on resume; the pause is counted."""
        report, document, _ = yield self.simulate("websocket", "/browser", "--pause-at-ms", "1400",
                                                  "--pause-ms", "200")
        (call,) = document["calls"]
        self.assertEqual((report.total.completed, report.total.protocol_errors), (1, 0), call["errors"])
        self.assertEqual(report.total.replies_received, 2, self.text)
        self.assertEqual(report.total.frames_lost, 0, self.text)
        self.assertEqual(self.metric("flow_pauses_total", leg="platform"), 1.0)

    @inlineCallbacks
    def test_a_wrong_credential_is_a_failed_call(self) -> Any:
        report, document, _ = yield self.simulate("jambonz", "/jambonz", "--password", "wrong")
        self.assertEqual(report.total.completed, 0)
        self.assertIn("upgrade failed", document["calls"][0]["close_reason"])
        self.assertEqual(self.metric("protocol_errors_total", platform="jambonz", kind="auth"), 1.0)


class DtmfOptionTests(SynchronousTestCase):
    def test_presses(self) -> None:
        args = cli.parse_args(["telnyx", "--dtmf", "12#@1500", "--dtmf", "*@0"])
        self.assertEqual(args.dtmf, [("12#", 1500), ("*", 0)])
        self.assertEqual(cli.parse_args(["twilio"]).dtmf, [])

    def test_bad_presses_and_platforms_without_dtmf(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        for bad in ("12", "x@10", "@10", "1@", "1@-5"):
            self.assertRaises(SystemExit, cli.parse_args, ["twilio", "--dtmf", bad])
        self.assertRaises(SystemExit, cli.parse_args, ["connector", "--dtmf", "1@100"])
        self.assertIn("carries no DTMF", sys.stderr.getvalue())  # type: ignore[attr-defined]

    def test_every_mode_is_a_subcommand_with_the_default_configs_path(self) -> None:
        for mode, (path, _) in PLATFORMS.items():
            args = cli.parse_args([mode])
            self.assertEqual((args.sim_mode.name, args.url), (mode, f"ws://127.0.0.1:8080{path}"))
        self.assertEqual(cli.parse_args(["exotel"]).chunk_ms, 100)


class SignatureTests(SynchronousTestCase):
    def test_plivo_v3_signature_is_what_the_proxy_checks(self) -> None:
        from mediaproxy.platforms.plivo import signature_v3
        from mediaproxy.sim.plivo import plivo_signature_v3

        for url in ("wss://proxy.example.com/plivo", "wss://proxy.example.com/plivo?b=2&a=1&a=0"):
            expected = signature_v3("token", url, "nonce-1").decode()
            self.assertEqual(plivo_signature_v3("token", url, "nonce-1"), expected)
