"""Shared by the limit, fault, TLS and secret tests: the real service with one endpoint of each
platform (Twilio, AudioHook Audio Connector, AudioCodes) and helpers that open a call on each
with the scripted clients of the platform loopback suites."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from mediaproxy.calls import CallBridge
from mediaproxy.config import Config, parse_config
from tests.test_loopback_audiocodes import TOKEN, VaicFactory, of_type
from tests.test_loopback_audiohook import EXTERNAL, STEREO, GenesysFactory, genesys_headers, has
from tests.test_loopback_twilio import ScriptedTwilioFactory

PLATFORMS = ("twilio", "audiohook", "audiocodes")


def three_platforms(proxy: Mapping[str, str] | None = None, backend: Mapping[str, str] | None = None,
                    **platform_options: Mapping[str, str]) -> Config:
    """One endpoint per platform on loopback (``/twilio``, ``/audiohook``, ``/audiocodes``), all
    answered by ``[backend:bot]`` (the echo parrot unless ``backend`` says otherwise)."""
    sections: dict[str, dict[str, str]] = {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "drain_seconds": "1", **(proxy or {})},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "platform:twilio": {"path": "/twilio", "backend": "bot", **platform_options.get("twilio", {})},
        "platform:audiohook": {"path": "/audiohook", "backend": "bot", "mode": "connector",
                               **platform_options.get("audiohook", {})},
        "platform:audiocodes": {"path": "/audiocodes", "backend": "bot", "token": TOKEN,
                                **platform_options.get("audiocodes", {})},
        "backend:bot": dict(backend or {"type": "echo", "silence_ms": "200"}),
    }
    return parse_config("test.ini", sections, {})


@inlineCallbacks
def open_twilio(base: str, headers: dict[str, str] | None = None, **connect: Any) -> Any:
    """A started Twilio call: (factory, client)."""
    factory = ScriptedTwilioFactory(f"{base}/twilio", headers=headers)
    connectWS(factory, **connect)
    client = yield factory.opened
    return factory, client


@inlineCallbacks
def open_audiohook(base: str, api_key: str | None = None, **connect: Any) -> Any:
    """An opened AudioHook Audio Connector session: (factory, client)."""
    session_id = "30b0e395-84d3-4570-ac13-9a62d8f514c0"
    headers = genesys_headers(session_id) if api_key is None else genesys_headers(session_id, api_key)
    factory = GenesysFactory(f"{base}/audiohook", session_id=session_id, headers=headers)
    connectWS(factory, **connect)
    client = yield factory.connected
    client.open([STEREO, EXTERNAL])
    yield factory.wait_for(has("opened"))
    return factory, client


@inlineCallbacks
def open_audiocodes(base: str, headers: dict[str, str] | None = None, conversation: str = "conv-1",
                    **connect: Any) -> Any:
    """A started AudioCodes conversation with its user stream open: (factory, client)."""
    factory = VaicFactory(f"{base}/audiocodes", headers=headers, conversation=conversation)
    connectWS(factory, **connect)
    client = yield factory.opened
    client.initiate(["raw/mulaw"])
    yield factory.wait_for(of_type("session.accepted"))
    client.start(caller="+14155550123")
    client.send({"type": "userStream.start"})
    yield factory.wait_for(of_type("userStream.started"))
    return factory, client


class StartWatcher(TestCase):
    """Records every call that starts (``CallBridge.start``) so a test can wait for it."""

    def watch_starts(self) -> None:
        self.started: list[CallBridge] = []
        self._start_waiters: list[tuple[int, Deferred[None]]] = []
        start = CallBridge.start

        def recording_start(bridge: CallBridge, event: Any) -> None:
            start(bridge, event)
            self.started.append(bridge)
            for n, d in list(self._start_waiters):
                if len(self.started) >= n:
                    self._start_waiters.remove((n, d))
                    d.callback(None)

        self.patch(CallBridge, "start", recording_start)

    def when_started(self, n: int) -> Deferred[None]:
        """Fires once ``n`` calls have started (their CallStarted was handled)."""
        d: Deferred[None] = Deferred()
        self._start_waiters.append((n, d))
        if len(self.started) >= n:
            self._start_waiters.remove((n, d))
            d.callback(None)
        return d
