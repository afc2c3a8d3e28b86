"""Strict JSON for what peers send: RFC 8259 only, so nothing we echo can break a peer.

Python's ``json.loads`` also accepts ``NaN``, ``Infinity`` and ``-Infinity``, and reads a float
literal too large for a double (``1e999``) as infinity. Such a value in a peer's message would
come back out of ``json.dumps`` as a bare ``Infinity`` token (an AudioHook ``opened`` echoing an
offer did exactly that), which no strict parser reads. :func:`loads` refuses them with a
``ValueError``, the error every caller already answers as "not JSON".
"""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal[:40]} is out of range")
    return value


# One decoder, built once: json.loads with hooks would build a new one for every message.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def loads(text: str | bytes) -> Any:
    """Parse one message. ``bytes`` must be UTF-8 (a WebSocket text frame's encoding).

    Raises ``ValueError`` for anything that is not strict JSON (``UnicodeDecodeError`` is one) and
    ``RecursionError`` for absurdly deep nesting, as ``json.loads`` does."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return _DECODER.decode(text)
