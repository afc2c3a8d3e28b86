"""Loading and strict validation of the ini configuration (DESIGN §1).

Every problem is a :class:`ConfigError` naming the file, the section and the key, raised before
anything listens. ``${NAME}`` in a value is replaced from the environment; a variable that is not
set is an error (secrets never live in the file, and a silently empty key is worse than none).

Platform and backend sections are typed: ``type`` defaults to the part of the section name after
the colon. Each type's module declares the keys it accepts as ``CONFIG_KEYS`` (a mapping of key
name to :class:`Key`); the tables :data:`PLATFORM_TYPES` and :data:`BACKEND_TYPES` say which
module implements which type.
"""

from __future__ import annotations

import configparser
import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

PLATFORM_TYPES: Mapping[str, str] = {
    "twilio": "mediaproxy.platforms.twilio",
    "audiohook": "mediaproxy.platforms.audiohook",
    "audiocodes": "mediaproxy.platforms.audiocodes",
}
BACKEND_TYPES: Mapping[str, str] = {
    "echo": "mediaproxy.backends.echo",
    "openai-realtime": "mediaproxy.backends.openai",
}


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


_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One accepted key: how to parse its text, and its default (none means required)."""

    parse: Callable[[str], Any]
    default: Any = _REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


# --- value parsers: each raises ValueError with a message for the user ------------------------


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """A parser for a whole number within [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def number(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """A parser for a decimal number within [minimum, maximum]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if value != value or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum
        ):
            raise ValueError(f"must be between {minimum} and {maximum}, got {text}")
        return value

    return parse


def boolean(text: str) -> bool:
    """yes/no, true/false, on/off, 1/0."""
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def text(value: str) -> str:
    """Any string (may be empty)."""
    return value


def choice(*options: str) -> Callable[[str], str]:
    """A parser for one of a fixed set of words."""

    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return value

    return parse


def endpoint(value: str) -> str:
    """A Twisted server endpoint string (``tcp:8080``, ``ssl:8443:privateKey=...``). Parsed here
    against a memory reactor so that typos and missing certificate files fail at start-up."""
    try:
        serverFromString(MemoryReactor(), value)
    except Exception as e:  # the endpoint parsers raise many kinds; all mean "bad value"
        raise ValueError(f"bad endpoint {value!r}: {e}") from None
    return value


def url_path(value: str) -> str:
    """An absolute URL path such as ``/twilio``."""
    if not value.startswith("/") or any(c in value for c in "?# \t"):
        raise ValueError(f"expected an absolute path such as /twilio, got {value!r}")
    return value.rstrip("/") or "/"


def ws_url(value: str) -> str:
    """A ws:// or wss:// URL (may be empty where the key is optional)."""
    if value and not re.match(r"^wss?://[^/\s]+", value):
        raise ValueError(f"expected a ws:// or wss:// URL, got {value!r}")
    return value.rstrip("/")


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxySettings:
    listen: str
    public_url: str
    max_calls: int
    drain_seconds: int


@dataclass(frozen=True)
class MetricsSettings:
    listen: str


@dataclass(frozen=True)
class PlayoutSettings:
    """Pacing settings; all in milliseconds (see etc/mediaproxy.ini for their meaning)."""

    frame_ms: int = 20
    lead_ms: int = 60
    prefill_ms: int = 0
    max_buffer_ms: int = 30000
    mark_interval_ms: int = 100


@dataclass(frozen=True)
class SectionSettings:
    """A typed ``[platform:NAME]`` or ``[backend:NAME]`` section: its name, type and the
    type-specific options, parsed (``options[key]``)."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.options[key]


@dataclass(frozen=True)
class PlatformSettings(SectionSettings):
    path: str = "/"
    backend: str = ""


BackendSettings = SectionSettings


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    source: str
    proxy: ProxySettings
    metrics: MetricsSettings
    playout: PlayoutSettings
    platforms: tuple[PlatformSettings, ...]
    backends: Mapping[str, BackendSettings]


PROXY_KEYS: Mapping[str, Key] = {
    "listen": Key(endpoint, "tcp:8080"),
    "public_url": Key(ws_url, ""),
    "max_calls": Key(integer(1, 100000), 1000),
    "drain_seconds": Key(integer(0, 3600), 30),
}
METRICS_KEYS: Mapping[str, Key] = {"listen": Key(endpoint, "tcp:9090:interface=127.0.0.1")}
PLAYOUT_KEYS: Mapping[str, Key] = {
    "frame_ms": Key(integer(10, 100), 20),
    "lead_ms": Key(integer(0, 2000), 60),
    "prefill_ms": Key(integer(0, 2000), 0),
    "max_buffer_ms": Key(integer(1000, 600000), 30000),
    "mark_interval_ms": Key(integer(20, 2000), 100),
}
PLATFORM_COMMON_KEYS: Mapping[str, Key] = {
    "type": Key(text, None),
    "path": Key(url_path),
    "backend": Key(text),
}
BACKEND_COMMON_KEYS: Mapping[str, Key] = {"type": Key(text, None)}

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(path: str, section: str, key: str, value: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(path, section, key, f"environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(replace, value)


def _parse_keys(
    path: str, section: str, raw: Mapping[str, str], keys: Mapping[str, Key], env: Mapping[str, str]
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
        else:
            values[key] = spec.default
    return values


def _type_keys(table: Mapping[str, str], kind: str, type_name: str) -> Mapping[str, Key]:
    module_name = table.get(type_name)
    if module_name is None:
        raise ValueError(f"unknown {kind} type {type_name!r} (known: {', '.join(sorted(table))})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{kind} type {type_name!r} is not available: {e}") from None
    return getattr(module, "CONFIG_KEYS")


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
    fixed = {"proxy": PROXY_KEYS, "metrics": METRICS_KEYS, "playout": PLAYOUT_KEYS}
    parsed: dict[str, dict[str, Any]] = {}
    platform_raw: dict[str, Mapping[str, str]] = {}
    backend_raw: dict[str, Mapping[str, str]] = {}
    for section, raw in sections.items():
        if section in fixed:
            parsed[section] = _parse_keys(path, section, raw, fixed[section], env)
        elif section.startswith("platform:") and section[9:]:
            platform_raw[section] = raw
        elif section.startswith("backend:") and section[8:]:
            backend_raw[section] = raw
        else:
            raise ConfigError(
                path, section, None,
                "unknown section (expected proxy, metrics, playout, platform:NAME or backend:NAME)",
            )
    for section, keys in fixed.items():
        parsed.setdefault(section, _parse_keys(path, section, {}, keys, env))

    backends: dict[str, BackendSettings] = {}
    for section, raw in backend_raw.items():
        name = section.split(":", 1)[1]
        backends[name] = _typed_section(path, section, name, raw, env, BACKEND_TYPES, "backend",
                                        BACKEND_COMMON_KEYS, BackendSettings)

    platforms: list[PlatformSettings] = []
    seen_paths: dict[str, str] = {}
    for section, raw in platform_raw.items():
        name = section.split(":", 1)[1]
        settings = _typed_section(path, section, name, raw, env, PLATFORM_TYPES, "platform",
                                  PLATFORM_COMMON_KEYS, PlatformSettings)
        assert isinstance(settings, PlatformSettings)
        if settings.backend not in backends:
            raise ConfigError(path, section, "backend",
                              f"no [backend:{settings.backend}] section is configured")
        if settings.path in seen_paths:
            raise ConfigError(path, section, "path",
                              f"{settings.path} is already used by [{seen_paths[settings.path]}]")
        seen_paths[settings.path] = section
        platforms.append(settings)
    if not platforms:
        raise ConfigError(path, None, None, "no [platform:NAME] section: nothing would accept calls")

    playout = PlayoutSettings(**parsed["playout"])
    if playout.lead_ms and playout.lead_ms < playout.frame_ms:
        raise ConfigError(path, "playout", "lead_ms",
                          f"must be 0 or at least frame_ms ({playout.frame_ms})")
    return Config(
        source=path,
        proxy=ProxySettings(**parsed["proxy"]),
        metrics=MetricsSettings(**parsed["metrics"]),
        playout=playout,
        platforms=tuple(platforms),
        backends=MappingProxyType(backends),
    )


def _typed_section(path: str, section: str, name: str, raw: Mapping[str, str], env: Mapping[str, str],
                   table: Mapping[str, str], kind: str, common: Mapping[str, Key],
                   cls: type[SectionSettings]) -> SectionSettings:
    type_name = _substitute(path, section, "type", raw.get("type", name).strip(), env)
    try:
        specific = _type_keys(table, kind, type_name)
    except ValueError as e:
        raise ConfigError(path, section, "type", str(e)) from None
    keys = {**common, **specific}
    values = _parse_keys(path, section, raw, keys, env)
    values.pop("type")
    if cls is PlatformSettings:
        path_value, backend = values.pop("path"), values.pop("backend")
        return PlatformSettings(name=name, type=type_name, options=MappingProxyType(values),
                                path=path_value, backend=backend)
    return cls(name=name, type=type_name, options=MappingProxyType(values))
