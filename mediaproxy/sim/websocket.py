"""``mediaproxy-sim websocket``: a client of the generic WebSocket platform (``type =
websocket``: browsers, WebRTC gateways, custom clients; docs/protocols/websocket.md).

It speaks the proxy's own protocol as a browser client does: ``start`` (``call_id``, ``format``
L16 at ``--rate``, ``metadata``), the caller's L16 as binary frames (20 ms), ``dtmf`` with the
pressed keys, ``stop`` at the end (the proxy closes). ``--token`` is sent as ``Authorization:
Bearer`` (etc/mediaproxy.ini needs none). Toward the proxy it plays binary audio at real time,
echoes each ``mark`` once played, and drops the queue on ``clear`` (echoing the pending marks);
``stop`` is the bot ending the call, ``error`` a protocol error the proxy saw in what we sent.
``--pause-at-ms``/``--pause-ms`` pause the proxy's sending that far into the script and resume
it (client flow control).
"""

from __future__ import annotations

import argparse
from typing import Any

from mediaproxy.sim.binary import BinaryAudioCall, add_rate_option
from mediaproxy.sim.modes import SimMode

__all__ = ["WebSocketCall", "MODE"]


class WebSocketCall(BinaryAudioCall):
    """One simulated generic WebSocket client."""

    platform = "websocket"

    def upgrade_headers(self) -> dict[str, str]:
        token = self.options.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def opening(self) -> list[dict[str, Any]]:
        return [{"type": "start", "call_id": f"sim-{self.record.call_id}",
                 "format": {"encoding": "l16", "rate_hz": self.audio_format.rate_hz},
                 "metadata": {"sim": "1", "call": str(self.record.index)}}]

    def on_open(self) -> None:
        super().on_open()
        at = self.options.pause_at_ms
        if at is not None:
            start = self.record.script_start - self.clock.seconds()
            self.call_later(max(0.0, start + at / 1000.0), self.send_json, {"type": "pause"})
            self.call_later(max(0.0, start + (at + self.options.pause_ms) / 1000.0), self.send_json,
                            {"type": "resume"})

    def dtmf_messages(self, digits: str) -> list[dict[str, Any]]:
        return [{"type": "dtmf", "digits": digits}]

    def end_call(self) -> None:
        self.send_json({"type": "stop", "reason": "hangup"})
        self.hang_up()

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"type": "mark", "name": name}

    def do_mark(self, message: dict[str, Any]) -> None:
        self.mark_received(message.get("name"))

    def do_clear(self, message: dict[str, Any]) -> None:
        self.clear_playout()

    def do_stop(self, message: dict[str, Any]) -> None:
        self.bot_ended(f"stop ({str(message.get('reason'))[:40]})")

    def do_error(self, message: dict[str, Any]) -> None:
        self.protocol_error(f"the proxy refused what we sent: {str(message.get('reason'))[:40]} "
                            f"{str(message.get('detail'))[:80]}")


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", default="",
                        help="the platform's token, sent as Authorization: Bearer (default: none, as "
                             "etc/mediaproxy.ini accepts)")
    add_rate_option(parser, (8000, 16000, 24000, 48000), 16000)
    parser.add_argument("--pause-at-ms", type=int, default=None,
                        help="send pause this far into the script (client flow control; default: never)")
    parser.add_argument("--pause-ms", type=int, default=500, help="how long the pause lasts (default 500)")


MODE = SimMode(name="websocket", call=WebSocketCall, help="the generic WebSocket platform (browsers, gateways)",
               default_path="/browser", add_options=add_options, chunk_ms=20, carries_dtmf=True)
