"""HTTP routing in front of the platform WebSockets.

``PathRouter`` maps exact request paths to platforms (404 otherwise); ``PlatformResource`` hands
WebSocket upgrades on its path to Autobahn and answers plain GETs where the platform defines an
answer (AudioCodes Live Hub validation), 426 Upgrade Required otherwise. Autobahn's
``WebSocketResource`` alone would hand every request, upgrade or not, to the handshake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Request

from mediaproxy.platforms.base import UpgradeRequest
from mediaproxy.server.websocket import PlatformServerFactory


class PlatformResource(Resource):
    """One platform on one path: WebSocket upgrades go to Autobahn; a plain GET gets the
    platform's ``plain_get`` answer if it has one, else 426 Upgrade Required."""

    isLeaf = True

    def __init__(self, factory: PlatformServerFactory) -> None:
        super().__init__()
        self.factory = factory
        self._websocket = WebSocketResource(factory)

    def render(self, request: Request) -> Any:
        upgrade = (request.getHeader("upgrade") or "").lower()
        if "websocket" in upgrade:
            return self._websocket.render(request)
        endpoint = self.factory.endpoint
        plain_get = endpoint.platform.plain_get
        if plain_get is not None and request.method in (b"GET", b"HEAD"):
            headers = {k.decode("latin-1").lower(): b", ".join(v).decode("latin-1")
                       for k, v in request.requestHeaders.getAllRawHeaders()}
            upgrade_request = UpgradeRequest(
                target=request.uri.decode("latin-1"),
                host=(request.getHeader("host") or ""),
                headers=headers,
                public_url=self.factory.public_url,
            )
            answer = plain_get(upgrade_request, endpoint.options)
            if answer is not None:
                status, body = answer
                request.setResponseCode(status)
                request.setHeader(b"content-type", b"application/json")
                return body
        request.setResponseCode(426)
        request.setHeader(b"upgrade", b"websocket")
        return b"WebSocket upgrade required\n"


class PathRouter(Resource):
    """Routes exact request paths (trailing slash ignored) to resources; 404 otherwise."""

    isLeaf = True

    def __init__(self, routes: Mapping[str, Resource]) -> None:
        super().__init__()
        self.routes = {path.rstrip("/") or "/": resource for path, resource in routes.items()}

    def render(self, request: Request) -> Any:
        path = request.path.decode("latin-1").rstrip("/") or "/"
        resource = self.routes.get(path)
        if resource is None:
            request.setResponseCode(404)
            return b"no platform on this path\n"
        return resource.render(request)
