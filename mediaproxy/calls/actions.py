"""The bot controls the call: the call actions and the operator's tools, offered to the model as
functions and carried out the platform's own way.

Built-in actions (offered when the backend's ``tools`` name them and the platform can do them):

- ``end_call(reason)``: the farewell the model is speaking is played to its last frame, then the
  call ends the platform's way (Twilio: the stream closes and the TwiML after ``<Connect>`` runs;
  Audio Connector: ``disconnect{completed}``; AudioCodes: the ``hangup`` activity).
- ``transfer_call(target, summary)``: ``target`` is one of the names in the platform's
  ``transfer_targets`` (never free text from the model); after the goodbye the caller is handed
  on (AudioCodes ``transfer``; Audio Connector ``disconnect`` with the target in
  ``outputVariables``; Twilio: the live call redirected to a ``<Dial>`` through the REST API
  when credentials are configured, else the stream ends and the call's next TwiML dials).
- ``send_dtmf(digits)``: digits played to the far end (IVR navigation), where the platform can.

``[tool:NAME]`` tools go to the operator's endpoint (:mod:`mediaproxy.calls.webhook`); the call
stays live meanwhile (the caller may talk and barge in) and a slow or failing endpoint gives the
model an error result, never a stuck call. Every use is counted in
``call_actions_total{action,platform,outcome}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from mediaproxy.backends.base import ToolSpec
from mediaproxy.calls.http import HttpResponse
from mediaproxy.calls.webhook import ToolWebhook
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import PlatformCapabilities

if TYPE_CHECKING:
    from mediaproxy.calls.bridge import CallBridge

MAX_SUMMARY_CHARS = 1000
FAREWELL_MAX_S = 30.0
"""Longest wait for the bot's goodbye to be heard before a call it ended is ended anyway."""
TRANSFER_REQUEST_TIMEOUT_S = 10.0
"""How long a platform's transfer API (Twilio REST) may take before the socket way is used."""
_DTMF = re.compile(r"^[0-9*#]{1,20}$")


def _spec(name: str, description: str, properties: Mapping[str, Any], required: list[str]) -> ToolSpec:
    return ToolSpec(name, description, {"type": "object", "properties": dict(properties), "required": required})


def builtin_specs(tools: tuple[str, ...], capabilities: PlatformCapabilities,
                  targets: Mapping[str, str]) -> list[ToolSpec]:
    """The built-in actions of ``tools`` this platform can carry out, as functions for the model."""
    specs = []
    if "end_call" in tools and capabilities.plays_audio:
        specs.append(_spec(
            "end_call", "End the call once you have said goodbye. Say the goodbye first, in the same turn.",
            {"reason": {"type": "string", "description": "why the call ends, in a few words"}}, ["reason"]))
    if "transfer_call" in tools and capabilities.can_transfer and targets:
        specs.append(_spec(
            "transfer_call",
            "Transfer the caller to a person. Tell the caller first that you are transferring them.",
            {"target": {"type": "string", "enum": sorted(targets), "description": "who to transfer to"},
             "summary": {"type": "string", "description": "what the caller needs, for the person taking over"}},
            ["target", "summary"]))
    if "send_dtmf" in tools and capabilities.can_send_dtmf:
        specs.append(_spec(
            "send_dtmf", "Press telephone keys on the call (to navigate a phone menu).",
            {"digits": {"type": "string", "description": "the keys: 0-9, * and #, at most 20"}}, ["digits"]))
    return specs


class CallActions:
    """The actions and tools of one call: what its model is offered and how each call is carried
    out. ``webhooks`` are the configured tools this call's backend offers."""

    def __init__(self, bridge: CallBridge, tools: tuple[str, ...], targets: Mapping[str, str],
                 webhooks: Mapping[str, ToolWebhook]) -> None:
        self._bridge = bridge
        self._tools = tools
        self._targets = targets
        self._webhooks = {name: hook for name, hook in webhooks.items() if name in tools}
        self._offered: set[str] = set()
        self._count = bridge.metrics.call_actions_total
        self._farewell: IDelayedCall | None = None
        self._ending = False
        self._pending: tuple[str, str] | None = None
        """The (call id, action) waiting for its goodbye to be heard."""

    def specs(self, capabilities: PlatformCapabilities) -> tuple[ToolSpec, ...]:
        """Every function offered to this call's model."""
        specs = builtin_specs(self._tools, capabilities, self._targets)
        specs += [ToolSpec(name, hook.settings.description, hook.settings.parameters)
                  for name, hook in self._webhooks.items()]
        self._offered = {spec.name for spec in specs}
        return tuple(specs)

    def call(self, call_id: str, name: str, arguments: str) -> None:
        """The model called ``name``; carry it out and answer it (or end the call)."""
        if self._ending:
            return  # the call is ending: nothing more is done for the model
        if name not in self._offered:
            self._answer(call_id, {"error": f"no tool named {name[:40]!r} is available"})
            return
        try:
            args: Any = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            args = None
        if name in self._webhooks:
            self._webhook(call_id, name, arguments)
            return
        if not isinstance(args, dict):
            self._refuse(call_id, name, "the arguments must be a JSON object")
            return
        if name == "end_call":
            self._counted(name, "ok")
            reason = str(args.get("reason", ""))[:200] or "the bot ended the call"
            self._after_farewell(call_id, name, lambda: self._bridge.backend_hangup(reason))
        elif name == "transfer_call":
            target = args.get("target")
            if not isinstance(target, str) or target not in self._targets:
                self._refuse(call_id, name, f"target must be one of {sorted(self._targets)}")
                return
            summary = str(args.get("summary", ""))[:MAX_SUMMARY_CHARS]
            value = self._targets[target]
            self._after_farewell(call_id, name, lambda: self._transfer(target, value, summary))
        elif name == "send_dtmf":
            digits = args.get("digits")
            if not isinstance(digits, str) or not _DTMF.match(digits):
                self._refuse(call_id, name, "digits must be 1 to 20 of 0-9, * and #")
                return
            self._bridge.send_dtmf(digits)
            self._counted(name, "ok")
            self._answer(call_id, {"sent": digits})

    def stop(self) -> None:
        """The call ended: no timer left behind."""
        self._cancel_farewell()

    def caller_interrupted(self) -> None:
        """The caller spoke over the goodbye ("wait—"): the call does not end (or move) under
        them. The pending action is dropped and the model told, so it can go on talking. Called
        by the bridge on barge-in, before the playout is cleared."""
        if self._pending is None:
            return
        call_id, name = self._pending
        self._pending = None
        self._ending = False
        self._cancel_farewell()
        self._counted(name, "cancelled")
        self._answer(call_id, {"cancelled": "the caller spoke before your goodbye finished; the call goes on. "
                                            "Listen to them and call the function again if it is still needed."})

    def _cancel_farewell(self) -> None:
        if self._farewell is not None and self._farewell.active():
            self._farewell.cancel()
        self._farewell = None

    def _after_farewell(self, call_id: str, name: str, then: Callable[[], None]) -> None:
        """Run ``then`` once the bot's goodbye has been heard to its last frame (bounded by
        ``FAREWELL_MAX_S``), unless the caller interrupts it (:meth:`caller_interrupted`);
        meanwhile the model's further calls are not taken."""
        bridge = self._bridge
        if self._ending or bridge.ended:
            return
        self._ending = True
        pending = self._pending = (call_id, name)

        def go(_: object = None) -> None:
            if self._pending is not pending or bridge.ended:
                return  # cancelled by a barge-in, or already done
            self._pending = None
            self._cancel_farewell()
            bridge.digits.stop()
            then()

        self._farewell = bridge.context.reactor.callLater(FAREWELL_MAX_S, go)
        if bridge.playout is not None:
            played_out = bridge.playout.when_played_out()
            # It fails with CancelledError once the call ends (the playout stops): nothing to do.
            played_out.addCallbacks(go, lambda failure: failure.trap(CancelledError) and None)
        else:
            go()

    def _transfer(self, name: str, target: str, summary: str) -> None:
        """Hand the caller on: through the platform's API where it has one (Twilio REST), falling
        back to the media socket's own way when that fails."""
        bridge = self._bridge
        platform, session, http = bridge.endpoint.platform, bridge.leg.session, bridge.context.http
        variables = {"transferName": name}
        request = (platform.transfer_request(bridge.endpoint.options, session, target)
                   if platform.transfer_request is not None else None)
        if request is None or http is None:
            self._transferred_on_socket(target, summary, variables)
            return

        def answered(response: HttpResponse) -> None:
            if bridge.ended:
                return
            if 200 <= response.status < 300:
                self._counted("transfer_call", "ok")
                session.hangup(Outcome.TRANSFERRED, f"transferred to {name}", variables)
                bridge.end(Outcome.TRANSFERRED, f"transferred to {name}")
                bridge.leg.close()
            else:
                bridge.log.warn("call {call_id}: {platform} refused the transfer (HTTP {status}); ending the stream "
                         "instead", call_id=bridge.log_id, platform=bridge.platform, status=response.status)
                self._transferred_on_socket(target, summary, variables, "fallback")

        def failed(failure: Failure) -> None:
            bridge.log.warn("call {call_id}: the transfer request failed ({kind}); ending the stream instead",
                     call_id=bridge.log_id, kind=type(failure.value).__name__)
            self._transferred_on_socket(target, summary, variables, "fallback")

        http.request(request, TRANSFER_REQUEST_TIMEOUT_S).addCallbacks(answered, failed)

    def _transferred_on_socket(self, target: str, summary: str, variables: Mapping[str, str],
                               outcome: str = "ok") -> None:
        bridge = self._bridge
        if bridge.ended:
            return
        if not bridge.leg.session.transfer(target, summary, variables):
            self._counted("transfer_call", "failed")
            bridge.backend_hangup("transfer failed")
            return
        self._counted("transfer_call", outcome)
        bridge.end(Outcome.TRANSFERRED, "transferred")
        bridge.leg.close()

    def _webhook(self, call_id: str, name: str, arguments: str) -> None:
        bridge = self._bridge
        context = {"call_id": bridge.call_id, "platform": bridge.platform, "metadata": dict(bridge.metadata)}

        def done(result: tuple[str, str]) -> None:
            outcome, output = result
            self._counted(name, outcome)
            if not bridge.ended:  # the caller may have hung up meanwhile
                bridge.tool_result(call_id, output)

        self._webhooks[name].call(arguments, context).addCallback(done)

    def _refuse(self, call_id: str, name: str, why: str) -> None:
        self._counted(name, "refused")
        self._answer(call_id, {"error": why})

    def _answer(self, call_id: str, output: Mapping[str, Any]) -> None:
        self._bridge.tool_result(call_id, json.dumps(output))

    def _counted(self, name: str, outcome: str) -> None:
        self._count.labels(name, self._bridge.platform, outcome).inc()
