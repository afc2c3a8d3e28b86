"""What every call of the process shares, built once by the composition root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from mediaproxy.backends.base import Backend
from mediaproxy.calls.scope import CallDirectory
from mediaproxy.config import BackendCommon, PlayoutSettings
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.base import PlatformType
from mediaproxy.playout import PlayoutClock

if TYPE_CHECKING:
    from mediaproxy.calls.http import HttpClient
    from mediaproxy.calls.webhook import ToolWebhook


@dataclass(frozen=True)
class CallContext:
    """The reactor (only its ``IReactorTime`` face is used for calls), the shared pacing clock,
    the metrics, the playout settings, whether transcripts are logged (an operator's opt-in:
    they are personal data), the HTTP client for REST transfers and tools, the configured
    ``[tool:NAME]`` webhooks, and the directory of calls by id (for log observers)."""

    reactor: IReactorTime
    clock: PlayoutClock
    metrics: Metrics
    playout: PlayoutSettings
    log_transcripts: bool = False
    http: HttpClient | None = None
    webhooks: Mapping[str, ToolWebhook] = field(default_factory=lambda: MappingProxyType({}))
    calls: CallDirectory = field(default_factory=CallDirectory)


@dataclass(frozen=True)
class Endpoint:
    """One configured ``[platform:NAME]``: its name (the ``platform`` metric label), its type and
    options, the backend that answers its calls with that backend's common settings (tools,
    digit collection), and where its calls may be transferred."""

    name: str
    platform: PlatformType[Any]
    options: Any
    backend: Backend
    calls: BackendCommon = field(default_factory=BackendCommon)
    transfer_targets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def loggable(text: str, limit: int = 200) -> str:
    """Peer-supplied ``text`` made safe for a UTF-8 log line: bounded, and a lone surrogate (a
    JSON ``\\ud800`` escape decodes to one) written as an escape instead of breaking the write."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
