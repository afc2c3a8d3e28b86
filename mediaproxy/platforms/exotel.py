"""Exotel Voicebot applet (AgentStream, bidirectional), as a sans-IO session.

Protocol (JSON text frames; summary in docs/protocols/exotel.md):

    Exotel → us   connected {}
                  start     {sequence_number, stream_sid, start: {stream_sid, call_sid,
                             account_sid, from, to, custom_parameters,
                             media_format: {encoding: audio/x-raw, sample_rate: "8000",
                             bit_rate: "16"}}}
                  media     {sequence_number, stream_sid, media: {chunk, timestamp,
                             payload: base64 slin}}        (about every 100 ms)
                  dtmf      {stream_sid, dtmf: {digit, duration}}
                  mark      {stream_sid, mark: {name}}    (the audio before our mark has played)
                  stop      {stream_sid, stop: {call_sid, account_sid, reason}}
    us → Exotel   media {stream_sid, media: {payload}}, mark {stream_sid, mark: {name}},
                  clear {stream_sid}

Audio is raw 16-bit little-endian PCM ("slin"), mono, at 8 kHz by default (16 or 24 kHz when the
applet URL says ``?sample-rate=``); bot audio goes back in the same format. Exotel wants every
outbound chunk to be a multiple of 320 bytes, at least 3.2 KB and at most 100 KB. (Exotel calls
3.2 KB "100 ms", but 100 ms of 16-bit 8 kHz audio is 1600 bytes; the byte count is what is
honoured.) Packets are therefore 200 ms (``packet_ms``: 3200 bytes at 8 kHz, 6400 at 16 kHz, 9600
at 24 kHz), and a shorter tail of a response is padded with silence to 3200 bytes. ``clear`` drops
what Exotel has queued.

Authentication is IP allow-listing or HTTP Basic: with ``api_key`` and ``api_token`` configured
(the applet URL is ``wss://API_KEY:API_TOKEN@host/path``), the upgrade must carry
``Authorization: Basic base64(api_key:api_token)``, compared in constant time.

Any malformed input ends the session with a :class:`ProtocolViolation`; an ``event`` we do not
know is counted (:class:`MessageIgnored`) and the call goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import L16_8K, AudioFormat, FormatPreference
from mediaproxy.options import integer, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    PlatformCapabilities,
    PlatformEvent,
    PlatformType,
    UpgradeRequest,
)
from mediaproxy.platforms.basic_auth import check_basic_auth, require_both_halves
from mediaproxy.platforms.jsonmedia import MediaStreamSession, MediaTemplate, digits_int, json_string

PACKET_MS = 200
"""Outbound chunk duration: 3200 bytes at 8 kHz (Exotel's minimum chunk), and a multiple of 320
bytes at every rate."""
MIN_CHUNK_BYTES = 3200
"""Exotel's smallest outbound chunk: shorter tails are padded with silence to this."""
RATES = (8000, 16000, 24000)


@dataclass(frozen=True, kw_only=True)
class ExotelOptions:
    """The keys of a ``[platform:NAME] type = exotel`` section."""

    api_key: str = option(text, "", "the API key of the applet URL's Basic auth (wss://KEY:TOKEN@host/path); "
                          "with api_token, the upgrade must carry it")
    api_token: str = option(text, "", "the API token of the applet URL's Basic auth")
    max_frame_ms: int = option(integer(20, 2000), 500, "largest inbound media payload accepted, in ms")


def check_upgrade(request: UpgradeRequest, options: ExotelOptions, now: float) -> None:
    """Require ``Authorization: Basic base64(api_key:api_token)`` when the credentials are set."""
    check_basic_auth(request, options.api_key, options.api_token)


def validate(options: ExotelOptions, public_url: str) -> None:
    """Basic auth needs both halves."""
    require_both_halves("api_key", options.api_key, "api_token", options.api_token)


def new_session(options: ExotelOptions, formats: FormatPreference = ()) -> ExotelSession:
    """A fresh session for one stream (the rate comes with ``start``)."""
    return ExotelSession(max_frame_ms=options.max_frame_ms)


def _rate(value: Any) -> int | None:
    if isinstance(value, str):
        value = digits_int(value)
    return value if type(value) is int and value in RATES else None


class ExotelSession(MediaStreamSession):
    """One Exotel voicebot stream. ``stream_sid``, ``call_sid`` and ``custom_parameters`` are
    kept from ``start``; ``audio_format`` is what it announced."""

    capabilities = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=PACKET_MS,
                                        can_transfer=True)
    vendor = "Exotel"

    def __init__(self, max_frame_ms: int = 500) -> None:
        super().__init__(max_frame_ms, L16_8K)
        self.stream_sid = ""
        self.call_sid = ""
        self.account_sid = ""
        self.custom_parameters: dict[str, str] = {}
        self._media = MediaTemplate("", "")

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
        if event == "connected":
            return []
        return self.unknown_event(event)

    def _start(self, message: dict[str, Any]) -> list[PlatformEvent]:
        start = self.start_object(message)
        if isinstance(start, list):
            return start
        stream_sid = start.get("stream_sid", message.get("stream_sid"))
        call_sid = start.get("call_sid")
        account_sid = start.get("account_sid", "")
        params = start.get("custom_parameters", {})
        if not (isinstance(stream_sid, str) and stream_sid and isinstance(call_sid, str) and call_sid):
            return self._violation("bad_message", "start without stream_sid/call_sid")
        if not isinstance(account_sid, str) or not isinstance(params, dict | None):
            return self._violation("wrong_type", "start fields of the wrong type")
        params = self.checked_parameters(params)
        if isinstance(params, list):
            return params
        fmt_object = start.get("media_format", {})
        if not isinstance(fmt_object, dict):
            return self._violation("wrong_type", "media_format is not an object")
        rate = _rate(fmt_object.get("sample_rate", 8000))
        bits = fmt_object.get("bit_rate", "16")
        if (fmt_object.get("encoding", "audio/x-raw") != "audio/x-raw" or rate is None
                or str(bits) != "16"):
            return self._violation("unsupported_format", f"media_format {fmt_object!r:.80}")
        fmt = AudioFormat("l16", rate)
        self.accept_start(fmt)
        self.stream_sid, self.call_sid, self.account_sid = stream_sid, call_sid, account_sid
        self.custom_parameters = params
        sid = json_string(stream_sid)
        self._media = MediaTemplate('{"event":"media","stream_sid":' + sid + ',"media":{"payload":"', '"}}')
        self._mark_prefix = '{"event":"mark","stream_sid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","stream_sid":' + sid + "}"
        return [CallStarted(call_sid, fmt, dict(params))]

    def _media_event(self, message: dict[str, Any]) -> list[PlatformEvent]:
        data = self.media_audio(message)
        if isinstance(data, list):
            return data
        return [CallerAudio(data)]

    # --- commands --------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if self._started and not self._ended:
            if len(packet) < MIN_CHUNK_BYTES:
                # The tail of a response: below Exotel's minimum chunk, so padded with silence.
                packet = packet + bytes(MIN_CHUNK_BYTES - len(packet))
            self._output.append(self._media.render(packet))

    def mark(self, name: str) -> None:
        if self._started and not self._ended:
            self._output.append(self._mark_prefix + json_string(name) + "}}")

    def clear(self) -> None:
        if self._started and not self._ended:
            self._output.append(self._clear)

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # Closing the socket ends the stream; Exotel then runs the next applet of the flow.
        self._ended = True

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """End the stream so Exotel runs the applet after the Voicebot (where the operator's
        Connect applet lives). The target is not used on the wire."""
        return self.end_live_stream()


EXOTEL = PlatformType(
    name="exotel",
    options=ExotelOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("api_key",),
    validate=validate,
    summary="Exotel Voicebot applet, bidirectional: JSON text frames, 16-bit PCM 8/16/24 kHz in 200 ms chunks",
)
