"""``[backend:NAME] type = deepgram``: Deepgram's Voice Agent API (listen, think and speak on one
WebSocket).

This module is the configuration surface and the :class:`~mediaproxy.backends.base.Backend`;
the protocol lives in :mod:`~mediaproxy.backends.deepgram_dialect` (sans-IO) and the per-call glue
in :mod:`~mediaproxy.backends.deepgram_session`. G.711 platforms pass through untouched (``mulaw``
or ``alaw`` at 8 kHz both ways); linear PCM at a rate the agent speaks passes at that rate; any
other format is resampled by the bridge to 16 kHz ``linear16``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import ALAW_8K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.backends.base import BackendListener, BackendType, CallInfo
from mediaproxy.backends.deepgram_session import DeepgramAgentSession
from mediaproxy.backends.openai_session_config import instructions_with_context
from mediaproxy.metrics import Metrics
from mediaproxy.options import integer, name_list, number, option, text, ws_url

DEFAULT_URL = "wss://agent.deepgram.com/v1/agent/converse"

PCM_RATES = (16000, 24000, 8000, 48000, 32000)
"""Linear PCM rates exchanged as they are (the agent's TTS output rates), preferred first."""

L16_16K = AudioFormat("l16", 16000)

# Cheapest first: every listed format passes through untouched; G.711 is the least to carry.
FORMAT_PREFERENCE: FormatPreference = (MULAW_8K, ALAW_8K, *(AudioFormat("l16", rate) for rate in PCM_RATES))


@dataclass(frozen=True, kw_only=True)
class DeepgramOptions:
    """One ``[backend:NAME] type = deepgram`` section, parsed. Durations carry their unit in
    the name."""

    url: str = option(ws_url, DEFAULT_URL, "Voice Agent WebSocket URL")
    api_key: str = option(text, doc="API key, sent as Authorization: Token (use ${DEEPGRAM_API_KEY})")
    listen_model: str = option(text, "nova-3", "speech-to-text model (agent.listen.provider, deepgram)")
    think_provider: str = option(text, "open_ai", "LLM provider type (agent.think.provider.type)")
    think_model: str = option(text, "gpt-4o-mini", "LLM model (agent.think.provider.model)")
    speak_model: str = option(text, "aura-2-thalia-en", "text-to-speech voice (agent.speak.provider, deepgram)")
    instructions: str = option(text, "", "the agent's prompt (agent.think.prompt)")
    greeting: str = option(text, "", "what the agent says first (agent.greeting), empty: wait for the caller")
    language: str = option(text, "en", "conversation language (agent.language), empty: the service default")
    call_context_keys: tuple[str, ...] = option(
        name_list, (),
        "call parameters from the platform passed to the agent in its prompt, quoted as data (names, or * "
        "for all); empty: none")
    early_audio_ms: int = option(integer(0, 10000), 1000, "caller audio kept while the agent is not ready "
                                 "(connecting, reconnecting); the oldest goes first, ms")
    keepalive_seconds: float = option(number(1.0, 9.0), 8.0, "longest time without a client message before a "
                                      "KeepAlive is sent, s (the service closes after 10 s)")
    ping_seconds: float = option(number(0.0, 300.0), 20.0, "WebSocket ping interval and pong timeout, s; 0 off")
    connect_timeout_seconds: float = option(number(1.0, 120.0), 10.0, "time for SettingsApplied, s")
    reconnect_attempts: int = option(integer(0, 100), 5, "failed attempts in a row before the call ends")
    reconnect_backoff_ms: int = option(integer(0, 60000), 250, "first reconnect delay, ms (doubles per failure)")
    reconnect_max_backoff_ms: int = option(integer(0, 600000), 8000, "longest reconnect delay, ms")


def session_format_for(platform_format: AudioFormat) -> AudioFormat:
    """The format exchanged with the agent for a platform speaking ``platform_format``: G.711
    8 kHz as it is, linear PCM at one of :data:`PCM_RATES` as it is, anything else resampled by
    the bridge to 16 kHz linear PCM (mono: the bridge mixes channels down)."""
    rate = platform_format.rate_hz
    if platform_format.encoding == "pcmu" and rate == 8000:
        return MULAW_8K
    if platform_format.encoding == "pcma" and rate == 8000:
        return ALAW_8K
    if platform_format.encoding == "l16" and rate in PCM_RATES:
        return AudioFormat("l16", rate)
    return L16_16K


class DeepgramAgentBackend:
    """A configured Deepgram Voice Agent backend; opens one :class:`DeepgramAgentSession` per
    call. ``reactor`` provides IReactorTime and IReactorTCP/IReactorSSL."""

    def __init__(
        self,
        name: str,
        options: DeepgramOptions,
        reactor: Any,
        metrics: Metrics,
        *,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self.format_preference = FORMAT_PREFERENCE
        self._reactor = reactor
        self._metrics = metrics
        self._random = random

    def open_session(
        self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat
    ) -> DeepgramAgentSession:
        """Start dialling for ``call``; returns at once (``backend_ready`` follows)."""
        extra = {} if self._random is None else {"random": self._random}
        prompt = self.options.instructions
        if call.metadata and self.options.call_context_keys:
            prompt = instructions_with_context(prompt, call.metadata, self.options.call_context_keys)
        session = DeepgramAgentSession(
            self.name,
            self.options,
            call,
            listener,
            session_format_for(platform_format),
            self._reactor,
            self._metrics,
            prompt=prompt,
            **extra,
        )
        session.start()
        return session


DEEPGRAM = BackendType(
    name="deepgram",
    options=DeepgramOptions,
    new_backend=DeepgramAgentBackend,
    summary="Deepgram Voice Agent over WebSocket; µ-law/A-law pass through, linear PCM at 8 to 48 kHz",
)
