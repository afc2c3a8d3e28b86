"""One call's leg toward the Deepgram Voice Agent: the thin Twisted/Autobahn glue around
:class:`~mediaproxy.backends.deepgram_dialect.AgentDialect`.

The session dials ``url`` with ``Authorization: Token <api_key>`` through the shared
:class:`~mediaproxy.backends.reconnect.Redialer`: an attempt counts as up once ``SettingsApplied``
arrived. Caller audio that arrives before that (or while reconnecting) is kept up to
``early_audio_ms``, oldest dropped and counted. A mid-call drop redials with backoff and sends the
Settings again, without the greeting and with the recent conversation in the prompt; fatal errors
(credentials refused at the upgrade, Settings refused) end the call through ``backend_failed``.

The service closes a connection that carries nothing for 10 s:
:class:`~mediaproxy.backends.connection.KeepAliveTimer` polls the dialect every half
``keepalive_seconds`` on the injected reactor and a ``KeepAlive`` goes out when no other client
message did (caller audio normally flows all the time; this covers hold and paused streams). No
per-frame timer work is done.

The socket is always read, whatever the playout holds (``UserStartedSpeaking`` arrives on the
same socket as the audio and must be handled at once); the playout bounds its own queue.
"""

from __future__ import annotations

import random as _random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from mediaproxy.audio.format import AudioFormat
from mediaproxy.backends.base import BackendListener, CallInfo
from mediaproxy.backends.connection import (
    BackendSocket,
    HeldAudio,
    KeepAliveTimer,
    open_until_ready,
    refused_dial_reason,
)
from mediaproxy.backends.deepgram_dialect import AgentDialect
from mediaproxy.backends.deepgram_events import (
    UNKNOWN_MESSAGE,
    AgentAudio,
    AgentAudioFinished,
    AgentEvent,
    ServerError,
    SettingsAccepted,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    TranscriptLine,
    UnknownMessage,
    Welcomed,
    error_code_label,
)
from mediaproxy.backends.deepgram_settings import settings_message
from mediaproxy.backends.reconnect import connection_lost_reason, dial_websocket
from mediaproxy.backends.redialing_session import RedialingSession
from mediaproxy.metrics import Metrics
from mediaproxy.transcripts import Transcript

if TYPE_CHECKING:
    from mediaproxy.backends.deepgram import DeepgramOptions

log = Logger()

_HISTORY_LINES = 12
_HISTORY_CHARS = 2000

RESUME_NOTE = (
    "The connection to the caller was briefly interrupted and has been restored. This is the "
    "same call: continue the conversation where it left off and do not greet the caller again."
)


class AgentClientProtocol(BackendSocket):
    """The WebSocket of one connection; forwards everything to its session."""

    session: DeepgramAgentSession | None = None
    dialect: AgentDialect | None = None
    ready: Deferred[AgentClientProtocol] | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is not None:
            self.session.message_received(self, payload, isBinary)


class DeepgramAgentSession(RedialingSession[AgentClientProtocol, AgentEvent]):
    """A :class:`~mediaproxy.backends.base.BackendSession` on the Deepgram Voice Agent for one
    call. ``prompt`` is the agent's prompt for this call (the configured instructions plus the
    call's context); ``random`` spreads reconnect delays (tests pass a constant)."""

    def __init__(
        self,
        backend_name: str,
        options: DeepgramOptions,
        call: CallInfo,
        listener: BackendListener,
        audio_format: AudioFormat,
        reactor: Any,
        metrics: Metrics,
        *,
        prompt: str = "",
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.audio_format = audio_format
        self._options = options
        self._call = call
        self._prompt = prompt
        self._language = options.language
        self._early = HeldAudio(audio_format, options.early_audio_ms, metrics)
        self._dialect: AgentDialect | None = None
        self._history: OrderedDict[int, str] = OrderedDict()
        self._lines = 0
        self._pending_results: list[tuple[str, str]] = []
        self._keepalive = KeepAliveTimer(reactor, options.keepalive_seconds / 2.0, self._poll_keepalive)
        self._set_up_redialing(backend_name, options, call, listener, reactor, metrics, logger=log,
                               secrets=(options.api_key,), is_fatal=refused_dial_reason, random=random)

    # --- BackendSession ------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in ``audio_format``, one binary frame per call; held (bounded) until the
        agent is ready."""
        if self._closed:
            return
        dialect = self._dialect
        if dialect is None:
            self._early.hold(data, "backend_not_ready")
            return
        dialect.send_audio(data)
        self._send_output()

    def interrupt(self, response_id: str, played_ms: int) -> None:
        """Barge-in on agent turn ``response_id`` after the caller heard ``played_ms`` of it: the
        rest of the turn's audio is dropped. The API has no truncate (its history keeps the whole
        reply), so nothing is sent; ``played_ms`` is only logged."""
        if self._dialect is not None:
            self._dialect.interrupt(response_id)
        self._log("debug", "agent turn {turn} cut after {played} ms", turn=response_id, played=played_ms)

    def send_dtmf(self, digits: str) -> None:
        """The caller's keys reach the agent as an ``InjectUserMessage`` (dropped while
        reconnecting)."""
        if self._dialect is not None and digits:
            self._dialect.send_dtmf(digits)
            self._send_output()

    def tool_result(self, call_id: str, output: str) -> None:
        """``FunctionCallResponse`` for ``call_id``. While reconnecting the result is kept and
        goes into the next connection's prompt (the new connection knows nothing of the call);
        a result for a call of an earlier connection is only remembered for the next resume."""
        if self._closed:
            return
        dialect = self._dialect
        if dialect is not None and dialect.has_tool_call(call_id):
            dialect.tool_result(call_id, output)
            self._send_output()
        else:
            self._pending_results.append((call_id, output[:_HISTORY_CHARS]))
            del self._pending_results[:-8]

    def set_language(self, language: str) -> None:
        """The conversation's language (BCP-47): used in the Settings of the next connection.
        (The API changes a running agent's language only through provider updates this
        connector does not send.)"""
        if language:
            self._language = language

    def _let_go(self) -> Sequence[AgentClientProtocol | None]:
        self._keepalive.stop()
        self._dialect = None
        return super()._let_go()

    # --- connections ---------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        prompt, greeting = self._prompt, self._options.greeting
        if self._call.listen_only:
            greeting = ""
        if self._ready.ever_ready:
            greeting = ""
            parts = [prompt, RESUME_NOTE]
            lines = list(self._history.values())
            lines += [f"(result of a function call made before the connection was restored: {output})"
                      for _, output in self._pending_results]
            self._pending_results = []
            if lines:
                parts.append(("Recent conversation, oldest first:\n" + "\n".join(lines))[-_HISTORY_CHARS:])
            prompt = "\n\n".join(p for p in parts if p)
        return settings_message(self._options, self.audio_format, self._call.tools,
                                prompt=prompt, greeting=greeting, language=self._language)

    def _dial(self) -> Deferred[AgentClientProtocol]:
        self._connections += 1
        self._ready.dialling()
        dialect = AgentDialect(self._settings(), response_prefix=f"c{self._connections}t")
        opened = dial_websocket(
            self._reactor,
            self._options.url,
            AgentClientProtocol,
            headers={"Authorization": f"Token {self._options.api_key}"},
            timeout_s=self._options.connect_timeout_seconds,
            keepalive_s=self._options.ping_seconds,
        )

        def adopt(proto: AgentClientProtocol, ready: Deferred[AgentClientProtocol]) -> None:
            proto.session, proto.dialect, proto.ready = self, dialect, ready
            self._proto = proto
            self._keepalive.start()

        return open_until_ready(opened, adopt, self._abandon)

    def _connection_up(self, proto: AgentClientProtocol) -> None:
        if not self._ready.up():
            self._log("info", "backend session resumed on connection {connection}", connection=self._connections)

    def message_received(self, proto: AgentClientProtocol, payload: bytes, is_binary: bool) -> None:
        """A frame from the server on ``proto``."""
        if self._closed or proto is not self._proto or proto.dialect is None:
            return
        events = proto.dialect.receive(payload, is_binary)
        self._send_output(proto)
        self._handle_all(proto, events)

    def connection_closed(self, proto: AgentClientProtocol, code: int | None, reason: str | None) -> None:
        """``proto``'s WebSocket ended."""
        if proto is not self._proto:
            return
        self._proto, self._dialect = None, None
        self._keepalive.stop()
        description = self._redact(connection_lost_reason(code, reason))
        if self._attempt_failed(proto, ConnectionLost(description)):
            return
        # Nothing more arrives for the turn in flight: let the bridge play what it has.
        turn = proto.dialect.open_turn if proto.dialect is not None else None
        if turn is not None:
            self._listener.backend_response_done(turn)
        if self._closed:
            return
        self._log("warn", "backend connection lost ({reason}); reconnecting", reason=description)
        self._redialer.lost(description)

    def _handle_event(self, proto: AgentClientProtocol, event: AgentEvent) -> None:
        listener = self._listener
        match event:
            case AgentAudio(response_id=response_id, data=data):
                listener.backend_audio(response_id, data)
            case AgentAudioFinished(response_id=response_id):
                listener.backend_response_done(response_id)
            case SpeechStarted():
                listener.backend_speech_started()
            case SpeechStopped():
                listener.backend_speech_stopped()
            case TranscriptLine(role=role, text=text):
                self._transcript(role, text)
            case ToolCalled(call_id=call_id, name=name, arguments=arguments):
                self._log("info", "agent calls tool {tool}", tool=name[:64])
                listener.backend_tool_call(call_id, name, arguments)
            case SettingsAccepted():
                self._settings_applied(proto)
            case Welcomed(request_id=request_id):
                self._log("info", "backend connection {connection} open (request {request})",
                          connection=self._connections, request=request_id[:64])
            case ServerError(code=code, description=description, fatal=fatal, warning=warning):
                self._metrics.backend_errors_total.labels(self._name, error_code_label(code)).inc()
                if fatal:
                    self._fail(f"{code}: {description}")
                else:
                    # "detail", not "message": legacy log observers overwrite an event's "message" key.
                    self._log("warn", "backend {kind} {code}: {detail}", kind="warning" if warning else "error",
                              code=code[:64], detail=description[:300])
            case UnknownMessage(message_type=message_type):
                self._metrics.backend_errors_total.labels(self._name, UNKNOWN_MESSAGE).inc()
                self._log("debug", "ignored unknown backend message {kind!r}", kind=message_type[:80])

    def _transcript(self, role: str, text: str) -> None:
        if not text:
            return
        language = self._language if role == "caller" and self._language else None
        self._listener.backend_transcript(Transcript(role, text, True, language=language))
        # Kept only for the resume prompt; transcripts are never logged here.
        self._lines += 1
        self._history[self._lines] = f"{'caller' if role == 'caller' else 'assistant'}: {text}"
        while len(self._history) > _HISTORY_LINES:
            self._history.popitem(last=False)

    def _settings_applied(self, proto: AgentClientProtocol) -> None:
        self._log("info", "backend agent configured: {audio} both ways", audio=str(self.audio_format))
        self._dialect = proto.dialect
        held = self._early.take()
        if held and self._dialect is not None:
            self._dialect.send_audio(held)
        self._send_output(proto)
        self._attempt_ready(proto)

    def _poll_keepalive(self) -> None:
        proto = self._proto
        if proto is not None and proto.dialect is not None and proto.dialect.poll_keepalive():
            self._send_output(proto)
