"""Loading and strict validation of the ini configuration.

Every problem is a :class:`ConfigError` naming the file, the section and the key, raised before
anything listens. ``${NAME}`` in a value is replaced from the environment; a variable that is not
set is an error (secrets never live in the file, and a silently empty key is worse than none).

Each section is described by an option dataclass (:mod:`mediaproxy.options`): the fixed sections
by the settings classes below, ``[platform:NAME]`` and ``[backend:NAME]`` by the ``options`` of
their type in :mod:`mediaproxy.catalog`. ``type`` defaults to the part of the section name after
the colon. ``docs/configuration.md`` is generated from the same classes
(:mod:`mediaproxy.config_reference`).
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mediaproxy.backends.base import BackendType
from mediaproxy.catalog import BACKEND_TYPES, PLATFORM_TYPES
from mediaproxy.options import (
    KeySpec,
    OptionError,
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
    option_keys,
    text,
    url_path,
    word,
    worker_count,
    ws_url,
)
from mediaproxy.platforms.base import PlatformType


class ConfigError(Exception):
    """A configuration problem, located by file, section and key."""

    def __init__(self, path: str, section: str | None, key: str | None, message: str) -> None:
        self.path, self.section, self.key, self.message = path, section, key, message
        where = path
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
        super().__init__(f"{where}: {message}")


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


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(path: str, section: str, key: str, value: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(path, section, key, f"environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(replace, value)


def _parse_keys(
    path: str, section: str, raw: Mapping[str, str], keys: Mapping[str, KeySpec], env: Mapping[str, str]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in raw:
        if key not in keys:
            known = ", ".join(sorted(keys))
            raise ConfigError(path, section, key, f"unknown key (known keys: {known})")
    for key, spec in keys.items():
        if key in raw:
            value = _substitute(path, section, key, raw[key].strip(), env)
            try:
                values[key] = spec.parse(value)
            except ValueError as e:
                raise ConfigError(path, section, key, str(e)) from None
        elif spec.required:
            raise ConfigError(path, section, key, "required key is missing")
    return values


def _options(path: str, section: str, cls: type[Any], raw: Mapping[str, str], env: Mapping[str, str],
             common: Mapping[str, KeySpec] | None = None) -> tuple[Any, dict[str, Any]]:
    """Parse ``raw`` into ``cls``; keys in ``common`` are parsed too and returned apart."""
    keys = {**(common or {}), **option_keys(cls)}
    values = _parse_keys(path, section, raw, keys, env)
    shared = {key: values.pop(key, spec.default) for key, spec in (common or {}).items()}
    return cls(**values), shared


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the ini file at ``path``. Raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), strict=True, empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as e:
        raise ConfigError(path, None, None, f"cannot read: {e.strerror}") from None
    except configparser.Error as e:
        raise ConfigError(path, None, None, f"not a valid ini file: {e.message}") from None
    return parse_config(path, {s: dict(parser[s]) for s in parser.sections()}, env)


def parse_config(path: str, sections: Mapping[str, Mapping[str, str]], env: Mapping[str, str]) -> Config:
    """Validate already-split sections (``load_config`` without the file reading)."""
    fixed: dict[str, Any] = {}
    platform_raw: dict[str, Mapping[str, str]] = {}
    backend_raw: dict[str, Mapping[str, str]] = {}
    tools: dict[str, ToolSettings] = {}
    for section, raw in sections.items():
        if section in FIXED_SECTIONS:
            fixed[section], _ = _options(path, section, FIXED_SECTIONS[section], raw, env)
        elif section.startswith("platform:") and section[9:]:
            platform_raw[section] = raw
        elif section.startswith("backend:") and section[8:]:
            backend_raw[section] = raw
        elif section.startswith("tool:") and section[5:]:
            name = section[5:]
            try:
                word(name)
            except ValueError as e:
                raise ConfigError(path, section, None, f"tool name: {e}") from None
            if name in BUILTIN_TOOLS:
                raise ConfigError(path, section, None, f"{name} is a built-in call action")
            tools[name], _ = _options(path, section, ToolSettings, raw, env)
        else:
            raise ConfigError(
                path, section, None,
                "unknown section (expected " + ", ".join(FIXED_SECTIONS)
                + ", platform:NAME, backend:NAME or tool:NAME)",
            )
    for section, cls in FIXED_SECTIONS.items():
        if section not in fixed:
            fixed[section], _ = _options(path, section, cls, {}, env)
    proxy: ProxySettings = fixed["proxy"]

    backends: dict[str, BackendSettings] = {}
    for section, raw in backend_raw.items():
        name = section.split(":", 1)[1]
        backend_type = _lookup(path, section, raw, env, BACKEND_TYPES, "backend", name)
        options, common = _options(path, section, backend_type.options, raw, env, option_keys(BackendCommon))
        _validate(path, section, backend_type.validate, options)
        for tool in common["tools"]:
            if tool not in BUILTIN_TOOLS and tool not in tools:
                raise ConfigError(path, section, "tools",
                                  f"{tool!r} is neither a call action ({', '.join(BUILTIN_TOOLS)}) nor a [tool:{tool}]")
        backends[name] = BackendSettings(name, backend_type, options, BackendCommon(**common))

    platforms: list[PlatformSettings] = []
    seen_paths: dict[str, str] = {}
    for section, raw in platform_raw.items():
        name = section.split(":", 1)[1]
        platform_type = _lookup(path, section, raw, env, PLATFORM_TYPES, "platform", name)
        options, common = _options(path, section, platform_type.options, raw, env, option_keys(PlatformCommon))
        _validate(path, section, platform_type.validate, options, proxy.public_url)
        if common["backend"] not in backends:
            raise ConfigError(path, section, "backend",
                              f"no [backend:{common['backend']}] section is configured")
        if common["path"] in seen_paths:
            raise ConfigError(path, section, "path",
                              f"{common['path']} is already used by [{seen_paths[common['path']]}]")
        seen_paths[common["path"]] = section
        if "transfer_call" in backends[common["backend"]].common.tools and not common["transfer_targets"]:
            raise ConfigError(path, section, "transfer_targets",
                              f"[backend:{common['backend']}] offers transfer_call: name the allowed targets here")
        if not common["allow_unauthenticated"] and not _reachable_only_locally(proxy.listen):
            keys = platform_type.credential_keys
            if keys and not any(getattr(options, key) for key in keys):
                raise ConfigError(
                    path, section, keys[0],
                    f"no credential is set ({' or '.join(keys)}) and [proxy] listen = {proxy.listen} accepts "
                    "other hosts: anyone could place calls on your backend; set one, listen on loopback, or "
                    "set allow_unauthenticated = true")
        platforms.append(PlatformSettings(name, platform_type, common["path"], common["backend"], options,
                                          common["transfer_targets"]))
    if not platforms:
        raise ConfigError(path, None, None, "no [platform:NAME] section: nothing would accept calls")

    # Autobahn's timers count whole seconds (txaio's batched timer truncates its deadline): a
    # timeout below a second could fire at once.
    for key in ("auto_ping_interval_seconds", "auto_ping_timeout_seconds"):
        if 0 < getattr(proxy, key) < 1:
            raise ConfigError(path, "proxy", key, "must be 0 or at least 1")
    if proxy.max_frame_bytes > proxy.max_message_bytes:
        raise ConfigError(path, "proxy", "max_frame_bytes",
                          f"must be at most max_message_bytes ({proxy.max_message_bytes})")
    if proxy.workers != 1 and proxy.listen.partition(":")[0] not in ("tcp", "tcp6", "ssl"):
        raise ConfigError(path, "proxy", "workers",
                          f"several workers share a tcp: or ssl: listener; [proxy] listen = {proxy.listen} "
                          "is neither: set workers = 1")
    playout: PlayoutSettings = fixed["playout"]
    if playout.message_ms % playout.frame_ms:
        raise ConfigError(path, "playout", "message_ms", f"must be a multiple of frame_ms ({playout.frame_ms})")
    if playout.lead_ms and playout.lead_ms < playout.frame_ms:
        raise ConfigError(path, "playout", "lead_ms",
                          f"must be 0 or at least frame_ms ({playout.frame_ms})")
    return Config(
        source=path,
        proxy=proxy,
        metrics=fixed["metrics"],
        playout=playout,
        log=fixed["log"],
        platforms=tuple(platforms),
        backends=MappingProxyType(backends),
        tools=MappingProxyType(tools),
        secrets=_secret_values(sections, env),
    )


_CREDENTIAL_KEY = re.compile(r"(key|token|secret|password|authorization)$")


def _secret_values(sections: Mapping[str, Mapping[str, str]], env: Mapping[str, str]) -> tuple[str, ...]:
    """The values of the environment variables the sections refer to (all set: parsing checked)
    and the values of credential keys as substituted."""
    found: set[str] = set()
    for raw in sections.values():
        for key, value in raw.items():
            names = _ENV_REF.findall(value)
            found.update(env[name] for name in names if env.get(name))
            if _CREDENTIAL_KEY.search(key) and value.strip():
                found.add(_ENV_REF.sub(lambda m: env.get(m.group(1), ""), value.strip()))
    return tuple(sorted(found - {""}))


def _reachable_only_locally(listen: str) -> bool:
    """Whether a server endpoint string only accepts local connections (a loopback interface or a
    UNIX socket)."""
    kind, _, rest = listen.partition(":")
    if kind == "unix":
        return True
    # Endpoint strings escape a literal colon as "\:" (an IPv6 interface).
    for part in re.split(r"(?<!\\):", rest):
        name, sep, value = part.partition("=")
        if sep and name == "interface":
            host = value.replace("\\:", ":").strip("[]").lower()
            return host.startswith("127.") or host in ("::1", "localhost")
    return False


def _lookup(path: str, section: str, raw: Mapping[str, str], env: Mapping[str, str],
            table: Mapping[str, Any], kind: str, name: str) -> Any:
    type_name = _substitute(path, section, "type", raw.get("type", name).strip(), env)
    found = table.get(type_name)
    if found is None:
        raise ConfigError(path, section, "type",
                          f"unknown {kind} type {type_name!r} (known: {', '.join(sorted(table))})")
    return found


def _validate(path: str, section: str, check: Callable[..., None] | None, *args: Any) -> None:
    """Run a type's cross-check hook and locate what it finds."""
    if check is None:
        return
    try:
        check(*args)
    except OptionError as e:
        if e.section is None:
            raise ConfigError(path, section, e.key, e.message) from None
        raise ConfigError(path, e.section, e.key, f"{e.message} ([{section}])") from None
