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
sending). It never pauses the backend: a backend socket that is not read hides its control events
(the caller's ``speech_started`` would wait behind the queued audio, and barge-in with it).
Instead the queue is bounded: audio that would take it beyond ``max_buffer_ms`` is dropped, the
newest first, and with it the rest of that response (so every response played is an exact
prefix of what the backend sent, and the played position, hence the truncation, stays exact);
counted in ``frames_dropped_total{direction="out",reason="overflow"}``
(:mod:`mediaproxy.playout.overflow`).

:meth:`Playout.when_played_out` tells when the caller has heard everything sent (a farewell
before hanging up, :mod:`mediaproxy.playout.played_out`); :meth:`Playout.when_heard` when they
have heard what was written so far (a bot's mark, :mod:`mediaproxy.playout.heard`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mediaproxy.audio.format import AudioFormat
from mediaproxy.platforms.base import PlatformCapabilities
from mediaproxy.playout.heard import HeardWaiters
from mediaproxy.playout.overflow import OverflowGuard
from mediaproxy.playout.played_out import PlayedOutWaiters
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
    """A backend session as :meth:`Playout.attach_producer` accepts it (no longer paused)."""

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
        self.phase = clock.assign_phase()
        """The shared clock's sub-tick this playout is served on, for its whole life."""
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

        # Several packets per message where the platform allows it: fewer messages, less CPU.
        # The pacing is unchanged (a message is due when its first packet is), so the platform
        # holds up to lead_ms plus one message, and a barge-in's clear flushes that.
        packet_ms = capabilities.packet_ms
        message_ms = packet_ms
        if capabilities.any_message_length:
            message_ms = max(packet_ms, settings.message_ms - settings.message_ms % packet_ms)
        self.message_ms = message_ms
        self._queue = PacketQueue(audio_format, frame_ms, packet_ms, message_ms)
        self._played = PlayedPosition(capabilities.has_marks, settings.mark_interval_ms)

        # The spurt's schedule: its grid anchor (None between spurts) and the audio sent in it.
        self._anchor: float | None = None
        self._spurt_sent_ms = 0.0
        self._stream_open = False
        self._dry_mid_response = False
        self._missed_due = 0.0

        self._back_off_until = 0.0

        self._overflow = OverflowGuard(audio_format, audio_format.bytes_for_ms(settings.max_buffer_ms),
                                       self._frame_bytes, metrics.frames_dropped_total.labels("out", "overflow"))
        played = self._played
        self._played_out = PlayedOutWaiters(clock.reactor, self._queue, played, lambda: self._stopped)
        self._heard = HeardWaiters(clock.reactor, played.played_ms, lambda: played.sent_ms,
                                   lambda: bool(self._queue.queued_bytes))
        self._transport_paused = False
        self._peer_paused = False
        self._stopped = False

        self._late = metrics.playout_late_seconds
        self._underruns = metrics.playout_underruns_total
        self._buffer_seconds = metrics.playout_buffer_seconds
        self._frames_out = metrics.frames_total.labels(platform, "out")
        self._dropped_bargein = metrics.frames_dropped_total.labels("out", "bargein")

    # --- inputs from the backend side ------------------------------------------------------

    def move_to(self, sink: PlayoutSink) -> None:
        """The call continues on another platform connection (a resume): send there from now on."""
        self._sink = sink

    def attach_producer(self, producer: Pausable) -> None:
        """Kept for the bridge, which still attaches the backend session: a no-op. The playout
        never pauses the backend (see the module docstring: the queue is bounded by dropping)."""

    def write(self, response_id: str, data: bytes) -> None:
        """Queue bot audio (platform format, any size) belonging to ``response_id``. What would
        take the queue beyond ``max_buffer_ms`` is dropped, and the rest of that response too."""
        if self._stopped or not data:
            return
        queue = self._queue
        if queue.is_cut(response_id):
            self._dropped_bargein.inc(len(data) / self._frame_bytes)
            return
        if not self._overflow.fits(response_id, len(data), queue.queued_bytes):
            data = self._overflow.keep(response_id, data, queue.queued_bytes)
            if not data:
                return
        queue.write(response_id, data)
        self._buffer_seconds.observe(queue.queued_bytes / self._bytes_per_ms / 1000.0)
        now = self._clock.seconds()
        self._service(now, self._clock.grid_time(now, self.phase))

    def finish(self, response_id: str) -> None:
        """``response_id`` has delivered all its audio; its tail may now be padded and sent."""
        if self._stopped or not self._queue.finish(response_id):
            return
        now = self._clock.seconds()
        self._service(now, self._clock.grid_time(now, self.phase))
        self._played_out.check()

    # --- inputs from the platform side -----------------------------------------------------

    def mark_echoed(self, name: str) -> bool:
        """The platform played up to (or flushed) the mark ``name``. Returns False for an echo
        of another generation (flushed by a barge-in) or a name we did not send."""
        accepted = self._played.mark_echoed(name, self._clock.seconds())
        if accepted and self._played_out:
            self._played_out.check()
        if accepted and self._heard:
            self._heard.check()
        return accepted

    def back_off(self, ms: int) -> None:
        """The platform asked us to send nothing for ``ms`` milliseconds (Genesys 429
        ``retryAfter``): a rate limit, not a held call. Audio keeps queueing; once the back-off
        is over it restarts on a fresh anchor."""
        self._back_off_until = max(self._back_off_until, self._clock.seconds() + ms / 1000.0)
        if self._queue.queued_bytes:
            self._clock.add(self)

    def pause_sending(self, paused: bool) -> None:
        """The platform's client asked us to stop (``True``) or restart sending (client-driven
        flow control). Like a full socket (:meth:`pauseProducing`) it keeps everything queued,
        still bounded by ``max_buffer_ms``, and leaves the shared clock; it is a flag of its own
        so that neither the transport's resume nor the client's lifts the other's pause."""
        if paused == self._peer_paused:
            return
        self._peer_paused = paused
        if paused:
            self._clock.discard(self)
        elif not self._stopped:
            now = self._clock.seconds()
            self._service(now, self._clock.grid_time(now, self.phase))

    def clear(self) -> PlayedAudio | None:
        """Barge-in: drop all queued audio and cut every unfinished response. Returns what the
        caller heard of the response playing now (None when nothing had started playing)."""
        queue = self._queue
        if queue.queued_bytes:
            self._dropped_bargein.inc(queue.queued_bytes / self._frame_bytes)
        played_ms = self._played.played_ms(self._clock.seconds())
        heard = queue.cut(played_ms)
        self._heard.flushed(played_ms)
        self._played.cut()
        self._anchor = None
        self._stream_open = False
        self._dry_mid_response = False
        self._overflow.cleared()
        self._clock.discard(self)
        self._played_out.check()
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
        """End of call: drop everything and leave the clock. Idempotent. Deferreds of
        :meth:`when_played_out` still waiting fail with ``CancelledError``; no timer is left."""
        self._stopped = True
        self._queue.reset()
        self._clock.discard(self)
        self._heard.stop()
        self._played_out.stop()

    # --- played out --------------------------------------------------------------------------

    def when_played_out(self) -> Deferred[None]:
        """A Deferred that fires once the caller has heard everything: nothing is queued, every
        response written has been finished (``finish``, or cut by ``clear``), and the played
        position has reached all that was sent. On a platform with marks that is the echo of
        the mark after the last packet (the platform says so; if it never echoes, this never
        fires: bound the wait with a timeout); without marks, the clock (the spurt's start plus
        its duration). Fires at once when that already holds. After :meth:`stop` (or when
        stopped before it could fire) it fails with ``CancelledError``; cancelling it is allowed."""
        if self._stopped:
            return fail(CancelledError("playout stopped"))
        return self._played_out.add()

    def when_heard(self) -> Deferred[bool]:
        """A Deferred that fires True once the caller has heard all the audio written so far
        (sent or queued; a response still open is counted to its last whole packet: the rest
        waits for more audio), False when a :meth:`clear` flushed some of it first; after (or at)
        :meth:`stop` it fails with ``CancelledError``. See :mod:`mediaproxy.playout.heard`."""
        if self._stopped:
            return fail(CancelledError("playout stopped"))
        queue = self._queue
        return self._heard.add(self._played.sent_ms + queue.queued_ms - queue.open_tail_ms())

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
            self._service(now, self._clock.grid_time(now, self.phase))

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
        if self._stopped or self._transport_paused or self._peer_paused:
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
            sink.flush()
        if sent_any:
            self._played_out.sent_more()
            if self._heard:
                self._heard.check()
        if self._played_out and not queue.queued_bytes:
            self._played_out.check()
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
