"""The generic WebSocket platform (``type = websocket``): browsers, WebRTC gateways, custom clients.

Protocol (ours; published in docs/protocols/websocket.md):

    client → us   text   {"type": "start", "call_id": "...",
                          "format": {"encoding": "l16", "rate_hz": 8000..48000}
                                  | {"encoding": "opus", "rate_hz": 48000},
                          "metadata": {"key": "value", ...}}          (first message)
                  binary one frame of caller audio: L16 little-endian mono, or one Opus packet
                         (an empty frame in Opus: a lost packet, concealed)
                  text   {"type": "mark", "name": "..."}   (playback reached our mark)
                         {"type": "dtmf", "digits": "12#"}
                         {"type": "pause"} / {"type": "resume"}   (stop / restart our sending)
                         {"type": "stop", "reason": "..."}
    us → client   binary bot audio in the call's format, one 20 ms packet per frame
                  text   {"type": "mark", "name": "..."}, {"type": "clear"} (barge-in: drop what
                         is queued), {"type": "stop", "reason": "..."} (we end the call),
                         {"type": "error", "reason": KIND, "detail": "..."} (then we close)

Flow control is the client's: ``pause`` stops our sending until ``resume`` while the playout
keeps the audio (bounded by ``[playout] max_buffer_ms``, beyond which it is dropped and counted).

Opus is coded inside the session: the call's format toward the bridge is L16 48 kHz, caller
packets are decoded here (with packet-loss concealment for empty frames) and the playout's 20 ms
L16 48 kHz packets are encoded here, one Opus packet per binary frame. The rest of the proxy
never meets a compressed format. libopus is loaded lazily (:mod:`mediaproxy.audio.opus`): only
a platform configured with ``encodings = ..., opus`` needs it, and start-up says what to install
when it is missing.

Authentication: with ``token`` set, the upgrade must carry ``Authorization: Bearer <token>`` or,
since browsers cannot set headers on a WebSocket, a ``token=<token>`` query parameter. With
``allowed_origins`` set, a browser's ``Origin`` must be one of them.

Any malformed input ends the session with a :class:`ProtocolViolation` after an ``error``
message; a well-formed message of a type we do not know is counted (:class:`MessageIgnored`) and
the call goes on.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat, FormatPreference
from mediaproxy.audio.opus import OpusDecoder, OpusEncoder, OpusUnavailableError
from mediaproxy.options import OptionError, integer, name_list, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformCapabilities,
    PlatformEvent,
    PlatformSession,
    PlatformType,
    PlaybackPaused,
    ProtocolViolation,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MAX_MESSAGE_CHARS, is_dtmf

ENCODINGS = ("l16", "opus")
"""The ``format.encoding`` values of ``start``."""
MIN_RATE_HZ = 8000
MAX_RATE_HZ = 48000
OPUS_RATE_HZ = 48000
"""Opus is exchanged at 48 kHz: the session decodes to and encodes from L16 at this rate."""
PACKET_MS = 20
MAX_OPUS_PACKET_BYTES = 4000
"""The largest inbound Opus packet accepted (RFC 6716 allows 1275 bytes per frame; a code 3
packet of 120 ms at a high bitrate stays below this)."""
MAX_CALL_ID_CHARS = 256
MAX_METADATA_ENTRIES = 64


def _encodings(value: str) -> tuple[str, ...]:
    names = name_list(value)
    if not names:
        raise ValueError("name at least one of " + ", ".join(ENCODINGS))
    for name in names:
        if name not in ENCODINGS:
            raise ValueError(f"unknown encoding {name!r} (known: {', '.join(ENCODINGS)})")
    return names


def _origins(value: str) -> tuple[str, ...]:
    origins = name_list(value)
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"expected origins such as https://app.example.com, got {origin!r}")
    return tuple(o.rstrip("/").lower() for o in origins)


@dataclass(frozen=True, kw_only=True)
class WebSocketClientOptions:
    """The keys of a ``[platform:NAME] type = websocket`` section."""

    token: str = option(text, "", "shared secret; when set, the upgrade must carry Authorization: Bearer <token> "
                        "or the query parameter token=<token> (browsers cannot set headers)")
    allowed_origins: tuple[str, ...] = option(_origins, (), "comma-separated origins (https://app.example.com) a "
                                              "browser's Origin header must match; empty: any origin")
    encodings: tuple[str, ...] = option(_encodings, ("l16",), "the start formats accepted: l16 (8-48 kHz) and/or "
                                        "opus (48 kHz; needs libopus, Debian package libopus0)")
    max_frame_ms: int = option(integer(20, 1000), 200, "largest inbound L16 audio frame accepted, in ms")


def check_upgrade(request: UpgradeRequest, options: WebSocketClientOptions, now: float) -> None:
    """Require the bearer token (header or ``token`` query parameter) and an allowed Origin."""
    if options.allowed_origins:
        origin = request.headers.get("origin", "").strip().rstrip("/").lower()
        if origin not in options.allowed_origins:
            raise UpgradeRefused(403, "Origin not allowed")
    token = options.token
    if not token:
        return
    header = request.headers.get("authorization", "").strip()
    candidates = []
    if header[:7].lower() == "bearer ":
        candidates.append(header[7:].strip())
    candidates.extend(parse_qs(urlsplit(request.target).query).get("token", [])[:4])
    if not candidates:
        raise UpgradeRefused(401, "missing token")
    ok = False
    for given in candidates:
        ok |= hmac.compare_digest(given.encode(), token.encode())
    if not ok:
        raise UpgradeRefused(401, "bad token")


def validate(options: WebSocketClientOptions, public_url: str) -> None:
    """Opus needs libopus on this host: refuse to start without it, naming what to install."""
    if "opus" in options.encodings:
        try:
            OpusDecoder(OPUS_RATE_HZ, 1)
        except OpusUnavailableError as e:
            raise OptionError("encodings", f"opus is listed but {e}") from None


def new_session(options: WebSocketClientOptions, formats: FormatPreference = ()) -> WebSocketClientSession:
    """A fresh session for one connection (the client names its format in ``start``)."""
    return WebSocketClientSession(encodings=options.encodings, max_frame_ms=options.max_frame_ms)


class WebSocketClientSession(PlatformSession):
    """One client connection. ``call_id``, ``metadata`` and ``wire_encoding`` are kept from
    ``start``; ``audio_format`` is the format the bridge sees (L16; 48 kHz for Opus)."""

    capabilities = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=PACKET_MS)

    def __init__(self, encodings: tuple[str, ...] = ("l16",), max_frame_ms: int = 200) -> None:
        super().__init__()
        self.encodings = encodings
        self.max_frame_ms = max_frame_ms
        self.call_id = ""
        self.metadata: dict[str, str] = {}
        self.wire_encoding = ""
        self.audio_format: AudioFormat | None = None
        self._max_frame_bytes = 0
        self._started = False
        self._ended = False
        self._paused = False
        self._decoder: OpusDecoder | None = None
        self._encoder: OpusEncoder | None = None
        self._last_packet_ms = float(PACKET_MS)

    @property
    def finished(self) -> bool:
        return self._ended

    # --- input -------------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[PlatformEvent]:
        if self._ended:
            return []
        if len(text) > MAX_MESSAGE_CHARS:
            return self._violation("oversize", f"message of {len(text)} characters")
        try:
            message = strict_json.loads(text)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError
            return self._violation("bad_json", "not JSON")
        if not isinstance(message, dict):
            return self._violation("bad_json", "not a JSON object")
        kind = message.get("type")
        if kind == "start":
            return self._start(message)
        if kind == "mark":
            name = message.get("name")
            if not isinstance(name, str):
                return self._violation("wrong_type", "mark without a name string")
            return [MarkPlayed(name)]
        if kind == "dtmf":
            if not self._started:
                return self._violation("dtmf_before_start", "dtmf before start")
            digits = message.get("digits")
            if not is_dtmf(digits):
                return self._violation("wrong_type", "dtmf without valid digits (0-9*#A-D)")
            return [DtmfReceived(digits)]  # type: ignore[arg-type]
        if kind in ("pause", "resume"):
            paused = kind == "pause"
            if paused == self._paused:
                return []  # no change: reported once
            self._paused = paused
            # Before start there is nothing to pause yet: start reports it.
            return [PlaybackPaused(paused)] if self._started else []
        if kind == "stop":
            self._ended = True
            return [CallEnded("stop")]
        if not isinstance(kind, str):
            return self._violation("bad_message", "no type name")
        # A message a newer client sends: well-formed, not ours to act on. Counted, never fatal.
        return [MessageIgnored("unknown_type")]

    def _start(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._started:
            return self._violation("duplicate_start", "second start message")
        call_id = message.get("call_id")
        fmt = message.get("format")
        metadata = message.get("metadata", {})
        if not isinstance(call_id, str) or not call_id or not isinstance(fmt, dict):
            return self._violation("bad_message", "start without a call_id string and a format object")
        if len(call_id) > MAX_CALL_ID_CHARS:
            return self._violation("bad_message", f"call_id of {len(call_id)} characters")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            return self._violation("wrong_type", "metadata must map strings to strings")
        if len(metadata) > MAX_METADATA_ENTRIES:
            return self._violation("bad_message", f"metadata of {len(metadata)} entries")
        encoding, rate = fmt.get("encoding"), fmt.get("rate_hz")
        if encoding not in self.encodings or type(rate) is not int:
            return self._violation("unsupported_format", f"format {fmt!r:.80}")
        if encoding == "opus":
            if rate != OPUS_RATE_HZ:
                return self._violation("unsupported_format", f"opus at {rate} Hz (48000 only)")
            try:
                self._decoder = OpusDecoder(OPUS_RATE_HZ, 1)
                self._encoder = OpusEncoder(OPUS_RATE_HZ, 1, PACKET_MS)
            except OpusUnavailableError as e:
                return self._violation("unsupported_format", str(e))
            self._max_frame_bytes = MAX_OPUS_PACKET_BYTES
        elif not (MIN_RATE_HZ <= rate <= MAX_RATE_HZ and rate % 1000 == 0):
            return self._violation("unsupported_format", f"l16 at {rate} Hz (8000-48000, whole kHz)")
        audio_format = AudioFormat("l16", rate)
        if encoding == "l16":
            self._max_frame_bytes = audio_format.bytes_for_ms(self.max_frame_ms)
        self._started = True
        self.call_id = call_id
        self.metadata = dict(metadata)
        self.wire_encoding = encoding
        self.audio_format = audio_format
        events: list[PlatformEvent] = [CallStarted(call_id, audio_format, dict(metadata))]
        if self._paused:
            events.append(PlaybackPaused(True))
        return events

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        if self._ended:
            return []
        if not self._started:
            return self._violation("media_before_start", "audio before start")
        if len(data) > self._max_frame_bytes:
            return self._violation("oversize_frame", f"audio frame of {len(data)} bytes")
        decoder = self._decoder
        if decoder is None:
            if len(data) % 2:
                return self._violation("bad_payload", "L16 frame of an odd number of bytes")
            return [CallerAudio(data)] if data else []
        if not data:
            # The gateway lost a packet: conceal it for as long as the last one lasted.
            return [CallerAudio(decoder.conceal(self._last_packet_ms))]
        try:
            pcm = decoder.decode(data)
        except ValueError:
            return self._violation("bad_opus", "corrupt Opus packet")
        if pcm:
            self._last_packet_ms = len(pcm) / 2 / (OPUS_RATE_HZ // 1000)
            # Concealment covers whole 2.5 ms steps; a packet of another length conceals 20 ms.
            if (self._last_packet_ms * 2) % 5:
                self._last_packet_ms = float(PACKET_MS)
        return [CallerAudio(pcm)] if pcm else []

    # --- commands ------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if not self._started or self._ended:
            return
        encoder = self._encoder
        if encoder is None:
            self._output.append(bytes(packet))
            return
        size = encoder.frame_bytes
        for i in range(0, len(packet), size):
            frame = packet[i : i + size]
            if len(frame) < size:
                frame = frame + bytes(size - len(frame))  # a short tail: padded with silence
            self._output.append(encoder.encode(frame))

    def mark(self, name: str) -> None:
        if self._started and not self._ended:
            self._output.append('{"type":"mark","name":' + json.dumps(name) + "}")

    def clear(self) -> None:
        if self._started and not self._ended:
            self._output.append('{"type":"clear"}')

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._output.append(json.dumps({"type": "stop", "reason": outcome.value, "detail": reason[:200]}))

    def invalid_text(self, payload: bytes) -> list[PlatformEvent]:
        """A text frame that is not UTF-8: ``error`` naming ``bad_utf8``, then the close."""
        if self._ended:
            return []
        return self._violation("bad_utf8", "text frame is not UTF-8")

    def _violation(self, kind: str, detail: str) -> list[PlatformEvent]:
        self._ended = True
        self._output.append(json.dumps({"type": "error", "reason": kind, "detail": detail}))
        return [ProtocolViolation(kind, detail)]


WEBSOCKET = PlatformType(
    name="websocket",
    options=WebSocketClientOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("token",),
    validate=validate,
    summary="generic WebSocket for browsers, WebRTC gateways and custom clients: JSON control, binary "
            "L16 8-48 kHz or Opus 48 kHz audio, client-driven pause/resume",
)
