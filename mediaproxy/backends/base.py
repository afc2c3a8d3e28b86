"""The neutral interface between the call bridge and an AI voice backend.

A :class:`Backend` is built once per ``[backend:NAME]`` section; for each call the bridge asks it
for a :class:`BackendSession` (``open_session``), passing a :class:`BackendListener` (the bridge)
that receives the backend's events. Network connectors split the same way the platforms do: a
sans-IO dialect object (events in, messages out) plus thin Autobahn glue; this module is only the
seam the bridge sees.

A backend session is never paused: its socket carries control events (the caller started
speaking, errors) that must be seen at once, so it is always read; the playout bounds what it
queues by dropping audio beyond ``[playout] max_buffer_ms`` (counted). Sessions keep the
``IPushProducer`` methods for their own use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from twisted.internet.defer import Deferred

from mediaproxy.audio.format import AudioFormat, FormatPreference
from mediaproxy.http_requests import HttpClient
from mediaproxy.metrics import Metrics
from mediaproxy.transcripts import Transcript


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: ``name``, what it does (``description``, for the model)
    and its arguments as a JSON Schema object (``parameters``)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class CallInfo:
    """What a backend session may know about the call it serves. ``tools`` are the functions the
    model is offered for this call (the call actions and the operator's own tools)."""

    call_id: str
    platform: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    listen_only: bool = False
    """The platform plays nothing back (AudioHook Monitor): transcribe, never respond."""
    tools: tuple[ToolSpec, ...] = ()


class BackendListener(Protocol):
    """What a backend session reports to its call (implemented by ``CallBridge``)."""

    def backend_ready(self) -> None:
        """The backend accepted the session; audio sent from now on is heard."""

    def backend_audio(self, response_id: str, data: bytes) -> None:
        """Bot audio in the session's ``audio_format``, any size, tagged with the response it
        belongs to (barge-in drops the rest of a response by this id)."""

    def backend_response_done(self, response_id: str) -> None:
        """The response has delivered all its audio."""

    def backend_speech_started(self) -> None:
        """The backend heard the caller start speaking: barge-in."""

    def backend_speech_stopped(self) -> None:
        """The backend heard the caller stop speaking (end of the caller's turn)."""

    def backend_transcript(self, transcript: Transcript) -> None:
        """What was said; ``role`` is ``caller`` or ``bot``, times on this session's input
        timeline (ms since the first caller audio it was sent)."""

    def backend_tool_call(self, call_id: str, name: str, arguments: str) -> None:
        """The model calls the tool ``name`` with ``arguments`` (JSON text, unvalidated); the
        answer goes back with :meth:`BackendSession.tool_result` under the same ``call_id``."""

    def backend_hangup(self, reason: str, variables: Mapping[str, str] | None = None) -> None:
        """The bot ends the call."""

    def backend_failed(self, reason: str) -> None:
        """The backend failed for good (bad key, quota, reconnects exhausted): end the call."""

    def backend_clear(self) -> None:
        """The bot takes back the audio it sent that has not been played yet (its own barge-in):
        the platform and the playout are flushed as at a barge-in, but no caller speech is
        reported to the platform and a goodbye waiting to be heard is not cancelled."""

    def when_heard(self) -> Deferred[bool]:
        """A Deferred that fires True once the caller has heard all the bot audio delivered so
        far (the call's played position, see :mod:`mediaproxy.playout.position`), or False as
        soon as a barge-in or :meth:`backend_clear` discarded some of it first. It fails with
        ``CancelledError`` when the call ends before either."""
        ...


class BackendSession(Protocol):
    """One call's leg toward the backend. Also an ``IPushProducer``."""

    audio_format: AudioFormat
    """The format of audio exchanged with the bridge, both directions."""

    def send_audio(self, data: bytes) -> None:
        """Caller audio in ``audio_format``, any size. Never blocks; bounded internally."""

    def interrupt(self, response_id: str, played_ms: int) -> None:
        """Barge-in: the caller heard the first ``played_ms`` milliseconds of ``response_id``;
        forget the rest and stop producing it."""

    def send_dtmf(self, digits: str) -> None:
        """The caller entered ``digits`` (collected: one entry, not one call per key)."""

    def tool_result(self, call_id: str, output: str) -> None:
        """The answer (JSON text) to the model's tool call ``call_id``; the model goes on."""

    def set_language(self, language: str) -> None:
        """The conversation's language changed (a BCP-47 tag): transcribe in it from now on."""

    def close(self) -> None:
        """End the session; no listener calls follow. Idempotent."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


@runtime_checkable
class EndReported(Protocol):
    """A backend session that wants to know why its call ended (the bridge calls
    :meth:`call_ending` just before ``close``); the others are only closed."""

    def call_ending(self, outcome: str) -> None:
        """The call is ending with ``outcome`` (a ``calls_total{outcome}`` value)."""


class Backend(Protocol):
    """A configured backend (one ``[backend:NAME]`` section)."""

    name: str
    format_preference: FormatPreference
    """Platform formats cheapest for this backend first, for platforms that negotiate (AudioCodes,
    AudioHook); empty when every format costs the same."""

    def open_session(
        self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat
    ) -> BackendSession:
        """Start a session for one call whose platform speaks ``platform_format``. Returns at
        once; readiness and failure arrive through ``listener``."""
        ...


OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class BackendType(Generic[OptionsT]):
    """One kind of backend (``[backend:NAME] type``), registered in :mod:`mediaproxy.catalog`.

    ``options``: the dataclass of the keys its sections accept besides ``type`` (see
    :mod:`mediaproxy.options`). ``new_backend(name, options, reactor, metrics)``: the configured
    backend of one section; ``reactor`` provides ``IReactorTime`` and, for network backends,
    ``IReactorTCP``/``IReactorSSL``. ``validate(options)``: cross-checks at start-up; raises
    :class:`~mediaproxy.options.OptionError`. ``new_backend_with_http``: for a backend that also
    makes HTTP requests (a credential exchange before it dials), the factory that takes the
    process's HTTP client as a fifth argument; :meth:`create` prefers it.
    """

    name: str
    options: type[OptionsT]
    new_backend: Callable[[str, OptionsT, Any, Metrics], Backend]
    summary: str = ""
    validate: Callable[[OptionsT], None] | None = None
    new_backend_with_http: Callable[[str, OptionsT, Any, Metrics, HttpClient], Backend] | None = None

    def create(self, name: str, options: OptionsT, reactor: Any, metrics: Metrics, http: HttpClient) -> Backend:
        """The configured backend of section ``name``, handed ``http`` when it makes requests."""
        if self.new_backend_with_http is not None:
            return self.new_backend_with_http(name, options, reactor, metrics, http)
        return self.new_backend(name, options, reactor, metrics)
