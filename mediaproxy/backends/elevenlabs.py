"""``[backend:NAME] type = elevenlabs``: ElevenLabs Agents (Conversational AI) over WebSocket.

This module is the configuration surface, the :class:`~mediaproxy.backends.base.Backend` and the
signed-URL exchange; the protocol lives in :mod:`~mediaproxy.backends.elevenlabs_dialect`
(sans-IO) and the per-call glue in :mod:`~mediaproxy.backends.elevenlabs_session`.

Public agents are dialled as ``url?agent_id=...``. With an ``api_key`` (private agents) every
conversation first asks ``GET {api_url}/v1/convai/conversation/get-signed-url?agent_id=...`` with
the ``xi-api-key`` header, through the process's HTTP client, and dials the ``signed_url`` it
answers (the key never travels on the WebSocket).

Formats are the agent's own configuration, announced in ``conversation_initiation_metadata``: the
session exchanges the platform's format with the bridge and converts to the agent's input and
from its output itself, so a µ-law 8 kHz agent behind Twilio passes through untouched.
``agent_audio_format`` only tells negotiating platforms which format the agent is expected to
speak.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred

from mediaproxy import strict_json
from mediaproxy.audio.format import ALAW_8K, L16_16K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.backends.base import BackendListener, BackendType, CallInfo
from mediaproxy.backends.elevenlabs_events import (
    parse_format,
)
from mediaproxy.backends.elevenlabs_session import ElevenLabsSession, SignedUrlRefused
from mediaproxy.http_requests import HttpClient, HttpRequest, HttpResponse
from mediaproxy.metrics import Metrics
from mediaproxy.options import OptionError, boolean, choice, http_url, integer, name_list, number, option, text, ws_url

DEFAULT_URL = "wss://api.elevenlabs.io/v1/convai/conversation"
DEFAULT_API_URL = "https://api.elevenlabs.io"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"

AGENT_FORMATS = ("pcm_16000", "ulaw_8000", "pcm_8000", "pcm_24000", "pcm_48000")


@dataclass(frozen=True, kw_only=True)
class ElevenLabsOptions:
    """One ``[backend:NAME] type = elevenlabs`` section, parsed. Durations carry their unit in
    the name. ``instructions``, ``greeting`` and ``language`` are conversation overrides: sent
    only when set, and the agent must allow each one in its security settings (else the service
    ends the conversation)."""

    agent_id: str = option(text, doc="the agent's id (agent_...)")
    api_key: str = option(text, "", "API key for a private agent, sent as xi-api-key to get a signed URL "
                                    "(use ${ELEVENLABS_API_KEY}); empty: a public agent, dialled by agent_id")
    url: str = option(ws_url, DEFAULT_URL, "Agents WebSocket URL for public agents (?agent_id= is added)")
    api_url: str = option(http_url, DEFAULT_API_URL, "HTTP API base URL, for the signed URL of a private agent")
    agent_audio_format: str = option(choice(*AGENT_FORMATS), "pcm_16000",
                                     "the audio format the agent is configured for (its input and TTS output), "
                                     "for platforms that negotiate; the real ones are read from each conversation")
    instructions: str = option(text, "", "override of the agent's prompt; empty: the agent's own")
    greeting: str = option(text, "", "override of the agent's first message; empty: the agent's own")
    language: str = option(text, "", "override of the agent's language; empty: the agent's own")
    greet_on_reconnect: bool = option(boolean, True, "a reconnect (a new conversation) plays the agent's first "
                                      "message again; false: it is overridden with nothing (the agent must allow "
                                      "the first_message override)")
    call_context_keys: tuple[str, ...] = option(
        name_list, (),
        "call parameters from the platform passed to the agent as dynamic variables (names, or * for all); "
        "empty: none")
    early_audio_ms: int = option(integer(0, 10000), 1000, "caller audio kept while the agent is not ready "
                                 "(connecting, reconnecting); the oldest goes first, ms")
    connect_timeout_seconds: float = option(number(1.0, 120.0), 10.0, "time for the signed URL and "
                                            "conversation_initiation_metadata, s")
    keepalive_seconds: float = option(number(0.0, 300.0), 20.0, "WebSocket ping interval and pong timeout, s; 0 off")
    reconnect_attempts: int = option(integer(0, 100), 5, "failed attempts in a row before the call ends")
    reconnect_backoff_ms: int = option(integer(0, 60000), 250, "first reconnect delay, ms (doubles per failure)")
    reconnect_max_backoff_ms: int = option(integer(0, 600000), 8000, "longest reconnect delay, ms")


def validate(options: ElevenLabsOptions) -> None:
    """Start-up checks: an agent to talk to."""
    if not options.agent_id.strip():
        raise OptionError("agent_id", "must name the agent (agent_...)")


def session_format_for(platform_format: AudioFormat) -> AudioFormat:
    """The format the session exchanges with the bridge: the platform's own (the session converts
    to and from the agent's formats itself, once they are known), or 16 kHz PCM for a format it
    cannot take as it is (more than one channel)."""
    return platform_format if platform_format.channels == 1 else L16_16K


def format_preference(agent_format: str) -> FormatPreference:
    """Platform formats cheapest first for an agent configured for ``agent_format``: that one
    (it passes through), then G.711 and 16 kHz PCM."""
    expected = parse_format(agent_format) or L16_16K
    rest = tuple(f for f in (MULAW_8K, L16_16K, ALAW_8K, AudioFormat("l16", 8000)) if f != expected)
    return (expected, *rest)


class SignedUrls:
    """Gets one conversation's signed URL from the HTTP API (``xi-api-key``): fires with the
    ``wss://`` URL; fails with :class:`SignedUrlRefused` when retrying cannot help (401/403: the
    key; 404/422: the agent), with another error when it may (5xx, 429, no answer)."""

    def __init__(self, http: HttpClient, api_url: str, agent_id: str, api_key: str, timeout_s: float) -> None:
        self._http = http
        self._url = f"{api_url.rstrip('/')}{SIGNED_URL_PATH}?agent_id={quote(agent_id, safe='')}"
        self._headers = {"xi-api-key": api_key, "accept": "application/json"}
        self._timeout_s = timeout_s

    def fetch(self) -> Deferred[str]:
        d = self._http.request(HttpRequest("GET", self._url, self._headers), self._timeout_s)
        return d.addCallback(_signed_url)


def _signed_url(response: HttpResponse) -> str:
    if response.status in (401, 403):
        raise SignedUrlRefused(f"the API refused the key for a signed URL (HTTP {response.status})")
    if response.status in (404, 422):
        raise SignedUrlRefused(f"the API does not know the agent (HTTP {response.status})")
    if response.status != 200:
        raise ConnectionError(f"signed URL request failed (HTTP {response.status})")
    try:
        url = strict_json.loads(response.body).get("signed_url")
    except (ValueError, AttributeError, RecursionError):
        url = None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
        raise ConnectionError("signed URL answer has no ws:// or wss:// signed_url")
    return url


class ElevenLabsBackend:
    """A configured ElevenLabs agent; opens one :class:`ElevenLabsSession` per call. ``reactor``
    provides IReactorTime and IReactorTCP/IReactorSSL; ``http`` is the process's HTTP client
    (needed with an ``api_key``)."""

    def __init__(self, name: str, options: ElevenLabsOptions, reactor: Any, metrics: Metrics,
                 http: HttpClient | None = None, *, random: Callable[[], float] | None = None) -> None:
        self.name = name
        self.options = options
        self.format_preference = format_preference(options.agent_audio_format)
        self._reactor = reactor
        self._metrics = metrics
        self._random = random
        self._signed_urls = None if http is None or not options.api_key else SignedUrls(
            http, options.api_url, options.agent_id, options.api_key, options.connect_timeout_seconds)

    def open_session(
        self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat
    ) -> ElevenLabsSession:
        """Start dialling for ``call``; returns at once (``backend_ready`` follows)."""
        session = ElevenLabsSession(self.name, self.options, call, listener, session_format_for(platform_format),
                                    self._reactor, self._metrics, signed_url=self._signed_url_source(),
                                    random=self._random or _random.random)
        session.start()
        return session

    def _signed_url_source(self) -> Callable[[], Deferred[str]] | None:
        if not self.options.api_key:
            return None
        if self._signed_urls is None:
            def unavailable() -> Deferred[str]:
                raise SignedUrlRefused("no HTTP client to get a signed URL with")
            return unavailable
        return self._signed_urls.fetch


ELEVENLABS = BackendType(
    name="elevenlabs",
    options=ElevenLabsOptions,
    new_backend=ElevenLabsBackend,
    new_backend_with_http=ElevenLabsBackend,
    summary="ElevenLabs Agents (Conversational AI) over WebSocket; the agent's formats, µ-law 8 kHz passes through",
    validate=validate,
)
