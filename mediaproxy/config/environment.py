"""What the configuration takes from the environment, and what no log line may carry.

``${NAME}`` in a value is replaced from the environment (:func:`substitute`); a variable that is
not set is an error (secrets never live in the file, and a silently empty key is worse than
none). :func:`secret_values` collects every value taken from the environment and every value of
a key named like a credential (``*key``, ``*token``, ``*secret``, ``password``,
``authorization``), for the log filters to take out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mediaproxy.config.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(path: str, section: str, key: str, value: str, env: Mapping[str, str]) -> str:
    """``value`` of ``key`` with every ``${NAME}`` replaced from ``env``; raises
    :class:`ConfigError` for a variable that is not set."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(path, section, key, f"environment variable {name} is not set")
        return env[name]

    return _ENV_REF.sub(replace, value)


_CREDENTIAL_KEY = re.compile(r"(key|token|secret|password|authorization)$")


def secret_values(sections: Mapping[str, Mapping[str, str]], env: Mapping[str, str]) -> tuple[str, ...]:
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
