"""The operator's own tools: a ``[tool:NAME]`` is an HTTPS endpoint the model may call.

The arguments the model chose and the call's context are POSTed as JSON::

    {"tool": "lookup_order", "arguments": {...}, "call": {"call_id": ..., "platform": ...,
     "metadata": {...}}}

with ``X-Mediaproxy-Timestamp`` (Unix seconds) and, when a ``secret`` is configured,
``X-Mediaproxy-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>`` so the receiver can
check who sent it and when. A 2xx answer whose body is JSON is the function's output, passed to
the model as it is; anything else — an error status, a body that is not JSON, no answer within
``timeout_ms`` — becomes an error output, so the model can tell the caller and the call never
hangs on a tool. Nothing about the request (URL, headers, secret) is logged; the tool's name and
the outcome are counted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediaproxy.calls.http import HttpClient, HttpRequest, HttpResponse
from mediaproxy.config import ToolSettings
from mediaproxy.metrics import Metrics

log = Logger()

MAX_OUTPUT_BYTES = 16 * 1024
"""The longest tool output passed to the model (the rest would only cost tokens)."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Mediaproxy-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class ToolWebhook:
    """One configured ``[tool:NAME]``."""

    def __init__(self, name: str, settings: ToolSettings, http: HttpClient, reactor: IReactorTime,
                 metrics: Metrics) -> None:
        self.name = name
        self.settings = settings
        self._http = http
        self._reactor = reactor
        self._latency = metrics.tool_seconds.labels(name)

    def call(self, arguments: str, call: Mapping[str, Any]) -> Deferred[tuple[str, str]]:
        """POST ``arguments`` (the model's JSON text) and ``call`` (the call's context); fires with
        (outcome, output JSON for the model). Never fails."""
        try:
            parsed: Any = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = arguments  # the model's text as it came: the endpoint decides
        body = json.dumps({"tool": self.name, "arguments": parsed, "call": dict(call)},
                          separators=(",", ":")).encode("utf-8")
        timestamp = str(int(self._reactor.seconds()))
        headers = {"content-type": "application/json", "x-mediaproxy-timestamp": timestamp}
        if self.settings.secret:
            headers["x-mediaproxy-signature"] = signature(self.settings.secret, timestamp, body)
        started = self._reactor.seconds()
        d = self._http.request(HttpRequest("POST", self.settings.url, headers, body), self.settings.timeout_ms / 1000)

        def answered(response: HttpResponse) -> tuple[str, str]:
            self._latency.observe(self._reactor.seconds() - started)
            if not 200 <= response.status < 300:
                return "failed", json.dumps({"error": f"the tool answered HTTP {response.status}"})
            try:
                json.loads(response.body)
            except ValueError:
                return "failed", json.dumps({"error": "the tool's answer was not JSON"})
            if len(response.body) > MAX_OUTPUT_BYTES:
                return "failed", json.dumps({"error": "the tool's answer was too long"})
            return "ok", response.body.decode("utf-8")

        def failed(failure: Failure) -> tuple[str, str]:
            self._latency.observe(self._reactor.seconds() - started)
            if failure.check(DeferredTimeout):
                return "timeout", json.dumps({"error": "the tool did not answer in time"})
            # call_id makes it a call-scoped line (the JSON log adds the call's other fields).
            log.info("tool {tool} failed: {kind}", tool=self.name, kind=type(failure.value).__name__,
                     call_id=str(call.get("call_id", "")))
            return "failed", json.dumps({"error": "the tool could not be reached"})

        return d.addCallbacks(answered, failed)
