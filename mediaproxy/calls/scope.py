"""The four fields every call-scoped log line carries: ``call_id``, ``platform``, ``backend`` and
``outcome`` (``None`` while the call is in progress).

A :class:`CallScope` is one call's current values, owned by its bridge and updated as the call
starts and ends; a :class:`CallLogger` adds them to each event it emits, so a line written
through it can never lack one. Backend sessions log through their own module loggers with
``call_id`` and ``backend`` only; the :class:`CallDirectory` lets a log observer find the rest
(the JSON log does, see :mod:`mediaproxy.json_log`). Only values already safe for a log line go
in (the bridge's ``log_id``); none of them is ever a secret.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from twisted.logger import Logger, LogLevel

CALL_FIELDS = ("call_id", "platform", "backend", "outcome")
"""The keys of a call-scoped log event, in the order the JSON log writes them."""

RECENTLY_ENDED = 256
"""Ended calls the directory still answers for: a backend session may log its close a moment
after its call ended. Bounded, so the directory never grows with the number of calls served."""


@dataclass
class CallScope:
    """One call's log fields. ``call_id`` is empty until the platform names the call."""

    platform: str
    backend: str
    call_id: str = ""
    outcome: str | None = None

    def fields(self) -> dict[str, str | None]:
        """The four fields, ``call_id`` ``None`` while the call has none yet."""
        return {"call_id": self.call_id or None, "platform": self.platform, "backend": self.backend,
                "outcome": self.outcome}


class CallLogger(Logger):
    """A :class:`~twisted.logger.Logger` whose every event carries ``scope``'s four fields
    (an explicit keyword of the same name wins: it says the same thing)."""

    def __init__(self, scope: CallScope, namespace: str) -> None:
        super().__init__(namespace=namespace)
        self.scope = scope

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        fields: dict[str, object] = dict(self.scope.fields())
        fields.update(kwargs)
        super().emit(level, format, **fields)


class CallDirectory:
    """The scopes of live calls (and of the last :data:`RECENTLY_ENDED` ended ones) by
    ``call_id``: the missing fields of a line that carries only a call id. Two live calls with
    one id (platforms choose ids) answer with the later one."""

    def __init__(self) -> None:
        self._live: dict[str, CallScope] = {}
        self._ended: OrderedDict[str, CallScope] = OrderedDict()

    def started(self, call_id: str, scope: CallScope) -> None:
        """The call of ``scope`` has its id now: ``call_id`` as the platform sent it (what
        backend sessions log), ``scope.call_id`` being its log-safe form."""
        self._ended.pop(call_id, None)
        self._live[call_id] = scope

    def ended(self, call_id: str, scope: CallScope) -> None:
        """The call ended; it is still found until :data:`RECENTLY_ENDED` later calls end."""
        if self._live.get(call_id) is scope:
            del self._live[call_id]
        self._ended[call_id] = scope
        self._ended.move_to_end(call_id)
        while len(self._ended) > RECENTLY_ENDED:
            self._ended.popitem(last=False)

    def find(self, call_id: str) -> CallScope | None:
        """The scope of the call with ``call_id`` (as the platform sent it), if it is live or
        ended recently."""
        return self._live.get(call_id) or self._ended.get(call_id)

    def fields(self, call_id: str) -> dict[str, str | None] | None:
        """The four fields of the call with ``call_id``, or ``None`` (a log observer's lookup)."""
        scope = self.find(call_id)
        return None if scope is None else scope.fields()

    def __len__(self) -> int:
        return len(self._live) + len(self._ended)
