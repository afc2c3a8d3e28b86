"""Typed option sets: a frozen dataclass whose fields are the keys of one ini section.

Every section of the configuration is described by one dataclass. A field declared with
:func:`option` is an ini key: it carries the parser that turns the key's text into the field's
value, its default (the only place defaults live) and a one-line doc with the unit, which the
generated configuration reference prints. Fields declared the ordinary way are not ini keys
(derived or per-call values such as a listen-only switch).

The value parsers below raise :class:`ValueError` with a message for the operator; the loader
(:mod:`mediaproxy.config.loader`) adds the file, section and key.

This module sits at the bottom of the house beside :mod:`mediaproxy.audio`: platform and backend
modules declare their options with it and import nothing above it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from types import MappingProxyType
from typing import Any

from twisted.internet.endpoints import serverFromString

_PARSE = "mediaproxy.parse"
_DOC = "mediaproxy.doc"


def option(parse: Callable[[str], Any], default: Any = MISSING, doc: str = "") -> Any:
    """A dataclass field that is an ini key: ``parse`` reads its text, ``default`` is used when
    the key is absent (no default: the key is required), ``doc`` says what it means, with units."""
    metadata = {_PARSE: parse, _DOC: doc}
    if default is MISSING:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, Mapping):  # dataclasses refuse unhashable defaults: share a read-only one
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class KeySpec:
    """One ini key of an option set, as the loader and the reference generator see it."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is MISSING


def option_keys(cls: type[Any]) -> dict[str, KeySpec]:
    """The ini keys of the option dataclass ``cls``, in declaration order."""
    keys: dict[str, KeySpec] = {}
    for f in dataclasses.fields(cls):
        parse = f.metadata.get(_PARSE)
        if parse is not None:
            default = f.default if f.default_factory is MISSING else f.default_factory()
            keys[f.name] = KeySpec(f.name, parse, default, f.metadata.get(_DOC, ""))
    return keys


class OptionError(Exception):
    """A section's values are individually valid but do not fit together (a type's validation
    hook raises it). ``key`` is the offending key; ``section`` is None for the section being
    validated, or the name of another section (``proxy``) the problem is located in."""

    def __init__(self, key: str, message: str, section: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.section = section


# --- value parsers: each raises ValueError with a message for the operator -----------------------


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


def worker_count(text: str) -> int | str:
    """A positive whole number of processes, or ``auto`` (as many as the CPUs this process may
    use, resolved at start-up)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"expected a whole number or auto, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise ValueError(f"must be between 1 and 1024 or auto, got {value}")
    return value


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


class _NoReactor:
    """Stands in for a reactor while an endpoint string is only parsed, never listened on."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"endpoint parsing touched reactor.{name}")


def endpoint(value: str) -> str:
    """A Twisted server endpoint string (``tcp:8080``, ``ssl:8443:privateKey=...``). Parsed here
    (without listening) so that typos and missing certificate files fail at start-up."""
    try:
        serverFromString(_NoReactor(), value)
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


def name_list(value: str) -> tuple[str, ...]:
    """A comma-separated list of words (empty entries dropped)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def name_map(value: str) -> Mapping[str, str]:
    """A comma-separated list of ``name=value`` pairs (``agent=sip:queue@pbx, billing=+15551234``);
    names are words, values anything without a comma."""
    pairs: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        name, sep, target = part.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not _NAME.match(name) or not target:
            raise ValueError(f"expected name=value pairs separated by commas, got {part.strip()!r}")
        if name in pairs:
            raise ValueError(f"{name!r} is named twice")
        pairs[name] = target
    return MappingProxyType(pairs)


def word(value: str) -> str:
    """One short word (letters, digits, ``_``, ``-``; starts with a letter)."""
    if not _NAME.match(value):
        raise ValueError(f"expected a word such as lookup_order, got {value!r}")
    return value


def http_url(value: str) -> str:
    """An http:// or https:// URL. Plain http is only for loopback addresses (tests, a sidecar):
    anything that leaves the host must be https."""
    match = re.match(r"^(https?)://(\[[^\]]+\]|[^/:\s]+)(:\d+)?(/\S*)?$", value)
    if not match:
        raise ValueError(f"expected an https:// URL, got {value!r}")
    host = match.group(2).strip("[]").lower()
    if match.group(1) == "http" and host not in ("localhost", "::1") and not host.startswith("127."):
        raise ValueError(f"plain http is allowed only to loopback addresses; use https://, got {value!r}")
    return value


def json_object(value: str) -> Mapping[str, Any]:
    """A JSON object (such as a JSON Schema)."""
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise ValueError(f"not valid JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise ValueError("expected a JSON object")
    return MappingProxyType(parsed)
