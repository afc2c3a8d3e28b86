"""CallBridge: one call, from its platform connection's opening to the last cancelled timer.

The bridge routes every event of its platform session (one ``match``) and every event of its
backend session (it is the backend's listener). It owns the call's backend session, the two
transcoders (a pass-through when the formats match) and the playout, and it wires barge-in: when
the backend hears the caller start speaking, the platform is flushed and the playout cleared
*first*, synchronously, and only then is the backend told how much of its response the caller
actually heard. Either side ending ends the call: the playout stops (leaving the shared clock),
the backend session closes, and the call is counted once with its outcome.

Bot audio flows one way: backend → :meth:`CallBridge.backend_audio` → transcoder → playout →
the platform leg (the playout's sink) → socket. Commands to the platform (clear, transcripts,
hang-up) go to the leg's session, then one :meth:`PlatformLeg.flush` per entry point.

Nothing is shared between calls except the context (clock, metrics) and the registry. The extra
channels of a listen-only call (AudioHook Monitor) are :mod:`mediaproxy.calls.listen_channels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed

from mediaproxy.audio.transcode import Transcoder
from mediaproxy.backends.base import BackendSession, CallInfo, EndReported
from mediaproxy.calls.actions import CallActions
from mediaproxy.calls.context import CallContext, Endpoint, loggable
from mediaproxy.calls.digits import DigitCollector
from mediaproxy.calls.leg import PlatformLeg
from mediaproxy.calls.listen_channels import ListenChannels
from mediaproxy.calls.scope import CallLogger, CallScope
from mediaproxy.metrics import Metrics
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallerStreamPaused,
    CallStarted,
    DtmfReceived,
    LanguageChanged,
    MarkPlayed,
    MessageIgnored,
    PlatformError,
    PlatformEvent,
    PlaybackFlowChanged,
    PlaybackPaused,
    ProtocolViolation,
    ResumeRequested,
)
from mediaproxy.playout import Playout
from mediaproxy.transcripts import Transcript

if TYPE_CHECKING:
    from mediaproxy.calls.registry import CallRegistry


class CallBridge:
    """One call between a platform connection and a backend session.

    Created by the :class:`~mediaproxy.calls.registry.CallRegistry` when a platform connection
    opens; the call starts at the session's :class:`CallStarted`. Listen-only calls
    (``capabilities.plays_audio`` false: AudioHook Monitor) open one backend session per audio
    channel, lazily, with ``CallInfo.listen_only``; transcripts of the ``external`` channel are
    the caller's, of any other channel the agent's.
    """

    def __init__(self, endpoint: Endpoint, context: CallContext, leg: PlatformLeg,
                 registry: CallRegistry | None = None) -> None:
        self.endpoint = endpoint
        self.platform = endpoint.name
        self.backend = endpoint.backend
        self.leg = leg
        self.call_id = ""
        self.log_id = ""
        """``call_id`` as it may appear in a log line (see :func:`loggable`)."""
        self.outcome: Outcome | None = None
        self.scope = CallScope(self.platform, self.backend.name)
        """The call's log fields; every line about this call goes through :attr:`log`."""
        self.log = CallLogger(self.scope, __name__)
        self._context = context
        self._registry = registry
        self._metrics = context.metrics
        self._reactor = context.reactor
        self._backend_session: BackendSession | None = None
        self._playout: Playout | None = None
        self._up: Transcoder | None = None
        self._down: Transcoder | None = None
        self._caller_paused = False
        self._listen_only = not leg.session.capabilities.plays_audio
        self._extra_channels = ListenChannels(self, endpoint.backend)
        self._call_info: CallInfo | None = None
        self._frames_in = context.metrics.frames_total.labels(self.platform, "in")
        self._started = False
        self._metadata: Mapping[str, str] = {}
        calls = endpoint.calls
        self._actions = CallActions(self, calls.tools, endpoint.transfer_targets, context.webhooks)
        self._digits = DigitCollector(context.reactor, self._digits_entered, timeout_ms=calls.dtmf_timeout_ms,
                                      terminator=calls.dtmf_terminator, max_digits=calls.dtmf_max_digits)


    @property
    def started(self) -> bool:
        return self._started

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    @property
    def playout(self) -> Playout | None:
        return self._playout

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def context(self) -> CallContext:
        return self._context

    @property
    def digits(self) -> DigitCollector:
        """The caller's key presses being collected."""
        return self._digits

    @property
    def metadata(self) -> Mapping[str, str]:
        """The call's parameters from the platform (``CallStarted.metadata``)."""
        return self._metadata

    # --- platform → bridge ---------------------------------------------------------------------

    def handle(self, events: list[PlatformEvent]) -> None:
        """Route the events of one platform message, in order."""
        for event in events:
            match event:
                case CallerAudio(data, channel):
                    self.caller_audio(data, channel)
                case MarkPlayed(name):
                    if self._playout is not None:
                        self._playout.mark_echoed(name)
                case CallStarted():
                    self.start(event)
                case DtmfReceived(digits):
                    self._metrics.dtmf_keys_total.labels(self.platform).inc(len(digits))
                    if self._backend_session is not None and not self.ended:
                        self._digits.feed(digits)
                case CallerStreamPaused(paused):
                    if paused and not self._caller_paused:
                        # The platform stopped the caller stream (the caller is on hold, a secure
                        # pause): a flow pause on the platform leg, counted once per pause.
                        self._metrics.flow_pauses_total.labels("platform").inc()
                    self._caller_paused = paused
                case PlaybackFlowChanged(retry_after_ms):
                    if self._playout is not None and retry_after_ms > 0:
                        self._playout.back_off(retry_after_ms)
                case PlaybackPaused(paused):
                    # The client stopped our sending (sessions report changes only): the playout
                    # keeps queueing, bounded by max_buffer_ms; counted once per pause.
                    if paused:
                        self._metrics.flow_pauses_total.labels("platform").inc()
                    if self._playout is not None:
                        self._playout.pause_sending(paused)
                case PlatformError(code, message):
                    self._metrics.platform_errors_total.labels(self.platform, code).inc()
                    self.log.info("{platform} reported error {code}: {message}", platform=self.platform,
                             code=code, message=loggable(message), call_id=self.log_id)
                case ResumeRequested(call_id):
                    if self._registry is not None:
                        self._registry.resume(call_id, self.leg)
                    return  # the connection now carries another call (or is refused)
                case CallEnded(reason):
                    self.end(Outcome.COMPLETED, f"platform ended the call: {reason}")
                    # The platform said goodbye; close once our reply (if any) is out.
                    self.leg.close()
                case MessageIgnored(kind):
                    self._metrics.protocol_errors_total.labels(self.platform, kind).inc()
                case LanguageChanged(language):
                    if self._backend_session is not None and not self.ended:
                        self._backend_session.set_language(language)
                    for session in self._extra_channels.sessions():
                        session.set_language(language)
                case ProtocolViolation(kind, detail):
                    self._metrics.protocol_errors_total.labels(self.platform, kind).inc()
                    self.log.info("{platform}: protocol error {kind}: {detail}", platform=self.platform,
                             kind=kind, detail=loggable(detail), call_id=self.log_id)
                    self.end(Outcome.PROTOCOL_ERROR, kind)
                    self.leg.close()
                    return

    def start(self, event: CallStarted) -> None:
        """The platform started the call: open the backend session and the playout."""
        if self._started or self.ended:
            return
        self._started = True
        self.call_id = event.call_id
        self.log_id = loggable(event.call_id, 100)
        self.scope.call_id = self.log_id
        self._context.calls.started(event.call_id, self.scope)
        fmt = event.audio_format
        session = self.leg.session
        self._playout = Playout(
            self._context.clock, fmt, session.capabilities, self._context.playout, self.leg, self._metrics,
            self.platform,
        )
        self._metrics.calls_active.labels(self.platform).inc()
        self.log.info("call {call_id} started on {platform} ({fmt}), backend {backend}",
                 call_id=self.log_id, platform=self.platform, fmt=str(fmt), backend=self.backend.name)
        self._metadata = dict(event.metadata)
        tools = self._actions.specs(session.capabilities)
        self._call_info = CallInfo(event.call_id, self.platform, self._metadata, self._listen_only, tools)
        backend_session = self.backend.open_session(self._call_info, self, fmt)
        self._backend_session = backend_session
        self._up = Transcoder(fmt, backend_session.audio_format)
        self._down = Transcoder(backend_session.audio_format, fmt)
        self._playout.attach_producer(backend_session)
        self.leg.register_producer(self._playout)

    def caller_audio(self, data: bytes, channel: str = "external") -> None:
        """Caller audio in the platform format: count it and pass it to the backend."""
        self._frames_in.inc()
        if self._backend_session is None or self._caller_paused or self.ended:
            return
        if channel != "external" and self._listen_only:
            fmt = None if self._playout is None else self._playout.audio_format
            self._extra_channels.audio(data, channel, self._call_info, fmt)
            return
        assert self._up is not None
        self._backend_session.send_audio(self._up.convert(data))

    # --- the platform connection -------------------------------------------------------------------

    def adopt(self, leg: PlatformLeg) -> None:
        """A resume: the call continues on ``leg``, a new connection. The call's own session keeps
        the protocol state and moves with it; it queues the platform's acceptance."""
        session = self.leg.session
        self.leg = leg
        leg.adopt(self, session)
        session.resumed()
        if self._playout is not None:
            self._playout.move_to(leg)
            leg.register_producer(self._playout)
            self._playout.resumeProducing()
        leg.flush()

    def connection_lost(self) -> None:
        """The platform socket is gone: the call ends, unless its platform may resume it."""
        if not self._started or self.ended:
            return
        session = self.leg.session
        if session.survives_disconnect and self._registry is not None:
            session.connection_lost()
            if self._playout is not None:
                self._playout.pauseProducing()
            self._registry.hold(self)
        else:
            self.end(Outcome.DISCONNECTED, "socket closed")

    def drain(self, reason: str = "proxy shutting down") -> None:
        """Shutdown: say goodbye the platform's way, end the call, close the connection."""
        if self._started and not self.ended:
            self.leg.session.hangup(Outcome.DRAINED, reason)
            self.end(Outcome.DRAINED, reason)
        self.leg.close()

    # --- backend → bridge (BackendListener) ------------------------------------------------------

    def backend_ready(self) -> None:
        """The backend hears us now: a platform told to start paused (AudioHook ``startPaused``)
        may send the caller's audio."""
        self.log.debug("call {call_id}: backend ready", call_id=self.log_id)
        if not self.ended and self.leg.session.pause_caller_audio(False):
            self.leg.flush()

    def backend_audio(self, response_id: str, data: bytes) -> None:
        if self._listen_only:
            # Nobody would hear it (AudioHook Monitor): pacing it would only tick the clock and
            # count frames that never leave.
            return
        if self._playout is not None and self._down is not None:
            self._playout.write(response_id, self._down.convert(data))

    def backend_response_done(self, response_id: str) -> None:
        if self._playout is not None:
            self._playout.finish(response_id)

    def backend_speech_started(self) -> None:
        """Barge-in: flush the platform and the playout at once, then truncate the backend."""
        if self._playout is None or self.ended:
            return
        signalled = self._reactor.seconds()
        # The flush goes out before anything else happens: Twilio may hold seconds of audio
        # even when we think it has all played, so it is always sent.
        session = self.leg.session
        session.clear()
        session.caller_speech(True)
        self.leg.flush()
        # A goodbye the caller talks over does not end the call under them.
        self._actions.caller_interrupted()
        self._flush_playout(signalled)

    def backend_clear(self) -> None:
        """The bot takes back its unplayed audio: the platform and the playout are flushed as
        at a barge-in (the backend is told what was heard), without caller speech reported and
        without cancelling a goodbye being waited for."""
        if self._playout is None or self.ended:
            return
        self.leg.session.clear()
        self.leg.flush()
        self._flush_playout()

    def _flush_playout(self, signalled: float | None = None) -> None:
        """Clear the playout and tell the backend how much of its response was heard; a barge-in
        ``signalled`` at that reactor time is timed (when a response had started playing)."""
        assert self._playout is not None
        heard = self._playout.clear()
        if heard is None:
            return
        if signalled is not None:
            self._metrics.bargein_seconds.observe(self._reactor.seconds() - signalled)
        if self._down is not None:
            self._down.reset()
        if self._backend_session is not None:
            self._backend_session.interrupt(heard.response_id, heard.played_ms)

    def when_heard(self) -> Deferred[bool]:
        """See :meth:`mediaproxy.backends.base.BackendListener.when_heard`."""
        if self._playout is None or self._listen_only:
            return succeed(True)
        return self._playout.when_heard()

    def backend_speech_stopped(self) -> None:
        if not self.ended:
            self.leg.session.caller_speech(False)
            self.leg.flush()

    def backend_transcript(self, transcript: Transcript) -> None:
        if self.ended:
            return
        if transcript.final and self._context.log_transcripts:
            self.log.info("call {call_id} {role}: {text}", call_id=self.log_id, role=transcript.role,
                     text=transcript.text, platform=self.platform, backend=self.backend.name)
        self.leg.session.transcript(transcript)
        self.leg.flush()

    def backend_tool_call(self, call_id: str, name: str, arguments: str) -> None:
        """The model calls a tool: a call action or the operator's own (see :mod:`.actions`)."""
        if not self.ended:
            self._actions.call(call_id, name, arguments)

    # --- call actions (used by CallActions) ------------------------------------------------------

    def tool_result(self, call_id: str, output: str) -> None:
        """Answer the model's tool call."""
        if self._backend_session is not None and not self.ended:
            self._backend_session.tool_result(call_id, output)

    def send_dtmf(self, digits: str) -> None:
        """Play ``digits`` to the far end."""
        if not self.ended:
            self.leg.session.send_dtmf(digits)
            self.leg.flush()

    def _digits_entered(self, digits: str) -> None:
        if self._backend_session is not None and not self.ended:
            self._backend_session.send_dtmf(digits)

    def backend_hangup(self, reason: str, variables: Mapping[str, str] | None = None) -> None:
        if self.ended:
            return
        self.leg.session.hangup(Outcome.BOT_HANGUP, reason, variables)
        self.end(Outcome.BOT_HANGUP, reason)
        self.leg.close()

    def backend_failed(self, reason: str) -> None:
        if self.ended:
            return
        self.log.warn("call {call_id}: backend {backend} failed: {reason}", call_id=self.log_id,
                 backend=self.backend.name, reason=loggable(reason))
        self.leg.session.hangup(Outcome.BACKEND_FAILED, reason)
        self.end(Outcome.BACKEND_FAILED, reason)
        self.leg.close()

    # --- lifecycle -----------------------------------------------------------------------------------

    def end(self, outcome: Outcome, reason: str = "") -> None:
        """End the call (idempotent): stop the playout, close the backend, count the outcome."""
        if self.ended:
            return
        self.outcome = outcome
        self.scope.outcome = outcome.value
        self._digits.stop()
        self._actions.stop()
        if self._playout is not None:
            self._playout.stop()
        sessions = [] if self._backend_session is None else [self._backend_session]
        for session in sessions + self._extra_channels.sessions():
            if isinstance(session, EndReported):
                session.call_ending(outcome.value)
            session.close()
        if self._started:
            self._metrics.calls_active.labels(self.platform).dec()
            self._metrics.calls_total.labels(self.platform, outcome.value).inc()
            self.log.info("call {call_id} ended on {platform}: {outcome} {reason}", call_id=self.log_id,
                     platform=self.platform, outcome=outcome.value, reason=loggable(reason))
            self._context.calls.ended(self.call_id, self.scope)
        if self._registry is not None:
            self._registry.ended(self)
