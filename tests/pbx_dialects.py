"""Realistic messages of the PBX platforms (Asterisk ``chan_websocket``, FreeSWITCH
``mod_audio_stream``), shared by their session, bridge and loopback tests: each dialect builds
what its PBX sends and reads what it is sent back."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import AudioFormat

CHANNEL_ID = "pbx1-1712345678.42"
FS_UUID = "6f1c2a9e-0d1b-4c55-9a3e-2f6b1d7c8e90"

ASTERISK_NAMES = {"pcmu": "ulaw", "pcma": "alaw"}


@dataclass(frozen=True)
class AsteriskDialect:
    """``json``: the call's control message format (``f(json)``) or legacy plain text."""

    fmt: AudioFormat
    json: bool
    name = "asterisk"

    @property
    def format_name(self) -> str:
        if self.fmt.encoding != "l16":
            return ASTERISK_NAMES[self.fmt.encoding]
        return "slin" if self.fmt.rate_hz == 8000 else f"slin{self.fmt.rate_hz // 1000}"

    def event(self, name: str, **fields: Any) -> str:
        if self.json:
            return json.dumps({"event": name, "channel_id": CHANNEL_ID, **fields})
        return " ".join([name] + [f"{k}:{v}" for k, v in fields.items()])

    def media_start(self, **overrides: Any) -> str:
        fields: dict[str, Any] = {"connection_id": "e226e283-c90a-4ea9-9e37-389000b9ef47",
                                  "channel": "WebSocket/media1-00000001", "channel_id": CHANNEL_ID,
                                  "format": self.format_name, "optimal_frame_size": self.fmt.bytes_for_ms(20),
                                  "ptime": 20}
        if self.json:
            fields["channel_variables"] = {"CALLERID": "+15551234", "TENANT": "acme"}
        fields.update(overrides)
        if self.json:
            return json.dumps({"event": "MEDIA_START", **fields})
        return " ".join(["MEDIA_START"] + [f"{k}:{v}" for k, v in fields.items() if v is not None])

    def metadata(self, query: dict[str, str] | None = None) -> dict[str, str]:
        out = dict(query or {})
        if self.json:
            out.update({"CALLERID": "+15551234", "TENANT": "acme"})
        out.update({"connection_id": "e226e283-c90a-4ea9-9e37-389000b9ef47", "channel": "WebSocket/media1-00000001",
                    "channel_id": CHANNEL_ID, "format": self.format_name,
                    "optimal_frame_size": str(self.fmt.bytes_for_ms(20)), "ptime": "20"})
        return out

    def dtmf(self, digit: Any) -> str:
        if self.json:
            return json.dumps({"event": "DTMF_END", "channel_id": CHANNEL_ID, "digit": digit})
        return f"DTMF_END digit:{digit} channel_id:{CHANNEL_ID}"

    def mark_echo(self, name: Any) -> str:
        if self.json:
            return json.dumps({"event": "MEDIA_MARK_PROCESSED", "channel_id": CHANNEL_ID, "correlation_id": name})
        return f"MEDIA_MARK_PROCESSED {name}"

    # what the proxy sends
    def command(self, message: str) -> tuple[str, str | None]:
        """(command, correlation id or None) of an outbound text frame."""
        if self.json:
            parsed = json.loads(message)
            return parsed["command"], parsed.get("correlation_id")
        name, _, rest = message.partition(" ")
        return name, rest or None


@dataclass(frozen=True)
class FreeswitchDialect:
    fmt: AudioFormat
    name = "freeswitch"

    def metadata_text(self) -> str:
        return json.dumps({"uuid": FS_UUID, "caller": "+15551234", "campaign": {"id": 7}})

    def metadata(self) -> dict[str, str]:
        return {"uuid": FS_UUID, "caller": "+15551234", "campaign": '{"id":7}'}

    def dtmf(self, digit: Any) -> str:
        return json.dumps({"event": "dtmf", "digit": digit})

    def audio_of(self, message: str) -> bytes | None:
        """The L16 bytes of an outbound ``streamAudio``, or None for another message."""
        parsed = json.loads(message)
        if parsed.get("type") != "streamAudio":
            return None
        data = parsed["data"]
        assert data["audioDataType"] == "raw" and data["sampleRate"] == self.fmt.rate_hz, data
        return base64.b64decode(data["audioData"])


ASTERISK_SLIN16_JSON = AsteriskDialect(AudioFormat("l16", 16000), json=True)
ASTERISK_SLIN_PLAIN = AsteriskDialect(AudioFormat("l16", 8000), json=False)
ASTERISK_ULAW_JSON = AsteriskDialect(AudioFormat("pcmu", 8000), json=True)
ASTERISK_ULAW_PLAIN = AsteriskDialect(AudioFormat("pcmu", 8000), json=False)
FREESWITCH_8K = FreeswitchDialect(AudioFormat("l16", 8000))
FREESWITCH_16K = FreeswitchDialect(AudioFormat("l16", 16000))


def frame(fmt: AudioFormat, seed: int, ms: int = 20) -> bytes:
    return bytes((seed * 37 + i * 11) % 251 for i in range(fmt.bytes_for_ms(ms)))
