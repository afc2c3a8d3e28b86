"""Text frames that are not UTF-8: the session answers its protocol's way before the socket closes.

Autobahn's own check is off (``utf8validateIncoming``; it would fail the connection with 1007
before the session saw anything); the port's one decode is the check, and on failure it calls
:meth:`PlatformSession.invalid_text`. AudioHook answers with ``disconnect`` (reason ``error``)
and runs its close transaction, AudioCodes with ``session.error``, the generic WebSocket with
``error`` naming ``bad_utf8``; the others have no error message, so the socket closes with 1007
(invalid frame payload data). Each is counted as ``protocol_errors_total{kind="bad_utf8"}``.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mediaproxy.platforms.asterisk import AsteriskSession
from mediaproxy.platforms.audiocodes_session import AudioCodesSession
from mediaproxy.platforms.base import PlatformSession, ProtocolViolation
from mediaproxy.platforms.freeswitch import FreeswitchSession
from mediaproxy.platforms.twilio import TwilioSession
from mediaproxy.platforms.vonage import VonageSession
from mediaproxy.platforms.websocket_client import WebSocketClientSession
from mediaproxy.server.port import PlatformPort
from mediaproxy.service import MediaProxyService
from tests.support import LoopbackService
from tests.test_fuzz_loopback import PATHS, config
from tests.test_fuzz_platforms import ORG, SID
from tests.test_fuzz_regressions import StubCall, StubWire, hook_session

BAD = b'{"event":"media","x":"\xff\xfe"}'
VIOLATION = ProtocolViolation("bad_utf8", "text frame is not UTF-8")


class SessionTests(SynchronousTestCase):
    """Each session's answer to :meth:`invalid_text`, and nothing after it."""

    def answer(self, session: PlatformSession) -> list[Any]:
        self.assertEqual(session.invalid_text(BAD), [VIOLATION])
        replies = [json.loads(m) for m in session.take_output() if isinstance(m, str)]
        self.assertEqual(session.invalid_text(BAD), [], "one violation, then the session is over")
        self.assertEqual(session.receive_text("{}"), [])
        self.assertEqual(session.take_output(), [])
        return replies

    def test_audiohook_disconnects_with_an_error(self) -> None:
        session = hook_session()
        (disconnect,) = self.answer(session)
        self.assertEqual((disconnect["type"], disconnect["seq"]), ("disconnect", 1))
        self.assertEqual(disconnect["parameters"], {"reason": "error", "info": "Client Error: text frame is not UTF-8"})
        self.assertTrue(session.awaits_close, "the close transaction follows")

    def test_audiocodes_answers_session_error(self) -> None:
        (error,) = self.answer(AudioCodesSession())
        self.assertEqual(error["type"], "session.error")
        self.assertIn("not UTF-8", error["reason"])

    def test_websocket_answers_error_naming_the_kind(self) -> None:
        (error,) = self.answer(WebSocketClientSession())
        self.assertEqual((error["type"], error["reason"]), ("error", "bad_utf8"))

    def test_platforms_without_an_error_message_only_report_it(self) -> None:
        for session in (TwilioSession(), VonageSession(), AsteriskSession(), FreeswitchSession()):
            self.assertEqual(self.answer(session), [], type(session).__name__)


class PortTests(SynchronousTestCase):
    """The port gives the session its say, then closes: 1007 when it had nothing to say."""

    def port(self, session: PlatformSession) -> tuple[PlatformPort, StubWire, StubCall]:
        wire = StubWire()
        port = PlatformPort(session, wire, Clock())
        call = StubCall(port)
        port.call = call  # type: ignore[assignment]
        return port, wire, call

    def test_no_error_message_closes_with_1007(self) -> None:
        port, wire, call = self.port(TwilioSession())
        port.received(BAD, False)
        # (The port may close twice for one goodbye; the socket starts one handshake.)
        self.assertEqual((call.events, wire.sent, set(wire.codes)), ([VIOLATION], [], {1007}))

    def test_the_protocols_own_error_goes_out_first(self) -> None:
        port, wire, call = self.port(AudioCodesSession())
        port.received(BAD, False)
        self.assertEqual(call.events, [VIOLATION])
        self.assertEqual([json.loads(m)["type"] for m in wire.sent], ["session.error"])  # type: ignore[arg-type]
        self.assertEqual(set(wire.codes), {1000}, "the protocol said goodbye: a normal close")

    def test_valid_text_frames_close_normally(self) -> None:
        port, wire, _ = self.port(TwilioSession())
        port.received(b"{not json", False)
        self.assertEqual(set(wire.codes), {1000})


class Client(WebSocketClientProtocol):
    """Sends one frame that is not UTF-8, answers AudioHook's ``disconnect`` with ``close``,
    and records what it got and how the proxy closed."""

    factory: ClientFactory

    def onOpen(self) -> None:
        self.sendMessage(BAD, False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.factory.received.append(message)
        if message.get("type") == "disconnect":
            self.sendMessage(json.dumps({"version": "2", "id": SID, "type": "close", "seq": 2, "serverseq": 1,
                                         "position": "PT0S", "parameters": {"reason": "error"}}).encode(), False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback(code)


class ClientFactory(WebSocketClientFactory):
    protocol = Client

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(url, headers=headers)
        self.received: list[dict[str, Any]] = []
        self.closed: Deferred[int | None] = Deferred()


class LoopbackTests(LoopbackService, TestCase):
    """Through the running service: each platform's goodbye, the close code, the count."""

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        address, _ = yield self.start_service(MediaProxyService(config(), reactor, tune_gc=False))
        self.base = f"ws://127.0.0.1:{address.port}"

    def tearDown(self) -> Any:
        return self.stop_service()

    @inlineCallbacks
    def send_bad(self, platform: str) -> Any:
        headers = {"Audiohook-Session-Id": SID, "Audiohook-Organization-Id": ORG} if platform == "audiohook" else {}
        factory = ClientFactory(self.base + PATHS[platform], headers)
        connectWS(factory)
        code = yield factory.closed
        self.assertEqual(self.metric("protocol_errors_total", platform=platform, kind="bad_utf8"), 1)
        return code, [m.get("type") for m in factory.received], factory.received

    @inlineCallbacks
    def test_twilio_closes_with_1007(self) -> Any:
        code, types, _ = yield self.send_bad("twilio")
        self.assertEqual((code, types), (1007, []))

    @inlineCallbacks
    def test_asterisk_closes_with_1007(self) -> Any:
        code, types, _ = yield self.send_bad("asterisk")
        self.assertEqual((code, types), (1007, []))

    @inlineCallbacks
    def test_audiohook_disconnects_then_closes_after_the_transaction(self) -> Any:
        code, types, received = yield self.send_bad("audiohook")
        self.assertEqual((code, types), (1000, ["disconnect", "closed"]))
        self.assertEqual(received[0]["parameters"]["reason"], "error")

    @inlineCallbacks
    def test_audiocodes_answers_session_error(self) -> Any:
        code, types, _ = yield self.send_bad("audiocodes")
        self.assertEqual((code, types), (1000, ["session.error"]))

    @inlineCallbacks
    def test_websocket_answers_error(self) -> Any:
        code, types, received = yield self.send_bad("websocket")
        self.assertEqual((code, types, received[0]["reason"]), (1000, ["error"], "bad_utf8"))
