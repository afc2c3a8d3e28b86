"""Reading and strict validation of the ini file: sections split, every key parsed by its
section's option dataclass (:mod:`mediaproxy.config.sections`), ``type`` looked up in
:mod:`mediaproxy.catalog`, and the checks that span keys and sections (a platform's backend
exists, paths are unique, a reachable listener needs a credential, playout sizes agree).

``type`` defaults to the part of the section name after the colon. Every problem is a
:class:`~mediaproxy.config.errors.ConfigError` naming the file, the section and the key.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from mediaproxy.catalog import BACKEND_TYPES, PLATFORM_TYPES
from mediaproxy.config.environment import secret_values, substitute
from mediaproxy.config.errors import ConfigError
from mediaproxy.config.sections import (
    BUILTIN_TOOLS,
    FIXED_SECTIONS,
    BackendCommon,
    BackendSettings,
    Config,
    PlatformCommon,
    PlatformSettings,
    PlayoutSettings,
    ProxySettings,
    ToolSettings,
)
from mediaproxy.options import KeySpec, OptionError, option_keys, word


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
            value = substitute(path, section, key, raw[key].strip(), env)
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
        secrets=secret_values(sections, env),
    )


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
    type_name = substitute(path, section, "type", raw.get("type", name).strip(), env)
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
