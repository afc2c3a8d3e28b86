"""``[backend:NAME] type = gemini``: Google's Gemini Live API (``BidiGenerateContent``) over WebSocket.

This module is the configuration surface and the :class:`~mediaproxy.backends.base.Backend`; the
protocol lives in :mod:`~mediaproxy.backends.gemini_dialect` (sans-IO) and the per-call glue in
:mod:`~mediaproxy.backends.gemini_session`.

Formats: the service takes 16-bit PCM at 16 kHz and answers at 24 kHz. ``BackendSession`` has one
``audio_format`` for both directions, so the session converts one direction itself: for a
platform at 16 kHz or below it declares L16 16 kHz (caller audio goes up as the bridge made it;
the session resamples the bot's 24 kHz to 16 kHz), above that it declares L16 24 kHz (the bot's
audio passes through; the session resamples the caller's to 16 kHz). Either way the continuous
caller direction is never resampled twice for a telephone-rate platform.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from mediaproxy.audio.format import ALAW_8K, L16_16K, L16_24K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.backends.base import BackendListener, BackendType, CallInfo
from mediaproxy.backends.gemini_session import GeminiLiveSession
from mediaproxy.backends.openai_session_config import instructions_with_context
from mediaproxy.metrics import Metrics
from mediaproxy.options import boolean, integer, name_list, number, option, text, ws_url

DEFAULT_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)

# Cheapest first: 16 kHz PCM goes up untouched; 24 kHz PCM comes down untouched; the rest is
# resampled by the bridge.
FORMAT_PREFERENCE: FormatPreference = (
    L16_16K, L16_24K, AudioFormat("l16", 48000), AudioFormat("l16", 8000), MULAW_8K, ALAW_8K,
)


@dataclass(frozen=True, kw_only=True)
class GeminiOptions:
    """One ``[backend:NAME] type = gemini`` section, parsed. Durations carry their unit in the name.

    ``stall_seconds``: after the caller spoke (a caller transcription or an interruption), the
    model must produce something (audio, a transcription, a tool call) within this time, or it is
    nudged (``audioStreamEnd``); another ``stall_seconds`` of silence redials, resuming the
    session. 0 turns the watchdog off.
    """

    url: str = option(ws_url, DEFAULT_URL, "Live API WebSocket URL, without the query string (?key= is added)")
    model: str = option(text, "gemini-2.5-flash-native-audio-preview-09-2025",
                        "model name (models/ is added when missing)")
    api_key: str = option(text, doc="API key, sent as ?key= (use ${GEMINI_API_KEY})")
    voice: str = option(text, "Kore", "prebuilt voice name (Kore, Puck, Charon, Aoede, ...)")
    language: str = option(text, "", "speech language (BCP-47, e.g. en-US) for the voice; empty: the model chooses")
    instructions: str = option(text, "", "system instruction")
    greeting: str = option(text, "", "what the bot says first, empty: wait for the caller")
    call_context_keys: tuple[str, ...] = option(
        name_list, (),
        "call parameters from the platform passed to the model in its instructions, quoted as data (names, "
        "or * for all); empty: none")
    context_window_compression: bool = option(
        boolean, True, "sliding-window context compression (lifts the service's 15-minute audio session limit)")
    stall_seconds: float = option(number(0.0, 120.0), 8.0, "a model silent this long after the caller spoke is "
                                  "nudged, then after as long again reconnected, s; 0 off")
    early_audio_ms: int = option(integer(0, 10000), 1000, "caller audio kept while the backend is not ready "
                                 "(connecting, reconnecting); the oldest goes first, ms")
    connect_timeout_seconds: float = option(number(1.0, 120.0), 10.0, "time for a ready session (setupComplete), s")
    keepalive_seconds: float = option(number(0.0, 300.0), 20.0, "WebSocket ping interval and pong timeout, s; 0 off")
    reconnect_attempts: int = option(integer(0, 100), 5, "failed attempts in a row before the call ends")
    reconnect_backoff_ms: int = option(integer(0, 60000), 250, "first reconnect delay, ms (doubles per failure)")
    reconnect_max_backoff_ms: int = option(integer(0, 600000), 8000, "longest reconnect delay, ms")
    listen_only: bool = False
    """Not a config key: True for listen-only calls (AudioHook Monitor), which only transcribe."""


def session_format_for(platform_format: AudioFormat) -> AudioFormat:
    """The format the session exchanges with the bridge (see the module docstring)."""
    return L16_24K if platform_format.rate_hz > 16000 else L16_16K


class GeminiBackend:
    """A configured Gemini Live backend; opens one :class:`GeminiLiveSession` per call.

    ``reactor`` provides IReactorTime and IReactorTCP/IReactorSSL (tests pass the trial reactor).
    """

    def __init__(self, name: str, options: GeminiOptions, reactor: Any, metrics: Metrics, *,
                 random: Callable[[], float] | None = None) -> None:
        self.name = name
        self.options = options
        self.format_preference = FORMAT_PREFERENCE
        self._reactor = reactor
        self._metrics = metrics
        self._random = random

    def open_session(
        self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat
    ) -> GeminiLiveSession:
        """Start dialling for ``call``; returns at once (``backend_ready`` follows)."""
        options = self.options
        if call.metadata and options.call_context_keys:
            options = replace(options, instructions=instructions_with_context(
                options.instructions, call.metadata, options.call_context_keys))
        if call.listen_only:
            options = replace(options, listen_only=True, greeting="")
        session = GeminiLiveSession(self.name, options, call, listener, session_format_for(platform_format),
                                    self._reactor, self._metrics, random=self._random or _random.random)
        session.start()
        return session


GEMINI = BackendType(
    name="gemini",
    options=GeminiOptions,
    new_backend=GeminiBackend,
    summary="Google Gemini Live API over WebSocket; PCM 16 kHz up, 24 kHz down (resampled per call)",
)
