"""HTTP requests as plain data, and the interface of the client that sends them: the neutral words
the layers share for the few HTTP calls the proxy makes (Twilio's REST API, the operator's tool
webhooks, ElevenLabs' signed URL). The composition root provides the one client of the process
(:class:`mediaproxy.server.http_client.TreqHttpClient`); tests provide their own or point it at
a server on loopback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

__all__ = ["HttpClient", "HttpRequest", "HttpResponse"]


@dataclass(frozen=True)
class HttpRequest:
    """An HTTP request made on a call's behalf (Twilio's REST API to redirect a live call, a
    backend's credential exchange), as plain data: whoever holds the client sends it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class HttpResponse:
    """A response: its status and its body (bounded by the client)."""

    status: int
    body: bytes


class HttpClient(Protocol):
    """Sends requests; the Deferred fails on a connection error or after ``timeout_s``."""

    def request(self, request: HttpRequest, timeout_s: float) -> Deferred[HttpResponse]: ...
