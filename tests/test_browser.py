"""examples/browser.html in headless Chromium against the real service: the page is served by a
test web server on 127.0.0.1, dials ``[platform:browser] type = websocket`` with its token in the
query, streams Chromium's fake microphone as L16 16 kHz and hears it back from the echo backend
(``mode = stream``); it POSTs what it saw to the test server, which fires a Deferred. Skipped when
Chromium is missing, except in CI (``CI`` set), where scripts/setup-env.sh installs it."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from tests.support import LoopbackService

PAGE = FilePath(__file__).parent().parent().child("examples").child("browser.html")
TOKEN = "page-token"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
)


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class PageServer(Resource):
    """Serves the page and takes its POSTed result."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.result: Deferred[dict[str, Any]] = Deferred()

    def render_GET(self, request: Request) -> bytes:
        if request.path != b"/browser.html":
            request.setResponseCode(404)
            return b""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE.getContent()

    def render_POST(self, request: Request) -> bytes:
        body = json.loads(request.content.read())  # type: ignore[union-attr]
        if not self.result.called:
            self.result.callback(body)
        return b"ok"


class Browser(ProcessProtocol):
    """The Chromium process: its output is kept for the failure message."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output.extend(data[-4096:])

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class BrowserTests(LoopbackService, TestCase):
    timeout = 120

    def setUp(self) -> Any:
        self.chromium = chromium()
        if self.chromium is None:
            if os.environ.get("CI"):
                self.fail("CI is set but Chromium is not installed (scripts/setup-env.sh installs it)")
            raise SkipTest("Chromium is not installed (apt-get install chromium; CI installs it)")
        config = parse_config("test.ini", {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:browser": {"type": "websocket", "path": "/browser", "backend": "bot", "token": TOKEN},
            "backend:bot": {"type": "echo", "mode": "stream"},
        }, {})
        self.pages = PageServer()
        self.web = reactor.listenTCP(0, Site(self.pages), interface="127.0.0.1")
        self.browser: Browser | None = None
        return self.start_service(MediaProxyService(config, reactor, tune_gc=False))

    @inlineCallbacks
    def tearDown(self) -> Any:
        browser = self.browser
        if browser is not None and not browser.ended.called:
            browser.transport.signalProcess("TERM")  # type: ignore[union-attr]  # the one we started; it ends its children
        if browser is not None:
            yield browser.ended
        yield self.web.stopListening()
        yield self.stop_service()

    @inlineCallbacks
    def test_page_streams_and_hears_itself(self) -> Any:
        assert self.chromium is not None
        proxy = self.service.platform_listener.address()
        web = self.web.getHost()
        query = urlencode({"ws": f"ws://127.0.0.1:{proxy.port}/browser", "token": TOKEN, "autostart": "1",
                           "report": "/result", "min": "16000"})
        url = f"http://127.0.0.1:{web.port}/browser.html?{query}"
        profile = self.mktemp()
        os.makedirs(profile)
        self.browser = Browser()
        args = [self.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url]
        reactor.spawnProcess(self.browser, self.chromium, args, env=dict(os.environ))
        # Whichever comes first: the page's report, or Chromium exiting without one.
        done: Deferred[Any] = Deferred()
        self.pages.result.addCallback(lambda r: done.callback(r) if not done.called else None)
        self.browser.ended.addCallback(lambda _: done.callback(None) if not done.called else None)
        result = yield done
        self.assertIsNotNone(result, f"Chromium exited without a report: {bytes(self.browser.output)[-2000:]!r}")
        self.assertTrue(result["connected"])
        self.assertGreater(result["sent"], 0)
        self.assertGreaterEqual(result["heard"], 16000)  # half a second of its own audio, back
        label = {"platform": "browser"}
        self.assertGreater(self.metric("frames_total", label, direction="in"), 0)
        self.assertGreater(self.metric("frames_total", label, direction="out"), 0)
