"""``mediaproxy-sim audiohook``: a Genesys Cloud AudioHook Monitor session (listen-only).

Genesys offers stereo PCMU 8 kHz (``external`` = the caller, ``internal`` = the agent) and sends
both channels interleaved by sample, the caller's script on ``external`` and silence on
``internal``. Nothing comes back but JSON: transcripts as ``event`` messages (counted, in the
report's ``received``), and bot audio would be a protocol error. The session itself (upgrade
signature, open, ping, pause, close) is :mod:`mediaproxy.sim.genesys`.
"""

from __future__ import annotations

from typing import Any

from mediaproxy.sim.genesys import GenesysCall, add_genesys_options
from mediaproxy.sim.modes import SimMode

__all__ = ["MonitorCall", "MODE", "STEREO"]

STEREO = {"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}
_SILENCE = 0xFF


class MonitorCall(GenesysCall):
    """One AudioHook Monitor session."""

    platform = "audiohook"
    channels = 2

    def media_offer(self) -> list[dict[str, Any]]:
        return [STEREO]

    def interleave(self, caller: bytes) -> bytes:
        out = bytearray([_SILENCE]) * (len(caller) * 2)
        out[0::2] = caller
        return bytes(out)

    def on_binary(self, payload: bytes) -> None:
        self.protocol_error("audio from the server in Monitor mode")

    def on_event(self, entities: list[Any]) -> None:
        for entity in entities:
            kind = entity.get("type") if isinstance(entity, dict) else None
            if kind == "transcript":
                self.record.received["transcript"] += 1
            else:
                self.protocol_error(f"a Monitor event that is not a transcript: {str(entity)[:80]}")


MODE = SimMode(name="audiohook", call=MonitorCall, help="Genesys Cloud AudioHook Monitor (listen-only, stereo)",
               default_path="/audiohook", add_options=add_genesys_options, chunk_ms=200, plays_audio=False)
