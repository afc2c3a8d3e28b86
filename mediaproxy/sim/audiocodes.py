"""``mediaproxy-sim audiocodes``: an AudioCodes VoiceAI Connect conversation (Bot API, streaming).

It speaks what VAIC sends, in the SDK's shapes: the upgrade with ``Authorization: Bearer``,
``session.initiate`` (``expectAudioMessages``, the offered ``supportedMediaFormats``), the
``start`` activity, ``userStream.start`` and, once ``userStream.started`` came, caller audio as
base64 ``userStream.chunk`` (100 ms each unless ``--chunk-ms``); at the end ``userStream.stop``
and ``session.end``. Toward the proxy it behaves like VAIC:

* ``playStream.start`` / ``chunk`` / ``stop``: the chunks are played at real time; at most one
  stream open, chunks only inside it, in the accepted format. A stop ends the stream (what is
  held still plays), except after barge-in: ``userStream.speech.started`` during the stream, then
  its stop, drops what VAIC holds (a clear).
* Barge-in is VAIC's setting: on when the ``config`` activity says ``bargeIn: true`` (or
  ``--vaic-barge-in``, the bot connection's toggle); while it is off VAIC withholds caller audio
  while a play stream is open (counted as withheld frames).
* The ``hangup`` and ``transfer`` activities end the conversation (``session.end``);
  ``session.error`` is the bot refusing it (the call ends; not a completed call).
* ``--resume-at-ms``: the socket drops that far into the script and VAIC dials again with
  ``session.resume``; caller audio due meanwhile is lost, and the user stream starts again.
"""

from __future__ import annotations

import argparse
import base64
import binascii
from collections.abc import Sequence
from typing import Any

from mediaproxy.audio.format import L16_8K, L16_16K, MULAW_8K, AudioFormat
from mediaproxy.sim.caller import SimCall
from mediaproxy.sim.modes import SimMode

__all__ = ["VaicCall", "MODE", "MEDIA_FORMATS", "DEV_TOKEN"]

#: The development token of etc/mediaproxy.ini (public, never for a real deployment).
DEV_TOKEN = "mediaproxy-dev-token"
MEDIA_FORMATS: dict[str, AudioFormat] = {"raw/mulaw": MULAW_8K, "raw/lpcm16_8": L16_8K, "raw/lpcm16": L16_16K}
_KNOWN_TYPES = frozenset({
    "session.accepted", "session.error", "connection.validated", "userStream.started", "userStream.stopped",
    "userStream.speech.started", "userStream.speech.stopped", "userStream.speech.committed",
    "userStream.speech.hypothesis", "userStream.speech.recognition", "playStream.start", "playStream.chunk",
    "playStream.stop", "activities",
})


class VaicCall(SimCall):
    """One simulated VoiceAI Connect conversation."""

    platform = "audiocodes"

    def __init__(self, url: str, script: Any, clock: Any, index: int, start_at: float,
                 options: argparse.Namespace, *args: Any, **kwargs: Any) -> None:
        self.audio_format = MEDIA_FORMATS[options.media_format]
        super().__init__(url, script, clock, index, start_at, options, *args, **kwargs)
        self.conversation_id = f"sim-{self.record.call_id}"
        self.record.call_id = self.conversation_id
        self.barge_in_enabled = bool(options.vaic_barge_in)
        self._stream: str | None = None
        self._speech_in_stream = False
        self._accepted = False
        self._resuming = False
        self._resumed = False
        self._lost_until = 0.0

    def upgrade_headers(self) -> dict[str, str]:
        token = self.options.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _send(self, message: dict[str, Any]) -> None:
        self.send_json({**message, "conversationId": self.conversation_id})

    def on_open(self) -> None:
        if self._resuming:
            self._send({"type": "session.resume"})
            return
        self._send({"type": "session.initiate", "botName": "mediaproxy-sim", "caller": "+14155550123",
                    "expectAudioMessages": True, "supportedMediaFormats": [self.options.media_format]})

    def send_chunk(self, first: int, frames: Sequence[bytes]) -> None:
        self._send({"type": "userStream.chunk", "audioChunk": base64.b64encode(b"".join(frames)).decode()})

    def withhold(self, first: int) -> bool:
        if self._due_at(first) < self._lost_until:
            return True  # due while the socket was down: gone
        return self._stream is not None and not self.barge_in_enabled

    def end_call(self) -> None:
        self._send({"type": "userStream.stop"})
        self._send({"type": "session.end", "reasonCode": "client-disconnected", "reason": "the script ended"})
        self.hang_up()

    # --- receiving --------------------------------------------------------------------------------

    def on_text(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.record.received[str(kind)] += 1
        if kind not in _KNOWN_TYPES:
            self.protocol_error(f"unknown message type {str(kind)[:40]!r}")
            return
        handler = getattr(self, "_on_" + str(kind).replace(".", "_"), None)
        if handler is not None:
            handler(message)

    def _on_session_accepted(self, message: dict[str, Any]) -> None:
        if self._resuming:
            self._resuming = False
            self._resumed = True
            self._send({"type": "userStream.start"})
            return
        if self._accepted:
            self.protocol_error("a second session.accepted")
            return
        self._accepted = True
        if message.get("mediaFormat") != self.options.media_format:
            self.protocol_error(f"session.accepted with mediaFormat {message.get('mediaFormat')!r}, "
                                f"offered {self.options.media_format!r}")
        self._send({"type": "activities", "activities": [
            {"type": "event", "name": "start", "id": "start-1", "parameters": {"sim": "1"}}]})
        self._send({"type": "userStream.start"})

    def _on_session_error(self, message: dict[str, Any]) -> None:
        self.record.close_reason = f"session.error {str(message.get('reason'))[:60]}"
        self.hang_up()

    def _on_userStream_started(self, message: dict[str, Any]) -> None:
        self.begin_script()

    def _on_userStream_speech_started(self, message: dict[str, Any]) -> None:
        if self._stream is not None:
            self._speech_in_stream = True

    def _on_playStream_start(self, message: dict[str, Any]) -> None:
        stream = message.get("streamId")
        if self._stream is not None:
            self.protocol_error(f"playStream.start {stream!r} while {self._stream!r} is open")
        if message.get("mediaFormat") != self.options.media_format:
            self.protocol_error(f"playStream.start in {message.get('mediaFormat')!r}")
        self._stream = str(stream)
        self._speech_in_stream = False

    def _on_playStream_chunk(self, message: dict[str, Any]) -> None:
        if self._stream is None or message.get("streamId") != self._stream:
            self.protocol_error(f"playStream.chunk for {message.get('streamId')!r}, open: {self._stream!r}")
            return
        text = message.get("audioChunk")
        try:
            audio = base64.b64decode(text if isinstance(text, str) else "", validate=True)
        except (binascii.Error, ValueError):
            self.protocol_error("playStream.chunk audioChunk is not base64")
            return
        self.bot_audio(audio)

    def _on_playStream_stop(self, message: dict[str, Any]) -> None:
        if self._stream is None or message.get("streamId") != self._stream:
            self.protocol_error(f"playStream.stop for {message.get('streamId')!r}, open: {self._stream!r}")
        elif self._speech_in_stream and self.barge_in_enabled:
            self.clear_playout()  # barge-in: VAIC drops what it holds of the stream
        self._stream = None
        self._speech_in_stream = False

    def _on_activities(self, message: dict[str, Any]) -> None:
        activities = message.get("activities")
        if not isinstance(activities, list):
            self.protocol_error("activities without a list")
            return
        for activity in activities:
            name = activity.get("name") if isinstance(activity, dict) else None
            self.record.received[f"activity:{name}"] += 1
            if name == "config":
                params = activity.get("sessionParams")
                if isinstance(params, dict) and "bargeIn" in params:
                    self.barge_in_enabled = bool(params["bargeIn"])
            elif name in ("hangup", "transfer"):
                self.record.close_reason = f"{name} by the bot"
                self._send({"type": "session.end", "reasonCode": name, "reason": f"the bot's {name}"})
                self.hang_up()
            elif name != "sendDtmf":
                self.protocol_error(f"an activity VAIC does not take: {str(activity)[:80]}")

    # --- resume -------------------------------------------------------------------------------------

    def _send_due(self) -> None:
        at = self.options.resume_at_ms
        if at is not None and not self._resumed and not self._resuming and self.script_position_ms >= at:
            self._drop_and_resume()
            return
        super()._send_due()

    def _drop_and_resume(self) -> None:
        live = self.live
        self._resuming = True
        self.live = None  # its close is no hang-up
        self._send_call = None
        if live is not None and live.transport is not None:
            live.transport.abortConnection()  # type: ignore[attr-defined]
        # The outage lasts until the new socket's user stream starts: what was due is lost.
        self._lost_until = float("inf")
        self.clock.callLater(0.05, self.dial)

    def _on_userStream_stopped(self, message: dict[str, Any]) -> None:
        pass

    def begin_script(self) -> None:
        if self._lost_until == float("inf"):
            self._lost_until = self.clock.seconds()
        super().begin_script()


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", default=DEV_TOKEN,
                        help=f"the bot's token, sent as Authorization: Bearer (default: etc/mediaproxy.ini's "
                             f"development token, {DEV_TOKEN}; '' sends none)")
    parser.add_argument("--media-format", default="raw/mulaw", choices=sorted(MEDIA_FORMATS),
                        help="the one format offered in supportedMediaFormats (default raw/mulaw)")
    parser.add_argument("--vaic-barge-in", action="store_true",
                        help="barge-in on at VAIC from the start (the bot connection's toggle); default: only "
                             "when the proxy's config activity turns it on")
    parser.add_argument("--resume-at-ms", type=int, default=None,
                        help="drop the socket this far into the script and resume (default: never)")


MODE = SimMode(name="audiocodes", call=VaicCall, help="AudioCodes VoiceAI Connect / Live Hub (Bot API streaming)",
               default_path="/audiocodes", add_options=add_options, chunk_ms=100)
