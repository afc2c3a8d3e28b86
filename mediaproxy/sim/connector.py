"""``mediaproxy-sim connector``: a Genesys Cloud Audio Connector session (the bot talks back).

Genesys offers mono PCMU 8 kHz (``external``: the caller) and sends the caller's script in 200 ms
binary frames; the bot's audio comes back as binary frames (any size) and is played at real
time. ``event`` with a ``barge_in`` entity makes Genesys drop what it holds (a clear); audio more
than a second ahead of real time is a protocol error (Genesys answers it with 429). The session
itself (upgrade signature, open, ping, pause, close) is :mod:`mediaproxy.sim.genesys`.
"""

from __future__ import annotations

from typing import Any

from mediaproxy.sim.genesys import GenesysCall, add_genesys_options
from mediaproxy.sim.modes import SimMode

__all__ = ["ConnectorCall", "MODE", "EXTERNAL"]

EXTERNAL = {"type": "audio", "format": "PCMU", "channels": ["external"], "rate": 8000}


class ConnectorCall(GenesysCall):
    """One Audio Connector session."""

    platform = "connector"

    def media_offer(self) -> list[dict[str, Any]]:
        return [EXTERNAL]

    def on_binary(self, payload: bytes) -> None:
        if not self.playout_allowed():
            self.protocol_error("audio before opened")
            return
        self.bot_frame(payload)

    def playout_allowed(self) -> bool:
        return self._opened

    def on_event(self, entities: list[Any]) -> None:
        for entity in entities:
            kind = entity.get("type") if isinstance(entity, dict) else None
            if kind == "barge_in":
                self.clear_playout()
            else:
                self.protocol_error(f"an Audio Connector event Genesys does not take: {str(entity)[:80]}")


MODE = SimMode(name="connector", call=ConnectorCall, help="Genesys Cloud Audio Connector (the bot talks back)",
               default_path="/audiohook/connector", add_options=add_genesys_options, chunk_ms=200)
