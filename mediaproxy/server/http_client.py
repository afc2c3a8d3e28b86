"""The HTTP client of the call layer (:class:`mediaproxy.calls.http.HttpClient`) on treq.

Bodies are read up to ``max_body_bytes`` (a peer cannot make us buffer without bound) and every
request has a timeout on the injected reactor.
"""

from __future__ import annotations

from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.python.failure import Failure
from twisted.web.client import Agent

from mediaproxy.calls.http import HttpRequest, HttpResponse


class BodyTooLarge(Exception):
    """The response body passed the client's bound."""


class TreqHttpClient:
    """Requests through one treq ``HTTPClient`` on ``reactor``."""

    def __init__(self, reactor: Any, max_body_bytes: int = 64 * 1024) -> None:
        self._reactor = reactor
        self._client = HTTPClient(Agent(reactor))
        self._max_body = max_body_bytes

    def request(self, request: HttpRequest, timeout_s: float) -> Deferred[HttpResponse]:
        headers: dict[bytes | str, bytes | str] = {name: value for name, value in request.headers.items()}
        d: Deferred[Any] = self._client.request(request.method, request.url, headers=headers,
                                                data=request.body or None)
        d.addCallback(self._read)
        timed_out = False

        def give_up() -> None:
            nonlocal timed_out
            timed_out = True
            d.cancel()

        timer = self._reactor.callLater(timeout_s, give_up)

        def settle(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if timed_out and isinstance(result, Failure):
                # Cancelling surfaces as whatever treq/the agent wraps it in: say what happened.
                raise DeferredTimeout(f"no answer within {timeout_s} s")
            return result

        return d.addBoth(settle)

    def _read(self, response: Any) -> Deferred[HttpResponse]:
        chunks: list[bytes] = []
        size = [0]

        def collect(data: bytes) -> None:
            size[0] += len(data)
            if size[0] > self._max_body:
                raise BodyTooLarge(f"body over {self._max_body} bytes")
            chunks.append(data)

        collected: Deferred[Any] = treq.collect(response, collect)
        return collected.addCallback(lambda _: HttpResponse(response.code, b"".join(chunks)))
