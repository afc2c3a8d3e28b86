"""One call's leg toward the Gemini Live API: the thin Twisted/Autobahn glue around
:class:`~mediaproxy.backends.gemini_dialect.GeminiDialect`.

The session dials ``url?key=<api_key>`` through the shared
:class:`~mediaproxy.backends.reconnect.Redialer`; an attempt counts as up once ``setupComplete``
arrived. Caller audio that arrives before that (or while reconnecting) is kept up to
``early_audio_ms``, oldest dropped and counted.

Connection lifetime: the service ends each connection after about ten minutes, announcing it with
``goAway``, and sends ``sessionResumptionUpdate`` handles all along. On ``goAway`` the session
makes the new connection before it breaks the old one (the Redialer's planned immediate redial):
it dials with the latest handle while the old connection keeps carrying the call; once the new
one is set up, caller audio moves to it. A model turn still arriving on the old connection plays
out from there (the caller's audio goes to both meanwhile, so the old one's VAD can still cut
it); the old connection is closed when that turn ends, or at once when none is under way. The
caller hears no gap. A connection dropped without warning redials with backoff and resumes with
the latest handle too; a handle the service refuses falls back to a fresh session with a note and
the recent transcript.

The watchdog (:class:`~mediaproxy.backends.gemini_watchdog.StallWatchdog`): a model that says
nothing for ``stall_seconds`` after the caller spoke is nudged (``audioStreamEnd``), and after as
long again the connection is replaced the same way as on ``goAway`` (counted as
``backend_errors_total{code="model_stalled"}``).

The WebSocket protocol and how the service's close codes are read are in
:mod:`~mediaproxy.backends.gemini_socket`; the transcript and tool call names a replacement
connection is told about, in :mod:`~mediaproxy.backends.gemini_memory`.

The socket is always read, whatever the playout holds (``interrupted`` shares it with the audio).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from mediaproxy.audio.format import L16_16K, L16_24K, AudioFormat
from mediaproxy.audio.transcode import Transcoder
from mediaproxy.backends.base import BackendListener, CallInfo
from mediaproxy.backends.connection import HeldAudio, hang_up, open_until_ready
from mediaproxy.backends.gemini_dialect import GeminiDialect
from mediaproxy.backends.gemini_events import (
    GeminiEvent,
    GoingAway,
    ModelAudio,
    ResumptionHandle,
    ServerError,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    ToolCallsCancelled,
    TranscriptReceived,
    TurnEnded,
    UnknownEventReceived,
    UsageReported,
    error_code_label,
)
from mediaproxy.backends.gemini_memory import ConversationMemory
from mediaproxy.backends.gemini_socket import (
    Connect,
    GeminiClientProtocol,
    SetupRefused,
    close_error_label,
    fatal_dial_reason,
    is_planned_close,
    is_setup_refusal,
)
from mediaproxy.backends.gemini_watchdog import StallWatchdog
from mediaproxy.backends.openai_events import token_kind_label
from mediaproxy.backends.reconnect import connection_lost_reason, dial_websocket
from mediaproxy.backends.redialing_session import RedialingSession
from mediaproxy.metrics import Metrics
from mediaproxy.transcripts import Transcript

if TYPE_CHECKING:
    from mediaproxy.backends.gemini import GeminiOptions

log = Logger()

class GeminiLiveSession(RedialingSession[GeminiClientProtocol, GeminiEvent]):
    """A :class:`~mediaproxy.backends.base.BackendSession` on the Gemini Live API for one call.

    ``audio_format`` is L16 16 kHz or L16 24 kHz (see :mod:`mediaproxy.backends.gemini`); the
    other direction is resampled here. ``reactor`` provides IReactorTime and
    IReactorTCP/IReactorSSL; ``random`` spreads reconnect delays; ``connect`` replaces the real
    dial (tests).
    """

    def __init__(self, backend_name: str, options: GeminiOptions, call: CallInfo, listener: BackendListener,
                 audio_format: AudioFormat, reactor: Any, metrics: Metrics, *,
                 random: Callable[[], float] = _random.random, connect: Connect | None = None) -> None:
        if audio_format not in (L16_16K, L16_24K):
            raise ValueError(f"Gemini Live sessions exchange L16 16 or 24 kHz, not {audio_format}")
        self.audio_format = audio_format
        self._options = options
        self._call = call
        # One direction is converted here: the bridge resamples the other.
        self._up = Transcoder(L16_24K, L16_16K) if audio_format == L16_24K else None
        self._down = Transcoder(L16_24K, L16_16K) if audio_format == L16_16K else None
        self._early = HeldAudio(L16_16K, options.early_audio_ms, metrics)
        self._dialect: GeminiDialect | None = None
        self._dialing: GeminiClientProtocol | None = None
        """A connection being set up (a first dial, a reconnect, a handover)."""
        self._draining: GeminiClientProtocol | None = None
        """The previous connection, finishing its model turn after a handover."""
        self._handle: str | None = None
        self._handing_over = False
        self._language = options.language
        self._memory = ConversationMemory()
        self._url = f"{options.url}?key={quote(options.api_key, safe='')}"
        self._connect: Connect = connect or self._dial_websocket
        self.watchdog = StallWatchdog(reactor, options.stall_seconds, self._nudge, self._stalled)
        # The key is in the URL: it must never reach a log line or a failure reason.
        self._set_up_redialing(backend_name, options, call, listener, reactor, metrics, logger=log,
                               secrets=(options.api_key,), is_fatal=fatal_dial_reason, random=random)

    @property
    def resumption_handle(self) -> str | None:
        """The latest handle the service gave (what the next connection resumes)."""
        return self._handle

    # --- BackendSession ------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in ``audio_format``; held (bounded) until a session is ready."""
        if self._closed:
            return
        pcm = self._up.convert(data) if self._up is not None else data
        dialect = self._dialect
        if dialect is None:
            self._early.hold(pcm, "backend_not_ready")
            return
        dialect.send_audio(pcm)
        self._send_output()
        draining = self._draining
        if draining is not None and draining.dialect is not None:
            # The old connection's VAD must hear a barge-in on the turn it still plays.
            draining.dialect.send_audio(pcm)
            self._send_output(draining)

    def interrupt(self, response_id: str, played_ms: int) -> None:
        """Barge-in on turn ``response_id`` after the caller heard ``played_ms`` of it: drop the
        rest (the service has no truncation; it stopped the turn itself) and cut its transcript."""
        if self._down is not None:
            self._down.reset()
        for proto in (self._proto, self._draining):
            if proto is not None and proto.dialect is not None:
                proto.dialect.interrupt(response_id, played_ms)
        draining = self._draining
        if draining is not None and draining.dialect is not None and draining.dialect.is_cut(response_id):
            self._close_draining()

    def send_dtmf(self, digits: str) -> None:
        """Tell the model the caller pressed keys (a text input; dropped while reconnecting)."""
        if self._dialect is not None and digits:
            self._dialect.send_text(f"The caller pressed the keys {digits} on the phone keypad.")
            self._send_output()

    def tool_result(self, call_id: str, output: str) -> None:
        """The answer (JSON text) to the model's tool call ``call_id``. A call of a connection
        that has since been replaced goes in as a text note naming the function; while
        reconnecting it waits for the new connection."""
        if self._closed:
            return
        dialect = self._dialect
        if dialect is None:
            self._memory.hold_result(call_id, output)
            return
        if dialect.has_tool_call(call_id):
            dialect.tool_result(call_id, output)
        else:
            dialect.send_text(self._memory.result_note(call_id, output))
        self._send_output()
        self.watchdog.caller_spoke()  # the model owes an answer now

    def set_language(self, language: str) -> None:
        """Speak ``language`` (BCP-47) from the next connection on: ``speechConfig.languageCode``
        is part of ``setup`` and cannot change on a live connection."""
        if language:
            self._language = language

    def _let_go(self) -> Sequence[GeminiClientProtocol | None]:
        self.watchdog.stop()
        protos = (self._proto, self._dialing, self._draining)
        self._proto = self._dialing = self._draining = None
        self._dialect = None
        return protos

    # --- connections ---------------------------------------------------------------------------

    def _dial_websocket(self, url: str) -> Deferred[Any]:
        return dial_websocket(self._reactor, url, GeminiClientProtocol, headers={},
                              timeout_s=self._options.connect_timeout_seconds,
                              keepalive_s=self._options.keepalive_seconds)

    def _dial(self) -> Deferred[GeminiClientProtocol]:
        self._connections += 1
        self._ready.dialling()
        dialect = GeminiDialect(self._options, tools=self._call.tools, handle=self._handle,
                                resumed=self._ready.ever_ready, resume_context=self._memory.resume_context(),
                                connection=self._connections, language=self._language)

        def adopt(proto: GeminiClientProtocol, ready: Deferred[GeminiClientProtocol]) -> None:
            proto.session, proto.dialect, proto.ready = self, dialect, ready
            self._dialing = proto
            self._send_output(proto)  # setup goes first

        return open_until_ready(self._connect(self._url), adopt, self._abandon)

    def _abandon(self, proto: GeminiClientProtocol) -> None:
        """The attempt that opened ``proto`` was cancelled (timeout, stop)."""
        if proto is self._dialing:
            self._dialing = None
            hang_up(proto, abort=True)

    def _connection_up(self, proto: GeminiClientProtocol) -> None:
        if not self._ready.up():
            self._log("info", "backend session continued on connection {connection} ({how})",
                      connection=self._connections, how="resumed" if proto.dialect and self._handle else "fresh")

    def message_received(self, proto: GeminiClientProtocol, payload: bytes) -> None:
        """A frame from the server on ``proto``."""
        if self._closed or proto.dialect is None or proto not in (self._proto, self._dialing, self._draining):
            return
        events = proto.dialect.receive(payload)
        self._send_output(proto)
        for event in events:
            if self._closed or proto not in (self._proto, self._dialing, self._draining):
                return
            self._handle_event(proto, event)

    def connection_closed(self, proto: GeminiClientProtocol, code: int | None, reason: str | None) -> None:
        """``proto``'s WebSocket ended."""
        description = self._redact(connection_lost_reason(code, reason))
        if proto is self._dialing:
            self._dialing = None
            if proto.ready is not None and not proto.ready.called:
                resumed = proto.dialect is not None and self._handle is not None
                refused = is_setup_refusal(code, reason)
                self._count_close(code)
                if refused and resumed:
                    # The handle may have expired: the next attempt starts a fresh session.
                    self._log("warn", "session resumption refused ({reason}); starting afresh", reason=description)
                    self._handle = None
                    proto.ready.errback(ConnectionLost(description))
                elif refused:
                    proto.ready.errback(SetupRefused(f"backend refused the session: {description}"))  # type: ignore[no-untyped-call]
                else:
                    proto.ready.errback(ConnectionLost(description))
            return
        if proto is self._draining:
            self._draining = None
            self._finish_turn(proto)
            return
        if proto is not self._proto:
            return
        self._proto, self._dialect = None, None
        self._finish_turn(proto)
        if self._closed or self._handing_over:
            return  # a handover: the new connection is already being dialled
        self._count_close(code)
        self._log("warn", "backend connection lost ({reason}); reconnecting", reason=description)
        self._redialer.lost(description, expected=is_planned_close(code, reason))

    def _count_close(self, code: int | None) -> None:
        label = close_error_label(code)
        if label is not None:
            self._metrics.backend_errors_total.labels(self._name, label).inc()

    def _finish_turn(self, proto: GeminiClientProtocol) -> None:
        """Nothing more arrives on ``proto``: a turn it was delivering is done for the bridge."""
        turn = proto.dialect.turn_active if proto.dialect is not None else None
        if turn is not None and proto.dialect is not None and not proto.dialect.is_cut(turn) and not self._closed:
            self._listener.backend_response_done(turn)

    def _start_handover(self, reason: str) -> None:
        """Replace the connection without the caller noticing: dial the next one now (with the
        latest handle) while this one keeps carrying the call."""
        if self._closed or self._handing_over or self._proto is None:
            return
        self._handing_over = True
        self._log("info", "replacing the backend connection ({reason})", reason=reason)
        self._redialer.lost(reason, expected=True)

    def _promote(self, proto: GeminiClientProtocol) -> None:
        """``proto`` is set up: caller audio goes there from now on."""
        old = self._proto
        self._dialing = None
        self._proto, self._dialect = proto, proto.dialect
        self._handing_over = False
        if old is not None and old is not proto:
            self._retire(old)
        held = self._early.take()
        if held and self._dialect is not None:
            self._dialect.send_audio(held)
        for call_id, output in self._memory.take_held_results():
            if self._dialect is not None:
                self._dialect.send_text(self._memory.result_note(call_id, output))
        self._send_output(proto)
        if proto.ready is not None and not proto.ready.called:
            proto.ready.callback(proto)

    def _retire(self, old: GeminiClientProtocol) -> None:
        """The replaced connection: kept only while its model turn plays out."""
        if self._draining is not None:
            self._close_draining()
        if old.dialect is not None and old.dialect.turn_active is not None:
            self._draining = old
        else:
            hang_up(old, abort=False)

    def _close_draining(self) -> None:
        proto, self._draining = self._draining, None
        if proto is not None:
            self._finish_turn(proto)
            hang_up(proto, abort=False)

    def _handle_event(self, proto: GeminiClientProtocol, event: GeminiEvent) -> None:
        listener = self._listener
        match event:
            case ModelAudio(turn_id=turn_id, data=data):
                if proto is self._dialing:
                    return
                self.watchdog.model_spoke()
                out = self._down.convert(data) if self._down is not None else data
                if out:
                    listener.backend_audio(turn_id, out)
            case TurnEnded(turn_id=turn_id, cut=cut, text=text):
                if not cut and proto is not self._dialing:
                    listener.backend_response_done(turn_id)
                if cut and text and proto.dialect is not None:
                    # interrupt() has run by now (inside backend_speech_started): what was heard.
                    heard = proto.dialect.heard_text(turn_id, text)
                    if heard:
                        self._transcript(proto, TranscriptReceived("bot", heard, True))
                if proto is self._draining:
                    self._close_draining()
            case SpeechStarted():
                self.watchdog.caller_spoke()
                listener.backend_speech_started()
            case SpeechStopped():
                listener.backend_speech_stopped()
            case TranscriptReceived():
                self._transcript(proto, event)
            case ToolCalled(call_id=call_id, name=name, arguments=arguments):
                self.watchdog.model_spoke()
                self._memory.tool_called(call_id, name)
                self._log("info", "model calls tool {tool}", tool=name[:64])
                listener.backend_tool_call(call_id, name, arguments)
            case ToolCallsCancelled(call_ids=ids):
                self._log("info", "backend cancelled {count} tool call(s)", count=len(ids))
            case ResumptionHandle(handle=handle):
                if proto is not self._draining:
                    self._handle = handle
            case GoingAway(time_left_s=left):
                if proto is self._proto:
                    self._log("info", "backend goes away in {left:.1f} s", left=left)
                    self._start_handover("go_away")
            case SessionReady():
                if proto is self._dialing:
                    self._promote(proto)
            case UsageReported(tokens=tokens):
                for kind, count in tokens.items():
                    self._metrics.backend_tokens_total.labels(self._name, token_kind_label(kind)).inc(count)
            case ServerError(code=code, message=message):
                self._metrics.backend_errors_total.labels(self._name, error_code_label(code)).inc()
                self._log("warn", "backend error {code}: {detail}", code=code, detail=message)
            case UnknownEventReceived(event_type=event_type):
                self._metrics.backend_errors_total.labels(self._name, "unknown_event").inc()
                self._log("debug", "ignored unknown backend message {event_type!r}", event_type=event_type[:80])

    def _transcript(self, proto: GeminiClientProtocol, event: TranscriptReceived) -> None:
        caller = event.role == "caller"
        if caller:
            self.watchdog.caller_spoke()
        else:
            self.watchdog.model_spoke()
        if proto is self._dialing:
            return
        self._listener.backend_transcript(Transcript(event.role, event.text, event.final,
                                                     language=self._language or None if caller else None))
        if event.final:
            self._memory.final_line(self._connections, event.role, event.text)

    def _nudge(self) -> None:
        if self._dialect is not None:
            self._log("info", "model silent after the caller spoke; nudging it")
            self._dialect.nudge()
            self._send_output()

    def _stalled(self) -> None:
        self._metrics.backend_errors_total.labels(self._name, "model_stalled").inc()
        self._start_handover("model_stalled")
