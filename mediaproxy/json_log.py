"""``[log] format = json``: one compact JSON object per line, for log collectors.

Each line has ``time`` (UTC, ISO 8601 with milliseconds), ``level`` (``debug`` ... ``critical``),
``namespace`` (the emitting module), ``message`` (the event's text, as the text log would
write it) and, when the event is about a call, ``call_id``, ``platform``, ``backend`` and
``outcome`` (``null`` while the call is in progress). A logged failure adds ``traceback``; a
worker's line, passed on by the supervisor (``[proxy] workers`` > 1), adds ``worker``. No
other field of the event is written: events may carry objects (a protocol, a request, bytes of
audio) that have no place in a log line. Twisted's ``eventAsJSON`` writes them all; this does not.

A call-scoped event that carries only ``call_id`` and ``backend`` (a backend session's own
lines) gets the rest from ``find_call``. Every configured secret (``secrets``: the config's
values from the environment and of credential keys) is replaced by ``[secret]`` in every
string written, in case a peer echoes one back in an error message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent
from twisted.python.components import Componentized
from zope.interface import implementer

CALL_FIELDS = ("call_id", "platform", "backend", "outcome")
"""The keys a call-scoped line always carries."""

FindCall = Callable[[str], Mapping[str, str | None] | None]
"""Given a ``call_id``, that call's four fields (or ``None`` for an unknown call)."""

MIN_SECRET_CHARS = 8
"""Shorter values are not redacted: a test's ``k`` would only mangle the text around it."""


def _time(event: LogEvent) -> str:
    seconds = event.get("log_time")
    if not isinstance(seconds, int | float):
        return ""
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


_LEVEL_NAMES = {LogLevel.debug: "debug", LogLevel.info: "info", LogLevel.warn: "warn", LogLevel.error: "error",
                LogLevel.critical: "critical"}


def _level(event: LogEvent) -> str:
    return _LEVEL_NAMES.get(event.get("log_level"), "info")


LINE_KEYS = ("time", "level", "namespace", "message", *CALL_FIELDS, "traceback")
"""Every key a line may have (a supervisor adds ``worker`` to its workers' lines)."""


def _relayed_fields(line: Mapping[str, Any], worker: object) -> dict[str, Any]:
    """A worker's JSON line, passed on by its supervisor: its own fields (strings or null
    only), then ``worker``, its index."""
    fields = {key: line[key] for key in LINE_KEYS if key in line and (line[key] is None or isinstance(line[key], str))}
    fields["worker"] = str(worker)
    return fields


def event_fields(event: LogEvent, find_call: FindCall | None = None) -> dict[str, Any]:
    """The fields of ``event``'s JSON line, in the order they are written (unredacted)."""
    relayed = event.get("worker_event")
    if isinstance(relayed, dict):
        return _relayed_fields(relayed, event.get("worker"))
    fields: dict[str, Any] = {
        "time": _time(event),
        "level": _level(event),
        "namespace": str(event.get("log_namespace", "")),
        "message": formatEvent(event),
    }
    if "call_id" in event:
        call: dict[str, Any] = {key: event.get(key) for key in CALL_FIELDS}
        found = find_call(str(call["call_id"])) if find_call is not None and call["call_id"] else None
        if found is not None:
            for key in CALL_FIELDS:
                if call[key] is None:
                    call[key] = found.get(key)
        for key in CALL_FIELDS:
            value = call[key]
            fields[key] = None if value is None or value == "" else str(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            fields["traceback"] = failure.getTraceback()
        except Exception as e:  # a broken failure must not cost the line
            fields["traceback"] = f"(unformattable traceback: {type(e).__name__})"
    return fields


class Redactor:
    """Replaces each secret in a string by ``[secret]`` (longest first, so a secret containing
    another is replaced whole)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {secret for secret in secrets if len(secret) >= MIN_SECRET_CHARS}
        self._secrets = sorted(unique, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[secret]")
        return text


def event_as_line(event: LogEvent, redact: Callable[[str], str] = str, find_call: FindCall | None = None) -> str:
    """``event`` as one JSON line (newline included). ASCII only: a lone surrogate a peer sent
    is written as an escape instead of breaking the write."""
    fields = {key: redact(value) if isinstance(value, str) else value
              for key, value in event_fields(event, find_call).items()}
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")) + "\n"


@implementer(ILogObserver)
class JsonLogObserver:
    """Writes each event to ``stream`` as one JSON line, flushed at once (a crash loses nothing
    that was logged; log lines are few: never one per frame)."""

    def __init__(self, stream: IO[str], secrets: Iterable[str] = (), find_call: FindCall | None = None) -> None:
        self._stream = stream
        self._redact = Redactor(secrets)
        self._find_call = find_call

    def __call__(self, event: LogEvent) -> None:
        self._stream.write(event_as_line(event, self._redact, self._find_call))
        self._stream.flush()


def become_log_observer(application: object, observer: ILogObserver | None) -> None:
    """Make ``observer`` the log observer of ``application``, the twistd application a service
    is joining: twistd's ``AppLogger.start`` reads the ``ILogObserver`` component after the
    plugin's service was added and before it logs its first line, so every line, twistd's own
    included, goes to ``observer`` instead of twistd's text observer. Nothing happens for
    another parent or no observer."""
    if observer is not None and isinstance(application, Componentized):
        application.setComponent(ILogObserver, observer)
