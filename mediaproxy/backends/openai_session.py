"""One call's leg toward OpenAI Realtime: the thin Twisted/Autobahn glue around
:class:`~mediaproxy.backends.openai_dialect.RealtimeDialect`.

The session dials ``url?model=...`` with ``Authorization: Bearer`` (never the retired
``OpenAI-Beta`` header) through the shared :class:`~mediaproxy.backends.reconnect.Redialer`: an
attempt counts as up only once ``session.updated`` confirmed the formats. Caller audio that
arrives before that (or while reconnecting) is kept up to ``early_audio_ms``, oldest dropped and
counted. A mid-call drop or the 60-minute session limit redials with backoff and replays the
configuration with a note that the conversation continues; the bridge is told nothing but the
audio it would otherwise have waited for. Fatal errors (bad key, no quota, refused config, format
mismatch) end the call through ``backend_failed`` at once. A response that fails for a transient
cause (``response.done`` ``failed``: rate limit, server error) is asked for again with backoff,
``response_retries`` times, then the call ends the same way, so a failed answer is never silence.

Transcripts go to the listener as the whole text so far per item; the caller's carry their
times on this session's input timeline (the server counts from 0 on each connection: the audio
sent before it is added). A barge-in cuts the bot's transcript to what the caller heard.

The session is an ``IPushProducer`` only in name: its socket is always read, whatever the
playout holds, because control events (``input_audio_buffer.speech_started`` above all) arrive
on the same socket as the audio and must be handled at once. The playout bounds its own queue
(it drops audio beyond ``max_buffer_ms``).

The other direction is bounded too. A backend that stops reading (stalled, or a network that
stopped acknowledging) would let the socket's write buffer grow with every append. Each
connection's transport therefore has a push producer
(:class:`~mediaproxy.backends.connection.WriteBackpressure`): once its write buffer passes
Twisted's bound (64 KiB) the transport pauses it, and caller audio goes into the early-audio
buffer instead (``early_audio_ms``, oldest dropped, counted as
``frames_dropped_total{direction="in",reason="backend_stalled"}``) until the transport resumes
it; what is held then goes out first. Control messages (truncate, cancel, tool results) still go
to the socket: they are few and small.

Around this module: the WebSocket itself is :mod:`~mediaproxy.backends.openai_socket`, what a
replacement connection is told (recent transcript, tool results that outlived their connection)
is :mod:`~mediaproxy.backends.openai_memory`, and the backoff of response retries is
:mod:`~mediaproxy.backends.openai_retries`.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from mediaproxy.audio.format import AudioFormat
from mediaproxy.backends.base import BackendListener, CallInfo
from mediaproxy.backends.connection import (
    HeldAudio,
    WriteBackpressure,
    open_until_ready,
    refused_dial_reason,
)
from mediaproxy.backends.openai_caller_input import InputTimeline, PartChunkFlush
from mediaproxy.backends.openai_catalogue import is_session_limit
from mediaproxy.backends.openai_dialect import RealtimeDialect
from mediaproxy.backends.openai_events import (
    AudioFinished,
    AudioReceived,
    RateLimitsReported,
    RealtimeEvent,
    ResponseEnded,
    ResponseFailed,
    ServerError,
    SessionExpired,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    TranscriptReceived,
    UnknownEventReceived,
    UsageReported,
    error_code_label,
    rate_limit_label,
    token_kind_label,
)
from mediaproxy.backends.openai_flavors import endpoint
from mediaproxy.backends.openai_memory import RealtimeMemory
from mediaproxy.backends.openai_retries import ResponseRetries
from mediaproxy.backends.openai_session_config import RealtimeOptions, transcription_language
from mediaproxy.backends.openai_socket import RealtimeClientProtocol
from mediaproxy.backends.reconnect import connection_lost_reason, dial_websocket
from mediaproxy.backends.redialing_session import RedialingSession
from mediaproxy.metrics import Metrics
from mediaproxy.transcripts import Transcript

log = Logger()

__all__ = ["OpenAIRealtimeSession", "RealtimeClientProtocol"]


class OpenAIRealtimeSession(RedialingSession[RealtimeClientProtocol, RealtimeEvent]):
    """A :class:`~mediaproxy.backends.base.BackendSession` on OpenAI Realtime for one call.

    ``reactor`` provides IReactorTime and IReactorTCP/IReactorSSL; ``random`` spreads reconnect
    delays (tests pass a constant).
    """

    def __init__(
        self,
        backend_name: str,
        options: RealtimeOptions,
        call: CallInfo,
        listener: BackendListener,
        audio_format: AudioFormat,
        reactor: Any,
        metrics: Metrics,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.audio_format = audio_format
        self._options = options
        self._call = call
        self._early = HeldAudio(audio_format, options.early_audio_ms, metrics)
        # The socket's write buffer is over its bound (see WriteBackpressure): appends are held.
        self._stalled = False
        self._dialect: RealtimeDialect | None = None
        self._expiring = False
        self._part_chunk = PartChunkFlush(reactor, options.input_chunk_ms, self._flush_chunk)
        self._memory = RealtimeMemory()
        self._language: str | None = options.transcription_language or None
        # The input timeline: caller audio bridged so far, and where this connection's starts.
        self._timeline = InputTimeline(audio_format.bytes_per_ms)
        self._retries = ResponseRetries(reactor, options.response_retries, options.response_retry_backoff_ms,
                                        self._retry_response)
        # The flavor's URL (query included) and credential header (openai_flavors).
        self._url, self._headers = endpoint(options)
        self._set_up_redialing(
            backend_name, options, call, listener, reactor, metrics, logger=log,
            secrets=(options.api_key, options.entra_token),
            is_fatal=partial(refused_dial_reason, not_found="backend URL or model"), random=random,
        )

    # --- BackendSession ------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in ``audio_format``; held (bounded) until a session is ready."""
        if self._closed:
            return
        self._timeline.bridged(len(data))
        dialect = self._dialect
        if dialect is None:
            self._hold(data, "backend_not_ready")
            return
        if self._stalled:
            self._hold(data, "backend_stalled")
            return
        dialect.send_audio(data)
        self._send_output()
        self._part_chunk.audio_queued(dialect.has_pending_audio)

    def interrupt(self, response_id: str, played_ms: int) -> None:
        """Barge-in on assistant item ``response_id`` after the caller heard ``played_ms``
        milliseconds of it: truncate there (clamped to the audio that arrived for the item, which
        the dialect counts itself) and cancel the response if the server will not."""
        if self._dialect is not None:
            self._dialect.interrupt(response_id, played_ms)
            self._send_output()
            heard = self._dialect.heard_transcript(response_id)
            if heard is not None:
                # The final transcript came before the barge-in: what is replayed after a
                # reconnect is only what the caller heard.
                self._memory.bot_line_heard(response_id, heard)

    def send_dtmf(self, digits: str) -> None:
        """Tell the model the caller pressed keys (dropped while reconnecting)."""
        if self._dialect is not None and digits:
            self._dialect.send_dtmf(digits)
            self._send_output()

    def tool_result(self, call_id: str, output: str) -> None:
        """The answer (JSON text) to the model's tool call ``call_id``; the model then speaks.

        A call made on a connection that has since dropped cannot be answered as a
        ``function_call_output`` (the new connection's conversation has no such call): the
        result goes in as a system note naming the function, followed by a response, so the
        caller still hears it. While reconnecting it waits for the new connection."""
        if self._closed:
            return
        dialect = self._dialect
        if dialect is None:
            self._memory.hold_result(call_id, output)
            return
        if dialect.has_tool_call(call_id):
            dialect.tool_result(call_id, output)
        else:
            self._result_as_note(dialect, call_id, output)
        self._send_output()

    def _result_as_note(self, dialect: RealtimeDialect, call_id: str, output: str) -> None:
        dialect.send_system_note(self._memory.result_note(call_id, output))
        dialect.create_response()

    def set_language(self, language: str) -> None:
        """Transcribe the caller in ``language`` (BCP-47) from now on, on this connection and
        any later one."""
        if self._closed or not language:
            return
        self._language = language
        iso = transcription_language(language)
        self._options = replace(self._options, transcription_language=iso)
        if self._dialect is not None:
            self._dialect.set_language(iso)
            self._send_output()

    def _let_go(self) -> tuple[RealtimeClientProtocol | None, ...]:
        self._part_chunk.cancel()
        self._retries.cancel()
        self._dialect = None
        return tuple(super()._let_go())

    # --- connections ---------------------------------------------------------------------------

    def _dial(self) -> Deferred[RealtimeClientProtocol]:
        self._connections += 1
        self._expiring = False
        self._ready.dialling()
        dialect = RealtimeDialect(
            self._options,
            self.audio_format,
            resumed=self._ready.ever_ready,
            resume_context=self._memory.resume_context(),
            event_prefix=f"c{self._connections}",
            tools=self._call.tools,
        )
        opened = dial_websocket(
            self._reactor,
            self._url,
            RealtimeClientProtocol,
            headers=self._headers,
            timeout_s=self._options.connect_timeout_seconds,
            keepalive_s=self._options.keepalive_seconds,
        )

        def adopt(proto: RealtimeClientProtocol, ready: Deferred[RealtimeClientProtocol]) -> None:
            proto.session, proto.dialect, proto.ready = self, dialect, ready
            self._proto = proto
            self._stalled = False
            WriteBackpressure.watch(proto, partial(self.writes_paused, proto))

        return open_until_ready(opened, adopt, self._abandon)

    def _connection_up(self, proto: RealtimeClientProtocol) -> None:
        if not self._ready.up():
            self._log("info", "backend session resumed on connection {connection}", connection=self._connections)

    def writes_paused(self, proto: RealtimeClientProtocol, paused: bool) -> None:
        """``proto``'s transport paused (its write buffer is full) or resumed our writes."""
        if proto is not self._proto or self._closed or paused == self._stalled:
            return
        self._stalled = paused
        if paused:
            self._log("warn", "backend socket is not draining; caller audio is held (at most {ms} ms)",
                      ms=self._options.early_audio_ms)
            return
        self._timeline.stall_over()
        held = self._early.take()
        if held and self._dialect is not None:
            self._dialect.send_audio(held)
            self._send_output()
        self._log("info", "backend socket drains again")

    def message_received(self, proto: RealtimeClientProtocol, payload: bytes) -> None:
        """A text frame from the server on ``proto``."""
        if self._closed or proto is not self._proto or proto.dialect is None:
            return
        events = proto.dialect.receive(payload)
        self._send_output(proto)
        self._handle_all(proto, events)

    def malformed_message(self, proto: RealtimeClientProtocol) -> None:
        """A frame the protocol does not allow (binary) arrived on ``proto``."""
        if proto is self._proto and not self._closed:
            self._metrics.backend_errors_total.labels(self._name, "malformed_event").inc()

    def connection_closed(self, proto: RealtimeClientProtocol, code: int | None, reason: str | None) -> None:
        """``proto``'s WebSocket ended."""
        if proto is not self._proto:
            return
        self._proto, self._dialect = None, None
        self._stalled = False
        self._part_chunk.cancel()
        self._retries.cancel()
        description = self._redact(connection_lost_reason(code, reason))
        if self._attempt_failed(proto, ConnectionLost(description)):
            return
        # Nothing more will arrive for responses in flight: let the bridge finish them.
        if proto.dialect is not None:
            for item_id in proto.dialect.unfinished_items():
                self._listener.backend_response_done(item_id)
        if self._closed:
            return
        expected = self._expiring or code == 1001 or is_session_limit(reason)
        self._log("warn", "backend connection lost ({reason}); reconnecting", reason=description)
        self._redialer.lost(description, expected=expected)

    def _handle_event(self, proto: RealtimeClientProtocol, event: RealtimeEvent) -> None:
        listener = self._listener
        match event:
            case AudioReceived(item_id=item_id, data=data):
                listener.backend_audio(item_id, data)
            case AudioFinished(item_id=item_id):
                listener.backend_response_done(item_id)
            case SpeechStarted():
                self._retries.cancel()  # the caller speaks: the turn to retry is over
                listener.backend_speech_started()
            case SpeechStopped():
                listener.backend_speech_stopped()
            case TranscriptReceived():
                self._transcript(event)
            case ToolCalled(call_id=call_id, name=name, arguments=arguments):
                self._memory.tool_called(call_id, name)
                self._log("info", "model calls tool {tool}", tool=name[:64])
                listener.backend_tool_call(call_id, name, arguments)
            case ResponseFailed():
                self._response_failed(event)
            case SessionReady():
                self._session_ready(proto, event)
            case UsageReported(tokens=tokens):
                for kind, count in tokens.items():
                    self._metrics.backend_tokens_total.labels(self._name, token_kind_label(kind)).inc(count)
            case RateLimitsReported(remaining=remaining):
                for name, left in remaining.items():
                    self._metrics.backend_rate_limit_remaining.labels(self._name, rate_limit_label(name)).set(left)
            case ServerError(code=code, message=message, fatal=fatal):
                self._metrics.backend_errors_total.labels(self._name, error_code_label(code)).inc()
                if fatal:
                    self._fail(f"{code}: {message}")
                else:
                    # "detail", not "message": legacy log observers overwrite an event's "message" key.
                    self._log("warn", "backend error {code}: {detail}", code=code, detail=message)
            case SessionExpired(message=message):
                self._metrics.backend_errors_total.labels(self._name, "session_expired").inc()
                self._log("info", "backend session expired ({detail}); starting a new one", detail=message)
                self._expiring = True
                proto.sendClose(1000)
            case ResponseEnded(status="incomplete", reason=reason):
                self._log("warn", "response incomplete ({reason})", reason=reason)
            case ResponseEnded(status="completed"):
                self._retries.succeeded()
            case ResponseEnded():
                pass
            case UnknownEventReceived(event_type=event_type):
                self._metrics.backend_errors_total.labels(self._name, "unknown_event").inc()
                self._log("debug", "ignored unknown backend event {event_type!r}", event_type=event_type[:80])

    def _transcript(self, event: TranscriptReceived) -> None:
        caller = event.role == "caller"
        transcript = Transcript(
            event.role,
            event.text,
            event.final,
            start_ms=self._timeline.on_call(event.start_ms),
            end_ms=self._timeline.on_call(event.end_ms),
            language=self._language if caller else None,
        )
        if event.final and not event.text:
            return  # a cut item the caller heard nothing of: nothing was said
        self._listener.backend_transcript(transcript)
        if event.final:
            # Kept only for the resume note; transcripts are personal data and are never
            # logged here (the bridge owns the one opt-in transcript log line).
            self._memory.final_line(event.item_id, self._connections, caller, event.text)
            self._log("debug", "final {role} transcript received", role=event.role)

    def _response_failed(self, event: ResponseFailed) -> None:
        """A failed response is never silence: fatal causes end the call now, transient ones
        ask for the response again (with backoff, a bounded number of times), then end it."""
        self._metrics.backend_errors_total.labels(self._name, error_code_label(event.code)).inc()
        reason = f"response failed: {event.code}: {event.message}"
        if event.fatal:
            self._fail(reason)
            return
        delay_s = self._retries.failed()
        if delay_s is None:
            self._fail(f"{reason} (after {self._retries.retries} retries)")
            return
        self._log("warn", "response failed ({code}); asking again in {delay:.2f} s", code=event.code[:64],
                  delay=delay_s)

    def _retry_response(self) -> None:
        if self._dialect is not None and not self._closed:
            self._dialect.create_response()
            self._send_output()

    def _session_ready(self, proto: RealtimeClientProtocol, event: SessionReady) -> None:
        self._log("info", "backend session configured: {summary}", summary=event.summary)
        self._dialect = proto.dialect
        held = self._early.take()
        self._timeline.connection_starts(len(held))
        if held and self._dialect is not None:
            self._dialect.send_audio(held)
        for call_id, output in self._memory.take_held_results():
            if self._dialect is not None:
                self._result_as_note(self._dialect, call_id, output)
        self._send_output(proto)
        self._attempt_ready(proto)

    # --- helpers -------------------------------------------------------------------------------

    def _hold(self, data: bytes, reason: str) -> None:
        """Keep ``data`` in the bounded early-audio buffer; what it drops is counted in whole
        20 ms frames under ``reason``."""
        dropped = self._early.hold(data, reason)
        if dropped and self._stalled:
            self._timeline.stall_dropped(dropped)

    def _flush_chunk(self) -> None:
        if self._dialect is not None:
            self._dialect.flush_audio()
            self._send_output()
