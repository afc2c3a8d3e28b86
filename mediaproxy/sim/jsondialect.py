"""`JsonDialectCall`: what every Twilio-dialect platform does, for the simulator's modes.

Twilio Media Streams and its cousins (Telnyx, Plivo, Exotel) carry everything in JSON text
frames: the caller's audio as base64 ``media`` events (numbered), DTMF as one ``dtmf`` event per
key, the end of the stream as ``stop``. Toward the proxy each behaves like Twilio's player
(:class:`~mediaproxy.sim.playout.Playout`): base64 audio events are queued and played at real
time, a mark is answered when the audio queued before it has played, a clear empties the queue
(and answers the pending marks at once, where the platform does). They differ only in names and
field shapes, which a mode gives as class attributes and small builders; anything else the proxy
sends is a protocol error.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Sequence
from typing import Any

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.sim.caller import SimCall
from mediaproxy.sim.script import FRAME_MS

__all__ = ["JsonDialectCall", "media_payload", "mark_name", "add_signing_options"]


def media_payload(message: dict[str, Any]) -> object:
    """``media.payload`` (Twilio, Telnyx, Plivo, Exotel all nest it so)."""
    media = message.get("media")
    return media.get("payload") if isinstance(media, dict) else None


def mark_name(message: dict[str, Any]) -> object:
    """``mark.name`` (Plivo's checkpoint has a top-level ``name`` instead)."""
    mark = message.get("mark")
    return mark.get("name") if isinstance(mark, dict) else None


class JsonDialectCall(SimCall):
    """One call of a Twilio-dialect platform; a mode sets the names and writes the builders."""

    #: The proxy's events: bot audio, a mark to answer, a clear.
    media_event = "media"
    mark_event = "mark"
    clear_event = "clear"
    #: Whether a clear answers the marks it dropped (Twilio, Telnyx: yes; Plivo: no).
    marks_answered_on_clear = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seq = 0

    # --- what a mode writes ---------------------------------------------------------------------

    def opening(self) -> list[dict[str, Any]]:
        """What the platform sends once the socket is open (``connected``, ``start``)."""
        raise NotImplementedError

    def media_message(self, first: int, payload: str) -> dict[str, Any]:
        """The ``media`` event carrying script frames ``first ...`` (``payload``: their base64)."""
        raise NotImplementedError

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        """The event of one key press."""
        raise NotImplementedError

    def mark_echo(self, name: str) -> dict[str, Any]:
        """The answer to a mark whose audio has played."""
        raise NotImplementedError

    def stop_message(self) -> dict[str, Any] | None:
        """The end-of-stream event (None: the platform just closes the socket)."""
        return None

    def stream_mismatch(self, event: str, message: dict[str, Any]) -> str | None:
        """Why the platform would not take ``message`` for this stream (a wrong stream id), or None."""
        return None

    def mark_name(self, message: dict[str, Any]) -> object:
        return mark_name(message)

    def audio_error(self, nbytes: int) -> str | None:
        """Why the platform would refuse a message of ``nbytes`` of bot audio, or None."""
        return None

    # --- the shared behaviour -----------------------------------------------------------------------

    def next_seq(self) -> str:
        """The next ``sequence_number`` (1 for the first message that carries one)."""
        self._seq += 1
        return str(self._seq)

    def on_open(self) -> None:
        for message in self.opening():
            self.send_json(message)
        self.begin_script()

    def send_chunk(self, first: int, frames: Sequence[bytes]) -> None:
        if len(frames) == 1 and self.audio_format == MULAW_8K:
            payload = self.script.payloads[first]  # computed once per script, shared by every call
        else:
            payload = base64.b64encode(b"".join(frames)).decode()
        self.send_json(self.media_message(first, payload))

    @staticmethod
    def media_fields(first: int, payload: str) -> dict[str, str]:
        """The ``chunk``/``timestamp``/``payload`` of the media object (chunk counts from 1)."""
        return {"chunk": str(first + 1), "timestamp": str(first * FRAME_MS), "payload": payload}

    def send_dtmf(self, digits: str) -> None:
        for digit in digits:
            self.send_json(self.dtmf_message(digit))

    def end_call(self) -> None:
        stop = self.stop_message()
        if stop is not None:
            self.send_json(stop)
        self.hang_up()

    def on_text(self, message: dict[str, Any]) -> None:
        record = self.record
        event = message.get("event")
        record.received[str(event)] += 1
        if event not in (self.media_event, self.mark_event, self.clear_event):
            self.protocol_error(f"unknown event {str(event)[:40]!r}")
            return
        mismatch = self.stream_mismatch(event, message)
        if mismatch is not None:
            self.protocol_error(mismatch)
            return
        if event == self.media_event:
            self._media(message)
        elif event == self.mark_event:
            record.marks_received += 1
            name = self.mark_name(message)
            if not isinstance(name, str):
                self.protocol_error(f"{event} without a name")
                return
            self.playout.mark(name)
        else:
            self.clear_playout(self.marks_answered_on_clear)

    def _media(self, message: dict[str, Any]) -> None:
        text = media_payload(message)
        if not isinstance(text, str):
            self.protocol_error(f"{self.media_event} without media.payload")
            return
        nbytes = len(text) * 3 // 4 - text[-2:].count("=")
        error = self.audio_error(nbytes)
        if error is not None:
            self.protocol_error(error)
            return
        if self.keep_audio:
            audio = self.decode_audio(text, f"{self.media_event} payload")
            if audio is not None:
                self.bot_audio(audio)
        else:
            self.bot_audio(nbytes)  # not decoded: its size is all the player needs

    def on_mark_due(self, name: str) -> None:
        self.record.marks_echoed += 1
        self.send_json(self.mark_echo(name))


def add_signing_options(parser: argparse.ArgumentParser, vendor: str, header: str) -> None:
    """``--auth-token`` and ``--signed-url``: a platform that signs its upgrade over the URL."""
    parser.add_argument("--auth-token", default=None,
                        help=f"{vendor} auth token: sign the upgrade with {header} (default: unsigned, "
                             "as etc/mediaproxy.ini accepts)")
    parser.add_argument("--signed-url", default=None,
                        help="the public wss:// URL the proxy checks the signature against ([proxy] public_url "
                             "+ path; default: the URL dialled)")
