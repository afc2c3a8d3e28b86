"""``[backend:NAME] type = openai-realtime``: OpenAI's Realtime API (GA) over WebSocket, and the
OpenAI-compatible family through the same dialect (``flavor``: ``openai``, ``azure``,
``voicelive``, ``xai``; see :mod:`~mediaproxy.backends.openai_flavors`).

This module is the configuration surface and the :class:`~mediaproxy.backends.base.Backend`;
the protocol lives in :mod:`~mediaproxy.backends.openai_dialect` (sans-IO) and the per-call glue
in :mod:`~mediaproxy.backends.openai_session`. G.711 platforms pass through untouched
(``audio/pcmu``/``audio/pcma`` both ways); any other platform format is resampled by the bridge
to the service's only PCM rate, 24 kHz.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mediaproxy.audio.format import ALAW_8K, L16_24K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.backends.base import BackendListener, BackendType, CallInfo
from mediaproxy.backends.openai_flavors import resolved, validate
from mediaproxy.backends.openai_session import OpenAIRealtimeSession
from mediaproxy.backends.openai_session_config import (
    RealtimeOptions,
    instructions_with_context,
    session_format_for,
)
from mediaproxy.metrics import Metrics

# Cheapest first: G.711 passes through untouched; 24 kHz PCM needs a transcode but no resampling;
# other PCM rates are resampled, from a higher rate first (it keeps more of the voice band).
FORMAT_PREFERENCE: FormatPreference = (
    MULAW_8K, ALAW_8K, L16_24K,
    *(AudioFormat("l16", rate) for rate in (48000, 32000, 16000, 8000)),
)


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
        self.options = resolved(options)
        self.format_preference = FORMAT_PREFERENCE
        self._reactor = reactor
        self._metrics = metrics
        self._random = random
        metrics.backend_info.labels(name, "openai-realtime", options.flavor).set(1)

    def open_session(
        self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat
    ) -> OpenAIRealtimeSession:
        """Start dialling for ``call``; returns at once (``backend_ready`` follows)."""
        extra = {} if self._random is None else {"random": self._random}
        options = self.options
        if call.metadata and options.call_context_keys:
            instructions = instructions_with_context(options.instructions, call.metadata, options.call_context_keys)
            options = replace(options, instructions=instructions)
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


OPENAI_REALTIME = BackendType(
    name="openai-realtime",
    options=RealtimeOptions,
    new_backend=OpenAIRealtimeBackend,
    summary="OpenAI Realtime (GA) over WebSocket, and the compatible family by flavor (Azure OpenAI, Azure "
            "Voice Live, xAI); µ-law/A-law pass through, other PCM at 24 kHz",
    validate=validate,
)
