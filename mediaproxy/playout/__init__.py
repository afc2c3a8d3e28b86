"""Pacing: the shared playout clock and the per-call jitter buffer that sends bot audio."""

from mediaproxy.playout.clock import PlayoutClock
from mediaproxy.playout.playout import Playout, PlayoutSink
from mediaproxy.playout.responses import PlayedAudio

__all__ = ["PlayoutClock", "Playout", "PlayoutSink", "PlayedAudio"]
