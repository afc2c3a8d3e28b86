"""``mediaproxy-sim vonage``: a Vonage Voice API WebSocket (an NCCO ``connect`` to a
``websocket`` endpoint).

It speaks what Vonage sends: the upgrade with the endpoint's ``authorization`` value, then
``websocket:connected`` (``content-type: audio/l16;rate=16000`` or ``--rate``, and the NCCO
``headers``: ``uuid``, ...), the caller's audio as binary frames of exactly 20 ms, and
``websocket:dtmf`` per key; the call ends with the socket. Toward the proxy it behaves like
Vonage: binary frames of exactly one 20 ms frame are played at real time (any other size is a
protocol error), ``notify`` is answered with ``websocket:notify`` once the audio before it has
played, ``clear`` drops the queue and is answered with ``websocket:cleared``.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from mediaproxy.sim.binary import BinaryAudioCall, add_rate_option
from mediaproxy.sim.modes import SimMode

__all__ = ["VonageCall", "MODE", "DEV_AUTHORIZATION"]

#: The development authorization value of etc/mediaproxy.ini (public, never for a real deployment).
DEV_AUTHORIZATION = "Bearer mediaproxy-dev-vonage-token"


class VonageCall(BinaryAudioCall):
    """One simulated Vonage WebSocket leg."""

    platform = "vonage"
    command_key = "action"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_uuid = str(uuid.uuid4())
        self.record.call_id = self.call_uuid

    def upgrade_headers(self) -> dict[str, str]:
        value = self.options.authorization
        return {"Authorization": value} if value else {}

    def opening(self) -> list[dict[str, Any]]:
        return [{"event": "websocket:connected", "content-type": f"audio/l16;rate={self.audio_format.rate_hz}",
                 "uuid": self.call_uuid, "sim": "1", "call": str(self.record.index)}]

    def dtmf_messages(self, digits: str) -> list[dict[str, Any]]:
        return [{"event": "websocket:dtmf", "digit": digit, "duration": 260} for digit in digits]

    def audio_error(self, nbytes: int) -> str | None:
        if nbytes != self.audio_format.bytes_for_ms(20):
            return f"a binary frame of {nbytes} bytes (Vonage takes exactly one 20 ms frame)"
        return None

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"event": "websocket:notify", "payload": {"name": name}}

    def do_notify(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        self.mark_received(payload.get("name") if isinstance(payload, dict) else None)

    def do_clear(self, message: dict[str, Any]) -> None:
        self.clear_playout()
        self.send_json({"event": "websocket:cleared"})


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--authorization", default=DEV_AUTHORIZATION,
                        help=f"the endpoint's authorization header value (default: etc/mediaproxy.ini's "
                             f"development value, {DEV_AUTHORIZATION!r}; '' sends none)")
    add_rate_option(parser, (8000, 16000, 24000), 16000)


MODE = SimMode(name="vonage", call=VonageCall, help="Vonage Voice API WebSockets (NCCO connect)",
               default_path="/vonage", add_options=add_options, chunk_ms=20, carries_dtmf=True)
