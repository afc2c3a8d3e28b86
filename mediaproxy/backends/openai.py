"""``[backend:NAME] type = openai-realtime``: OpenAI's Realtime API (GA) over WebSocket.

This module is the configuration surface and the :class:`~mediaproxy.backends.base.Backend`;
the protocol lives in :mod:`~mediaproxy.backends.openai_dialect` (sans-IO) and the per-call glue
in :mod:`~mediaproxy.backends.openai_session`. G.711 platforms pass through untouched
(``audio/pcmu``/``audio/pcma`` both ways); any other platform format is resampled by the bridge
to the service's only PCM rate, 24 kHz.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mediaproxy.audio.format import AudioFormat
from mediaproxy.backends.base import BackendListener, CallInfo
from mediaproxy.backends.openai_session import OpenAIRealtimeSession
from mediaproxy.backends.openai_session_config import (
    DEFAULT_URL,
    RealtimeOptions,
    instructions_with_context,
    session_format_for,
)
from mediaproxy.config import BackendSettings, Key, boolean, choice, integer, number, text, ws_url
from mediaproxy.metrics import Metrics


def _chunk_ms(value: str) -> int:
    ms = integer(20, 100)(value)
    if ms != 20 and ms < 40:
        raise ValueError(f"must be 20 (each frame at once) or 40 to 100, got {ms}")
    return ms


CONFIG_KEYS: Mapping[str, Key] = {
    "url": Key(ws_url, DEFAULT_URL, "Realtime WebSocket URL, without the query string"),
    "model": Key(text, "gpt-realtime", "model name, sent as ?model="),
    "api_key": Key(text, doc="API key, sent as Authorization: Bearer (use ${OPENAI_API_KEY})"),
    "voice": Key(text, "marin", "voice name (marin, cedar, alloy, ...)"),
    "speed": Key(number(0.25, 1.5), 1.0, "speaking speed, 0.25 to 1.5"),
    "instructions": Key(text, "", "system instructions"),
    "greeting": Key(text, "", "what the bot says first, empty: wait for the caller"),
    "turn_detection": Key(choice("server_vad", "semantic_vad"), "server_vad", "how the server detects turns"),
    "vad_threshold": Key(number(0.0, 1.0), 0.5, "server_vad activation threshold, 0 to 1"),
    "prefix_padding_ms": Key(integer(0, 5000), 300, "server_vad audio kept before speech, ms"),
    "silence_duration_ms": Key(integer(100, 10000), 500, "server_vad silence that ends a turn, ms"),
    "idle_timeout_ms": Key(integer(0, 600000), 0, "server_vad prompt after this much silence, ms; 0 off"),
    "eagerness": Key(choice("low", "medium", "high", "auto"), "auto", "semantic_vad eagerness"),
    "interrupt_response": Key(boolean, True, "the server cancels its response when the caller speaks"),
    "noise_reduction": Key(choice("near_field", "far_field", "off"), "near_field", "input noise reduction"),
    "transcription_model": Key(text, "gpt-4o-mini-transcribe", "caller transcription model, empty: off"),
    "transcription_language": Key(text, "", "caller language hint (ISO-639-1), empty: detect"),
    "input_chunk_ms": Key(_chunk_ms, 20, "caller audio per append, ms: 20 = each frame, or 40 to 100"),
    "hold_audio_ms": Key(integer(0, 10000), 1000, "caller audio held while the backend is not ready, ms"),
    "connect_timeout_seconds": Key(number(1.0, 120.0), 10.0, "time for a ready session, s"),
    "keepalive_seconds": Key(number(0.0, 300.0), 20.0, "WebSocket ping interval and pong timeout, s; 0 off"),
    "reconnect_attempts": Key(integer(0, 100), 5, "failed attempts in a row before the call ends"),
    "reconnect_backoff_ms": Key(integer(0, 60000), 250, "first reconnect delay, ms (doubles per failure)"),
    "reconnect_max_backoff_ms": Key(integer(0, 600000), 8000, "longest reconnect delay, ms"),
}


def options_from_settings(settings: BackendSettings) -> RealtimeOptions:
    """The parsed section as :class:`RealtimeOptions`."""
    return RealtimeOptions(**{key: settings.options[key] for key in CONFIG_KEYS})


# Cheapest first: G.711 passes through untouched; 24 kHz PCM needs a transcode but no resampling.
def _format_cost(fmt: AudioFormat) -> tuple[int, int]:
    if fmt.encoding == "pcmu" and fmt.rate_hz == 8000:
        return (0, 0)
    if fmt.encoding == "pcma" and fmt.rate_hz == 8000:
        return (1, 0)
    if fmt.encoding == "l16" and fmt.rate_hz == 24000:
        return (2, 0)
    if fmt.encoding == "l16":
        return (3, -fmt.rate_hz)  # resampling from a higher rate keeps more of the voice band
    return (4, 0)


class OpenAIRealtimeBackend:
    """A configured OpenAI Realtime backend; opens one :class:`OpenAIRealtimeSession` per call.

    ``reactor`` provides IReactorTime and IReactorTCP/IReactorSSL (tests pass the trial reactor).
    """

    def __init__(
        self,
        name: str,
        options: RealtimeOptions,
        reactor: Any,
        metrics: Metrics,
        *,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self._reactor = reactor
        self._metrics = metrics
        self._random = random

    def choose_format(self, offered: Sequence[AudioFormat]) -> AudioFormat:
        """µ-law 8 kHz, then A-law 8 kHz, then 24 kHz PCM, then the highest-rate other PCM;
        ties keep the platform's order."""
        if not offered:
            raise ValueError("no audio format offered")
        return min(offered, key=_format_cost)

    def open_session(
        self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat
    ) -> OpenAIRealtimeSession:
        """Start dialling for ``call``; returns at once (``backend_ready`` follows)."""
        extra = {} if self._random is None else {"random": self._random}
        options = self.options
        if call.metadata:
            options = replace(options, instructions=instructions_with_context(options.instructions, call.metadata))
        if call.listen_only:
            # Monitor calls: the model transcribes; it neither greets nor answers.
            options = replace(options, create_response=False, greeting="")
        session = OpenAIRealtimeSession(
            self.name,
            options,
            call,
            listener,
            session_format_for(platform_format),
            self._reactor,
            self._metrics,
            **extra,
        )
        session.start()
        return session


def new_backend(settings: BackendSettings, reactor: Any, metrics: Metrics) -> OpenAIRealtimeBackend:
    """Build the backend of one ``[backend:NAME]`` section (called by the service)."""
    return OpenAIRealtimeBackend(settings.name, options_from_settings(settings), reactor, metrics)
