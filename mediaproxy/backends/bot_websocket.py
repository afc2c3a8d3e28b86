"""``[backend:NAME] type = websocket``: the caller's audio to a team's own bot over the proxy's
published bot protocol (docs/protocols/websocket-backend.md), and the bot's audio and call control
back.

This module is the configuration surface and the :class:`~mediaproxy.backends.base.Backend`;
the protocol lives in :mod:`~mediaproxy.backends.bot_websocket_dialect` (sans-IO) and the per-call
glue in :mod:`~mediaproxy.backends.bot_websocket_session`. The bot speaks one configured
``audio_format`` both ways; the bridge transcodes each call's platform format to it (nothing is
converted when they match). (Not to be confused with the *platform* of the same type name,
:mod:`mediaproxy.platforms.websocket_client`, which browsers and gateways dial.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import ALAW_8K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.backends.base import BackendListener, BackendType, CallInfo
from mediaproxy.backends.bot_websocket_session import BotWebSocketSession
from mediaproxy.metrics import Metrics
from mediaproxy.options import OptionError, boolean, choice, integer, name_list, number, option, text, ws_url

AUDIO_FORMATS: dict[str, AudioFormat] = {
    "pcmu/8000": MULAW_8K,
    "pcma/8000": ALAW_8K,
    "l16/8000": AudioFormat("l16", 8000),
    "l16/16000": AudioFormat("l16", 16000),
    "l16/24000": AudioFormat("l16", 24000),
}
"""The ``audio_format`` values, by the name the protocol uses for them (``start.audio_format``)."""


@dataclass(frozen=True, kw_only=True)
class BotWebSocketOptions:
    """One ``[backend:NAME] type = websocket`` section, parsed. Durations carry their unit in
    the name."""

    url: str = option(ws_url, doc="the bot's WebSocket URL (ws:// or wss://, query string allowed)")
    api_key: str = option(text, "", "sent as Authorization: Bearer (use ${BOT_API_KEY}); required unless "
                                    "allow_unauthenticated")
    allow_unauthenticated: bool = option(
        boolean, False, "dial the bot without a credential (a bot that checks none answers anyone who finds it); "
                        "without it start-up refuses an empty api_key")
    audio_format: str = option(choice(*AUDIO_FORMATS), "l16/16000",
                               "the audio both ways: pcmu/8000, pcma/8000, l16/8000, l16/16000 or l16/24000 "
                               "(the proxy converts each call's platform audio to it)")
    call_context_keys: tuple[str, ...] = option(
        name_list, (), "call parameters from the platform passed to the bot in start.context (names, or * for "
                       "all); empty: none")
    detect_speech: bool = option(boolean, False, "the proxy detects the caller's speech itself (energy VAD): "
                                 "speech_started/speech_stopped go to the bot and a start flushes the bot's audio")
    speech_threshold_dbfs: float = option(number(-90.0, 0.0), -40.0,
                                          "detect_speech: frame energy above which the caller is speaking, dBFS")
    speech_silence_ms: int = option(integer(100, 5000), 600, "detect_speech: quiet that ends the caller's "
                                    "speech, ms")
    turn_end_ms: int = option(integer(20, 10000), 400, "bot audio pausing this long ends the bot's turn (its "
                              "last partial packet is played, the platform's play stream closed), ms")
    early_audio_ms: int = option(integer(0, 10000), 1000, "caller audio kept while the bot is not connected "
                                 "(connecting, reconnecting) or not reading; the oldest goes first, ms")
    ping_seconds: float = option(number(0.0, 300.0), 20.0, "WebSocket ping interval and pong timeout, s; 0 off")
    connect_timeout_seconds: float = option(number(1.0, 120.0), 10.0, "time for the WebSocket to open, s")
    reconnect_attempts: int = option(integer(0, 100), 5, "failed attempts in a row before the call ends")
    reconnect_backoff_ms: int = option(integer(0, 60000), 250, "first reconnect delay, ms (doubles per failure)")
    reconnect_max_backoff_ms: int = option(integer(0, 600000), 8000, "longest reconnect delay, ms")

    @property
    def format(self) -> AudioFormat:
        """``audio_format`` as an :class:`AudioFormat`."""
        return AUDIO_FORMATS[self.audio_format]


def validate(options: BotWebSocketOptions) -> None:
    """Credentials on: an empty ``api_key`` needs ``allow_unauthenticated``."""
    if not options.api_key and not options.allow_unauthenticated:
        raise OptionError("api_key", "no api_key is set: set one (the bot checks it as a Bearer token), or set "
                                     "allow_unauthenticated = true")


class BotWebSocketBackend:
    """A configured bot; opens one :class:`BotWebSocketSession` per call. ``reactor`` provides
    IReactorTime and IReactorTCP/IReactorSSL."""

    def __init__(
        self,
        name: str,
        options: BotWebSocketOptions,
        reactor: Any,
        metrics: Metrics,
        *,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.options = options
        # The bot's own format first: a platform that offers it is passed through untouched.
        self.format_preference: FormatPreference = (options.format,)
        self._reactor = reactor
        self._metrics = metrics
        self._random = random
        metrics.backend_info.labels(name, "websocket", "").set(1)

    def open_session(
        self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat
    ) -> BotWebSocketSession:
        """Start dialling for ``call``; returns at once (``backend_ready`` follows)."""
        extra = {} if self._random is None else {"random": self._random}
        session = BotWebSocketSession(self.name, self.options, call, listener, self.options.format,
                                      self._reactor, self._metrics, **extra)
        session.start()
        return session


BOT_WEBSOCKET = BackendType(
    name="websocket",
    options=BotWebSocketOptions,
    new_backend=BotWebSocketBackend,
    summary="your own bot over the proxy's published WebSocket protocol: raw audio both ways, JSON control",
    validate=validate,
)
