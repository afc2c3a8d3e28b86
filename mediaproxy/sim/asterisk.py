"""``mediaproxy-sim asterisk``: an Asterisk ``chan_websocket`` channel (``Dial(WebSocket/<client>/
c(slin16)f(json))``, the client's ``protocols = media``).

It speaks what Asterisk sends, with JSON control messages (``f(json)``): the upgrade with the
subprotocol ``media`` and the client's ``username``/``password`` (``Authorization: Basic``),
``MEDIA_START`` (``format`` of ``--format``: ``slin16``, ``slin`` or ``ulaw``;
``optimal_frame_size`` of 20 ms, ``channel_variables``), the caller's audio as binary frames
(20 ms), ``DTMF_END`` per key; the call ends with the socket. Toward the proxy it behaves like
the channel driver: binary audio (whole ``optimal_frame_size`` frames, else a protocol error) is
queued and played at real time; ``MARK_MEDIA`` is answered with ``MEDIA_MARK_PROCESSED`` once the
audio before it has played; ``FLUSH_MEDIA`` drops the queue and the marks in it, unanswered;
``HANGUP`` ends the call; ``ANSWER`` is taken.

Flow control is Asterisk's: its queue holds ``--queue-frames`` frames (1000, as Asterisk's);
``MEDIA_XOFF`` goes when it is 90 % full and ``MEDIA_XON`` once it drained below 80 %. At
real-time pacing it never fills; a small queue (``--queue-frames 3``) makes the proxy honour
XOFF on every reply.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from mediaproxy.audio.format import L16_8K, L16_16K, MULAW_8K, AudioFormat
from mediaproxy.sim.binary import BinaryAudioCall
from mediaproxy.sim.jambonz import basic_auth
from mediaproxy.sim.modes import SimMode

__all__ = ["AsteriskCall", "MODE", "DEV_USERNAME", "DEV_PASSWORD", "FORMATS"]

#: The development client credentials of etc/mediaproxy.ini (public, never for a real deployment).
DEV_USERNAME = "mediaproxy-dev"
DEV_PASSWORD = "mediaproxy-dev-asterisk-password"
FORMATS: dict[str, AudioFormat] = {"slin16": L16_16K, "slin": L16_8K, "ulaw": MULAW_8K}
_XOFF_FULL = 0.9
_XON_FULL = 0.8


class AsteriskCall(BinaryAudioCall):
    """One simulated ``chan_websocket`` channel."""

    platform = "asterisk"
    command_key = "command"
    subprotocols = ("media",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel_id = f"sim-{self.record.call_id}"
        self.record.call_id = self.channel_id
        self.frame_bytes = self.audio_format.bytes_for_ms(20)
        self.queue_ms = 20.0 * self.options.queue_frames
        #: Whether MEDIA_XOFF is in force; how often it was sent.
        self.xoff = False
        self.xoffs = 0
        self._xon_call: IDelayedCall | None = None

    @classmethod
    def format_for(cls, options: argparse.Namespace) -> AudioFormat:
        return FORMATS[options.format]

    def upgrade_headers(self) -> dict[str, str]:
        return basic_auth(self.options.username, self.options.password)

    def opening(self) -> list[dict[str, Any]]:
        return [{"event": "MEDIA_START", "connection_id": f"conn-{self.record.index}",
                 "channel": f"WebSocket/mediaproxy-{self.record.index:08x}", "channel_id": self.channel_id,
                 "format": self.options.format, "optimal_frame_size": self.frame_bytes, "ptime": 20,
                 "channel_variables": {"CALLERID(num)": "+15550100001", "SIM": "1"}}]

    def dtmf_messages(self, digits: str) -> list[dict[str, Any]]:
        return [{"event": "DTMF_END", "channel_id": self.channel_id, "digit": digit} for digit in digits]

    def audio_error(self, nbytes: int) -> str | None:
        if not nbytes or nbytes % self.frame_bytes:
            return f"a binary frame of {nbytes} bytes (not whole {self.frame_bytes}-byte frames: Asterisk drops it)"
        return None

    def mark_echo(self, name: str) -> dict[str, Any]:
        return {"event": "MEDIA_MARK_PROCESSED", "channel_id": self.channel_id, "correlation_id": name}

    def play_audio(self, audio: bytes) -> None:
        super().play_audio(audio)
        if not self.xoff and self.playout.queued_ms >= _XOFF_FULL * self.queue_ms - 1e-6:
            self.xoff = True
            self.xoffs += 1
            self.send_json({"event": "MEDIA_XOFF", "channel_id": self.channel_id})
            self._arm_xon()

    def _arm_xon(self) -> None:
        wait_ms = self.playout.queued_ms - _XON_FULL * self.queue_ms
        if wait_ms < 0:
            self._send_xon()
            return
        self._xon_call = self.call_later(wait_ms / 1000.0 + 0.001, self._arm_xon)

    def _send_xon(self) -> None:
        if self._xon_call is not None and self._xon_call.active():
            self._xon_call.cancel()
        self._xon_call = None
        if self.xoff and self.live is not None:
            self.xoff = False
            self.send_json({"event": "MEDIA_XON", "channel_id": self.channel_id})

    def do_MARK_MEDIA(self, message: dict[str, Any]) -> None:
        self.mark_received(message.get("correlation_id"))

    def do_FLUSH_MEDIA(self, message: dict[str, Any]) -> None:
        self.clear_playout(report_marks=False)
        self._send_xon()

    def do_HANGUP(self, message: dict[str, Any]) -> None:
        self.bot_ended("HANGUP")

    def do_ANSWER(self, message: dict[str, Any]) -> None:
        pass  # the channel is answered; nothing else changes here


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", default=DEV_USERNAME,
                        help=f"websocket_client.conf username (default: etc/mediaproxy.ini's development value, "
                             f"{DEV_USERNAME}; '' sends no Authorization)")
    parser.add_argument("--password", default=DEV_PASSWORD,
                        help=f"websocket_client.conf password (default: the development value, {DEV_PASSWORD})")
    parser.add_argument("--format", default="slin16", choices=sorted(FORMATS),
                        help="the channel's format, the dial string's c(...) (default slin16)")
    parser.add_argument("--queue-frames", type=int, default=1000,
                        help="frames Asterisk's queue holds: MEDIA_XOFF at 90 %%, MEDIA_XON below 80 %% "
                             "(default 1000, as Asterisk)")


MODE = SimMode(name="asterisk", call=AsteriskCall, help="Asterisk chan_websocket (f(json) control messages)",
               default_path="/asterisk", add_options=add_options, chunk_ms=20, carries_dtmf=True)
