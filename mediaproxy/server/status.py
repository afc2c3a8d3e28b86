"""The metrics listener's resources: /metrics (Prometheus text), /health, /ready.

``prometheus_client.twisted.MetricsResource`` imports the global reactor and renders in a thread
pool; rendering the service's own registry inline is cheap (a few labelled series) and keeps the
reactor the only thread.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request


class MetricsPage(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class StatusPage(Resource):
    """200 ``ok`` while ``check()`` is true, else 503 with ``down_text``."""

    isLeaf = True

    def __init__(self, check: Callable[[], bool], down_text: bytes) -> None:
        super().__init__()
        self.check = check
        self.down_text = down_text

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        if self.check():
            return b"ok\n"
        request.setResponseCode(503)
        return self.down_text


def metrics_root(registry: CollectorRegistry, ready: Callable[[], bool]) -> Resource:
    """The metrics listener's root resource: /metrics, /health and /ready."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    root.putChild(b"health", StatusPage(lambda: True, b"down\n"))
    root.putChild(b"ready", StatusPage(ready, b"draining\n"))
    return root
