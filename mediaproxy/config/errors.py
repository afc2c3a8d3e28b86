"""The one exception configuration loading raises: :class:`ConfigError`, located by file,
section and key so an operator can find the line at fault. Everything in
:mod:`mediaproxy.config` raises it, before anything listens."""

from __future__ import annotations


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
