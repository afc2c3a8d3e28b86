"""``mediaproxy-sim twilio``: a Twilio Media Streams call (the platform side of ``<Connect><Stream>``).

It speaks what Twilio sends: ``connected``, ``start`` (a unique ``callSid``/``streamSid``,
``audio/x-mulaw`` 8 kHz mono, ``customParameters``), ``media`` (µ-law, 20 ms per message unless
``--chunk-ms`` says otherwise, with ``chunk`` and ``timestamp``) on the absolute schedule of
:mod:`mediaproxy.sim.caller`, then ``stop``. Toward the proxy it behaves like Twilio's player
(:class:`~mediaproxy.sim.playout.Playout`): ``media`` of any multiple of 20 ms is queued and
played at real time, a ``mark`` is echoed when the audio queued before it has played, ``clear``
empties the queue and echoes every pending mark at once.

What Twilio would not accept is a protocol error: a message without ``event``, a ``media`` or
``mark`` for another ``streamSid``, a payload that is not base64, an event Twilio does not take.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from mediaproxy.sim.caller import SimCall
from mediaproxy.sim.modes import SimMode
from mediaproxy.sim.script import FRAME_MS

__all__ = ["TwilioCall", "MODE"]

_ACCOUNT_SID = "AC" + "0" * 32


class TwilioCall(SimCall):
    """One simulated Twilio call."""

    platform = "twilio"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tag = self.record.call_id.replace("-", "")
        self.call_sid = "CA" + tag.rjust(32, "0")[-32:]
        self.stream_sid = "MZ" + tag.rjust(32, "0")[-32:]
        self.record.call_id = self.call_sid
        self._seq = 0
        self._prefix = '{"event":"media","sequenceNumber":"'
        self._mid = '","streamSid":' + json.dumps(self.stream_sid) + ',"media":{"track":"inbound","chunk":"'

    def upgrade_headers(self) -> dict[str, str]:
        token = getattr(self.options, "auth_token", None)
        if not token:
            return {}
        return {"X-Twilio-Signature": twilio_signature(token, self.options.signed_url or self.url_text)}

    def on_open(self) -> None:
        self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._seq = 1
        self._send({
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "accountSid": _ACCOUNT_SID,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"sim": "1", "call": str(self.record.index)},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        })
        self.begin_script()

    def send_chunk(self, first: int, frames: Sequence[bytes]) -> None:
        script = self.script
        # One frame per message (Twilio's own size): the script's shared base64 text.
        payload = script.payloads[first] if len(frames) == 1 else base64.b64encode(b"".join(frames)).decode()
        self._seq += 1
        self.send_text(self._prefix + str(self._seq) + self._mid + str(first + 1) + '","timestamp":"'
                       + str(first * FRAME_MS) + '","payload":"' + payload + '"}}')

    def end_call(self) -> None:
        self._seq += 1
        self._send({"event": "stop", "sequenceNumber": str(self._seq), "streamSid": self.stream_sid,
                    "stop": {"accountSid": _ACCOUNT_SID, "callSid": self.call_sid}})
        self.hang_up()

    def on_text(self, message: dict[str, Any]) -> None:
        record = self.record
        event = message.get("event")
        record.received[str(event)] += 1
        if event not in ("media", "mark", "clear"):
            self.protocol_error(f"unknown event {str(event)[:40]!r}")
            return
        if message.get("streamSid") != self.stream_sid:
            self.protocol_error(f"{event} for another streamSid {str(message.get('streamSid'))[:40]!r}")
            return
        if event == "media":
            media = message.get("media")
            text = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(text, str):
                self.protocol_error("media without media.payload")
                return
            if self.keep_audio:
                try:
                    self.bot_audio(base64.b64decode(text, validate=True))
                except (binascii.Error, ValueError):
                    self.protocol_error("media payload is not base64")
            else:
                # Not decoded: its size is all the player needs.
                self.bot_audio(len(text) * 3 // 4 - text[-2:].count("="))
        elif event == "mark":
            record.marks_received += 1
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self.protocol_error("mark without mark.name")
                return
            self.playout.mark(name)
        else:
            self.clear_playout()

    def on_mark_due(self, name: str) -> None:
        self.record.marks_echoed += 1
        self._seq += 1
        self._send({"event": "mark", "sequenceNumber": str(self._seq), "streamSid": self.stream_sid,
                    "mark": {"name": name}})

    def _send(self, message: dict[str, object]) -> None:
        self.send_json(message)


def twilio_signature(token: str, url: str) -> str:
    """``X-Twilio-Signature`` of a WebSocket upgrade: base64 HMAC-SHA1 of the URL (no body)."""
    import hashlib
    import hmac

    return base64.b64encode(hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth-token", default=None,
                        help="Twilio auth token: sign the upgrade with X-Twilio-Signature (default: unsigned, "
                             "as etc/mediaproxy.ini accepts)")
    parser.add_argument("--signed-url", default=None,
                        help="the public wss:// URL the proxy checks the signature against ([proxy] public_url "
                             "+ path; default: the URL dialled)")


MODE = SimMode(name="twilio", call=TwilioCall, help="Twilio Media Streams (<Connect><Stream>)",
               default_path="/twilio", add_options=add_options, chunk_ms=20)
