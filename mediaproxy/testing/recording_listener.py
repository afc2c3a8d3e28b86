"""A recording :class:`~mediaproxy.backends.base.BackendListener`, for tests of backend sessions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred

from mediaproxy.testing.waiting import ConditionWaiting
from mediaproxy.transcripts import Transcript

__all__ = ["RecordingListener"]

class RecordingListener(ConditionWaiting):
    """A :class:`~mediaproxy.backends.base.BackendListener` that records every call in
    ``events`` and the audio per response in ``audio``. ``on_speech_started`` runs inside
    ``backend_speech_started`` (the bridge interrupts synchronously there)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.audio: dict[str, bytearray] = {}
        self.on_speech_started: Callable[[], None] | None = None
        self.transcripts: list[Transcript] = []
        self.heard_waiters: list[Deferred[bool]] = []

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def has(self, kind: str, *args: Any) -> bool:
        return any(e[0] == kind and e[1:1 + len(args)] == args for e in self.events)

    def _record(self, *event: Any) -> None:
        self.events.append(event)
        self.poke()

    def backend_ready(self) -> None:
        self._record("ready")

    def backend_audio(self, response_id: str, data: bytes) -> None:
        self.audio.setdefault(response_id, bytearray()).extend(data)
        self._record("audio", response_id, len(data))

    def backend_response_done(self, response_id: str) -> None:
        self._record("done", response_id)

    def backend_speech_started(self) -> None:
        if self.on_speech_started is not None:
            self.on_speech_started()
        self._record("speech_started")

    def backend_speech_stopped(self) -> None:
        self._record("speech_stopped")

    def backend_transcript(self, transcript: Transcript) -> None:
        self._record("transcript", transcript.role, transcript.text, transcript.final)
        self.transcripts.append(transcript)

    def backend_tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self._record("tool_call", call_id, name, arguments)

    def backend_hangup(self, reason: str, variables: Mapping[str, str] | None = None) -> None:
        self._record("hangup", reason)

    def backend_failed(self, reason: str) -> None:
        self._record("failed", reason)

    def backend_clear(self) -> None:
        self._record("clear")

    def when_heard(self) -> Deferred[bool]:
        """Recorded as ``("when_heard", n)``; the Deferred is kept in ``heard_waiters`` for the
        test to fire."""
        d: Deferred[bool] = Deferred()
        self.heard_waiters.append(d)
        self._record("when_heard", len(self.heard_waiters))
        return d
