"""Loading and strict validation of the ini configuration.

Every problem is a :class:`ConfigError` naming the file, the section and the key, raised before
anything listens. ``${NAME}`` in a value is replaced from the environment; a variable that is not
set is an error (secrets never live in the file, and a silently empty key is worse than none).

Each section is described by an option dataclass (:mod:`mediaproxy.options`): the fixed sections
by the settings classes of :mod:`~mediaproxy.config.sections`, ``[platform:NAME]`` and
``[backend:NAME]`` by the ``options`` of their type in :mod:`mediaproxy.catalog`. ``type``
defaults to the part of the section name after the colon. ``docs/configuration.md`` is generated
from the same classes (:mod:`mediaproxy.config_reference`).

The package splits by concern: :mod:`~mediaproxy.config.sections` (what each section holds, and
the validated :class:`Config`), :mod:`~mediaproxy.config.loader` (reading the file, parsing every
key, the checks across keys and sections), :mod:`~mediaproxy.config.environment` (``${NAME}``
interpolation and the secret values the log must never show) and
:mod:`~mediaproxy.config.errors`. Everything callers use is importable from here.
"""

from __future__ import annotations

from mediaproxy.config.errors import ConfigError
from mediaproxy.config.loader import load_config, parse_config
from mediaproxy.config.sections import (
    BUILTIN_TOOLS,
    FIXED_SECTIONS,
    BackendCommon,
    BackendSettings,
    Config,
    LogSettings,
    MetricsSettings,
    PlatformCommon,
    PlatformSettings,
    PlayoutSettings,
    ProxySettings,
    ToolSettings,
)

__all__ = [
    "BUILTIN_TOOLS",
    "FIXED_SECTIONS",
    "BackendCommon",
    "BackendSettings",
    "Config",
    "ConfigError",
    "LogSettings",
    "MetricsSettings",
    "PlatformCommon",
    "PlatformSettings",
    "PlayoutSettings",
    "ProxySettings",
    "ToolSettings",
    "load_config",
    "parse_config",
]
