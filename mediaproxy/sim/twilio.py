"""``mediaproxy-sim twilio``: a Twilio Media Streams call (the platform side of ``<Connect><Stream>``).

It speaks what Twilio sends: ``connected``, ``start`` (a unique ``callSid``/``streamSid``,
``audio/x-mulaw`` 8 kHz mono, ``customParameters``), ``media`` (µ-law, 20 ms per message unless
``--chunk-ms`` says otherwise, with ``chunk`` and ``timestamp``) on the absolute schedule of
:mod:`mediaproxy.sim.caller`, ``dtmf`` (``--dtmf``: one event per key, ``inbound_track``), then
``stop``. Toward the proxy it behaves like Twilio's player
(:class:`~mediaproxy.sim.playout.Playout`): ``media`` of any multiple of 20 ms is queued and
played at real time, a ``mark`` is echoed when the audio queued before it has played, ``clear``
empties the queue and echoes every pending mark at once.

What Twilio would not accept is a protocol error: a message without ``event``, a ``media`` or
``mark`` for another ``streamSid``, a payload that is not base64, an event Twilio does not take.
The shared Twilio-dialect behaviour is :mod:`mediaproxy.sim.jsondialect`.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Sequence
from typing import Any

from mediaproxy.sim.jsondialect import JsonDialectCall, add_signing_options
from mediaproxy.sim.modes import SimMode
from mediaproxy.sim.script import FRAME_MS

__all__ = ["TwilioCall", "MODE"]

_ACCOUNT_SID = "AC" + "0" * 32


class TwilioCall(JsonDialectCall):
    """One simulated Twilio call."""

    platform = "twilio"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tag = self.record.call_id.replace("-", "")
        self.call_sid = "CA" + tag.rjust(32, "0")[-32:]
        self.stream_sid = "MZ" + tag.rjust(32, "0")[-32:]
        self.record.call_id = self.call_sid
        self._prefix = '{"event":"media","sequenceNumber":"'
        self._mid = '","streamSid":' + json.dumps(self.stream_sid) + ',"media":{"track":"inbound","chunk":"'

    def upgrade_headers(self) -> dict[str, str]:
        token = getattr(self.options, "auth_token", None)
        if not token:
            return {}
        return {"X-Twilio-Signature": twilio_signature(token, self.options.signed_url or self.url_text)}

    def opening(self) -> list[dict[str, Any]]:
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        return [connected, {
            "event": "start",
            "sequenceNumber": self.next_seq(),
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "accountSid": _ACCOUNT_SID,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"sim": "1", "call": str(self.record.index)},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }]

    def send_chunk(self, first: int, frames: Sequence[bytes]) -> None:
        script = self.script
        # One frame per message (Twilio's own size): the script's shared base64 text, and the
        # message put together as text (the simulator must not be the bottleneck).
        payload = script.payloads[first] if len(frames) == 1 else base64.b64encode(b"".join(frames)).decode()
        self.send_text(self._prefix + self.next_seq() + self._mid + str(first + 1) + '","timestamp":"'
                       + str(first * FRAME_MS) + '","payload":"' + payload + '"}}')

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self.next_seq(),
                "dtmf": {"track": "inbound_track", "digit": digit}}

    def stop_message(self) -> dict[str, Any]:
        return {"event": "stop", "sequenceNumber": self.next_seq(), "streamSid": self.stream_sid,
                "stop": {"accountSid": _ACCOUNT_SID, "callSid": self.call_sid}}

    def stream_mismatch(self, event: str, message: dict[str, Any]) -> str | None:
        if message.get("streamSid") != self.stream_sid:
            return f"{event} for another streamSid {str(message.get('streamSid'))[:40]!r}"
        return None

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "sequenceNumber": self.next_seq(), "streamSid": self.stream_sid,
                "mark": {"name": name}}


def twilio_signature(token: str, url: str) -> str:
    """``X-Twilio-Signature`` of a WebSocket upgrade: base64 HMAC-SHA1 of the URL (no body)."""
    import hashlib
    import hmac

    return base64.b64encode(hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def add_options(parser: argparse.ArgumentParser) -> None:
    add_signing_options(parser, "Twilio", "X-Twilio-Signature")


MODE = SimMode(name="twilio", call=TwilioCall, help="Twilio Media Streams (<Connect><Stream>)",
               default_path="/twilio", add_options=add_options, chunk_ms=20, carries_dtmf=True)
