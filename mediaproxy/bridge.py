"""CallBridge: one call, from the platform's start to the last cancelled timer.

It owns the call's backend session, the two transcoders (a pass-through when the formats match)
and the playout, and it wires barge-in: when the backend hears the caller start speaking, the
platform is flushed and the playout cleared *first*, synchronously, and only then is the backend
told how much of its response the caller actually heard. Either side ending ends the call: the
playout stops (leaving the shared clock), the backend session closes, and the call is counted
once with its outcome. Nothing is shared between calls except the clock and the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger

from mediaproxy.audio.transcode import Transcoder
from mediaproxy.backends.base import Backend, BackendSession, CallInfo
from mediaproxy.config import PlayoutSettings
from mediaproxy.metrics import Metrics
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallerStreamPaused,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    PlatformEvent,
    PlatformSession,
    PlaybackFlowChanged,
)
from mediaproxy.playout import Playout, PlayoutClock

log = Logger()

# Outcomes of calls_total{outcome}: a fixed vocabulary.
COMPLETED = "completed"  # the platform ended the call
BOT_HANGUP = "bot_hangup"  # the backend ended it
BACKEND_FAILED = "backend_failed"
PROTOCOL_ERROR = "protocol_error"
DISCONNECTED = "disconnected"  # the platform's socket went away without a goodbye
DRAINED = "drained"  # the proxy shut down


class PlatformLeg(Protocol):
    """What the bridge needs from the platform connection (the Autobahn glue)."""

    def flush(self) -> None:
        """Send everything the platform session has queued."""

    def hang_up(self) -> None:
        """Close the connection once the session's goodbye is sent (or its close handshake is
        done)."""

    def register_producer(self, producer: IPushProducer) -> None:
        """Make ``producer`` the transport's push producer (paused when the socket is full)."""


class _ChannelListener:
    """Backend listener of one extra channel of a listen-only call (AudioHook Monitor streams
    the caller and the agent separately; each gets its own backend session). Only transcripts
    and failures matter: a listen-only call plays nothing back."""

    def __init__(self, bridge: CallBridge, role: str) -> None:
        self._bridge = bridge
        self._role = role

    def backend_transcript(self, role: str, text: str, final: bool) -> None:
        if role == "caller":  # what this channel's party said
            self._bridge.backend_transcript(self._role, text, final)

    def backend_failed(self, reason: str) -> None:
        self._bridge.backend_failed(reason)

    def backend_hangup(self, reason: str, variables: Mapping[str, str] | None = None) -> None:
        self._bridge.backend_hangup(reason, variables)

    def backend_ready(self) -> None: ...

    def backend_audio(self, response_id: str, data: bytes) -> None: ...

    def backend_response_done(self, response_id: str) -> None: ...

    def backend_speech_started(self) -> None: ...

    def backend_speech_stopped(self) -> None: ...


class CallBridge:
    """One call between a platform session and a backend session.

    Listen-only calls (``capabilities.plays_audio`` false: AudioHook Monitor) open one backend
    session per audio channel, lazily, created with ``CallInfo.listen_only``; transcripts of the
    ``external`` channel are the caller's, of any other channel the agent's.
    """

    def __init__(
        self,
        *,
        platform: str,
        session: PlatformSession,
        leg: PlatformLeg,
        backend: Backend,
        clock: PlayoutClock,
        playout_settings: PlayoutSettings,
        metrics: Metrics,
        reactor: IReactorTime,
        on_end: Callable[[CallBridge], None] = lambda bridge: None,
    ) -> None:
        self.platform = platform
        self.session = session
        self.leg = leg
        self.backend = backend
        self.call_id = ""
        self.outcome: str | None = None
        self._clock = clock
        self._playout_settings = playout_settings
        self._metrics = metrics
        self._reactor = reactor
        self._on_end = on_end
        self._backend_session: BackendSession | None = None
        self._playout: Playout | None = None
        self._up: Transcoder | None = None
        self._down: Transcoder | None = None
        self._caller_paused = False
        self._listen_only = not session.capabilities.plays_audio
        self._extra_channels: dict[str, tuple[BackendSession, Transcoder]] = {}
        self._call_info: CallInfo | None = None
        self._frames_in = metrics.frames_total.labels(platform, "in")
        self._started = False

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    @property
    def playout(self) -> Playout | None:
        return self._playout

    # --- platform → bridge ---------------------------------------------------------------------

    def start(self, event: CallStarted) -> None:
        """The platform started the call: open the backend session and the playout."""
        if self._started or self.ended:
            return
        self._started = True
        self.call_id = event.call_id
        fmt = event.audio_format
        self._playout = Playout(
            self._clock, fmt, self.session.capabilities, self._playout_settings, self, self._metrics, self.platform
        )
        self._metrics.calls_active.labels(self.platform).inc()
        log.info("call {call_id} started on {platform} ({fmt}), backend {backend}",
                 call_id=self.call_id, platform=self.platform, fmt=str(fmt), backend=self.backend.name)
        self._call_info = CallInfo(event.call_id, self.platform, dict(event.metadata), self._listen_only)
        session = self.backend.open_session(self._call_info, self, fmt)
        self._backend_session = session
        self._up = Transcoder(fmt, session.audio_format)
        self._down = Transcoder(session.audio_format, fmt)
        self._playout.attach_producer(session)
        self.leg.register_producer(self._playout)

    def platform_event(self, event: PlatformEvent) -> None:
        """Dispatch one platform event (other than CallStarted and the glue's own)."""
        kind = type(event)
        if kind is CallerAudio:
            self.caller_audio(event.data)  # type: ignore[union-attr]
        elif kind is MarkPlayed:
            if self._playout is not None:
                self._playout.mark_echoed(event.name)  # type: ignore[union-attr]
        elif kind is DtmfReceived:
            if self._backend_session is not None:
                self._backend_session.send_dtmf(event.digits)  # type: ignore[union-attr]
        elif kind is CallerStreamPaused:
            if event.paused and not self._caller_paused:  # type: ignore[union-attr]
                # The platform stopped the caller stream (Genesys hold, secure pause): a flow
                # pause on the platform leg, counted once per pause.
                self._metrics.flow_pauses_total.labels("platform").inc()
            self._caller_paused = event.paused  # type: ignore[union-attr]
        elif kind is PlaybackFlowChanged:
            if self._playout is not None and event.retry_after_ms > 0:  # type: ignore[union-attr]
                self._playout.back_off(event.retry_after_ms)  # type: ignore[union-attr]
        elif kind is CallEnded:
            self.end(COMPLETED, f"platform ended the call: {event.reason}")  # type: ignore[union-attr]

    def caller_audio(self, data: bytes, channel: str = "external") -> None:
        """Caller audio in the platform format: count it and pass it to the backend."""
        self._frames_in.inc()
        if self._backend_session is None or self._caller_paused or self.ended:
            return
        if channel != "external" and self._listen_only:
            self._channel_audio(data, channel)
            return
        assert self._up is not None
        self._backend_session.send_audio(self._up.convert(data))

    def _channel_audio(self, data: bytes, channel: str) -> None:
        leg = self._extra_channels.get(channel)
        if leg is None:
            if len(self._extra_channels) >= 3 or self._call_info is None or self._playout is None:
                return  # AudioHook has two channels; never let input open sessions without bound
            fmt = self._playout.audio_format
            session = self.backend.open_session(self._call_info, _ChannelListener(self, "agent"), fmt)
            leg = (session, Transcoder(fmt, session.audio_format))
            self._extra_channels[channel] = leg
        session, up = leg
        session.send_audio(up.convert(data))

    # --- backend → bridge (BackendListener) ------------------------------------------------------

    def backend_ready(self) -> None:
        log.debug("call {call_id}: backend ready", call_id=self.call_id)

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
        self.session.clear()
        self.session.caller_speech(True)
        self.leg.flush()
        heard = self._playout.clear()
        if heard is None:
            return
        self._metrics.bargein_seconds.observe(self._reactor.seconds() - signalled)
        if self._down is not None:
            self._down.reset()
        if self._backend_session is not None:
            self._backend_session.interrupt(heard.response_id, heard.played_ms)

    def backend_speech_stopped(self) -> None:
        if not self.ended:
            self.session.caller_speech(False)
            self.leg.flush()

    def backend_transcript(self, role: str, text: str, final: bool) -> None:
        if self.ended:
            return
        if final:
            log.info("call {call_id} {role}: {text}", call_id=self.call_id, role=role, text=text,
                     platform=self.platform, backend=self.backend.name)
        self.session.transcript(role, text, final)
        self.leg.flush()

    def backend_hangup(self, reason: str, variables: Mapping[str, str] | None = None) -> None:
        if self.ended:
            return
        self.session.hangup(reason, variables)
        self.leg.flush()
        self.end(BOT_HANGUP, reason)
        self.leg.hang_up()

    def backend_failed(self, reason: str) -> None:
        if self.ended:
            return
        log.warn("call {call_id}: backend {backend} failed: {reason}", call_id=self.call_id,
                 backend=self.backend.name, reason=reason)
        self.session.hangup("error", None)
        self.leg.flush()
        self.end(BACKEND_FAILED, reason)
        self.leg.hang_up()

    # --- playout sink ---------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        self.session.play(packet)
        self.leg.flush()

    def mark(self, name: str) -> None:
        self.session.mark(name)
        self.leg.flush()

    def playback_finished(self) -> None:
        self.session.playback_finished()
        self.leg.flush()

    def flush(self) -> None:
        self.leg.flush()

    # --- lifecycle -----------------------------------------------------------------------------------

    def end(self, outcome: str, reason: str = "") -> None:
        """End the call (idempotent): stop the playout, close the backend, count the outcome."""
        if self.ended:
            return
        self.outcome = outcome
        if self._playout is not None:
            self._playout.stop()
        if self._backend_session is not None:
            self._backend_session.close()
        for session, _ in self._extra_channels.values():
            session.close()
        if self._started:
            self._metrics.calls_active.labels(self.platform).dec()
            self._metrics.calls_total.labels(self.platform, outcome).inc()
            log.info("call {call_id} ended on {platform}: {outcome} {reason}", call_id=self.call_id,
                     platform=self.platform, outcome=outcome, reason=reason)
        self._on_end(self)
