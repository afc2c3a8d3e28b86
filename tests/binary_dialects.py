"""Realistic messages of the binary-audio platforms (Vonage WebSockets, jambonz ``listen``),
shared by their session, bridge and loopback tests: each :class:`BinaryDialect` builds what its
vendor sends and reads what it is sent back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import AudioFormat

CALL_ID = "call-1"


@dataclass(frozen=True)
class BinaryDialect:
    name: str
    fmt: AudioFormat
    flush_event: str
    """The outbound clear, as ``kind`` of :meth:`kind_of`."""

    def opening(self, **overrides: Any) -> dict[str, Any]:
        if self.name == "vonage":
            message: dict[str, Any] = {"event": "websocket:connected",
                                       "content-type": f"audio/l16;rate={self.fmt.rate_hz}",
                                       "uuid": CALL_ID, "language": "en-GB", "age": 40}
        else:
            message = {"callSid": CALL_ID, "from": "+1", "to": "+2", "direction": "inbound",
                       "sampleRate": self.fmt.rate_hz, "mixType": "mono", "tenant": "acme",
                       "customerData": {"a": 1}}
        message.update(overrides)
        return message

    def metadata(self) -> dict[str, str]:
        if self.name == "vonage":
            return {"uuid": CALL_ID, "language": "en-GB", "age": "40"}
        return {"callSid": CALL_ID, "from": "+1", "to": "+2", "direction": "inbound", "tenant": "acme",
                "customerData": '{"a":1}'}

    def dtmf(self, digit: Any) -> dict[str, Any]:
        if self.name == "vonage":
            return {"event": "websocket:dtmf", "digit": digit, "duration": 260}
        return {"event": "dtmf", "dtmf": digit, "duration": 1600}

    def mark_echo(self, name: Any) -> dict[str, Any]:
        if self.name == "vonage":
            return {"event": "websocket:notify", "payload": {"name": name}}
        return {"type": "mark", "data": {"name": name, "event": "playout"}}

    # what the proxy sends (text frames parsed)
    def kind_of(self, message: dict[str, Any]) -> str:
        """``mark``, ``clear``, ``disconnect`` or the raw action/type."""
        if self.name == "vonage":
            return {"notify": "mark"}.get(message["action"], message["action"])
        return {"killAudio": "clear"}.get(message["type"], message["type"])

    def mark_name(self, message: dict[str, Any]) -> str:
        return str(message["payload"]["name"] if self.name == "vonage" else message["data"]["name"])


VONAGE_16K = BinaryDialect("vonage", AudioFormat("l16", 16000), "clear")
VONAGE_8K = BinaryDialect("vonage", AudioFormat("l16", 8000), "clear")
JAMBONZ_8K = BinaryDialect("jambonz", AudioFormat("l16", 8000), "clear")
JAMBONZ_16K = BinaryDialect("jambonz", AudioFormat("l16", 16000), "clear")


def text(message: Any) -> str:
    return json.dumps(message)


def frame(fmt: AudioFormat, seed: int, ms: int = 20) -> bytes:
    return bytes((seed * 37 + i * 11) % 251 for i in range(fmt.bytes_for_ms(ms)))
