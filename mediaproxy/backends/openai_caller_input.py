"""Caller audio on its way to OpenAI Realtime: where each connection's input starts on the
call's input timeline, and when a part chunk of coalesced audio goes out anyway.

The server counts input audio from 0 on every connection, and audio the proxy dropped (held
too long while reconnecting, or while the socket did not drain) is not on its timeline at all.
:class:`InputTimeline` keeps the offset that puts the server's speech times back on the call's
timeline, so caller transcripts carry times comparable across connections.

With ``input_chunk_ms`` above one frame the dialect coalesces caller audio
(:class:`~mediaproxy.backends.openai_client_messages.CallerAudioChunks`); :class:`PartChunkFlush`
sends what is waiting a chunk's time after its first frame, so a caller who falls silent is not
held back. Both run on an injected clock and hold no transport.
"""

from __future__ import annotations

from collections.abc import Callable

from mediaproxy.backends.reconnect import Timer, Timers


class InputTimeline:
    """The call's caller-audio timeline against the current connection's, in ms.

    ``bytes_per_ms`` is that of the session's audio format."""

    def __init__(self, bytes_per_ms: int) -> None:
        self._bytes_per_ms = bytes_per_ms
        self._input_bytes = 0
        self._stall_dropped_bytes = 0
        self._offset_ms = 0

    @property
    def offset_ms(self) -> int:
        """Where the current connection's input starts on the call's timeline."""
        return self._offset_ms

    def bridged(self, nbytes: int) -> None:
        """``nbytes`` of caller audio came from the bridge (sent, held or dropped later)."""
        self._input_bytes += nbytes

    def stall_dropped(self, nbytes: int) -> None:
        """``nbytes`` held while the socket did not drain were dropped (never sent)."""
        self._stall_dropped_bytes += nbytes

    def stall_over(self) -> None:
        """The socket drains again: the server's timeline lacks what was dropped meanwhile, so
        transcript times shift by it."""
        self._offset_ms += self._stall_dropped_bytes // self._bytes_per_ms
        self._stall_dropped_bytes = 0

    def connection_starts(self, held_bytes: int) -> None:
        """A connection is ready and ``held_bytes`` held go out first: its first sample is the
        first held one (what was dropped before it is not on the server's timeline either)."""
        self._offset_ms = (self._input_bytes - held_bytes) // self._bytes_per_ms

    def on_call(self, ms: int | None) -> int | None:
        """A time on the current connection's input (ms), on the call's timeline."""
        return None if ms is None else ms + self._offset_ms


class PartChunkFlush:
    """Calls ``flush`` ``chunk_ms`` after the first frame of a chunk was queued, unless the
    chunk filled and went first."""

    def __init__(self, clock: Timers, chunk_ms: int, flush: Callable[[], None]) -> None:
        self._clock = clock
        self._delay_s = chunk_ms / 1000.0
        self._flush = flush
        self._timer: Timer | None = None

    def audio_queued(self, pending: bool) -> None:
        """Caller audio was handed to the dialect; ``pending``: some waits for its chunk."""
        if pending:
            if self._timer is None:
                self._timer = self._clock.callLater(self._delay_s, self._fire)
        elif self._timer is not None:
            # The chunk filled and went: the timer was for its first frame. Left armed, it would
            # fire just as the next chunk's first frame arrived and send that alone.
            self.cancel()

    def cancel(self) -> None:
        """Drop the pending flush (the connection ended)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._flush()
