"""Pacing: the shared playout clock and the per-call jitter buffer that sends bot audio."""

from mediaproxy.playout.clock import PlayoutClock
from mediaproxy.playout.playout import PlayedAudio, Playout, PlayoutSink

__all__ = ["PlayoutClock", "Playout", "PlayoutSink", "PlayedAudio"]
