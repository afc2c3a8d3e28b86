"""The HTTP requests a call makes (the operator's tool webhooks, Twilio's REST API): the client
interface the call layer is given, defined in :mod:`mediaproxy.http_requests` (shared with the
backends) and named here for the call layer. The composition root provides one on the real
reactor (:class:`mediaproxy.server.http_client.TreqHttpClient`); tests provide their own or point
it at a server on loopback."""

from __future__ import annotations

from mediaproxy.http_requests import HttpClient, HttpRequest, HttpResponse

__all__ = ["HttpClient", "HttpRequest", "HttpResponse"]
