"""AudioHook v2 messages: parsing and validating what Genesys sends, serializing what we send.

Pure functions and values, no session state: :func:`parse_envelope` checks the envelope every
client message shares, :func:`parse_parameters` the per-type ``parameters``, and
:func:`server_message` builds one of ours. Nothing here raises on input; a problem comes back as a
:class:`Malformed` value with a bounded ``kind`` (the ``protocol_errors_total{kind}`` label) and
an ``info`` text safe to put in ``disconnect.info`` (input is quoted only in truncated form).

Durations are ISO-8601 ``PT<seconds>S`` strings on the wire and integer microseconds here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat

MAX_TEXT_CHARS = 65535
"""The largest text message either side accepts (the reference client answers 413 above it)."""

NULL_UUID = "00000000-0000-0000-0000-000000000000"

CLIENT_TYPES = frozenset({
    "open", "ping", "close", "paused", "resumed", "discarded", "update", "error",
    "dtmf", "playback_started", "playback_completed",
})
SERVER_TYPES = frozenset({
    "opened", "pong", "closed", "pause", "resume", "event", "disconnect", "reconnect", "updated",
})

ERROR_CODES = frozenset({400, 405, 408, 409, 413, 415, 429, 500, 503})
"""The client's ``ErrorCode`` union; other codes are counted as ``other`` (bounded labels)."""

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DURATION = re.compile(r"^PT(\d+\.\d*|\.?\d+)S$")
_DTMF = re.compile(r"^[0-9*#A-Da-d]+$")
_CHANNELS = frozenset({"external", "internal"})
_FORMATS = {"PCMU": "pcmu", "L16": "l16"}


def is_uuid(value: object) -> TypeGuard[str]:
    """True for a UUID string in the 8-4-4-4-12 hex form (any version, either case)."""
    return isinstance(value, str) and _UUID.match(value) is not None


def parse_duration(value: object) -> int | None:
    """``PT1.6S`` → 1600000 (microseconds); ``None`` when it is not a duration string."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    match = _DURATION.match(value)
    if match is None:
        return None
    try:
        return int(Decimal(match.group(1)) * 1_000_000)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return None


def format_duration(us: int) -> str:
    """Microseconds → ``PT<s>[.mmm]S`` at millisecond precision (never exponent notation)."""
    ms = max(0, (us + 500) // 1000)
    seconds, frac = divmod(ms, 1000)
    return f"PT{seconds}.{frac:03d}".rstrip("0").rstrip(".") + "S"


def _loggable(text: str) -> str:
    """``text`` with any lone surrogate (the peer can send one as a ``\\ud800`` escape) written
    as that escape: the text goes to the log, whose file is UTF-8."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _quote(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class Malformed:
    """A message we cannot accept. ``seq``/``type`` are what could be read from it (``None``
    otherwise): they let the session keep the close transaction alive after an error."""

    kind: str
    info: str
    seq: int | None = None
    type: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Envelope:
    """A client message whose envelope is well formed (parameters not yet validated)."""

    type: str
    id: str
    seq: int
    serverseq: int
    position_us: int
    parameters: Mapping[str, Any]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_envelope(text: str) -> Envelope | Malformed:
    """Check size, JSON and the fields every client message carries."""
    if len(text) > MAX_TEXT_CHARS:
        return Malformed("too_large", f"Text message too large ({len(text)} > {MAX_TEXT_CHARS} chars)")
    try:
        message = strict_json.loads(text)
    except (ValueError, RecursionError):
        return Malformed("bad_json", "Text message not valid JSON")
    if not isinstance(message, dict):
        return Malformed("bad_envelope", "Message is not a JSON object")
    seq = message.get("seq")
    seq_read = seq if _is_int(seq) and seq >= 1 else None
    mtype = message.get("type")
    type_read = mtype if isinstance(mtype, str) and len(mtype) <= 64 else None
    id_read = message["id"] if is_uuid(message.get("id")) else None

    def bad(info: str) -> Malformed:
        return Malformed("bad_envelope", info, seq_read, type_read, id_read)

    if message.get("version") != "2":
        return bad(f"version must be the string \"2\", got {_quote(message.get('version'))}")
    if id_read is None:
        return bad("id must be a UUID")
    if type_read is None:
        return bad("type must be a string")
    if seq_read is None:
        return bad("seq must be an integer >= 1")
    serverseq = message.get("serverseq")
    if not _is_int(serverseq) or serverseq < 0:
        return bad("serverseq must be an integer >= 0")
    position = parse_duration(message.get("position"))
    if position is None:
        return bad("position must be an ISO-8601 duration such as PT1.5S")
    parameters = message.get("parameters")
    if not isinstance(parameters, dict):
        return bad("parameters must be an object")
    return Envelope(type_read, message["id"], seq_read, serverseq, position, parameters)


# --- parameters, per client message type --------------------------------------------------------


@dataclass(frozen=True)
class MediaOffer:
    """One usable offered ``media`` entry: the raw entry (echoed back unchanged in ``opened``),
    the per-channel audio format, and the channel names in interleaving order."""

    raw: Mapping[str, Any]
    channel_format: AudioFormat
    channels: tuple[str, ...]

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame across all channels."""
        return self.channel_format.sample_bytes * len(self.channels)


def parse_media_offer(entry: object) -> MediaOffer | None:
    """The offer an entry describes, or ``None`` when we cannot take it (unknown format, odd
    channels). An unusable entry is not an error: the schema may grow, we just skip it."""
    if not isinstance(entry, dict) or entry.get("type") != "audio":
        return None
    name = entry.get("format")
    encoding = _FORMATS.get(name) if isinstance(name, str) else None  # a list or object is no name
    rate = entry.get("rate")
    channels = entry.get("channels")
    if encoding is None or not _is_int(rate) or not isinstance(channels, list):
        return None
    if not channels or len(set(map(str, channels))) != len(channels) or not all(
        isinstance(c, str) and c in _CHANNELS for c in channels
    ):
        return None
    try:
        fmt = AudioFormat(encoding, rate, 1)  # type: ignore[arg-type]
    except ValueError:
        return None
    return MediaOffer(entry, fmt, tuple(channels))


@dataclass(frozen=True)
class OpenParameters:
    organization_id: str
    conversation_id: str
    participant_id: str
    offers: tuple[MediaOffer, ...]
    language: str | None
    supported_languages: bool
    input_variables: Mapping[str, str] = field(default_factory=dict)
    participant: Mapping[str, str] = field(default_factory=dict)
    """``ani``, ``aniName``, ``dnis`` of the open's participant, those that are strings."""
    custom_config: Mapping[str, str] = field(default_factory=dict)
    """The string entries of ``customConfig`` (bounded like ``inputVariables``)."""

    @property
    def is_probe(self) -> bool:
        """Genesys's connection probe uses the null UUID as the conversation id."""
        return self.conversation_id == NULL_UUID


@dataclass(frozen=True)
class PositionSpan:
    """``discarded`` / ``resumed``: a span of ``discarded_us`` the client skipped from ``start_us``."""

    start_us: int
    discarded_us: int


@dataclass(frozen=True)
class ErrorReport:
    code: int
    message: str
    retry_after_us: int | None


Parameters = OpenParameters | PositionSpan | ErrorReport | str | None


MAX_VARIABLES = 64
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024
"""Bounds on what ``inputVariables`` and ``customConfig`` add to the call's metadata (they reach
the backend session, and come from the network): entries beyond the first 64 are dropped, keys
and values cut to length."""


def _string_map(value: object, strings_only: bool = False) -> dict[str, str] | None:
    """A bounded string map; None when ``value`` is not an object, or (unless ``strings_only``,
    which skips them) holds a value that is neither a string nor a number or boolean."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return None
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            text = item
        elif strings_only:
            continue
        elif isinstance(item, (int, float, bool)):
            text = json.dumps(item)  # Architect passes strings; keep numbers readable
        else:
            return None
        if len(out) < MAX_VARIABLES:
            out[key[:MAX_KEY_CHARS]] = text[:MAX_VALUE_CHARS]
    return out


PARTICIPANT_FIELDS = ("ani", "aniName", "dnis")


def parse_parameters(mtype: str, params: Mapping[str, Any]) -> Parameters | Malformed:
    """Validate ``parameters`` of a client message of type ``mtype`` (one of CLIENT_TYPES).

    Returns: ``OpenParameters`` for open; ``PositionSpan`` for discarded/resumed; ``ErrorReport``
    for error; the digits for dtmf; the reason for close; the language (or ``None``) for update;
    ``None`` for the rest.
    """

    def bad(info: str) -> Malformed:
        return Malformed("invalid_parameters", f"Invalid '{mtype}' parameters: {info}", None, mtype)

    if mtype == "open":
        org, conv = params.get("organizationId"), params.get("conversationId")
        participant = params.get("participant")
        if not is_uuid(org) or not is_uuid(conv):
            return bad("organizationId and conversationId must be UUIDs")
        if not isinstance(participant, dict) or not is_uuid(participant.get("id")):
            return bad("participant.id must be a UUID")
        media = params.get("media")
        if not isinstance(media, list):
            return bad("media must be a list")
        language = params.get("language")
        if language is not None and not isinstance(language, str):
            return bad("language must be a string")
        supported = params.get("supportedLanguages", False)
        if not isinstance(supported, bool):
            return bad("supportedLanguages must be a boolean")
        variables = _string_map(params.get("inputVariables"))
        if variables is None:
            return bad("inputVariables must map names to strings")
        custom = _string_map(params.get("customConfig"), strings_only=True)
        if custom is None:
            return bad("customConfig must be an object")
        party = {name: participant[name][:MAX_VALUE_CHARS] for name in PARTICIPANT_FIELDS
                 if isinstance(participant.get(name), str)}
        offers = tuple(o for o in map(parse_media_offer, media) if o is not None)
        return OpenParameters(org, conv, participant["id"], offers, language, supported, variables, party, custom)
    if mtype in ("discarded", "resumed"):
        start = parse_duration(params.get("start", "PT0S"))
        discarded = parse_duration(params.get("discarded"))
        if start is None or discarded is None:
            return bad("start and discarded must be durations")
        return PositionSpan(start, discarded)
    if mtype == "error":
        code, text = params.get("code"), params.get("message", "")
        if not _is_int(code) or not isinstance(text, str):
            return bad("code must be an integer and message a string")
        retry = params.get("retryAfter")
        retry_us = parse_duration(retry) if retry is not None else None
        if retry is not None and retry_us is None:
            return bad("retryAfter must be a duration")
        return ErrorReport(code, _loggable(text[:200]), retry_us)
    if mtype == "dtmf":
        digit = params.get("digit")
        if not isinstance(digit, str) or _DTMF.match(digit) is None or len(digit) > 32:
            return bad("digit must be 0-9, *, # or A-D")
        return digit.upper()
    if mtype == "ping":
        rtt = params.get("rtt")
        if rtt is not None and parse_duration(rtt) is None:
            return bad("rtt must be a duration")
        return None
    if mtype == "close":
        # Lenient on purpose: whatever the reason says, the answer is `closed`, and refusing a
        # close would only leave Genesys waiting for its close transaction to time out.
        reason = params.get("reason")
        return _loggable(reason) if isinstance(reason, str) and len(reason) <= 32 else "unknown"
    if mtype == "update":
        language = params.get("language")
        if language is not None and not isinstance(language, str):
            return bad("language must be a string")
        return language
    return None  # paused, playback_started, playback_completed: no parameters of interest


# --- what we send -----------------------------------------------------------------------------


def server_message(mtype: str, session_id: str, seq: int, clientseq: int,
                   parameters: Mapping[str, Any]) -> str:
    """Serialize one server message. ``parameters`` is always present, even when empty.

    Non-ASCII text goes out as itself, except where the message holds a lone surrogate (the peer
    can send one as a ``\\ud800`` escape, and we echo its offer and quote its type): that text
    cannot be encoded as UTF-8 for a text frame, so the message is then written all-ASCII."""
    message = {"version": "2", "id": session_id, "type": mtype, "seq": seq, "clientseq": clientseq,
               "parameters": dict(parameters)}
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(message, separators=(",", ":"))
    return text


@dataclass(frozen=True)
class Token:
    """One word of a transcript on the stream timeline (µs), as a ``tokens[]`` entry."""

    value: str
    offset_us: int
    duration_us: int
    confidence: float


def transcript_entity(entity_id: str, channel_id: int, text: str, final: bool, offset_us: int,
                      duration_us: int, language: str | None, confidence: float = 1.0,
                      tokens: Sequence[Token] = ()) -> dict[str, Any]:
    """A ``transcript`` event entity (the field is ``channelId``, never ``channel``), shaped as
    Genesys's reference transcription server sends it: each interpretation carries ``tokens[]``
    of ``{type: "word", value, confidence, offset, duration, language}``, whose ``offset`` is an
    absolute stream position like the entity's own."""
    interpretation: dict[str, Any] = {"type": "display", "transcript": text}
    if tokens:
        entries = []
        for token in tokens:
            entry: dict[str, Any] = {
                "type": "word", "value": token.value, "confidence": token.confidence,
                "offset": format_duration(token.offset_us), "duration": format_duration(token.duration_us),
            }
            if language:
                entry["language"] = language
            entries.append(entry)
        interpretation["tokens"] = entries
    alternative: dict[str, Any] = {
        "confidence": confidence,
        "interpretations": [interpretation],
    }
    if language:
        alternative["languages"] = [language]
    return {
        "type": "transcript",
        "data": {
            "id": entity_id,
            "channelId": channel_id,
            "isFinal": final,
            "offset": format_duration(offset_us),
            "duration": format_duration(duration_us),
            "alternatives": [alternative],
        },
    }


def choose_offer(offers: Sequence[MediaOffer], preferred: AudioFormat | None,
                 want_stereo: bool) -> MediaOffer | None:
    """Pick one offer: among those in ``preferred`` format (all offers when it matches none),
    the first stereo one when ``want_stereo``, else the first mono one carrying ``external``
    (the caller), else the first. Offers are in the client's order of preference."""
    pool = [o for o in offers if o.channel_format == preferred] or list(offers)
    if not pool:
        return None
    if want_stereo:
        for offer in pool:
            if len(offer.channels) > 1:
                return offer
    else:
        for offer in pool:
            if offer.channels == ("external",):
                return offer
    return pool[0]
