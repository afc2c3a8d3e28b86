"""``mediaproxy-sim freeswitch``: a FreeSWITCH ``mod_audio_stream`` stream
(``uuid_audio_stream <uuid> start ws://.../freeswitch?uuid=<uuid> mono 16k <metadata>``).

It speaks what the module sends: the upgrade to the command's URL (with ``?uuid=`` and, since
the rate is not said on the socket, the ``sample_rate`` query parameter the proxy reads) and the
``STREAM_EXTRA_HEADERS`` ``Authorization``; the command's metadata as the first text frame (JSON);
the caller's L16 as binary frames (20 ms, ``STREAM_BUFFER_SIZE``); DTMF by the proxy's
convention, ``{"event": "dtmf", "digit": ...}`` per key (an application forwarding digits with
``send_text``); the stream ends with the socket. Toward the proxy it behaves like the module plus
an application that plays each ``streamAudio`` file in order as it arrives (raw L16 at the
call's rate, else a protocol error) and stops the playback on ``killAudio`` (``uuid_break``).
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from mediaproxy.sim.binary import BinaryAudioCall, add_rate_option
from mediaproxy.sim.modes import SimMode

__all__ = ["FreeswitchCall", "MODE", "DEV_AUTHORIZATION"]

#: The development authorization value of etc/mediaproxy.ini (public, never for a real deployment).
DEV_AUTHORIZATION = "Bearer mediaproxy-dev-freeswitch-token"


class FreeswitchCall(BinaryAudioCall):
    """One simulated ``uuid_audio_stream``."""

    platform = "freeswitch"

    def __init__(self, url: str, script: Any, clock: Any, index: int, start_at: float,
                 options: argparse.Namespace, *args: Any, **kwargs: Any) -> None:
        self.channel_uuid = str(uuid.uuid4())
        url += ("&" if "?" in url else "?") + f"uuid={self.channel_uuid}&sample_rate={options.rate}"
        super().__init__(url, script, clock, index, start_at, options, *args, **kwargs)
        self.record.call_id = self.channel_uuid

    def upgrade_headers(self) -> dict[str, str]:
        value = self.options.authorization
        return {"Authorization": value} if value else {}

    def opening(self) -> list[dict[str, Any]]:
        return [{"uuid": self.channel_uuid, "caller": "+15550100001", "sim": "1", "call": str(self.record.index)}]

    def dtmf_messages(self, digits: str) -> list[dict[str, Any]]:
        return [{"event": "dtmf", "digit": digit} for digit in digits]

    def on_binary(self, payload: bytes) -> None:
        self.protocol_error("a binary frame (mod_audio_stream takes bot audio as streamAudio)")

    def do_streamAudio(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if not isinstance(data, dict) or data.get("audioDataType") != "raw" \
                or data.get("sampleRate") != self.audio_format.rate_hz:
            self.protocol_error(f"streamAudio not raw L16 at {self.audio_format.rate_hz} Hz: {str(data)[:80]}")
            return
        audio = self.decode_audio(data.get("audioData"), "streamAudio audioData")
        if audio is not None:
            self.play_audio(audio)

    def do_killAudio(self, message: dict[str, Any]) -> None:
        self.clear_playout()


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--authorization", default=DEV_AUTHORIZATION,
                        help=f"the Authorization of STREAM_EXTRA_HEADERS (default: etc/mediaproxy.ini's development "
                             f"value, {DEV_AUTHORIZATION!r}; '' sends none)")
    add_rate_option(parser, (8000, 16000), 16000)


MODE = SimMode(name="freeswitch", call=FreeswitchCall, help="FreeSWITCH mod_audio_stream (best effort)",
               default_path="/freeswitch", add_options=add_options, chunk_ms=20, carries_dtmf=True)
