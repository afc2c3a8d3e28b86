"""Telnyx Media Streaming, bidirectional RTP mode (Call Control ``streaming_start`` / TeXML
``<Stream>``), as a sans-IO session.

Protocol (JSON text frames; summary in docs/protocols/telnyx.md):

    Telnyx → us   connected {version}
                  start     {sequence_number, stream_id, start: {call_control_id, call_session_id,
                             from, to, client_state, custom_parameters,
                             media_format: {encoding: PCMU|PCMA|L16, sample_rate, channels}}}
                  media     {sequence_number, stream_id, media: {track, chunk, timestamp,
                             payload: base64 RTP payload, no header}}
                  dtmf      {stream_id, dtmf: {digit}}
                  mark      {stream_id, mark: {name}}   (playback reached our mark, or a clear
                                                         flushed it)
                  error     {stream_id, payload: {code, title, detail}}
                  stop      {stream_id, stop: {call_control_id, ...}}
    us → Telnyx   media {media: {payload}}, mark {mark: {name}}, clear

Telnyx queues what it is sent and plays it in order (``stream_bidirectional_mode: rtp``); ``clear``
drops the queue and returns every pending mark, so the playout tags marks with a generation, as
for Twilio. The bot audio must be in the codec and rate the call streams in: set
``bidirectional_codec`` and ``bidirectional_sampling_rate`` to the ``stream_codec`` and rate the
``start`` announces (the session sends back what ``start`` said).

Authentication: Telnyx does not sign the WebSocket upgrade (its Ed25519 signatures cover HTTP
webhooks only). When ``stream_auth_token`` is configured, the upgrade must carry it in the
``x-telnyx-streaming-auth-token`` header (Telnyx sends the token set with ``stream_auth_token`` on
``streaming_start``); it is compared in constant time.

Any malformed input ends the session with a :class:`ProtocolViolation` (the glue closes the
socket); an ``event`` we do not know is counted (:class:`MessageIgnored`) and the call goes on.
Telnyx's own ``error`` frames are reported as :class:`PlatformError` (code ``stream_error``).
"""

from __future__ import annotations

import hmac
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import ALAW_8K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.options import choice, integer, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    PlatformCapabilities,
    PlatformError,
    PlatformEvent,
    PlatformType,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MediaStreamSession, MediaTemplate, json_string

L16_RATES = (8000, 16000, 24000, 48000)
"""The L16 rates accepted (Telnyx also offers 22050 Hz, which is not a whole number of samples
per ms)."""


@dataclass(frozen=True, kw_only=True)
class TelnyxOptions:
    """The keys of a ``[platform:NAME] type = telnyx`` section."""

    stream_auth_token: str = option(text, "", "the stream_auth_token given to streaming_start; when set, the "
                                    "upgrade must carry it in x-telnyx-streaming-auth-token")
    max_frame_ms: int = option(integer(20, 1000), 200, "largest inbound media payload accepted, in ms")
    l16_byte_order: str = option(choice("little", "big"), "little",
                                 "byte order of L16 payloads on the wire (little or big endian)")


def check_upgrade(request: UpgradeRequest, options: TelnyxOptions, now: float) -> None:
    """Require ``x-telnyx-streaming-auth-token`` to equal ``stream_auth_token`` when it is set."""
    token = options.stream_auth_token
    if not token:
        return
    given = request.headers.get("x-telnyx-streaming-auth-token", "")
    if not given:
        raise UpgradeRefused(401, "missing x-telnyx-streaming-auth-token")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise UpgradeRefused(401, "bad x-telnyx-streaming-auth-token")


def new_session(options: TelnyxOptions, formats: FormatPreference = ()) -> TelnyxSession:
    """A fresh session for one media stream (the format comes with ``start``)."""
    return TelnyxSession(max_frame_ms=options.max_frame_ms, swap_l16=options.l16_byte_order != sys.byteorder)


def media_format(fmt: Any) -> AudioFormat | None:
    """The :class:`AudioFormat` of a ``start.media_format`` object, or None when it is not one we
    carry (G722, OPUS, AMR-WB, several channels, an odd rate)."""
    if not isinstance(fmt, dict):
        return None
    encoding, rate, channels = fmt.get("encoding"), fmt.get("sample_rate"), fmt.get("channels", 1)
    if channels != 1 or isinstance(rate, bool):
        return None
    if encoding in ("PCMU", "PCMA") and rate == 8000:
        return MULAW_8K if encoding == "PCMU" else ALAW_8K
    if encoding == "L16" and rate in L16_RATES:
        return AudioFormat("l16", rate)
    return None


def _swapped(data: bytes) -> bytes:
    samples = array("h", data)
    samples.byteswap()
    return samples.tobytes()


class TelnyxSession(MediaStreamSession):
    """One Telnyx media stream. ``stream_id``, ``call_control_id`` and ``custom_parameters`` are
    kept from ``start``; ``audio_format`` is what it announced."""

    capabilities = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=20,
                                        can_transfer=True)
    vendor = "Telnyx"

    def __init__(self, max_frame_ms: int = 200, swap_l16: bool = False) -> None:
        super().__init__(max_frame_ms, MULAW_8K)
        self.swap_l16 = swap_l16
        self.stream_id = ""
        self.call_control_id = ""
        self.custom_parameters: dict[str, str] = {}
        self._swap = False
        self._media = MediaTemplate('{"event":"media","media":{"payload":"', '"}}')

    # --- input ---------------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[PlatformEvent]:
        if self._ended:
            return []
        message = self.parse(text)
        if isinstance(message, list):
            return message
        event = message.get("event")
        if event == "media":
            return self._media_event(message)
        if event == "mark":
            return self.mark_event(message)
        if event == "start":
            return self._start(message)
        if event == "dtmf":
            return self.dtmf_event(message)
        if event == "stop":
            self._ended = True
            return [CallEnded("stop")]
        if event == "error":
            return self._error(message)
        if event == "connected":
            return []
        return self.unknown_event(event)

    def _start(self, message: dict[str, Any]) -> list[PlatformEvent]:
        start = self.start_object(message)
        if isinstance(start, list):
            return start
        stream_id = message.get("stream_id", start.get("stream_id"))
        call_control_id = start.get("call_control_id")
        if not (isinstance(stream_id, str) and stream_id and isinstance(call_control_id, str) and call_control_id):
            return self._violation("bad_message", "start without stream_id/call_control_id")
        params = self.checked_parameters(start.get("custom_parameters", {}))
        if isinstance(params, list):
            return params
        fmt = media_format(start.get("media_format"))
        if fmt is None:
            return self._violation("unsupported_format", f"media_format {start.get('media_format')!r:.80}")
        self.accept_start(fmt)
        self.stream_id, self.call_control_id = stream_id, call_control_id
        self.custom_parameters = params
        self._swap = self.swap_l16 and fmt.encoding == "l16"
        return [CallStarted(call_control_id, fmt, dict(params))]

    def _media_event(self, message: dict[str, Any]) -> list[PlatformEvent]:
        data = self.media_audio(message, inbound_tracks=("inbound", "inbound_track"))  # both_tracks: skip ours
        if isinstance(data, list):
            return data
        return [CallerAudio(_swapped(data) if self._swap else data)]

    def _error(self, message: dict[str, Any]) -> list[PlatformEvent]:
        body = message.get("payload")
        if not isinstance(body, dict):
            return self._violation("wrong_type", "error without a payload object")
        # Telnyx's code is a number from a catalogue we do not bound: the log gets it, the label not.
        detail = f"{body.get('code')!r:.20} {body.get('title')!r:.80} {body.get('detail')!r:.200}"
        return [PlatformError("stream_error", detail)]

    # --- commands --------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if self._started and not self._ended:
            self._output.append(self._media.render(_swapped(packet) if self._swap else packet))

    def mark(self, name: str) -> None:
        if self._started and not self._ended:
            self._output.append('{"event":"mark","mark":{"name":' + json_string(name) + "}}")

    def clear(self) -> None:
        # Always sent: Telnyx may still hold audio we think was played.
        if self._started and not self._ended:
            self._output.append('{"event":"clear"}')

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # Closing the socket ends the stream; the call goes on under Call Control / the next verb.
        self._ended = True

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """End the stream so the call goes on without us: the TeXML verbs after ``<Stream>``, or
        the Call Control application on its ``streaming.stopped`` webhook, dial the person."""
        return self.end_live_stream()


TELNYX = PlatformType(
    name="telnyx",
    options=TelnyxOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("stream_auth_token",),
    summary="Telnyx Media Streaming, bidirectional RTP: JSON text frames, PCMU/PCMA 8 kHz or L16",
)
