"""HTTP endpoints on loopback standing in for the operator's tool webhooks and for Twilio's REST
API, for tests (and benchmarks) of the call actions.

:class:`FakeToolEndpoint` records every request (method, path, headers, body) and answers each
with the next configured reply — a status and a body — or holds it until :meth:`release` (a slow
tool, without any sleep). :class:`FakeTwilioRest` speaks the one call of Twilio's REST API the
proxy uses (``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP Basic auth
and a form-encoded ``Twiml``), answering 401 to wrong credentials and 404 to unknown calls, as
Twilio does.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from mediaproxy.testing.waiting import ConditionWaiting

__all__ = ["FakeToolEndpoint", "FakeTwilioRest", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Listening:
    port: Any = None
    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)


class _QuietSite(Site):
    """A site that writes no access log (its lines would hold the URLs under test)."""

    def log(self, request: http.Request) -> None:
        pass


def _record(request: Request) -> RecordedRequest:
    headers = {k.decode("latin-1").lower(): b", ".join(v).decode("latin-1")
               for k, v in request.requestHeaders.getAllRawHeaders()}
    body = request.content.read() if request.content is not None else b""
    return RecordedRequest(request.method.decode("ascii"), request.path.decode("latin-1"), headers, body)


class _Endpoint(Resource, ConditionWaiting):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.listening = _Listening()

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.listening.requests

    @property
    def url(self) -> str:
        return self.listening.url

    def listen(self, reactor: Any) -> None:
        """Listen on 127.0.0.1, a free port."""
        site = _QuietSite(self)
        site.noisy = False
        self.listening.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.listening.url = f"http://127.0.0.1:{self.listening.port.getHost().port}"

    def stop(self) -> Deferred[None]:
        d: Deferred[None] = self.listening.port.stopListening()
        return d


class FakeToolEndpoint(_Endpoint):
    """A tool webhook. ``replies`` are (status, body) answered in order (the last one repeats);
    with ``hold`` set, each request waits until :meth:`release`."""

    def __init__(self, *replies: tuple[int, bytes], hold: bool = False) -> None:
        super().__init__()
        self.replies = list(replies) or [(200, b'{"ok": true}')]
        self.hold = hold
        self._held: list[tuple[Request, tuple[int, bytes]]] = []

    def render_POST(self, request: Request) -> Any:
        self.requests.append(_record(request))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        self.poke()
        if self.hold:
            self._held.append((request, reply))
            return NOT_DONE_YET
        return self._answer(request, reply)

    def release(self) -> None:
        """Answer every held request."""
        held, self._held = self._held, []
        for request, reply in held:
            if not request.finished and not request._disconnected:  # the client may have given up
                request.write(self._answer(request, reply))
                request.finish()

    @staticmethod
    def _answer(request: Request, reply: tuple[int, bytes]) -> bytes:
        status, body = reply
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return body


_CALL_PATH = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Calls/(CA\w+)\.json$")


class FakeTwilioRest(_Endpoint):
    """Twilio's REST API, the call-update request only. ``calls`` are the live CallSids."""

    def __init__(self, account_sid: str, auth_token: str, calls: set[str] | None = None) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls = calls if calls is not None else set()
        self.updates: list[tuple[str, str]] = []
        """(CallSid, Twiml) of every accepted update."""

    def render_POST(self, request: Request) -> bytes:
        recorded = _record(request)
        self.requests.append(recorded)
        self.poke()
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if recorded.headers.get("authorization") != expected:
            request.setResponseCode(401)
            return b'{"code": 20003, "message": "Authenticate", "status": 401}'
        match = _CALL_PATH.match(recorded.path)
        if match is None or match.group(1) != self.account_sid or match.group(2) not in self.calls:
            request.setResponseCode(404)
            return b'{"code": 20404, "message": "The requested resource was not found", "status": 404}'
        form = parse_qs(recorded.body.decode("utf-8"))
        twiml = form.get("Twiml", [""])[0]
        self.updates.append((match.group(2), twiml))
        self.poke()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"sid": match.group(2), "status": "in-progress"}).encode()
