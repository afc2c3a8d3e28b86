"""One call's leg toward an ElevenLabs agent: the thin Twisted/Autobahn glue around
:class:`~mediaproxy.backends.elevenlabs_dialect.ConversationDialect`.

Each attempt of the shared :class:`~mediaproxy.backends.reconnect.Redialer` gets a signed URL
first for a private agent (see :class:`~mediaproxy.backends.elevenlabs.SignedUrls`), dials it (or
``url?agent_id=`` for a public agent), sends ``conversation_initiation_client_data`` and counts
as up once ``conversation_initiation_metadata`` arrived. That message names the agent's formats:
the session converts the bridge's format to the agent's input format and the agent's output
format back (pass-through when they match). Caller audio that arrives before that (or while
reconnecting) is kept up to ``early_audio_ms``, oldest dropped and counted.

A conversation cannot be resumed on a new connection. So:

- the service closing the connection normally (1000, after the agent's own end-call tool or its
  ``max_duration_seconds``) ends the call, once the audio already received has had time to play
  (the estimate runs on the injected reactor, bounded to :data:`HANGUP_WAIT_MAX_S`);
- a drop (any other close, or the TCP connection lost) redials with backoff into a *new*
  conversation: the caller hears a gap of the redial's length, then the agent's first message
  again (unless ``greet_on_reconnect = false``), and the new conversation is told the recent
  exchange with a ``contextual_update``. Tool calls of the old conversation are not answered;
- refusals retrying cannot fix (the key or agent refused by the HTTP API, the upgrade refused,
  the connection closed with a policy code before the conversation started, an agent format the
  connector cannot exchange) end the call through ``backend_failed``.

The API marks no end of a response's audio: a response whose audio stays quiet for
:data:`RESPONSE_QUIET_S` is finished (one timer at most, moved rather than re-armed per chunk).
The socket is always read, whatever the playout holds (``interruption`` shares it with audio).
"""

from __future__ import annotations

import random as _random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediaproxy.audio.format import AudioFormat
from mediaproxy.audio.transcode import Transcoder
from mediaproxy.backends.base import BackendListener, CallInfo
from mediaproxy.backends.connection import (
    BackendSocket,
    HeldAudio,
    open_until_ready,
    refused_dial_reason,
)
from mediaproxy.backends.elevenlabs_dialect import (
    ConversationDialect,
    initiation_message,
)
from mediaproxy.backends.elevenlabs_events import (
    MALFORMED_MESSAGE,
    UNKNOWN_MESSAGE,
    UNSUPPORTED_FORMAT,
    AgentAudio,
    AgentAudioFinished,
    ConversationEvent,
    ConversationStarted,
    Interrupted,
    MalformedMessage,
    ServerError,
    ToolCalled,
    TranscriptLine,
    UnknownMessage,
)
from mediaproxy.backends.openai_session_config import allowed_context
from mediaproxy.backends.reconnect import Timer, connection_lost_reason, dial_websocket
from mediaproxy.backends.redialing_session import RedialingSession
from mediaproxy.metrics import Metrics
from mediaproxy.transcripts import Transcript

if TYPE_CHECKING:
    from mediaproxy.backends.elevenlabs import ElevenLabsOptions

log = Logger()

RESPONSE_QUIET_S = 0.6
"""A response whose audio paused this long is finished (its tail may be padded and played)."""

HANGUP_WAIT_MAX_S = 30.0
"""The longest wait for the agent's last words to play after it ended the conversation, s."""

_HANGUP_MARGIN_S = 0.2
_HISTORY_LINES = 12
_HISTORY_CHARS = 2000

REFUSED_CLOSE_CODES = frozenset({1008, *range(3000, 5000)})
"""Close codes before ``conversation_initiation_metadata`` that retrying cannot fix: 1008 (policy
violation: an override the agent does not allow, a bad signature) and the application range."""

RESUME_NOTE = (
    "The connection to the caller was briefly interrupted and this is a new session of the same "
    "call: continue the conversation where it left off and do not greet the caller again."
)


class SignedUrlRefused(ConnectError):
    """The HTTP API refused the signed URL in a way retrying cannot fix (key, agent)."""

    def __init__(self, reason: str) -> None:
        super().__init__(string=reason)  # type: ignore[no-untyped-call]  # Twisted is unannotated
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class ConversationRefused(SignedUrlRefused):
    """The service closed the connection before the conversation started, for good."""


class ConversationSocket(BackendSocket):
    """The WebSocket of one conversation; forwards everything to its session."""

    session: ElevenLabsSession | None = None
    dialect: ConversationDialect | None = None
    ready: Deferred[ConversationSocket] | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is not None:
            self.session.message_received(self, payload)


def _refusal(failure: Failure) -> str | None:
    if failure.check(SignedUrlRefused):  # ConversationRefused too
        return str(failure.value)
    return refused_dial_reason(failure, not_found="agent WebSocket URL")


Connect = Callable[[str], "Deferred[Any]"]
"""Opens one WebSocket to a URL; fires with the open protocol (tests pass their own)."""


class ElevenLabsSession(RedialingSession[ConversationSocket, ConversationEvent]):
    """A :class:`~mediaproxy.backends.base.BackendSession` on an ElevenLabs agent for one call.
    ``audio_format`` is what the bridge exchanges (the platform's); ``signed_url`` fetches a
    signed URL per conversation (None: a public agent, dialled at ``url?agent_id=``);
    ``random`` spreads reconnect delays (tests pass a constant); ``connect`` replaces the real
    dial (tests)."""

    def __init__(self, backend_name: str, options: ElevenLabsOptions, call: CallInfo, listener: BackendListener,
                 audio_format: AudioFormat, reactor: Any, metrics: Metrics, *,
                 signed_url: Callable[[], Deferred[str]] | None = None,
                 random: Callable[[], float] = _random.random, connect: Connect | None = None) -> None:
        self.audio_format = audio_format
        self._connect = connect or self._dial_websocket
        self._options = options
        self._call = call
        self._signed_url = signed_url
        self._language = options.language
        self._variables = allowed_context(call.metadata, options.call_context_keys) if call.metadata else {}
        self._early = HeldAudio(audio_format, options.early_audio_ms, metrics)
        self._dialect: ConversationDialect | None = None
        """The conversation caller audio goes to (set once it started)."""
        self._up: Transcoder | None = None
        self._down: Transcoder | None = None
        self._output_format: AudioFormat | None = None
        self._history: OrderedDict[int, str] = OrderedDict()
        self._lines = 0
        self._quiet_timer: Timer | None = None
        self._last_audio_at = 0.0
        self._speech_until = 0.0
        """When the agent audio received so far will have played, reactor seconds (estimate)."""
        self._hangup_timer: Timer | None = None
        self._set_up_redialing(backend_name, options, call, listener, reactor, metrics, logger=log,
                               secrets=(options.api_key,), is_fatal=_refusal, random=random)

    # --- BackendSession ------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in ``audio_format``; converted to the agent's input format and sent as one
        ``user_audio_chunk``, or held (bounded) until a conversation has started."""
        if self._closed:
            return
        if self._dialect is None or self._up is None:
            self._early.hold(data, "backend_not_ready")
            return
        self._dialect.send_audio(self._up.convert(data))
        self._send_output()

    def interrupt(self, response_id: str, played_ms: int) -> None:
        """Barge-in on ``response_id`` after the caller heard ``played_ms`` of it: the rest of it is
        dropped. The service truncates its own history (``agent_response_correction``)."""
        if self._dialect is not None:
            self._dialect.interrupt(response_id)
        self._speech_until = self._reactor.seconds()
        self._log("debug", "agent response {response} cut after {played} ms", response=response_id, played=played_ms)

    def send_dtmf(self, digits: str) -> None:
        """The caller's keys reach the agent as a ``user_message`` (dropped while reconnecting)."""
        if self._dialect is not None and digits:
            self._dialect.send_dtmf(digits)
            self._send_output()

    def tool_result(self, call_id: str, output: str) -> None:
        """``client_tool_result`` for ``call_id``; a result for a call of an earlier conversation
        only goes into the recent exchange told to the next one."""
        if self._closed:
            return
        if self._dialect is not None and self._dialect.has_tool_call(call_id):
            self._dialect.tool_result(call_id, output)
            self._send_output()
        else:
            self._remember(f"(result of a tool call made before the reconnect: {output[:_HISTORY_CHARS]})")

    def set_language(self, language: str) -> None:
        """The conversation's language (BCP-47): the language override of the next conversation,
        when ``language`` overrides are configured at all (the agent must allow them)."""
        if language and self._options.language:
            self._language = language

    def _let_go(self) -> Sequence[ConversationSocket | None]:
        for timer in (self._quiet_timer, self._hangup_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._quiet_timer = self._hangup_timer = None
        self._dialect = None
        return super()._let_go()

    # --- conversations -------------------------------------------------------------------------

    def _initiation(self) -> dict[str, Any]:
        first_message: str | None = self._options.greeting or None
        if self._ready.ever_ready and not self._options.greet_on_reconnect:
            first_message = ""
        return initiation_message(dynamic_variables=self._variables, prompt=self._options.instructions,
                                  first_message=first_message, language=self._language)

    def _dial(self) -> Deferred[ConversationSocket]:
        self._connections += 1
        self._ready.dialling()
        dialect = ConversationDialect(self._initiation(), response_prefix=f"c{self._connections}e")
        if self._signed_url is None:
            url: Deferred[str] = succeed(f"{self._options.url}?agent_id={quote(self._options.agent_id, safe='')}")
        else:
            url = maybeDeferred(self._signed_url)

        def adopt(proto: ConversationSocket, ready: Deferred[ConversationSocket]) -> None:
            proto.session, proto.dialect, proto.ready = self, dialect, ready
            self._proto = proto
            dialect.opened()
            self._send_output(proto)

        def dial(target: str) -> Deferred[ConversationSocket]:
            return open_until_ready(self._connect(target), adopt, self._abandon)

        return url.addCallback(dial)

    def _dial_websocket(self, url: str) -> Deferred[Any]:
        return dial_websocket(self._reactor, url, ConversationSocket, headers={},
                              timeout_s=self._options.connect_timeout_seconds,
                              keepalive_s=self._options.keepalive_seconds)

    def _connection_up(self, proto: ConversationSocket) -> None:
        if self._ready.up():
            return
        self._log("info", "backend reconnected: new conversation {connection}", connection=self._connections)
        if proto.dialect is not None and self._history:
            lines = "\n".join(self._history.values())
            proto.dialect.contextual_update(f"{RESUME_NOTE}\n\nRecent conversation, oldest first:\n{lines}"
                                            [-_HISTORY_CHARS:])
            self._send_output(proto)

    def message_received(self, proto: ConversationSocket, payload: bytes) -> None:
        """A frame from the server on ``proto``."""
        if self._closed or proto is not self._proto or proto.dialect is None:
            return
        events = proto.dialect.receive(payload)
        self._send_output(proto)
        self._handle_all(proto, events)

    def connection_closed(self, proto: ConversationSocket, code: int | None, reason: str | None) -> None:
        """``proto``'s WebSocket ended."""
        if proto is not self._proto:
            return
        self._proto, self._dialect, self._up = None, None, None
        description = self._redact(connection_lost_reason(code, reason))
        refused = ConversationRefused if code in REFUSED_CLOSE_CODES else ConnectionLost
        if self._attempt_failed(proto, refused(f"conversation refused: {description}")):
            return
        response = proto.dialect.open_response if proto.dialect is not None else None
        if response is not None:
            self._listener.backend_response_done(response)
        if self._closed:
            return
        if code == 1000:
            # The agent ended the conversation (its end-call tool, its maximum duration): there is
            # no resuming it, so the call ends once its last words have played.
            self._redialer.stop()
            wait = min(HANGUP_WAIT_MAX_S, max(0.0, self._speech_until - self._reactor.seconds()) + _HANGUP_MARGIN_S)
            self._log("info", "the agent ended the conversation ({reason}); hanging up in {wait:.1f} s",
                      reason=description, wait=wait)
            self._hangup_timer = self._reactor.callLater(wait, self._agent_hung_up)
            return
        self._log("warn", "backend connection lost ({reason}); starting a new conversation", reason=description)
        self._redialer.lost(description)

    def _agent_hung_up(self) -> None:
        self._hangup_timer = None
        if not self._closed:
            self._shut_down(abort=False)
            self._listener.backend_hangup("the agent ended the conversation")

    def _handle_event(self, proto: ConversationSocket, event: ConversationEvent) -> None:
        listener = self._listener
        match event:
            case AgentAudio(response_id=response_id, data=data):
                self._agent_audio(response_id, data)
            case AgentAudioFinished(response_id=response_id):
                listener.backend_response_done(response_id)
            case Interrupted():
                self._speech_until = self._reactor.seconds()
                listener.backend_speech_started()
            case TranscriptLine(role=role, text=text, corrected=corrected):
                self._transcript(role, text, corrected)
            case ToolCalled(call_id=call_id, name=name, arguments=arguments):
                self._log("info", "agent calls tool {tool}", tool=name[:64])
                listener.backend_tool_call(call_id, name, arguments)
            case ConversationStarted():
                self._conversation_started(proto, event)
            case ServerError(code=code, message=message):
                self._metrics.backend_errors_total.labels(self._name, "error").inc()
                # "detail", not "message": legacy log observers overwrite an event's "message" key.
                self._log("warn", "backend error {code}: {detail}", code=code[:64], detail=message[:300])
            case MalformedMessage(message_type=message_type):
                self._metrics.backend_errors_total.labels(self._name, MALFORMED_MESSAGE).inc()
                self._log("debug", "ignored malformed backend message {kind!r}", kind=message_type[:80])
            case UnknownMessage(message_type=message_type):
                self._metrics.backend_errors_total.labels(self._name, UNKNOWN_MESSAGE).inc()
                self._log("debug", "ignored unknown backend message {kind!r}", kind=message_type[:80])

    def _conversation_started(self, proto: ConversationSocket, event: ConversationStarted) -> None:
        if event.input_format is None or event.output_format is None:
            self._metrics.backend_errors_total.labels(self._name, UNSUPPORTED_FORMAT).inc()
            name = event.input_name if event.input_format is None else event.output_name
            self._fail(f"the agent's audio format {name[:40]!r} cannot be exchanged (configure the agent for "
                       "pcm_8000, pcm_16000, pcm_24000, pcm_48000 or ulaw_8000)")
            return
        self._log("info", "conversation {conversation} started: {up} up, {down} down",
                  conversation=event.conversation_id[:80], up=event.input_name, down=event.output_name)
        self._dialect = proto.dialect
        self._up = Transcoder(self.audio_format, event.input_format)
        if self._down is None or self._output_format != event.output_format:
            self._down = Transcoder(event.output_format, self.audio_format)
            self._output_format = event.output_format
        held = self._early.take()
        if held and self._dialect is not None:
            self._dialect.send_audio(self._up.convert(held))
        self._send_output(proto)
        self._attempt_ready(proto)

    def _agent_audio(self, response_id: str, data: bytes) -> None:
        if self._down is None or self._output_format is None:
            return
        now = self._reactor.seconds()
        self._speech_until = max(now, self._speech_until) + self._output_format.ms_for_bytes(len(data)) / 1000.0
        self._last_audio_at = now
        if self._quiet_timer is None:
            self._quiet_timer = self._reactor.callLater(RESPONSE_QUIET_S, self._check_quiet)
        self._listener.backend_audio(response_id, self._down.convert(data))

    def _check_quiet(self) -> None:
        self._quiet_timer = None
        proto = self._proto
        if self._closed or proto is None or proto.dialect is None or proto.dialect.open_response is None:
            return
        left = self._last_audio_at + RESPONSE_QUIET_S - self._reactor.seconds()
        if left > 1e-6:
            self._quiet_timer = self._reactor.callLater(left, self._check_quiet)
            return
        self._handle_all(proto, proto.dialect.finish_response())

    def _transcript(self, role: str, text: str, corrected: bool) -> None:
        language = self._language if role == "caller" and self._language else None
        self._listener.backend_transcript(Transcript(role, text, True, language=language))
        # Kept only for the next conversation's context; transcripts are never logged here.
        speaker = "caller" if role == "caller" else "assistant"
        self._remember(f"{speaker}{' (as heard, cut off)' if corrected else ''}: {text}")

    def _remember(self, line: str) -> None:
        self._lines += 1
        self._history[self._lines] = line[:_HISTORY_CHARS]
        while len(self._history) > _HISTORY_LINES:
            self._history.popitem(last=False)
