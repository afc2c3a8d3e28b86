"""``mediaproxy-sim jambonz``: a jambonz ``listen`` verb with bidirectional streaming audio.

It speaks what jambonz's feature server sends: the upgrade with the subprotocol
``audio.jambonz.org`` and the verb's ``wsAuth`` (``Authorization: Basic``), the call's metadata as
the first text frame (``callSid``, ``sampleRate``, ``mixType: mono``), the caller's L16 as binary
frames (20 ms each), and ``{"event": "dtmf"}`` per key (``passDtmf``); the call ends with the
socket. Toward the proxy it behaves like jambonz with ``bidirectionalAudio.streaming``: binary
audio is played at real time, a ``mark`` is answered (``event: playout``) once played,
``killAudio`` drops the buffer and answers the pending marks as ``cleared``, ``disconnect`` ends
the verb (the call ends here).
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

from mediaproxy.sim.binary import BinaryAudioCall, add_rate_option
from mediaproxy.sim.modes import SimMode

__all__ = ["JambonzCall", "MODE", "DEV_USERNAME", "DEV_PASSWORD"]

#: The development wsAuth pair of etc/mediaproxy.ini (public, never for a real deployment).
DEV_USERNAME = "mediaproxy-dev"
DEV_PASSWORD = "mediaproxy-dev-jambonz-password"


class JambonzCall(BinaryAudioCall):
    """One simulated jambonz ``listen``."""

    platform = "jambonz"
    subprotocols = ("audio.jambonz.org",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_sid = f"sim-{self.record.call_id}"
        self.record.call_id = self.call_sid
        self._killing = False

    def upgrade_headers(self) -> dict[str, str]:
        return basic_auth(self.options.username, self.options.password)

    def opening(self) -> list[dict[str, Any]]:
        return [{"callSid": self.call_sid, "from": "+15550100001", "to": "+15550100002", "direction": "inbound",
                 "sampleRate": self.audio_format.rate_hz, "mixType": "mono", "sim": "1",
                 "call": str(self.record.index)}]

    def dtmf_messages(self, digits: str) -> list[dict[str, Any]]:
        return [{"event": "dtmf", "dtmf": digit, "duration": 160} for digit in digits]

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"type": "mark", "data": {"name": name, "event": "cleared" if self._killing else "playout"}}

    def do_mark(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        self.mark_received(data.get("name") if isinstance(data, dict) else None)

    def do_killAudio(self, message: dict[str, Any]) -> None:
        self._killing = True
        try:
            self.clear_playout()
        finally:
            self._killing = False

    def do_disconnect(self, message: dict[str, Any]) -> None:
        self.bot_ended("disconnect")


def basic_auth(username: str, password: str) -> dict[str, str]:
    """``Authorization: Basic`` of the pair, or no header when either half is empty."""
    if not (username and password):
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", default=DEV_USERNAME,
                        help=f"the verb's wsAuth username (default: etc/mediaproxy.ini's development value, "
                             f"{DEV_USERNAME}; '' sends no Authorization)")
    parser.add_argument("--password", default=DEV_PASSWORD,
                        help=f"the verb's wsAuth password (default: the development value, {DEV_PASSWORD})")
    add_rate_option(parser, (8000, 16000, 24000, 48000), 16000)


MODE = SimMode(name="jambonz", call=JambonzCall, help="jambonz listen verb (bidirectional streaming audio)",
               default_path="/jambonz", add_options=add_options, chunk_ms=20, carries_dtmf=True)
