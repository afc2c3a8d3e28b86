"""Secrets never reach the log or the metrics: a whole call on every platform with every
credential configured (Twilio ``auth_token``, AudioHook ``api_key`` and ``client_secret``,
AudioCodes ``token``, the OpenAI ``api_key`` against the fake service), plus a refused upgrade
on each, with every log event captured and ``/metrics`` read; neither holds any secret. Also:
the metrics listener defaults to loopback, and each credential check passes the right
credential and refuses a wrong one of the same length (they compare with ``hmac.compare_digest``)."""

from __future__ import annotations

import base64
from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, readBody

from mediaproxy.config import MetricsSettings
from mediaproxy.platforms.audiocodes import AudioCodesOptions
from mediaproxy.platforms.audiocodes import check_upgrade as audiocodes_check
from mediaproxy.platforms.audiohook import AudioHookOptions
from mediaproxy.platforms.audiohook import check_upgrade as audiohook_check
from mediaproxy.platforms.base import UpgradeRefused, UpgradeRequest
from mediaproxy.platforms.twilio import TwilioOptions
from mediaproxy.platforms.twilio import check_upgrade as twilio_check
from mediaproxy.service import MediaProxyService
from mediaproxy.testing.fake_realtime import FakeRealtimeServer
from tests.support import cancel_autobahn_timer_buckets
from tests.test_faults import backend
from tests.test_loopback_audiohook import SECRET_B64, genesys_headers, has, sign
from tests.test_loopback_openai import quiet_frames
from tests.test_loopback_twilio import ScriptedTwilioFactory
from tests.test_twilio import sign as twilio_sign
from tests.three_platforms import StartWatcher, open_audiocodes, three_platforms

TWILIO_TOKEN = "twilio-token-0123456789abcdef0123"
AUDIOHOOK_KEY = "YXVkaW9ob29rLWtleS1zZWNyZXQ="
AUDIOCODES_TOKEN = "audiocodes-token-fedcba9876543210"
OPENAI_KEY = "sk-test-openai-0123456789abcdefghij"
PUBLIC_URL = "wss://proxy.example.com"
SECRETS = (TWILIO_TOKEN, AUDIOHOOK_KEY, SECRET_B64, base64.b64decode(SECRET_B64).decode(), AUDIOCODES_TOKEN,
           OPENAI_KEY)
SESSION_ID = "30b0e395-84d3-4570-ac13-9a62d8f514c0"


class SecretsInLogsAndMetricsTests(StartWatcher):
    timeout = 30

    def setUp(self) -> None:
        self.events: list[str] = []

        def observe(event: Any) -> None:
            # Everything the event holds, formatted or not (an observer may write any key).
            self.events.append(repr(event))
            self.events.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.fake = FakeRealtimeServer(reactor, api_key=OPENAI_KEY)
        cfg = three_platforms(
            proxy={"public_url": PUBLIC_URL},
            backend={**backend(self.fake.listen(), reconnect_attempts="2"), "api_key": OPENAI_KEY},
            twilio={"auth_token": TWILIO_TOKEN},
            audiohook={"api_key": AUDIOHOOK_KEY, "client_secret": SECRET_B64},
            audiocodes={"token": AUDIOCODES_TOKEN},
        )
        self.service = MediaProxyService(cfg, reactor, tune_gc=False)
        self.service.startService()
        self.port = self.service.platform_listener.address().port
        self.base = f"ws://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.service.metrics_listener.address().port}/metrics"
        self.watch_starts()

    @inlineCallbacks
    def tearDown(self) -> Any:
        yield self.service.stopService()
        yield self.fake.stop()
        cancel_autobahn_timer_buckets()

    @inlineCallbacks
    def test_no_secret_in_any_log_event_or_metric(self) -> Any:
        # Refused upgrades first (a wrong credential of each kind).
        bad = ScriptedTwilioFactory(f"{self.base}/twilio", headers={"X-Twilio-Signature": "AAAA"})
        connectWS(bad)
        yield bad.closed
        from tests.test_loopback_audiohook import GenesysFactory

        bad_hook = GenesysFactory(f"{self.base}/audiohook", session_id=SESSION_ID,
                                  headers=genesys_headers(SESSION_ID, "d3Jvbmc="))
        connectWS(bad_hook)
        yield bad_hook.closed
        from tests.test_loopback_audiocodes import VaicFactory

        bad_vaic = VaicFactory(f"{self.base}/audiocodes", headers={"Authorization": "Bearer wrong"})
        connectWS(bad_vaic)
        yield bad_vaic.closed
        self.assertEqual(self.metric("protocol_errors_total", platform="twilio", kind="auth"), 1)

        # Whole calls, one per platform, on the OpenAI backend.
        signature = twilio_sign(TWILIO_TOKEN, f"{PUBLIC_URL}/twilio")
        twilio = ScriptedTwilioFactory(f"{self.base}/twilio", headers={"X-Twilio-Signature": signature})
        connectWS(twilio)
        twilio_client = yield twilio.opened
        headers = sign(genesys_headers(SESSION_ID, AUDIOHOOK_KEY), "/audiohook", f"127.0.0.1:{self.port}",
                       SECRET_B64, int(reactor.seconds()))
        audiohook = GenesysFactory(f"{self.base}/audiohook", session_id=SESSION_ID, headers=headers)
        connectWS(audiohook)
        audiohook_client = yield audiohook.connected
        audiohook_client.open([{"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}])
        yield audiohook.wait_for(has("opened"))
        audiocodes, audiocodes_client = yield open_audiocodes(
            self.base, headers={"Authorization": f"Bearer {AUDIOCODES_TOKEN}"})
        yield self.when_started(3)
        yield self.fake.when(lambda: len([c for c in self.fake.connections if c.received]) == 3)
        twilio_client.send_audio(quiet_frames(10, seed=1))
        audiohook_client.send_audio(b"".join(quiet_frames(10, seed=2)))
        audiocodes_client.speak(quiet_frames(10, seed=3))
        yield self.fake.when(lambda: sum(c.input_bytes for c in self.fake.connections) >= 3 * 1600)
        twilio_client.send({"event": "stop", "streamSid": "MZ1"})
        yield twilio.closed
        audiohook_client.send("close", {"reason": "end"})
        yield audiohook.closed
        audiocodes_client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        yield audiocodes.closed
        yield self.service.registry.when_idle()
        for platform in ("twilio", "audiohook", "audiocodes"):
            self.assertEqual(self.metric("calls_total", platform=platform, outcome="completed"), 1, platform)

        response = yield Agent(reactor).request(b"GET", self.metrics_url.encode())
        metrics = (yield readBody(response)).decode()
        self.assertIn("mediaproxy_calls_total", metrics)
        log = "\n".join(self.events)
        self.assertIn("started on twilio", log)  # the observer did see the calls
        for secret in SECRETS:
            self.assertNotIn(secret, log)
            self.assertNotIn(secret, metrics)

    def metric(self, name: str, **labels: str) -> float:
        value = self.service.metrics.registry.get_sample_value("mediaproxy_" + name, labels)
        return 0.0 if value is None else value


class DefaultsTests(SynchronousTestCase):
    def test_the_metrics_listener_defaults_to_loopback(self) -> None:
        self.assertEqual(MetricsSettings().listen, "tcp:9090:interface=127.0.0.1")


def request(headers: dict[str, str], target: str = "/p") -> UpgradeRequest:
    return UpgradeRequest(target=target, host="h", headers={k.lower(): v for k, v in headers.items()},
                          public_url=PUBLIC_URL)


class CredentialCheckTests(SynchronousTestCase):
    """Each check passes the right credential and refuses a wrong one of the same length (the
    case a comparison that stops at the first differing byte would leak through timing)."""

    def assertRefused(self, check: Any, req: UpgradeRequest, options: Any) -> None:
        with self.assertRaises(UpgradeRefused) as caught:
            check(req, options, 0.0)
        self.assertIn(caught.exception.code, (401, 403))

    def test_twilio_signature(self) -> None:
        options = TwilioOptions(auth_token=TWILIO_TOKEN)
        good = twilio_sign(TWILIO_TOKEN, f"{PUBLIC_URL}/p")
        twilio_check(request({"X-Twilio-Signature": good}), options, 0.0)
        wrong = ("B" if good[0] != "B" else "C") + good[1:]
        self.assertRefused(twilio_check, request({"X-Twilio-Signature": wrong}), options)

    def test_audiohook_api_key(self) -> None:
        options = AudioHookOptions(api_key=AUDIOHOOK_KEY)
        audiohook_check(request(genesys_headers(SESSION_ID, AUDIOHOOK_KEY)), options, 0.0)
        wrong = AUDIOHOOK_KEY[:-2] + "x="
        self.assertRefused(audiohook_check, request(genesys_headers(SESSION_ID, wrong)), options)

    def test_audiocodes_token(self) -> None:
        options = AudioCodesOptions(token=AUDIOCODES_TOKEN)
        audiocodes_check(request({"Authorization": f"Bearer {AUDIOCODES_TOKEN}"}), options, 0.0)
        wrong = AUDIOCODES_TOKEN[:-1] + "X"
        self.assertRefused(audiocodes_check, request({"Authorization": f"Bearer {wrong}"}), options)



