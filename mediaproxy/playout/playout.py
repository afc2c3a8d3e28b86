"""The per-call playout: the pacer between the backend's bursts and the caller, with flow control.

The backend delivers bot audio in bursts of any size, faster than real time. The playout queues
it (:class:`~mediaproxy.playout.queue.PacketQueue`: per response, cut into exact packets) and
sends the packets on the shared clock's absolute grid: packet ``n`` of a talk spurt anchored at
grid time ``t0`` is due at ``t0 + n * packet - lead``. So at most ``lead`` of audio is ever
queued at the platform beyond what it is playing, which bounds what a barge-in must flush, and
the rate never drifts. What the caller has heard is estimated by
:class:`~mediaproxy.playout.position.PlayedPosition`.

Timeline terms used below (all milliseconds of audio):

* *position*: audio sent to the platform since the call began (monotonic).
* *spurt*: a run of back-to-back audio the platform plays without a gap. The platform's play
  position within it is reckoned from the spurt's anchor; if that position passes what was sent,
  the platform has run dry (an underrun, or a stall longer than the lead) and the next audio
  starts a new spurt at the current grid time instead of bursting to catch up.
* *played*: what the caller has heard, from mark echoes when the platform has them (the last
  echo plus the time since, capped at what was sent) and from the clock otherwise.

Times are reactor seconds. A service pass (a clock tick, a ``write``, a ``finish``, a resume)
that told the sink anything ends with one ``sink.flush()``: the platform's writes go out once
per tick, not once per packet.

``clear()`` (barge-in) drops everything queued, remembers the responses it cut so their late
audio is dropped, starts a new mark generation so the echoes the platform sends for its flushed
marks are ignored, and returns what the caller heard of the current response.

Flow control: the playout is the platform transport's ``IPushProducer`` (a full socket pauses
sending), and it pauses the backend session when more than ``max_buffer_ms`` is queued, resuming
it below half of that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mediaproxy.audio.format import AudioFormat
from mediaproxy.platforms.base import PlatformCapabilities
from mediaproxy.playout.position import PlayedPosition
from mediaproxy.playout.queue import PacketQueue
from mediaproxy.playout.responses import PlayedAudio

if TYPE_CHECKING:
    from mediaproxy.config import PlayoutSettings
    from mediaproxy.metrics import Metrics
    from mediaproxy.playout.clock import PlayoutClock


class PlayoutSink(Protocol):
    """Where the playout sends (the platform session, through the call bridge)."""

    def play(self, packet: bytes) -> None: ...

    def mark(self, name: str) -> None: ...

    def playback_finished(self) -> None: ...

    def flush(self) -> None:
        """Send what ``play``, ``mark`` and ``playback_finished`` queued. Called once at the
        end of every service pass that called any of them, never when none was called."""


class Pausable(Protocol):
    """What the playout pauses when too much audio is queued (the backend session)."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


@implementer(IPushProducer)
class Playout:
    """Paces one call's bot audio to its platform. See the module docstring for the model.

    ``audio_format`` is the platform's format (what ``write`` receives, after transcoding);
    ``capabilities`` give the packet size and whether the platform may be sent ahead of real time.
    """

    def __init__(
        self,
        clock: PlayoutClock,
        audio_format: AudioFormat,
        capabilities: PlatformCapabilities,
        settings: PlayoutSettings,
        sink: PlayoutSink,
        metrics: Metrics,
        platform: str,
    ) -> None:
        frame_ms = clock.frame_ms
        if capabilities.packet_ms % frame_ms:
            raise ValueError(f"packet_ms {capabilities.packet_ms} is not a multiple of frame_ms {frame_ms}")
        self._clock = clock
        self._sink = sink
        self._format = audio_format
        self._bytes_per_ms = audio_format.bytes_per_ms
        self._frame_bytes = audio_format.bytes_for_ms(frame_ms)
        lead_ms = settings.lead_ms
        if capabilities.max_lead_ms is not None:
            lead_ms = min(lead_ms, capabilities.max_lead_ms)
        if not capabilities.can_flush:
            # What a platform cannot flush, a barge-in cannot take back: one frame at most.
            lead_ms = min(lead_ms, frame_ms)
        self.lead_ms = lead_ms
        self._lead_s = lead_ms / 1000.0
        self._dry_tolerance_ms = frame_ms / 2
        self._prefill_bytes = audio_format.bytes_for_ms(settings.prefill_ms)
        self._max_bytes = audio_format.bytes_for_ms(settings.max_buffer_ms)

        self._queue = PacketQueue(audio_format, frame_ms, capabilities.packet_ms)
        self._played = PlayedPosition(capabilities.has_marks, settings.mark_interval_ms)

        # The spurt's schedule: its grid anchor (None between spurts) and the audio sent in it.
        self._anchor: float | None = None
        self._spurt_sent_ms = 0.0
        self._stream_open = False
        self._dry_mid_response = False
        self._missed_due = 0.0

        self._back_off_until = 0.0

        self._producer: Pausable | None = None
        self._producer_paused = False
        self._transport_paused = False
        self._stopped = False

        self._late = metrics.playout_late_seconds
        self._underruns = metrics.playout_underruns_total
        self._buffer_seconds = metrics.playout_buffer_seconds
        self._frames_out = metrics.frames_total.labels(platform, "out")
        self._dropped_bargein = metrics.frames_dropped_total.labels("out", "bargein")
        self._flow_pauses = metrics.flow_pauses_total.labels("backend")

    # --- inputs from the backend side ------------------------------------------------------

    def move_to(self, sink: PlayoutSink) -> None:
        """The call continues on another platform connection (a resume): send there from now on."""
        self._sink = sink

    def attach_producer(self, producer: Pausable) -> None:
        """The backend session to pause when too much audio is queued."""
        self._producer = producer

    def write(self, response_id: str, data: bytes) -> None:
        """Queue bot audio (platform format, any size) belonging to ``response_id``."""
        if self._stopped or not data:
            return
        queue = self._queue
        if not queue.write(response_id, data):
            self._dropped_bargein.inc(len(data) / self._frame_bytes)
            return
        queued = queue.queued_bytes
        self._buffer_seconds.observe(queued / self._bytes_per_ms / 1000.0)
        if queued > self._max_bytes and self._producer is not None and not self._producer_paused:
            self._producer_paused = True
            self._flow_pauses.inc()
            self._producer.pauseProducing()
        now = self._clock.seconds()
        self._service(now, self._clock.grid_time(now))

    def finish(self, response_id: str) -> None:
        """``response_id`` has delivered all its audio; its tail may now be padded and sent."""
        if self._stopped or not self._queue.finish(response_id):
            return
        now = self._clock.seconds()
        self._service(now, self._clock.grid_time(now))

    # --- inputs from the platform side -----------------------------------------------------

    def mark_echoed(self, name: str) -> bool:
        """The platform played up to (or flushed) the mark ``name``. Returns False for an echo
        of another generation (flushed by a barge-in) or a name we did not send."""
        return self._played.mark_echoed(name, self._clock.seconds())

    def back_off(self, ms: int) -> None:
        """The platform asked us to send nothing for ``ms`` milliseconds (Genesys 429
        ``retryAfter``): a rate limit, not a held call. Audio keeps queueing; once the back-off
        is over it restarts on a fresh anchor."""
        self._back_off_until = max(self._back_off_until, self._clock.seconds() + ms / 1000.0)
        if self._queue.queued_bytes:
            self._clock.add(self)

    def clear(self) -> PlayedAudio | None:
        """Barge-in: drop all queued audio and cut every unfinished response. Returns what the
        caller heard of the response playing now (None when nothing had started playing)."""
        queue = self._queue
        if queue.queued_bytes:
            self._dropped_bargein.inc(queue.queued_bytes / self._frame_bytes)
        heard = queue.cut(self._played.played_ms(self._clock.seconds()))
        self._played.cut()
        self._anchor = None
        self._stream_open = False
        self._dry_mid_response = False
        self._clock.discard(self)
        self._resume_producer_if_drained()
        return heard

    def played_position_ms(self, now: float) -> float:
        """The call's played position at ``now``, in milliseconds of sent audio."""
        return self._played.played_ms(now)

    @property
    def audio_format(self) -> AudioFormat:
        """The platform format this playout sends."""
        return self._format

    @property
    def queued_ms(self) -> float:
        """Bot audio waiting in the playout, in milliseconds."""
        return self._queue.queued_ms

    @property
    def generation(self) -> int:
        """The mark generation; bumped by every :meth:`clear`."""
        return self._played.generation

    def stop(self) -> None:
        """End of call: drop everything and leave the clock. Idempotent."""
        self._stopped = True
        self._queue.reset()
        self._clock.discard(self)
        self._producer = None

    # --- IPushProducer (toward the platform transport) ---------------------------------------

    def pauseProducing(self) -> None:
        """The platform socket is full (or gone, while a call waits for a resume): keep packets
        queued until it drains. A paused playout leaves the shared clock; resuming brings it
        back."""
        self._transport_paused = True
        self._clock.discard(self)

    def resumeProducing(self) -> None:
        self._transport_paused = False
        if not self._stopped:
            now = self._clock.seconds()
            self._service(now, self._clock.grid_time(now))

    def stopProducing(self) -> None:
        """The platform transport is gone (Twisted calls this before the protocol hears of
        the lost connection). Only stop sending: the call may outlive its socket (AudioCodes
        ``session.resume`` moves it onto a new connection, which resumes us), and the bridge
        stops the playout when the call ends, at once for platforms whose calls die with the
        socket."""
        self._transport_paused = True

    # --- pacing ------------------------------------------------------------------------------

    def tick(self, now: float, grid: float) -> None:
        """Called by the shared clock at every tick while this playout is active."""
        self._service(now, grid)

    def _service(self, now: float, grid: float) -> None:
        if self._stopped or self._transport_paused:
            self._clock.discard(self)
            return
        queue = self._queue
        if now < self._back_off_until:
            if queue.queued_bytes:
                self._clock.add(self)  # keep ticking to notice the end of the back-off
            return
        played = self._played
        if self._anchor is not None and now < played.spurt_started_at:
            # The clock stepped backwards: the old anchor would keep audio back until it
            # caught up. Start a new spurt here instead.
            self._end_spurt()
        if self._anchor is not None and self._platform_dry(now):
            # Counted only if more audio of the same response follows: a backend that is merely
            # slow to say "done" after its last delta caused no gap the caller could hear.
            self._dry_mid_response = self._stream_open
            # The next packet was due on the schedule we are abandoning; it is that late.
            self._missed_due = self._anchor + self._spurt_sent_ms / 1000.0 - self._lead_s
            self._end_spurt()
        if self._anchor is None:
            if not queue.queued_bytes or not (
                queue.queued_bytes >= self._prefill_bytes or queue.has_finished_response()
            ):
                if queue.settle_finished() and self._close_stream():
                    self._sink.flush()
                self._clock.discard(self)
                return
            if self._dry_mid_response and self._stream_open:
                self._underruns.inc()
                self._late.observe(now - self._missed_due)
            self._dry_mid_response = False
            # A new spurt, on the grid; the platform starts playing it now.
            self._anchor = grid
            self._spurt_sent_ms = 0.0
            played.start_spurt(now)
        anchor = self._anchor
        lead_s = self._lead_s
        started_at = played.spurt_started_at
        sink = self._sink
        sent_any = closed = False
        while queue.queued_bytes:
            due = anchor + self._spurt_sent_ms / 1000.0 - lead_s
            if due > now + 1e-9:
                break
            cut = queue.next_packet(played.sent_ms)
            if cut is None:
                break
            packet, ended = cut
            if packet:
                if due > started_at + 1e-9:
                    self._late.observe(now - due)
                sink.play(packet)
                self._frames_out.inc()
                sent_any = True
                self._stream_open = True
                ms = len(packet) / self._bytes_per_ms
                self._spurt_sent_ms += ms
                played.sent_ms += ms
            if ended and self._close_stream():
                closed = True
        if not queue.queued_bytes and queue.settle_finished() and self._close_stream():
            closed = True
        if sent_any:
            name = played.next_mark(not queue.queued_bytes)
            if name is not None:
                sink.mark(name)
        if sent_any or closed:
            # Before resuming the backend: that may deliver (and send) more audio at once.
            sink.flush()
        self._resume_producer_if_drained()
        if queue.queued_bytes:
            self._clock.add(self)
        else:
            self._clock.discard(self)

    def _platform_dry(self, now: float) -> bool:
        assert self._anchor is not None
        played = (now - self._anchor) * 1000.0
        return played > self._spurt_sent_ms + self._dry_tolerance_ms

    def _end_spurt(self) -> None:
        """Abandon the spurt's schedule; the next audio starts a new one on the grid."""
        self._anchor = None
        self._played.end_spurt()

    def _close_stream(self) -> bool:
        """Every packet of the current response has gone out: close the platform's stream.
        Returns whether that told the sink anything."""
        if not self._stream_open:
            return False
        self._stream_open = False
        self._sink.playback_finished()
        return True

    def _resume_producer_if_drained(self) -> None:
        if self._producer_paused and self._queue.queued_bytes <= self._max_bytes // 2:
            self._producer_paused = False
            if self._producer is not None:
                self._producer.resumeProducing()
