"""What each section of the ini file holds, as option dataclasses: the fixed sections
(``[proxy]``, ``[metrics]``, ``[playout]``, ``[log]``), the keys every ``[platform:NAME]`` and
``[backend:NAME]`` section has whatever its type, ``[tool:NAME]``, and the validated result
(:class:`Config` and its typed platform and backend sections).

The dataclasses carry their own parsers, defaults and documentation (:func:`~mediaproxy.options.option`):
:mod:`mediaproxy.config.loader` reads them to validate a file and :mod:`mediaproxy.config_reference`
to generate ``docs/configuration.md``. The options of each platform and backend type live with
the type (:mod:`mediaproxy.catalog`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mediaproxy.backends.base import BackendType
from mediaproxy.options import (
    boolean,
    choice,
    endpoint,
    http_url,
    integer,
    json_object,
    name_list,
    name_map,
    number,
    option,
    text,
    url_path,
    worker_count,
    ws_url,
)
from mediaproxy.platforms.base import PlatformType

# --- the fixed sections ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    """``[proxy]``: the platform listener and call admission."""

    listen: str = option(endpoint, "tcp:8080",
                         "Twisted server endpoint for the platform WebSockets (tcp:PORT[:interface=ADDR], "
                         "ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem)")
    public_url: str = option(ws_url, "", "the public wss:// URL platforms dial (no trailing slash); "
                                         "needed to check Twilio signatures")
    max_calls: int = option(integer(1, 100000), 1000, "calls accepted at once; beyond it new calls are refused")
    drain_seconds: int = option(integer(0, 3600), 30,
                                "on shutdown, seconds live calls may continue before they are ended")
    max_message_bytes: int = option(integer(1024, 64 * 1024 * 1024), 1024 * 1024,
                                    "largest WebSocket message a platform may send, bytes; a larger one closes "
                                    "its connection (1009)")
    max_frame_bytes: int = option(integer(1024, 64 * 1024 * 1024), 1024 * 1024,
                                  "largest WebSocket frame a platform may send, bytes (at most max_message_bytes)")
    open_handshake_timeout_seconds: float = option(number(1, 300), 10.0,
                                                   "seconds a new connection may stay silent before its HTTP "
                                                   "upgrade request is complete, and may take to finish the "
                                                   "WebSocket opening handshake, before it is dropped")
    close_handshake_timeout_seconds: float = option(number(1, 300), 5.0,
                                                    "seconds the platform may take to answer our close frame "
                                                    "before the TCP connection is dropped")
    auto_ping_interval_seconds: float = option(number(0, 3600), 0.0,
                                               "seconds between WebSocket pings to each platform connection "
                                               "(0: off, else at least 1; the idle timeout still ends a silent "
                                               "call)")
    auto_ping_timeout_seconds: float = option(number(0, 3600), 0.0,
                                              "seconds a pong may take before the connection is dropped (0: "
                                              "the ping interval)")
    idle_timeout_seconds: float = option(number(0, 3600), 60.0,
                                         "a call whose platform sends no message at all for this long ends "
                                         "with outcome timeout (checked about every tenth of it), seconds; "
                                         "0: off")
    workers: int | str = option(worker_count, 1,
                                "processes serving calls, sharing the listen port (auto: one per CPU this "
                                "process may use, cgroup quota included); 1: a single process, no supervisor")


@dataclass(frozen=True, kw_only=True)
class MetricsSettings:
    """``[metrics]``: where /metrics, /health and /ready are served."""

    listen: str = option(endpoint, "tcp:9090:interface=127.0.0.1",
                         "Twisted server endpoint for /metrics (Prometheus), /health and /ready")


@dataclass(frozen=True, kw_only=True)
class PlayoutSettings:
    """``[playout]``: pacing of bot audio to the platforms; all in milliseconds."""

    frame_ms: int = option(integer(10, 100), 20, "pacing tick, ms; packets are multiples of it")
    lead_ms: int = option(integer(0, 2000), 60,
                          "how far ahead of real time audio may be sent to a platform that can flush, ms "
                          "(0, or at least frame_ms); it must cover the worst reactor or GC pause")
    prefill_ms: int = option(integer(0, 2000), 0, "jitter cushion held before the first frame of a response, ms")
    max_buffer_ms: int = option(integer(1000, 600000), 30000,
                                "bot audio queued per call at most; more is dropped and counted (the backend is "
                                "never paused: its socket carries barge-in), ms")
    mark_interval_ms: int = option(integer(20, 2000), 100,
                                   "a playback mark is sent to platforms that echo them at least this often, ms")
    message_ms: int = option(integer(10, 200), 20,
                             "bot audio per media message, at most, to platforms that play messages of any "
                             "length (Twilio), ms (a multiple of frame_ms); fewer, larger messages cost less "
                             "CPU, and the platform then holds up to lead_ms plus one message, which a "
                             "barge-in's clear still flushes at once")


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    """``[log]``: what the proxy writes to its log."""

    format: str = option(choice("text", "json"), "text",
                         "text: twistd's own lines; json: one JSON object per line (time, level, namespace, "
                         "message, and call_id, platform, backend, outcome on every line about a call), written "
                         "where twistd writes its log (stdout with -n, else --logfile)")
    transcripts: bool = option(boolean, False,
                               "log caller and bot transcripts at info level (personal data: off by default)")


FIXED_SECTIONS: Mapping[str, type[Any]] = {
    "proxy": ProxySettings,
    "metrics": MetricsSettings,
    "playout": PlayoutSettings,
    "log": LogSettings,
}


BUILTIN_TOOLS = ("end_call", "transfer_call", "send_dtmf")
"""The call actions a backend may offer its model by name in ``tools`` (besides ``[tool:NAME]``)."""


@dataclass(frozen=True, kw_only=True)
class PlatformCommon:
    """The keys every ``[platform:NAME]`` section has, whatever its type."""

    type: str = option(text, "", "the platform type; default: NAME")
    path: str = option(url_path, doc="the URL path this platform dials, such as /twilio")
    backend: str = option(text, doc="the [backend:NAME] section that answers these calls")
    transfer_targets: Mapping[str, str] = option(
        name_map, MappingProxyType({}),
        "name=TARGET pairs the bot may transfer callers to, TARGET in the platform's own terms (a queue or "
        "flow variable for Genesys, a SIP URI or phone number for AudioCodes and Twilio); transfer_call's target "
        "is one of the names")
    allow_unauthenticated: bool = option(
        boolean, False,
        "accept calls without a credential on a listener other hosts can reach (an open socket spends your "
        "AI minutes); without it start-up refuses such a platform")


@dataclass(frozen=True, kw_only=True)
class BackendCommon:
    """The keys every ``[backend:NAME]`` section has, whatever its type."""

    type: str = option(text, "", "the backend type; default: NAME")
    tools: tuple[str, ...] = option(
        name_list, (),
        "what the model may call: end_call, transfer_call, send_dtmf and the names of [tool:NAME] sections")
    dtmf_timeout_ms: int = option(integer(200, 60000), 3000,
                                  "caller digits are collected until this much time passes after the last one, ms")
    dtmf_terminator: str = option(choice("#", "*", ""), "#",
                                  "a key that ends the digits at once (not passed on); empty: none")
    dtmf_max_digits: int = option(integer(1, 64), 16, "digits collected at most before they are passed on")


@dataclass(frozen=True, kw_only=True)
class ToolSettings:
    """``[tool:NAME]``: a function of the operator's that the model may call (an HTTPS webhook)."""

    url: str = option(http_url, doc="where the arguments and the call context are POSTed as JSON (https://)")
    description: str = option(text, doc="what the tool does, for the model")
    parameters: Mapping[str, Any] = option(
        json_object, MappingProxyType({"type": "object", "properties": {}}),
        "the arguments as a JSON Schema object")
    timeout_ms: int = option(integer(100, 60000), 3000,
                             "how long the endpoint may take before the model is told the tool failed, ms")
    secret: str = option(text, "", "HMAC-SHA256 key for the X-Mediaproxy-Signature header; use ${ENV}")


# --- typed platform and backend sections -------------------------------------------------------


@dataclass(frozen=True)
class PlatformSettings:
    """One ``[platform:NAME]`` section: its type and that type's parsed options."""

    name: str
    type: PlatformType[Any]
    path: str
    backend: str
    options: Any
    transfer_targets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class BackendSettings:
    """One ``[backend:NAME]`` section: its type and that type's parsed options, and the keys every
    backend has (``common``: tools, digit collection)."""

    name: str
    type: BackendType[Any]
    options: Any
    common: BackendCommon = field(default_factory=BackendCommon)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    source: str
    proxy: ProxySettings
    metrics: MetricsSettings
    playout: PlayoutSettings
    log: LogSettings
    platforms: tuple[PlatformSettings, ...]
    backends: Mapping[str, BackendSettings]
    tools: Mapping[str, ToolSettings] = field(default_factory=lambda: MappingProxyType({}))
    secrets: tuple[str, ...] = ()
    """What no log line may carry: every value the file took from the environment (``${NAME}``)
    and every value of a key named like a credential (``*key``, ``*token``, ``*secret``,
    ``password``, ``authorization``) even when written in the file."""
