"""The operator's tools through the real HTTP client on loopback: what the endpoint receives
(the signed body), and what the model is told for each kind of answer."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.calls.webhook import ToolWebhook, signature
from mediaproxy.config import ToolSettings
from mediaproxy.metrics import Metrics
from mediaproxy.server.http_client import TreqHttpClient
from mediaproxy.testing.fake_http import FakeToolEndpoint

CALL = {"call_id": "CA1", "platform": "twilio", "metadata": {"tier": "gold"}}


class WebhookTests(TestCase):
    timeout = 20

    def start(self, endpoint: FakeToolEndpoint, **settings: Any) -> ToolWebhook:
        endpoint.listen(reactor)
        self.addCleanup(endpoint.stop)
        self.metrics = Metrics()
        tool = ToolSettings(url=endpoint.url + "/orders", description="Find an order", **settings)
        return ToolWebhook("lookup_order", tool, TreqHttpClient(reactor), reactor, self.metrics)

    @inlineCallbacks
    def test_signed_post_and_json_answer(self) -> Any:
        endpoint = FakeToolEndpoint((200, b'{"status": "shipped"}'))
        hook = self.start(endpoint, secret="s3cret")
        outcome, output = yield hook.call('{"order": "A-17"}', CALL)
        self.assertEqual((outcome, json.loads(output)), ("ok", {"status": "shipped"}))
        (request,) = endpoint.requests
        self.assertEqual((request.method, request.path), ("POST", "/orders"))
        self.assertEqual(request.json(), {"tool": "lookup_order", "arguments": {"order": "A-17"}, "call": CALL})
        timestamp = request.headers["x-mediaproxy-timestamp"]
        expected = "sha256=" + hmac.new(b"s3cret", timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
        self.assertEqual(request.headers["x-mediaproxy-signature"], expected)
        self.assertEqual(signature("s3cret", timestamp, request.body), expected)
        self.assertEqual(request.headers["content-type"], "application/json")
        self.assertEqual(self.metrics.registry.get_sample_value(
            "mediaproxy_tool_seconds_count", {"tool": "lookup_order"}), 1)

    @inlineCallbacks
    def test_no_secret_no_signature(self) -> Any:
        endpoint = FakeToolEndpoint()
        hook = self.start(endpoint)
        yield hook.call("{}", CALL)
        self.assertNotIn("x-mediaproxy-signature", endpoint.requests[0].headers)

    @inlineCallbacks
    def test_failures_become_error_outputs(self) -> Any:
        endpoint = FakeToolEndpoint((500, b'{"oops": 1}'), (200, b"not json"))
        hook = self.start(endpoint)
        outcome, output = yield hook.call("{}", CALL)
        self.assertEqual(outcome, "failed")
        self.assertIn("HTTP 500", json.loads(output)["error"])
        outcome, output = yield hook.call("{}", CALL)
        self.assertEqual(outcome, "failed")
        self.assertIn("not JSON", json.loads(output)["error"])

    @inlineCallbacks
    def test_slow_endpoint_times_out(self) -> Any:
        endpoint = FakeToolEndpoint(hold=True)
        hook = self.start(endpoint, timeout_ms=200)
        outcome, output = yield hook.call("{}", CALL)
        self.assertEqual(outcome, "timeout")
        self.assertIn("in time", json.loads(output)["error"])
        endpoint.release()

    @inlineCallbacks
    def test_secrets_never_reach_the_log(self) -> Any:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        endpoint = FakeToolEndpoint((500, b"{}"))
        endpoint.listen(reactor)
        url = endpoint.url + "/orders?token=URLSECRET123"
        tool = ToolSettings(url=url, description="d", secret="HMACSECRET456")
        hook = ToolWebhook("lookup_order", tool, TreqHttpClient(reactor), reactor, Metrics())
        yield hook.call("{}", CALL)
        yield endpoint.stop()
        yield hook.call("{}", CALL)  # unreachable: the failure is logged
        self.assertTrue(any("lookup_order" in repr(e) for e in events), "the failure is logged, by tool name")
        for event in events:
            self.assertNotIn("URLSECRET123", repr(event))
            self.assertNotIn("HMACSECRET456", repr(event))

    @inlineCallbacks
    def test_unreachable_endpoint(self) -> Any:
        endpoint = FakeToolEndpoint()
        hook = self.start(endpoint)
        yield endpoint.stop()
        self._cleanups.clear()  # type: ignore[attr-defined]
        outcome, output = yield hook.call("{}", CALL)
        self.assertEqual(outcome, "failed")
        self.assertIn("could not be reached", json.loads(output)["error"])
