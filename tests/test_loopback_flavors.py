"""Loopback calls through the real service for each flavor of ``openai-realtime``: Twilio ↔ the
fake Realtime server acting as that flavor (its path, credential header, query string, session
shape and event names). Every flavor takes ``audio/pcmu`` (Voice Live: ``g711_ulaw``), so the
caller's µ-law passes through both ways untouched; each call includes a barge-in."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.backends.openai_socket import RealtimeClientProtocol
from mediaproxy.testing.fake_audio import pattern
from mediaproxy.testing.fake_realtime import FakeRealtimeServer
from tests import test_loopback_openai as ga
from tests.test_loopback_openai import LOUD, events_of, quiet_frames

API_KEY = "dummy-test-key"
ENTRA = "dummy-entra-token"


class FlavorLoopback(ga.TwilioCallersLoopback):
    """One flavor's loopback calls (a mixin: each flavor's class names it and its section keys);
    the service, the Twilio client and the tear-down checks are the GA loopback tests' own."""

    start_proxy = ga.OpenAILoopbackTests.start_proxy

    flavor = "openai"
    backend: dict[str, str] = {}
    expected_headers: dict[str, str] = {}
    expected_query: dict[str, list[str]] = {}
    server_cancels = True

    def setUp(self) -> None:
        self.use_fake(FakeRealtimeServer(reactor, api_key=API_KEY, flavor=self.flavor, entra_token=ENTRA),
                      RealtimeClientProtocol)
        self.fake_url = self.fake.listen()

    def start_flavor(self) -> None:
        self.start_proxy(**{"flavor": self.flavor, **self.backend})

    @inlineCallbacks
    def test_call_with_barge_in(self) -> Any:
        self.fake.response_audio = lambda conn, n, bpm: pattern(4000 * bpm, conn * 10 + n)
        self.fake.pause_after_ms = 2000
        self.start_flavor()
        factory = self.call()
        client = yield factory.opened
        client.send_audio(quiet_frames(5, seed=1) + [LOUD] * 10 + quiet_frames(12, seed=2))
        yield self.fake.when(lambda: bool(self.fake.connections) and self.fake.connection(0).response is not None
                             and bool(self.fake.connection(0).response.get("paused")))
        conn = self.fake.connection(0)
        for name, value in self.expected_headers.items():
            self.assertEqual(conn.headers.get(name), value)
        for name, value in self.expected_query.items():
            self.assertEqual(conn.params.get(name), value)
        self.assertEqual((conn.input_format, conn.output_format), ("audio/pcmu", "audio/pcmu"))
        response = conn.response
        assert response is not None
        yield factory.when(lambda: len(client.echoed) >= 3 and len(client.media) >= 20)
        seen = len(client.received)
        client.send_audio([LOUD])
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
        yield self.fake.when(lambda: bool(conn.truncations) or bool(conn.errors_sent))
        self.assertEqual(conn.errors_sent, [])
        [(item_id, end_ms)] = conn.truncations
        self.assertEqual(item_id, response["item_id"])
        self.assertLess(end_ms, 2000)
        cancels = events_of(conn, "response.cancel")
        if self.server_cancels:
            self.assertEqual(cancels, [])
        else:
            yield self.fake.when(lambda: bool(events_of(conn, "response.cancel")))
            self.assertEqual(conn.response, None)
        # µ-law both ways, untouched: what played is a prefix of the answer, what was said arrived.
        self.assertEqual(client.audio(), response["audio"][: len(client.audio())])
        yield self.fake.when(lambda: len(conn.input_audio) >= len(client.sent_audio))
        self.assertEqual(bytes(conn.input_audio), bytes(client.sent_audio))
        client.stop()
        yield factory.closed
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "completed"}), 1)
        self.assertEqual(self.metric("mediaproxy_backend_info",
                                     {"backend": "openai", "type": "openai-realtime", "flavor": self.flavor}), 1)

    @inlineCallbacks
    def test_wrong_credential_is_refused_and_ends_the_call(self) -> Any:
        wrong = {"entra_token": "wrong-token"} if "entra_token" in self.backend else {"api_key": "wrong-key"}
        self.backend = {**self.backend, **wrong}
        self.start_flavor()
        factory = self.call()
        yield factory.opened
        yield factory.closed
        self.assertGreaterEqual(self.fake.stats.refused, 1)
        self.assertEqual(self.metric("mediaproxy_calls_total", {"platform": "twilio", "outcome": "backend_failed"}), 1)


class AzureLoopbackTests(FlavorLoopback, TestCase):
    flavor = "azure"
    backend = {"deployment": "my-realtime", "api_key": API_KEY}
    expected_headers = {"api-key": API_KEY}
    expected_query = {"model": ["my-realtime"]}


class AzureEntraLoopbackTests(FlavorLoopback, TestCase):
    flavor = "azure"
    backend = {"deployment": "my-realtime", "api_key": "", "entra_token": ENTRA}
    expected_headers = {"authorization": f"Bearer {ENTRA}"}
    expected_query = {"model": ["my-realtime"]}


class VoiceLiveLoopbackTests(FlavorLoopback, TestCase):
    flavor = "voicelive"
    backend = {"api_key": API_KEY}
    expected_headers = {"api-key": API_KEY}
    expected_query = {"api-version": ["2026-04-10"], "model": ["gpt-realtime"]}


class XaiLoopbackTests(FlavorLoopback, TestCase):
    flavor = "xai"
    backend = {"api_key": API_KEY}
    expected_headers = {"authorization": f"Bearer {API_KEY}"}
    expected_query = {"model": ["grok-voice-latest"]}
    server_cancels = False  # xAI documents no interrupt_response: the proxy cancels


class OpenAIFlavorLoopbackTests(FlavorLoopback, TestCase):
    """``flavor = openai`` at a plain ``url``: any other server of the GA shape."""

    flavor = "openai"
    backend = {"api_key": API_KEY}
    expected_headers = {"authorization": f"Bearer {API_KEY}"}
    expected_query = {"model": ["gpt-realtime"]}

