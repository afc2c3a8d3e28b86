"""CallActions on a task.Clock: what the model is offered on each kind of platform, and how each
call action and tool call is carried out (through a real CallBridge, with a recording platform
session and backend)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.calls import CallBridge, CallContext, Endpoint
from mediaproxy.calls.actions import builtin_specs
from mediaproxy.calls.http import HttpRequest, HttpResponse
from mediaproxy.calls.webhook import ToolWebhook
from mediaproxy.config import BackendCommon, PlayoutSettings, ToolSettings
from mediaproxy.metrics import Metrics
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import CallStarted, PlatformCapabilities, PlatformSession, PlatformType
from mediaproxy.playout import PlayoutClock
from tests.support import RecordingBackend, RecordingBackendSession, RecordingLeg

CAPS = PlatformCapabilities(can_flush=True, has_marks=False, max_lead_ms=None, packet_ms=20,
                            can_transfer=True, can_send_dtmf=True)
TARGETS = {"agent": "sip:agents@pbx.example.com", "billing": "+15551230000"}


class ScriptedSession(PlatformSession):
    """A platform session that records the commands it is given."""

    def __init__(self, capabilities: PlatformCapabilities = CAPS, transfers: bool = True) -> None:
        super().__init__()
        self.capabilities = capabilities
        self.commands: list[tuple[Any, ...]] = []
        self._transfers = transfers

    def play(self, packet: bytes) -> None:
        self.commands.append(("play", len(packet)))

    def send_dtmf(self, digits: str) -> None:
        self.commands.append(("dtmf", digits))

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        self.commands.append(("hangup", outcome, reason))

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        self.commands.append(("transfer", target, summary))
        return self._transfers


class RecordingHttp:
    """An HTTP client answering from a script."""

    def __init__(self, *answers: HttpResponse | Exception) -> None:
        self.requests: list[HttpRequest] = []
        self.answers = list(answers)

    def request(self, request: HttpRequest, timeout_s: float) -> Deferred[HttpResponse]:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            d: Deferred[HttpResponse] = Deferred()
            d.errback(Failure(answer))
            return d
        return succeed(answer)


class Call:
    def __init__(self, tools: tuple[str, ...], session: ScriptedSession | None = None,
                 http: RecordingHttp | None = None, webhooks: Mapping[str, ToolWebhook] | None = None) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.session = session or ScriptedSession()
        self.leg = RecordingLeg(self.clock, self.session)
        self.backend = RecordingBackend()
        self.context = CallContext(self.clock, PlayoutClock(self.clock, 20, self.metrics), self.metrics,
                                   PlayoutSettings(), http=http, webhooks=webhooks or {})
        platform: PlatformType[Any] = PlatformType("scripted", object, lambda r, o, n: None,
                                                   lambda o, f: self.session)
        self.endpoint = Endpoint("scripted", platform, None, self.backend, BackendCommon(tools=tools), TARGETS)
        self.bridge = CallBridge(self.endpoint, self.context, self.leg)
        self.bridge.start(CallStarted("CA1", MULAW_8K, {"tier": "gold"}))

    @property
    def backend_session(self) -> RecordingBackendSession:
        return self.backend.sessions[0]

    def offered(self) -> list[str]:
        return [tool.name for tool in self.backend_session.call.tools]

    def tool(self, name: str, arguments: Any, call_id: str = "call_1") -> None:
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self.backend_session.listener.backend_tool_call(call_id, name, text)

    def results(self) -> list[Any]:
        return [(call_id, json.loads(output)) for call_id, output in self.backend_session.tool_results]

    def count(self, action: str, outcome: str) -> float:
        return self.metrics.registry.get_sample_value(
            "mediaproxy_call_actions_total", {"action": action, "platform": "scripted", "outcome": outcome}) or 0


class OfferTests(SynchronousTestCase):
    def test_only_what_the_platform_can_do(self) -> None:
        tools = ("end_call", "transfer_call", "send_dtmf")
        self.assertEqual([s.name for s in builtin_specs(tools, CAPS, TARGETS)], list(tools))
        plain = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=20)
        self.assertEqual([s.name for s in builtin_specs(tools, plain, TARGETS)], ["end_call"])
        monitor = PlatformCapabilities(can_flush=False, has_marks=False, max_lead_ms=0, packet_ms=20,
                                       plays_audio=False, can_transfer=True)
        self.assertEqual([s.name for s in builtin_specs(tools, monitor, TARGETS)], ["transfer_call"])
        self.assertEqual([s.name for s in builtin_specs(tools, CAPS, {})], ["end_call", "send_dtmf"])

    def test_transfer_targets_are_an_enum_of_names_never_free_text(self) -> None:
        (spec,) = builtin_specs(("transfer_call",), CAPS, TARGETS)
        self.assertEqual(spec.parameters["properties"]["target"]["enum"], ["agent", "billing"])
        self.assertEqual(spec.parameters["required"], ["target", "summary"])

    def test_the_call_offers_its_tools_to_the_backend(self) -> None:
        call = Call(("send_dtmf", "end_call"))
        self.assertEqual(call.offered(), ["end_call", "send_dtmf"])


class ActionTests(SynchronousTestCase):
    def test_send_dtmf(self) -> None:
        call = Call(("send_dtmf",))
        call.tool("send_dtmf", {"digits": "12#"})
        self.assertIn(("dtmf", "12#"), call.session.commands)
        self.assertEqual(call.results(), [("call_1", {"sent": "12#"})])
        self.assertEqual(call.count("send_dtmf", "ok"), 1)

    def test_bad_arguments_are_refused_with_a_reason(self) -> None:
        call = Call(("send_dtmf", "transfer_call"))
        call.tool("send_dtmf", {"digits": "call 911"}, "c1")
        call.tool("transfer_call", {"target": "sip:attacker@evil.example", "summary": "x"}, "c2")
        call.tool("transfer_call", "not json", "c3")
        results = dict(call.results())
        self.assertIn("digits", results["c1"]["error"])
        self.assertIn("agent", results["c2"]["error"])
        self.assertIn("JSON object", results["c3"]["error"])
        self.assertNotIn(("transfer", "sip:attacker@evil.example", "x"), call.session.commands)
        self.assertEqual(call.count("transfer_call", "refused"), 2)
        self.assertIsNone(call.bridge.outcome)

    def test_a_tool_not_offered_is_answered_and_not_counted(self) -> None:
        call = Call(("end_call",))
        call.tool("delete_everything" * 10, {})
        (result,) = call.results()
        self.assertIn("no tool", result[1]["error"])
        samples = [s for m in call.metrics.registry.collect() if m.name == "mediaproxy_call_actions" for s in m.samples]
        self.assertEqual(samples, [], "a name from the model never becomes a label")

    def test_webhook_tool_result_reaches_the_model(self) -> None:
        http = RecordingHttp(HttpResponse(200, b'{"status": "shipped"}'))
        tool = ToolSettings(url="https://tools.example.com/orders", description="Find an order",
                            parameters={"type": "object", "properties": {"order": {"type": "string"}}})
        hook = ToolWebhook("lookup_order", tool, http, Clock(), Metrics())
        call = Call(("lookup_order",), http=http, webhooks={"lookup_order": hook})
        self.assertEqual(call.offered(), ["lookup_order"])
        self.assertEqual(call.backend_session.call.tools[0].parameters, tool.parameters)
        call.tool("lookup_order", {"order": "A-17"})
        (request,) = http.requests
        self.assertEqual(json.loads(request.body)["call"], {"call_id": "CA1", "platform": "scripted",
                                                           "metadata": {"tier": "gold"}})
        self.assertEqual(call.results(), [("call_1", {"status": "shipped"})])
        self.assertEqual(call.count("lookup_order", "ok"), 1)
        self.assertIsNone(call.bridge.outcome, "the call goes on")

    def test_a_tool_answering_after_the_call_ended_is_dropped(self) -> None:
        pending: Deferred[HttpResponse] = Deferred()

        class Slow(RecordingHttp):
            def request(self, request: HttpRequest, timeout_s: float) -> Deferred[HttpResponse]:
                return pending

        http = Slow()
        tool = ToolSettings(url="https://tools.example.com/x", description="slow")
        call = Call(("slow",), http=http, webhooks={"slow": ToolWebhook("slow", tool, http, Clock(), Metrics())})
        call.tool("slow", {})
        call.bridge.end(Outcome.COMPLETED)
        pending.callback(HttpResponse(200, b"{}"))
        self.assertEqual(call.results(), [])


def goodbye(call: Call, ms: int = 1000) -> None:
    """The bot says goodbye: ``ms`` of audio in one burst, then its response is done."""
    listener = call.backend_session.listener
    listener.backend_audio("bye", MULAW_8K.silence(MULAW_8K.bytes_for_ms(ms)))
    listener.backend_response_done("bye")


class EndingTests(SynchronousTestCase):
    def advance(self, call: Call, seconds: float) -> None:
        for _ in range(round(seconds * 1000)):
            call.clock.advance(0.001)

    def test_end_call_lets_the_goodbye_play_to_its_last_frame(self) -> None:
        call = Call(("end_call",))
        goodbye(call, 1000)
        call.tool("end_call", {"reason": "the caller is done"})
        self.advance(call, 0.9)
        self.assertIsNone(call.bridge.outcome, "still saying goodbye")
        self.assertNotIn("hangup", [c[0] for c in call.session.commands])
        self.advance(call, 0.2)
        self.assertEqual(call.bridge.outcome, Outcome.BOT_HANGUP)
        self.assertEqual(call.session.commands[-1], ("hangup", Outcome.BOT_HANGUP, "the caller is done"))
        self.assertEqual(sum(c[1] for c in call.session.commands if c[0] == "play"), MULAW_8K.bytes_for_ms(1000))
        self.assertTrue(call.leg.hung_up)
        self.assertEqual(call.clock.getDelayedCalls(), [])
        self.assertEqual(call.count("end_call", "ok"), 1)

    def test_nothing_more_is_done_for_the_model_once_ending(self) -> None:
        call = Call(("end_call", "send_dtmf"))
        goodbye(call, 500)
        call.tool("end_call", {"reason": "done"}, "c1")
        call.tool("send_dtmf", {"digits": "1"}, "c2")
        self.assertNotIn(("dtmf", "1"), call.session.commands)

    def test_the_caller_talking_over_the_goodbye_keeps_the_call(self) -> None:
        """"Wait—": a caller who interrupts the goodbye is not hung up on; the model is told."""
        call = Call(("end_call",))
        goodbye(call, 3000)
        call.tool("end_call", {"reason": "done"}, "c1")
        self.advance(call, 0.4)
        call.backend_session.listener.backend_speech_started()
        self.advance(call, 1.0)
        self.assertIsNone(call.bridge.outcome, "the call goes on")
        ((call_id, result),) = call.results()
        self.assertEqual(call_id, "c1")
        self.assertIn("caller spoke", result["cancelled"])
        self.assertEqual(call.count("end_call", "cancelled"), 1)
        self.assertEqual(call.clock.getDelayedCalls(), [], "the farewell bound is cancelled too")
        goodbye(call, 200)  # the model says goodbye again, and this time it is heard out
        call.tool("end_call", {"reason": "done now"}, "c2")
        self.advance(call, 0.3)
        self.assertEqual(call.bridge.outcome, Outcome.BOT_HANGUP)

    def test_a_goodbye_that_never_finishes_is_bounded(self) -> None:
        call = Call(("end_call",))
        call.backend_session.listener.backend_audio("bye", MULAW_8K.silence(800))  # never done
        call.tool("end_call", {"reason": "done"})
        call.clock.advance(29.0)
        self.assertIsNone(call.bridge.outcome)
        call.clock.advance(1.5)
        self.assertEqual(call.bridge.outcome, Outcome.BOT_HANGUP)
        self.assertEqual(call.clock.getDelayedCalls(), [])

    def test_transfer_on_the_socket_after_the_goodbye(self) -> None:
        call = Call(("transfer_call",))
        goodbye(call, 400)
        call.tool("transfer_call", {"target": "billing", "summary": "wants a refund"})
        self.assertEqual([c for c in call.session.commands if c[0] == "transfer"], [])
        self.advance(call, 0.5)
        self.assertIn(("transfer", "+15551230000", "wants a refund"), call.session.commands)
        self.assertEqual(call.bridge.outcome, Outcome.TRANSFERRED)
        self.assertTrue(call.leg.hung_up)
        self.assertEqual(call.count("transfer_call", "ok"), 1)

    def test_a_platform_that_cannot_take_the_transfer_ends_the_call(self) -> None:
        call = Call(("transfer_call",), session=ScriptedSession(transfers=False))
        call.tool("transfer_call", {"target": "agent", "summary": "s"})
        self.advance(call, 0.1)
        self.assertEqual(call.bridge.outcome, Outcome.BOT_HANGUP)
        self.assertEqual(call.count("transfer_call", "failed"), 1)


class TransferApiTests(SynchronousTestCase):
    """Platforms that move a live call through an HTTP API (Twilio REST) do so, falling back to
    the socket's own way when the API fails."""

    def make(self, *answers: HttpResponse | Exception) -> Call:
        call = Call(("transfer_call",), http=RecordingHttp(*answers))
        request = HttpRequest("POST", "https://api.example.com/calls/CA1", {"authorization": "Basic x"}, b"Twiml=...")
        platform = PlatformType("scripted", object, lambda r, o, n: None, lambda o, f: call.session,
                                transfer_request=lambda options, session, target: request)
        call.endpoint = Endpoint("scripted", platform, None, call.backend, BackendCommon(tools=("transfer_call",)),
                                 TARGETS)
        call.bridge.endpoint = call.endpoint
        return call

    def test_api_transfer(self) -> None:
        call = self.make(HttpResponse(200, b"{}"))
        call.tool("transfer_call", {"target": "agent", "summary": "s"})
        call.clock.advance(0.1)
        assert call.context.http is not None
        (request,) = call.context.http.requests  # type: ignore[attr-defined]
        self.assertEqual(request.url, "https://api.example.com/calls/CA1")
        self.assertNotIn("transfer", [c[0] for c in call.session.commands])
        self.assertEqual(call.session.commands[-1][:2], ("hangup", Outcome.TRANSFERRED))
        self.assertEqual(call.bridge.outcome, Outcome.TRANSFERRED)
        self.assertEqual(call.count("transfer_call", "ok"), 1)

    def test_api_refusal_falls_back_to_the_socket(self) -> None:
        for answer in (HttpResponse(404, b"{}"), ConnectionRefusedError("down")):
            call = self.make(answer)
            call.tool("transfer_call", {"target": "agent", "summary": "s"})
            call.clock.advance(0.1)
            self.assertIn(("transfer", "sip:agents@pbx.example.com", "s"), call.session.commands)
            self.assertEqual(call.bridge.outcome, Outcome.TRANSFERRED)
            self.assertEqual(call.count("transfer_call", "fallback"), 1)
