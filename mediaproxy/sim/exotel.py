"""``mediaproxy-sim exotel``: an Exotel Voicebot applet call (AgentStream, bidirectional).

It speaks what Exotel sends: the upgrade with ``Authorization: Basic`` (the applet URL's
``KEY:TOKEN@``), ``connected``, ``start`` (``stream_sid``, ``call_sid``, ``media_format``
``audio/x-raw`` 16-bit 8 kHz), numbered ``media`` of raw little-endian PCM about every 100 ms,
``dtmf`` per key, and ``stop``. Toward the proxy it behaves like Exotel's player: ``media`` is
queued and played at real time, ``mark`` answered once played, ``clear`` drops the queue. Exotel
takes only chunks of a multiple of 320 bytes, from 3.2 KB to 100 KB: anything else is a protocol
error. The shared behaviour is :mod:`mediaproxy.sim.jsondialect`.
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

from mediaproxy.audio.format import L16_8K
from mediaproxy.sim.jsondialect import JsonDialectCall
from mediaproxy.sim.modes import SimMode

__all__ = ["ExotelCall", "MODE", "DEV_API_KEY", "DEV_API_TOKEN"]

#: The development Basic-auth pair of etc/mediaproxy.ini (public, never for a real deployment).
DEV_API_KEY = "mediaproxy-dev-exotel-key"
DEV_API_TOKEN = "mediaproxy-dev-exotel-token"
_CHUNK_MULTIPLE = 320
_MIN_CHUNK = 3200
_MAX_CHUNK = 100_000


class ExotelCall(JsonDialectCall):
    """One simulated Exotel Voicebot stream."""

    platform = "exotel"
    audio_format = L16_8K

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_sid = f"sim{self.record.call_id.replace('-', '')}"
        self.stream_sid = f"stream{self.record.call_id.replace('-', '')}"
        self.record.call_id = self.call_sid

    def upgrade_headers(self) -> dict[str, str]:
        key, token = self.options.api_key, self.options.api_token
        if not (key and token):
            return {}
        return {"Authorization": "Basic " + base64.b64encode(f"{key}:{token}".encode()).decode()}

    def opening(self) -> list[dict[str, Any]]:
        return [{"event": "connected"}, {
            "event": "start", "sequence_number": self.next_seq(), "stream_sid": self.stream_sid,
            "start": {"stream_sid": self.stream_sid, "call_sid": self.call_sid, "account_sid": "sim",
                      "from": "09000000001", "to": "09000000002",
                      "custom_parameters": {"sim": "1", "call": str(self.record.index)},
                      "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}},
        }]

    def media_message(self, first: int, payload: str) -> dict[str, Any]:
        return {"event": "media", "sequence_number": self.next_seq(), "stream_sid": self.stream_sid,
                "media": self.media_fields(first, payload)}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "sequence_number": self.next_seq(), "stream_sid": self.stream_sid,
                "dtmf": {"digit": digit, "duration": "100"}}

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "sequence_number": self.next_seq(), "stream_sid": self.stream_sid,
                "mark": {"name": name}}

    def stop_message(self) -> dict[str, Any]:
        return {"event": "stop", "sequence_number": self.next_seq(), "stream_sid": self.stream_sid,
                "stop": {"call_sid": self.call_sid, "account_sid": "sim", "reason": "callended"}}

    def stream_mismatch(self, event: str, message: dict[str, Any]) -> str | None:
        if message.get("stream_sid") != self.stream_sid:
            return f"{event} for another stream_sid {str(message.get('stream_sid'))[:40]!r}"
        return None

    def audio_error(self, nbytes: int) -> str | None:
        if nbytes % _CHUNK_MULTIPLE or not _MIN_CHUNK <= nbytes <= _MAX_CHUNK:
            return f"a media chunk of {nbytes} bytes (Exotel takes multiples of 320, 3200 to 100000)"
        return None


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", default=DEV_API_KEY,
                        help=f"the applet URL's API key, sent with --api-token as Authorization: Basic (default: "
                             f"etc/mediaproxy.ini's development value, {DEV_API_KEY}; '' sends none)")
    parser.add_argument("--api-token", default=DEV_API_TOKEN,
                        help=f"the applet URL's API token (default: the development value, {DEV_API_TOKEN})")


MODE = SimMode(name="exotel", call=ExotelCall, help="Exotel Voicebot applet (bidirectional AgentStream)",
               default_path="/exotel", add_options=add_options, chunk_ms=100, carries_dtmf=True)
