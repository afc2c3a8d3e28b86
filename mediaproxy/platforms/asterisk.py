"""Asterisk ``chan_websocket`` (Asterisk 20.16, 21.11, 22.6, 23.0 and later), as a sans-IO session.

Asterisk dials us: a ``websocket_client.conf`` connection (``type = websocket_client``,
``connection_type = per_call_config``, ``uri = wss://proxy.example.com/asterisk``) used by
``Dial(WebSocket/<connection>/c(slin16))`` or ARI ``/channels/externalMedia?transport=websocket``.
The subprotocol ``media`` is selected when offered. Summary in docs/protocols/asterisk.md.

Control messages are text frames in one of two formats, chosen per call by Asterisk
(``chan_websocket.conf`` ``control_message_format``, dial option ``f(json)``): legacy plain text
(``NAME key:value key:value``) or, from 20.18/22.8/23.2, JSON (``{"event": NAME, ...}``). The
session reads either and answers in the format ``MEDIA_START`` came in::

    Asterisk → us  text   MEDIA_START connection_id:… channel:… channel_id:… format:slin16
                          optimal_frame_size:640 ptime:20        (always first; JSON adds
                          channel_variables)
                   binary the channel's format (ulaw, alaw, slin, slin16, slin24, slin48; slin
                          is 16-bit little-endian on the hosts Asterisk runs on), one core frame
                          each (20 ms as a rule)
                   text   DTMF_END digit:5, MEDIA_XOFF, MEDIA_XON, MEDIA_MARK_PROCESSED <id>,
                          MEDIA_BUFFERING_COMPLETED, QUEUE_DRAINED, STATUS …, ERROR …
    us → Asterisk  binary the same format, a whole number of ``optimal_frame_size`` frames
                   text   MARK_MEDIA <id>, FLUSH_MEDIA, HANGUP, ANSWER

Asterisk queues what it is sent (about 1000 frames) and plays one frame every ptime on its own
timer, so we may send ahead and ``FLUSH_MEDIA`` drops the queue on barge-in (``can_flush``);
the usual ``[playout] lead_ms`` applies. ``MARK_MEDIA`` (20.18/22.8/23.2 and later) is answered
with ``MEDIA_MARK_PROCESSED`` once every frame queued before it has gone to the core: marks give
the played position. Older versions ignore the command, so ``marks = auto`` uses marks only on
JSON calls (only versions that have ``MARK_MEDIA`` speak JSON); a flush drops queued marks
without answering them. ``MEDIA_XOFF``/``MEDIA_XON`` (queue high and low water) become
:class:`PlaybackPaused`: the playout stops sending and keeps queueing.

Authentication: the connection's ``username``/``password`` (or ``user:pass@`` in its ``uri``)
arrive as ``Authorization: Basic`` on the upgrade; with ``username`` and ``password``
configured it is required and compared in constant time. Query parameters on the upgrade (the
dial string's ``v(...)``) join the call's metadata.

Asterisk sends no hang-up message: the socket closing is the end of the call. Any malformed
input ends the session with a :class:`ProtocolViolation`; a well-formed event we do not know is
counted (:class:`MessageIgnored`) and the call goes on, and so is an empty binary frame.
Hanging up sends ``HANGUP`` (Asterisk hangs the channel up and closes), then the glue closes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mediaproxy.audio.format import AudioFormat, FormatPreference
from mediaproxy.options import boolean, choice, integer, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformCapabilities,
    PlatformError,
    PlatformEvent,
    PlatformType,
    PlaybackPaused,
    UpgradeRequest,
)
from mediaproxy.platforms.basic_auth import check_basic_auth, require_both_halves
from mediaproxy.platforms.jsonmedia import (
    DTMF_DIGITS,
    MAX_MESSAGE_CHARS,
    MAX_METADATA_VALUE_CHARS,
    JsonMediaSession,
    digits_int,
    json_string,
    string_metadata,
)

SUBPROTOCOL = "media"
PACKET_MS = 20
FORMATS: Mapping[str, AudioFormat] = {
    "ulaw": AudioFormat("pcmu", 8000),
    "alaw": AudioFormat("pcma", 8000),
    "slin": AudioFormat("l16", 8000),
    "slin16": AudioFormat("l16", 16000),
    "slin24": AudioFormat("l16", 24000),
    "slin48": AudioFormat("l16", 48000),
}
"""The channel formats (``c(...)`` in the dial string) whose audio the proxy can carry."""
MAX_QUERY_PARAMS = 32
_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_START_KEYS = ("connection_id", "channel", "channel_id", "format", "optimal_frame_size", "ptime")
_KNOWN = frozenset({"MEDIA_START", "DTMF_END", "MEDIA_XOFF", "MEDIA_XON", "MEDIA_MARK_PROCESSED",
                    "MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED", "STATUS", "ERROR"})
_PAIRS = frozenset({"MEDIA_START", "DTMF_END"})
"""The plain-text events whose fields we read as ``key:value`` tokens."""
_QUIET = frozenset({"MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED", "STATUS"})
"""Answers to commands we never send (STOP_MEDIA_BUFFERING, REPORT_QUEUE_DRAINED, GET_STATUS)."""


@dataclass(frozen=True, kw_only=True)
class AsteriskOptions:
    """The keys of a ``[platform:NAME] type = asterisk`` section."""

    username: str = option(text, "", "the websocket_client.conf connection's username; with password, the "
                           "upgrade must carry it as Authorization: Basic")
    password: str = option(text, "", "the connection's password")
    marks: str = option(choice("auto", "on", "off"), "auto",
                        "send MARK_MEDIA for the played position: auto = on calls using JSON control messages "
                        "(Asterisk 20.18/22.8/23.2+), on = always (plain text on those versions), off = never")
    answer: bool = option(boolean, False, "send ANSWER on MEDIA_START (for dial strings with the n option)")
    max_frame_ms: int = option(integer(20, 2000), 500, "largest inbound audio frame accepted, in ms")


def check_upgrade(request: UpgradeRequest, options: AsteriskOptions, now: float) -> None:
    """Require ``Authorization: Basic base64(username:password)`` when the credentials are set."""
    check_basic_auth(request, options.username, options.password)


def validate(options: AsteriskOptions, public_url: str) -> None:
    """Basic auth needs both halves."""
    require_both_halves("username", options.username, "password", options.password)


def new_session(options: AsteriskOptions, formats: FormatPreference = ()) -> AsteriskSession:
    """A fresh session for one WebSocket channel (the format comes with ``MEDIA_START``)."""
    return AsteriskSession(marks=options.marks, answer=options.answer, max_frame_ms=options.max_frame_ms)


def query_metadata(target: str) -> dict[str, str]:
    """The query parameters of an upgrade's request target (the dial string's ``v(...)``),
    the first :data:`MAX_QUERY_PARAMS`, each value cut to the metadata bound."""
    pairs = parse_qsl(urlsplit(target).query, keep_blank_values=True)[:MAX_QUERY_PARAMS]
    return {k: v[:MAX_METADATA_VALUE_CHARS] for k, v in pairs}


def _plain_fields(rest: str) -> dict[str, str] | None:
    """The ``key:value`` tokens of a plain-text event, or None when one is not such a pair."""
    fields: dict[str, str] = {}
    for token in rest.split():
        key, sep, value = token.partition(":")
        if not sep or not key:
            return None
        fields[key] = value
    return fields


class AsteriskSession(JsonMediaSession):
    """One ``chan_websocket`` channel. ``call_id`` is its ``channel_id`` (older versions: the
    ``connection_id``); ``audio_format`` and ``frame_bytes`` (``optimal_frame_size``) come from
    ``MEDIA_START``; ``json`` says which control format the call uses."""

    vendor = "Asterisk"

    def __init__(self, marks: str = "auto", answer: bool = False, max_frame_ms: int = 500) -> None:
        super().__init__(FORMATS["slin"].bytes_for_ms(max_frame_ms))
        self.capabilities = PlatformCapabilities(can_flush=True, has_marks=marks == "on", max_lead_ms=None,
                                                 packet_ms=PACKET_MS)
        self._marks = marks
        self._answer = answer
        self.max_frame_ms = max_frame_ms
        self.json = False
        self.call_id = ""
        self.query: dict[str, str] = {}
        self.audio_format = FORMATS["slin"]
        self.frame_bytes = self.audio_format.bytes_for_ms(PACKET_MS)
        self._sample_mask = 1
        self._xoff = False

    def bind_upgrade(self, request: UpgradeRequest) -> None:
        self.query = query_metadata(request.target)

    # --- input ---------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        if self._ended:
            return []
        if not self._started:
            return self._violation("media_before_start", "audio before MEDIA_START")
        size = len(data)
        if size and not size & self._sample_mask and size <= self.max_frame_bytes:
            return [CallerAudio(data)]  # the hot path: passed on as it came
        if not size:
            return [MessageIgnored("empty_frame")]
        if size & self._sample_mask:
            return self._violation("bad_payload", f"audio frame of {size} bytes is not whole samples")
        return self._violation("oversize_frame", f"audio frame of {size} bytes")

    def receive_text(self, text: str) -> list[PlatformEvent]:
        if self._ended:
            return []
        stripped = text.strip()
        fields: dict[str, Any] | None
        if stripped.startswith("{"):
            message = self.parse(stripped)
            if isinstance(message, list):
                return message
            name = message.get("event")
            if not isinstance(name, str) or not name:
                return self._violation("bad_message", "JSON control message without an event name")
            fields = message
            is_json = True
        else:
            if len(stripped) > MAX_MESSAGE_CHARS:
                return self._violation("oversize", f"message of {len(stripped)} characters")
            name, _, rest = stripped.partition(" ")
            if not _NAME.fullmatch(name):
                return self._violation("bad_message", "not a control message")
            if name in _PAIRS:
                fields = _plain_fields(rest)
                if fields is None:
                    return self._violation("bad_message", f"{name} field that is not key:value")
            else:
                fields = {"": rest.strip()}  # a bare id, free text or fields we do not read
            is_json = False
        if name == "MEDIA_START":
            return self._media_start(fields, is_json)
        if not self._started:
            if name in _KNOWN:
                return self._violation("event_before_start", f"{name} before MEDIA_START")
            return [MessageIgnored("unknown_event")]
        if name == "DTMF_END":
            digit = fields.get("digit")
            if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
                return self._violation("wrong_type", "DTMF_END without a valid digit")
            return [DtmfReceived(digit)]
        if name == "MEDIA_MARK_PROCESSED":
            mark = fields.get("correlation_id") if is_json else fields[""]
            if not isinstance(mark, str):
                return self._violation("wrong_type", "MEDIA_MARK_PROCESSED without a correlation_id string")
            return [MarkPlayed(mark)] if mark else []
        if name == "MEDIA_XOFF" or name == "MEDIA_XON":
            paused = name == "MEDIA_XOFF"
            if paused == self._xoff:
                return []  # changes only
            self._xoff = paused
            return [PlaybackPaused(paused)]
        if name in _QUIET:
            return []
        if name == "ERROR":
            detail = fields.get("error_text", "") if is_json else fields[""].partition("error_text:")[2]
            return [PlatformError("command_error", str(detail)[:200])]
        return [MessageIgnored("unknown_event")]

    def _media_start(self, fields: dict[str, Any], is_json: bool) -> list[PlatformEvent]:
        if self._started:
            return self._violation("duplicate_start", "second MEDIA_START")
        name = fields.get("format")
        # A JSON format may be any value (a list is unhashable): only a string names one.
        fmt = FORMATS.get(name) if isinstance(name, str) else None
        if fmt is None:
            return self._violation("unsupported_format", f"format {name!r:.40}")
        size = fields.get("optimal_frame_size")
        if isinstance(size, str):
            size = digits_int(size)  # "²" and 5000-digit strings are digits int() refuses
        packet_bytes = fmt.bytes_for_ms(PACKET_MS)
        if type(size) is not int or size <= 0 or packet_bytes % size or size % fmt.sample_bytes:
            return self._violation("unsupported_format", f"optimal_frame_size {size!r:.20} for {fmt}")
        call_id = next((fields[k] for k in ("channel_id", "connection_id", "channel")
                        if isinstance(fields.get(k), str) and fields[k]), "")
        if not call_id:
            return self._violation("bad_message", "MEDIA_START without a channel_id or connection_id")
        variables = fields.get("channel_variables", {})
        if not isinstance(variables, dict):
            return self._violation("wrong_type", "MEDIA_START channel_variables is not an object")
        metadata = dict(self.query)
        metadata.update(string_metadata(variables, frozenset()))
        metadata.update({k: str(fields[k])[:MAX_METADATA_VALUE_CHARS] for k in _START_KEYS if k in fields})
        self._started = True
        self.json = is_json
        self.call_id = call_id[:MAX_METADATA_VALUE_CHARS]
        self.audio_format = fmt
        self.frame_bytes = size
        self._sample_mask = fmt.sample_bytes - 1
        self.max_frame_bytes = fmt.bytes_for_ms(self.max_frame_ms)
        marks = self._marks == "on" or (self._marks == "auto" and is_json)
        if marks != self.capabilities.has_marks:
            self.capabilities = PlatformCapabilities(can_flush=True, has_marks=marks, max_lead_ms=None,
                                                     packet_ms=PACKET_MS)
        if self._answer:
            self._command("ANSWER")
        return [CallStarted(self.call_id, fmt, metadata)]

    # --- commands --------------------------------------------------------------------------------

    def _command(self, name: str, correlation_id: str | None = None) -> None:
        if self.json:
            extra = "" if correlation_id is None else ',"correlation_id":' + json_string(correlation_id)
            self._output.append('{"command":"' + name + '"' + extra + "}")
        else:
            self._output.append(name if correlation_id is None else f"{name} {correlation_id}")

    def play(self, packet: bytes) -> None:
        if not self._started or self._ended or not packet:
            return
        extra = len(packet) % self.frame_bytes
        if not extra:
            self._output.append(packet)  # whole frames: Asterisk re-frames and re-times them
            return
        # A partial frame would be dropped by Asterisk: pad it with silence.
        self._output.append(packet + self.audio_format.silence(self.frame_bytes - extra))

    def mark(self, name: str) -> None:
        if not (self._started and not self._ended and self.capabilities.has_marks):
            return
        if not self.json:
            # Plain text carries the id after one space as one printable ASCII word (our names
            # are such words; anything else could not go out as UTF-8 or would split the line).
            name = "".join(c for c in name if "!" <= c <= "~")
            if not name:
                return
        self._command("MARK_MEDIA", name)

    def clear(self) -> None:
        # Always sent: Asterisk may still hold audio we think was played.
        if self._started and not self._ended:
            self._command("FLUSH_MEDIA")

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # HANGUP hangs the channel up and closes the socket; the glue closes as well.
        if self._started and not self._ended:
            self._command("HANGUP")
        self._ended = True


ASTERISK = PlatformType(
    name="asterisk",
    options=AsteriskOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("username",),
    validate=validate,
    subprotocols=(SUBPROTOCOL,),
    summary="Asterisk chan_websocket (Dial WebSocket / ARI externalMedia): binary ulaw, alaw or slin 8-48 kHz, "
            "plain-text or JSON control messages, FLUSH_MEDIA, MARK_MEDIA, XOFF/XON",
)
