"""``mediaproxy-sim telnyx``: a Telnyx Media Streaming call (``streaming_start`` with
``stream_bidirectional_mode: rtp``, or TeXML ``<Stream bidirectionalMode="rtp">``).

It speaks what Telnyx sends: the upgrade with ``x-telnyx-streaming-auth-token`` (the
``stream_auth_token`` of ``streaming_start``), ``connected``, ``start`` (``call_control_id``,
``media_format`` of ``--codec``: PCMU or PCMA 8 kHz, or L16 16 kHz little-endian), numbered
``media`` of 20 ms, ``dtmf`` per key, and ``stop``. Toward the proxy it behaves like Telnyx's
RTP-mode player: ``media`` queued and played at real time, ``mark`` answered once played,
``clear`` drops the queue and answers the pending marks at once. The shared behaviour is
:mod:`mediaproxy.sim.jsondialect`.
"""

from __future__ import annotations

import argparse
from typing import Any

from mediaproxy.audio.format import ALAW_8K, L16_16K, MULAW_8K, AudioFormat
from mediaproxy.sim.jsondialect import JsonDialectCall
from mediaproxy.sim.modes import SimMode

__all__ = ["TelnyxCall", "MODE", "DEV_TOKEN", "CODECS"]

#: The development stream token of etc/mediaproxy.ini (public, never for a real deployment).
DEV_TOKEN = "mediaproxy-dev-telnyx-token"
CODECS: dict[str, AudioFormat] = {"PCMU": MULAW_8K, "PCMA": ALAW_8K, "L16": L16_16K}


class TelnyxCall(JsonDialectCall):
    """One simulated Telnyx call."""

    platform = "telnyx"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_control_id = f"v3:sim-{self.record.call_id}"
        self.stream_id = f"stream-{self.record.call_id}"
        self.record.call_id = self.call_control_id

    @classmethod
    def format_for(cls, options: argparse.Namespace) -> AudioFormat:
        return CODECS[options.codec]

    def upgrade_headers(self) -> dict[str, str]:
        token = self.options.stream_auth_token
        return {"x-telnyx-streaming-auth-token": token} if token else {}

    def opening(self) -> list[dict[str, Any]]:
        fmt = self.audio_format
        return [{"event": "connected", "version": "1.0.0"}, {
            "event": "start", "sequence_number": self.next_seq(), "stream_id": self.stream_id,
            "start": {"call_control_id": self.call_control_id, "call_session_id": f"session-{self.record.index}",
                      "from": "+15550100001", "to": "+15550100002", "client_state": "",
                      "custom_parameters": {"sim": "1", "call": str(self.record.index)},
                      "media_format": {"encoding": self.options.codec, "sample_rate": fmt.rate_hz, "channels": 1}},
        }]

    def media_message(self, first: int, payload: str) -> dict[str, Any]:
        return {"event": "media", "sequence_number": self.next_seq(), "stream_id": self.stream_id,
                "media": {"track": "inbound", **self.media_fields(first, payload)}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "stream_id": self.stream_id, "occurred_at": "", "dtmf": {"digit": digit}}

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "sequence_number": self.next_seq(), "stream_id": self.stream_id,
                "mark": {"name": name}}

    def stop_message(self) -> dict[str, Any]:
        return {"event": "stop", "sequence_number": self.next_seq(), "stream_id": self.stream_id,
                "stop": {"call_control_id": self.call_control_id}}


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream-auth-token", default=DEV_TOKEN,
                        help=f"sent as x-telnyx-streaming-auth-token (default: etc/mediaproxy.ini's development "
                             f"value, {DEV_TOKEN}; '' sends none)")
    parser.add_argument("--codec", default="PCMU", choices=sorted(CODECS),
                        help="the stream's codec: PCMU/PCMA 8 kHz or L16 16 kHz (default PCMU)")


MODE = SimMode(name="telnyx", call=TelnyxCall, help="Telnyx Media Streaming (bidirectional RTP mode)",
               default_path="/telnyx", add_options=add_options, chunk_ms=20, carries_dtmf=True)
