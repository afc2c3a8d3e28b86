"""What every call of the process shares, built once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from mediaproxy.backends.base import Backend
from mediaproxy.config import PlayoutSettings
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.base import PlatformType
from mediaproxy.playout import PlayoutClock


@dataclass(frozen=True)
class CallContext:
    """The reactor (only its ``IReactorTime`` face is used for calls), the shared pacing clock,
    the metrics, the playout settings, and whether transcripts are logged (an operator's opt-in:
    they are personal data)."""

    reactor: IReactorTime
    clock: PlayoutClock
    metrics: Metrics
    playout: PlayoutSettings
    log_transcripts: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One configured ``[platform:NAME]``: its name (the ``platform`` metric label), its type and
    options, and the backend that answers its calls."""

    name: str
    platform: PlatformType[Any]
    options: Any
    backend: Backend
