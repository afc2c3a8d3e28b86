"""The HTTP requests a call makes (the operator's tool webhooks, Twilio's REST API): the client
interface the call layer is given. The composition root provides one on the real reactor
(:class:`mediaproxy.server.http_client.TreqHttpClient`); tests provide their own or point it at
a server on loopback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from mediaproxy.platforms.base import HttpRequest

__all__ = ["HttpClient", "HttpRequest", "HttpResponse"]


@dataclass(frozen=True)
class HttpResponse:
    """A response: its status and its body (bounded by the client)."""

    status: int
    body: bytes


class HttpClient(Protocol):
    """Sends requests; the Deferred fails on a connection error or after ``timeout_s``."""

    def request(self, request: HttpRequest, timeout_s: float) -> Deferred[HttpResponse]: ...
