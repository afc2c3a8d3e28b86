"""`BinaryAudioCall`: what every binary-audio platform does, for the simulator's modes.

Vonage, jambonz, Asterisk, FreeSWITCH and the generic WebSocket carry the caller's audio as raw
binary frames (L16 or G.711, 20 ms each unless ``--chunk-ms``) and everything else as JSON text
frames: a hello first (``websocket:connected``, the call's metadata, ``MEDIA_START``,
``start``), DTMF, answers to the proxy's marks. The proxy's audio comes back as binary frames
(FreeSWITCH: base64 in JSON) and is played at real time
(:class:`~mediaproxy.sim.playout.Playout`). The proxy's commands are JSON objects named by one
key (``action``, ``type``, ``command``): a mode answers each in a method ``do_<name>``; any
other is a protocol error.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from mediaproxy.audio.format import AudioFormat
from mediaproxy.sim.caller import SimCall

__all__ = ["BinaryAudioCall", "add_rate_option"]


class BinaryAudioCall(SimCall):
    """One call of a binary-audio platform; a mode writes the hello, the DTMF and the answers."""

    #: The key that names the proxy's commands in its JSON messages.
    command_key = "type"
    #: WebSocket subprotocols the platform offers (and needs selected).
    subprotocols: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocols = list(self.subprotocols)

    @classmethod
    def format_for(cls, options: argparse.Namespace) -> AudioFormat:
        """The call's audio format (default: L16 at ``--rate``)."""
        return AudioFormat("l16", int(options.rate))

    # --- what a mode writes ---------------------------------------------------------------------

    def opening(self) -> list[dict[str, Any]]:
        """The JSON messages the platform sends once the socket is open."""
        return []

    def dtmf_messages(self, digits: str) -> list[dict[str, Any]]:
        """The messages of the caller pressing ``digits`` (one per key, where the platform says so)."""
        raise NotImplementedError

    def mark_echo(self, name: str) -> dict[str, Any]:
        """The answer to a mark whose audio has played."""
        raise NotImplementedError

    def audio_error(self, nbytes: int) -> str | None:
        """Why the platform would refuse a bot audio frame of ``nbytes``, or None (default: it must
        hold whole samples)."""
        if nbytes % self.audio_format.frame_bytes:
            return f"a bot audio frame of {nbytes} bytes is not whole samples"
        return None

    # --- the shared behaviour -----------------------------------------------------------------------

    def on_open(self) -> None:
        if self.subprotocols and self.live is not None \
                and self.live.websocket_protocol_in_use not in self.subprotocols:
            self.protocol_error(f"the proxy selected subprotocol {self.live.websocket_protocol_in_use!r}, "
                                f"offered {self.subprotocols}")
        for message in self.opening():
            self.send_json(message)
        self.begin_script()

    def send_chunk(self, first: int, frames: Sequence[bytes]) -> None:
        self.send_binary(b"".join(frames))

    def send_dtmf(self, digits: str) -> None:
        for message in self.dtmf_messages(digits):
            self.send_json(message)

    def on_binary(self, payload: bytes) -> None:
        self.play_audio(payload)

    def play_audio(self, audio: bytes) -> None:
        """Bot audio for the player, if the platform takes it."""
        error = self.audio_error(len(audio))
        if error is not None:
            self.protocol_error(error)
            return
        self.bot_audio(audio)

    def on_text(self, message: dict[str, Any]) -> None:
        kind = message.get(self.command_key)
        self.record.received[str(kind)] += 1
        handler = getattr(self, f"do_{kind}", None) if isinstance(kind, str) else None
        if handler is None:
            self.protocol_error(f"a message the platform does not take: {str(message)[:80]}")
            return
        handler(message)

    def mark_received(self, name: object) -> None:
        """A mark from the proxy: answered when the audio before it has played."""
        self.record.marks_received += 1
        if not isinstance(name, str):
            self.protocol_error(f"a mark without a name: {name!r:.40}")
            return
        self.playout.mark(name)

    def on_mark_due(self, name: str) -> None:
        self.record.marks_echoed += 1
        self.send_json(self.mark_echo(name))

    def bot_ended(self, what: str) -> None:
        """The proxy ended the call (a bot hang-up): the platform closes its side (unless the
        call was already ending, ours or theirs)."""
        if self.record.close_reason:
            return
        self.record.close_reason = f"{what} by the proxy"
        self.hang_up()


def add_rate_option(parser: argparse.ArgumentParser, rates: Sequence[int], default: int) -> None:
    """``--rate``: the L16 rate of the call."""
    parser.add_argument("--rate", type=int, default=default, choices=rates,
                        help=f"L16 sample rate of the call, Hz (default {default})")
