"""``mediaproxy-sim plivo``: a Plivo Audio Streams call (``<Stream bidirectional="true"
keepCallAlive="true">``).

It speaks what Plivo sends: ``start`` first (there is no ``connected``: ``callId``, ``streamId``,
``mediaFormat`` µ-law 8 kHz or, with ``--content-type``, L16 8/16 kHz, ``extra_headers``),
numbered ``media`` of 20 ms, ``dtmf`` per key; the stream ends with the socket (Plivo sends no
stop). Toward the proxy it behaves like Plivo's player: ``playAudio`` is queued and played at
real time in the format of its ``contentType``, a ``checkpoint`` is answered with
``playedStream`` once the audio before it has played, ``clearAudio`` drops the queue and is
answered with ``clearedAudio``; the checkpoints it dropped are never answered. With
``--auth-token`` the upgrade carries ``X-Plivo-Signature-V3`` (etc/mediaproxy.ini needs none).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

from mediaproxy.audio.format import L16_8K, L16_16K, MULAW_8K, AudioFormat
from mediaproxy.sim.jsondialect import JsonDialectCall, add_signing_options
from mediaproxy.sim.modes import SimMode

__all__ = ["PlivoCall", "MODE", "CONTENT_TYPES"]

CONTENT_TYPES: dict[str, AudioFormat] = {"audio/x-mulaw;rate=8000": MULAW_8K, "audio/x-l16;rate=8000": L16_8K,
                                         "audio/x-l16;rate=16000": L16_16K}


class PlivoCall(JsonDialectCall):
    """One simulated Plivo stream."""

    platform = "plivo"
    media_event = "playAudio"
    mark_event = "checkpoint"
    clear_event = "clearAudio"
    marks_answered_on_clear = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_id = f"sim-call-{self.record.call_id}"
        self.stream_id = f"sim-stream-{self.record.call_id}"
        self.record.call_id = self.call_id
        self.encoding = self.options.content_type.split(";")[0]

    @classmethod
    def format_for(cls, options: argparse.Namespace) -> AudioFormat:
        return CONTENT_TYPES[options.content_type]

    def upgrade_headers(self) -> dict[str, str]:
        token = self.options.auth_token
        if not token:
            return {}
        nonce = f"{self.record.index:012d}"
        return {"X-Plivo-Signature-V3": plivo_signature_v3(token, self.options.signed_url or self.url_text, nonce),
                "X-Plivo-Signature-V3-Nonce": nonce}

    def opening(self) -> list[dict[str, Any]]:
        return [{"event": "start", "sequenceNumber": int(self.next_seq()), "extra_headers": "sim=1",
                 "start": {"callId": self.call_id, "streamId": self.stream_id, "accountId": "MA_SIM",
                           "tracks": ["inbound"],
                           "mediaFormat": {"encoding": self.encoding, "sampleRate": self.audio_format.rate_hz}}}]

    def media_message(self, first: int, payload: str) -> dict[str, Any]:
        return {"event": "media", "sequenceNumber": int(self.next_seq()), "streamId": self.stream_id,
                "media": {"track": "inbound", **self.media_fields(first, payload)}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "sequenceNumber": int(self.next_seq()), "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit}}

    def mark_name(self, message: dict[str, Any]) -> object:
        return message.get("name")

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"event": "playedStream", "sequenceNumber": int(self.next_seq()), "streamId": self.stream_id,
                "name": name}

    def stream_mismatch(self, event: str, message: dict[str, Any]) -> str | None:
        if event == "playAudio":
            media = message.get("media")
            fmt = (media.get("contentType"), media.get("sampleRate")) if isinstance(media, dict) else None
            if fmt != (self.encoding, self.audio_format.rate_hz):
                return f"playAudio in {fmt!r}, the stream is {self.encoding} {self.audio_format.rate_hz}"
            return None
        if message.get("streamId") != self.stream_id:
            return f"{event} for another streamId {str(message.get('streamId'))[:40]!r}"
        return None

    def on_text(self, message: dict[str, Any]) -> None:
        super().on_text(message)
        if message.get("event") == "clearAudio" and message.get("streamId") == self.stream_id:
            self.send_json({"event": "clearedAudio", "sequenceNumber": int(self.next_seq()),
                            "streamId": self.stream_id})


def plivo_signature_v3(token: str, url: str, nonce: str) -> str:
    """``X-Plivo-Signature-V3``: base64 HMAC-SHA256 of the URL (query sorted) + ``.`` + nonce."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    if parts.query:
        base += "?" + "&".join(sorted(parts.query.split("&")))
    digest = hmac.new(token.encode(), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--content-type", default="audio/x-mulaw;rate=8000", choices=sorted(CONTENT_TYPES),
                        help="the <Stream contentType> (default audio/x-mulaw;rate=8000)")
    add_signing_options(parser, "Plivo", "X-Plivo-Signature-V3")


MODE = SimMode(name="plivo", call=PlivoCall, help="Plivo Audio Streams (bidirectional <Stream>)",
               default_path="/plivo", add_options=add_options, chunk_ms=20, carries_dtmf=True)
