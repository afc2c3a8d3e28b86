"""`CallRecord`: what one simulated call sent and received, whatever its platform.

The simulator's platform modes fill it (:mod:`mediaproxy.sim.caller`); the report, the JSON file,
the recording and the plot read only this.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

from mediaproxy.audio.format import MULAW_8K, AudioFormat
from mediaproxy.sim.script import FRAME_MS

__all__ = ["CallRecord", "COMPLETED"]

#: ``close_reason`` of a call the simulator ended the platform's own way at the end of its script.
COMPLETED = "stop"


@dataclass
class CallRecord:
    """What one simulated call sent and received. Times are reactor seconds."""

    index: int
    call_id: str
    platform: str
    script_start: float = 0.0
    """When frame 0 of the script was due."""
    dialed_at: float | None = None
    opened_at: float | None = None
    """When the WebSocket opened (the first connection's)."""
    closed_at: float | None = None
    close_reason: str = ""
    close_code: int | None = None
    frames_sent: int = 0
    frames_withheld: int = 0
    """Script frames the platform did not send (AudioCodes without barge-in, AudioHook paused)."""
    send_late_max_s: float = 0.0
    """Worst lateness of our own sends (a busy simulator shows here, not in the proxy)."""
    arrivals: array[float] = field(default_factory=lambda: array("d"))
    """Arrival time of every message of bot audio."""
    arrival_ms: array[float] = field(default_factory=lambda: array("d"))
    """Milliseconds of audio in each of those messages."""
    depth_ms: array[float] = field(default_factory=lambda: array("d"))
    """The playout's depth just before each of those messages: how far ahead the audio came."""
    odd_messages: int = 0
    """Bot audio messages whose length is not a whole number of 20 ms."""
    clears: array[float] = field(default_factory=lambda: array("d"))
    """When the proxy told the platform to drop what it holds (Twilio ``clear``, ...)."""
    marks_received: int = 0
    marks_echoed: int = 0
    received: Counter[str] = field(default_factory=Counter)
    """Messages from the proxy, by type (``binary`` for binary frames)."""
    protocol_errors: int = 0
    errors: list[str] = field(default_factory=list)
    """The first few protocol errors, as text."""
    stalls: list[tuple[float, float]] = field(default_factory=list)
    """``(start, end)`` of every time this call stopped reading its socket (``--stall-every``)."""
    heard: list[tuple[float, bytes]] | None = None
    """With recording: ``(play time, audio)`` of everything the caller heard (platform format)."""
    heard_format: AudioFormat = MULAW_8K

    @property
    def completed(self) -> bool:
        return self.opened_at is not None and self.closed_at is not None and self.close_reason == COMPLETED

    def frame_arrivals(self) -> list[float]:
        """One arrival time per 20 ms of bot audio (a 60 ms message counts three times), as
        older reports and the benchmarks count frames."""
        out: list[float] = []
        for t, ms in zip(self.arrivals, self.arrival_ms, strict=True):
            out.extend([t] * max(1, round(ms / FRAME_MS)))
        return out
