"""Plivo Audio Streams, bidirectional (``<Stream bidirectional="true">``), as a sans-IO session.

Protocol (JSON text frames; summary in docs/protocols/plivo.md):

    Plivo → us    start        {sequenceNumber, start: {callId, streamId, accountId, tracks,
                                mediaFormat: {encoding: audio/x-mulaw|audio/x-l16, sampleRate}},
                                extra_headers: "k=v;k2=v2"}        (first; there is no connected)
                  media        {sequenceNumber, streamId, media: {track, timestamp, chunk,
                                payload: base64}}
                  dtmf         {streamId, dtmf: {digit}}
                  playedStream {streamId, name}     (playback reached our checkpoint)
                  clearedAudio {streamId}           (the queue was dropped)
    us → Plivo    playAudio    {media: {contentType, sampleRate, payload}}
                  checkpoint   {streamId, name}
                  clearAudio   {streamId}

Formats (the ``contentType`` of ``<Stream>``): µ-law 8 kHz, or L16 at 8 or 16 kHz; bot audio goes
back in the same format. Plivo queues ``playAudio`` and plays it in order; ``clearAudio`` drops the
queue. A checkpoint's ``playedStream`` comes only when the audio before it was played, so after a
clear the pending checkpoints never come back (the playout's generation tags make that harmless).
The stream ends with the socket: Plivo sends no stop frame (one named ``stop`` is still taken as
the end).

Authentication: when ``auth_token`` is configured, the upgrade must carry Plivo's V3 signature:
``X-Plivo-Signature-V3`` is the base64 HMAC-SHA256, keyed with the auth token, of
``URL + "." + X-Plivo-Signature-V3-Nonce``, where URL is the dialled URL without its query, then
``?`` and the query parameters sorted by name (and value) as ``k=v`` joined with ``&`` when there
are any. The header may list several signatures, comma-separated; one match is enough.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from mediaproxy.audio.format import L16_8K, L16_16K, MULAW_8K, AudioFormat, FormatPreference
from mediaproxy.options import OptionError, integer, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    MarkPlayed,
    PlatformCapabilities,
    PlatformEvent,
    PlatformType,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MediaStreamSession, MediaTemplate, digits_int, json_string

FORMATS: Mapping[tuple[str, int], AudioFormat] = {
    ("audio/x-mulaw", 8000): MULAW_8K,
    ("audio/x-l16", 8000): L16_8K,
    ("audio/x-l16", 16000): L16_16K,
}
"""``(mediaFormat.encoding, sampleRate)`` → the format it means."""

MAX_EXTRA_HEADERS_CHARS = 1024
"""``extra_headers`` longer than this are not parsed (Plivo allows 512 bytes)."""


@dataclass(frozen=True, kw_only=True)
class PlivoOptions:
    """The keys of a ``[platform:NAME] type = plivo`` section."""

    auth_token: str = option(text, "", "account (or subaccount) auth token; when set, X-Plivo-Signature-V3 "
                             "is required on the upgrade")
    max_frame_ms: int = option(integer(20, 1000), 200, "largest inbound media payload accepted, in ms")


def signed_url(url: str) -> str:
    """The string Plivo's V3 scheme signs for a GET of ``url`` (before ``"." + nonce``)."""
    base, _, query = url.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    pairs = "&".join(f"{key}={value}" for key in sorted(params) for value in sorted(params[key]))
    return f"{base}?{pairs}" if pairs else base


def signature_v3(auth_token: str, url: str, nonce: str) -> bytes:
    """The base64 V3 signature of a GET of ``url`` with ``nonce``."""
    data = f"{signed_url(url)}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), data, hashlib.sha256).digest())


def check_upgrade(request: UpgradeRequest, options: PlivoOptions, now: float) -> None:
    """Require a valid ``X-Plivo-Signature-V3`` (with its nonce) when ``auth_token`` is set."""
    token = options.auth_token
    if not token:
        return
    given = request.headers.get("x-plivo-signature-v3", "")
    nonce = request.headers.get("x-plivo-signature-v3-nonce", "")
    if not given or not nonce:
        raise UpgradeRefused(403, "missing X-Plivo-Signature-V3 or its nonce")
    expected = signature_v3(token, request.public_url + request.target, nonce)
    ok = False
    for candidate in given.split(",")[:8]:
        ok |= hmac.compare_digest(expected, candidate.strip().encode())
    if not ok:
        raise UpgradeRefused(403, "bad X-Plivo-Signature-V3")


def validate(options: PlivoOptions, public_url: str) -> None:
    """The signature covers the URL Plivo dialled, which only ``[proxy] public_url`` knows."""
    if options.auth_token and not public_url:
        raise OptionError("public_url", "required because this platform checks X-Plivo-Signature-V3", section="proxy")


def new_session(options: PlivoOptions, formats: FormatPreference = ()) -> PlivoSession:
    """A fresh session for one audio stream (the format comes with ``start``)."""
    return PlivoSession(max_frame_ms=options.max_frame_ms)


def extra_headers(value: Any) -> dict[str, str]:
    """``extra_headers`` (``k=v`` pairs separated by ``;`` or ``,``) as a mapping; anything else
    (absent, not a string, too long) gives none."""
    if not isinstance(value, str) or len(value) > MAX_EXTRA_HEADERS_CHARS:
        return {}
    found: dict[str, str] = {}
    for item in value.replace(",", ";").split(";"):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            found[key.strip()] = val.strip()
    return found


class PlivoSession(MediaStreamSession):
    """One Plivo audio stream. ``stream_id``, ``call_id`` and ``extra_headers`` are kept from
    ``start``; ``audio_format`` is what it announced."""

    capabilities = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=20,
                                        can_transfer=True)
    vendor = "Plivo"

    def __init__(self, max_frame_ms: int = 200) -> None:
        super().__init__(max_frame_ms, MULAW_8K)
        self.stream_id = ""
        self.call_id = ""
        self.extra_headers: dict[str, str] = {}
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
        if event == "playedStream":
            name = message.get("name")
            if not isinstance(name, str):
                return self._violation("wrong_type", "playedStream without a name string")
            return [MarkPlayed(name)]
        if event == "start":
            return self._start(message)
        if event == "dtmf":
            return self.dtmf_event(message)
        if event == "clearedAudio":
            return []
        if event == "stop":
            self._ended = True
            return [CallEnded("stop")]
        return self.unknown_event(event)

    def _start(self, message: dict[str, Any]) -> list[PlatformEvent]:
        start = self.start_object(message)
        if isinstance(start, list):
            return start
        stream_id, call_id = start.get("streamId"), start.get("callId")
        if not (isinstance(stream_id, str) and stream_id and isinstance(call_id, str) and call_id):
            return self._violation("bad_message", "start without streamId/callId")
        fmt_object = start.get("mediaFormat")
        if not isinstance(fmt_object, dict):
            return self._violation("wrong_type", "start without a mediaFormat object")
        rate = fmt_object.get("sampleRate")
        if isinstance(rate, str):
            rate = digits_int(rate)
        encoding = fmt_object.get("encoding")
        fmt = FORMATS.get((encoding, rate)) if isinstance(encoding, str) and type(rate) is int else None
        if fmt is None:
            return self._violation("unsupported_format", f"mediaFormat {fmt_object!r:.80}")
        self.accept_start(fmt)
        self.stream_id, self.call_id = stream_id, call_id
        self.extra_headers = extra_headers(message.get("extra_headers"))
        sid = json_string(stream_id)
        self._media = MediaTemplate('{"event":"playAudio","media":{"contentType":' + json_string(str(encoding))
                                    + ',"sampleRate":' + str(rate) + ',"payload":"', '"}}')
        self._checkpoint_prefix = '{"event":"checkpoint","streamId":' + sid + ',"name":'
        self._clear = '{"event":"clearAudio","streamId":' + sid + "}"
        return [CallStarted(call_id, fmt, dict(self.extra_headers))]

    def _media_event(self, message: dict[str, Any]) -> list[PlatformEvent]:
        data = self.media_audio(message, inbound_tracks=("inbound",))  # audioTrack="both": skip ours
        if isinstance(data, list):
            return data
        return [CallerAudio(data)]

    # --- commands --------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if self._started and not self._ended:
            self._output.append(self._media.render(packet))

    def mark(self, name: str) -> None:
        if self._started and not self._ended:
            self._output.append(self._checkpoint_prefix + json_string(name) + "}")

    def clear(self) -> None:
        if self._started and not self._ended:
            self._output.append(self._clear)

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # Closing the socket ends the stream; without keepCallAlive Plivo then ends the call, with
        # it the XML after <Stream> runs.
        self._ended = True

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """End the stream so Plivo runs the XML after ``<Stream keepCallAlive="true">`` (where
        the operator's ``<Dial>`` lives). The target is not used on the wire."""
        return self.end_live_stream()


PLIVO = PlatformType(
    name="plivo",
    options=PlivoOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("auth_token",),
    validate=validate,
    summary="Plivo Audio Streams, bidirectional (<Stream>): JSON text frames, µ-law 8 kHz or L16 8/16 kHz",
)
