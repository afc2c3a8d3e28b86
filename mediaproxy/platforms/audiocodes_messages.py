"""The AudioCodes Bot API vocabulary: media format names, the reading of the ``start``
activity's parameters, and the exact shapes of the messages the bot sends to VoiceAI Connect (as
in the official SDK, ``audiocodes/ac-bot-api``); each of those functions returns one JSON text
frame. When to send which is the session's business (:mod:`mediaproxy.platforms.audiocodes_session`).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from mediaproxy.audio.format import L16_8K, L16_16K, L16_24K, MULAW_8K, AudioFormat

MEDIA_FORMATS: Mapping[str, AudioFormat] = {
    "raw/mulaw": MULAW_8K,
    "raw/lpcm16_8": L16_8K,
    "raw/lpcm16": L16_16K,
    "raw/lpcm16_24": L16_24K,
}
"""The headerless ``mediaFormat`` names we accept. The ``wav/...`` variants carry a WAV header in
the first chunk of every stream; nothing here needs them, so they are never chosen."""

DTMF_OUT_MAX = 20
"""``sendDtmf`` accepts at most this many digits per activity."""

# Bounds on what start parameters may add to CallStarted.metadata (they reach the backend, and
# come from the network).
MAX_PARAMETERS = 64
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024


def dump(message: Mapping[str, Any]) -> str:
    """Compact JSON for one message. Non-ASCII text goes out as itself, except where the message
    holds a lone surrogate (VAIC can send one as a ``\\ud800`` escape, and we echo its
    ``participant`` and ``conversationId``): that text cannot be encoded as UTF-8 for a text
    frame, so the message is then written all-ASCII."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(message, separators=(",", ":"))
    return text


def metadata_text(value: Any) -> str | None:
    """A ``start`` parameter (or initiate field) as bounded metadata text; ``None``: leave it
    out."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    else:  # nested objects (participants, SIP headers) travel as compact JSON
        try:
            text = dump(value)
        except (ValueError, RecursionError):
            return None
    return text[:MAX_VALUE_CHARS]


def start_metadata(parameters: Mapping[Any, Any]) -> dict[str, str]:
    """The ``start`` activity's ``parameters`` (caller, callee, locale, participants, SIP
    headers, ...) as string metadata for the backend session: at most :data:`MAX_PARAMETERS`
    entries, keys and values cut to length."""
    metadata: dict[str, str] = {}
    for key, value in parameters.items():
        if len(metadata) >= MAX_PARAMETERS:
            break
        text = metadata_text(value)
        if isinstance(key, str) and text is not None:
            metadata[key[:MAX_KEY_CHARS]] = text
    return metadata


def session_accepted(media_format: str | None = None) -> str:
    """Accept ``session.initiate`` (with the chosen format) or ``session.resume`` (the SDK sends
    no format then: it was agreed at the initiate)."""
    if media_format is None:
        return '{"type":"session.accepted"}'
    return dump({"type": "session.accepted", "mediaFormat": media_format})


def session_error(reason: str, conversation_id: str | None = None) -> str:
    """Decline or abort the conversation; VAIC then ends the call and closes the socket."""
    message = {"type": "session.error", "reason": reason}
    if conversation_id is not None:
        message["conversationId"] = conversation_id
    return dump(message)


CONNECTION_VALIDATED = '{"type":"connection.validated","success":true}'
SPEECH_STARTED = '{"type":"userStream.speech.started"}'
SPEECH_STOPPED = '{"type":"userStream.speech.stopped"}'
SPEECH_COMMITTED = '{"type":"userStream.speech.committed"}'


def user_stream_ack(kind: str, participant: Any) -> str:
    """``userStream.started``/``userStream.stopped``, naming the party in agent-assist calls."""
    message = {"type": kind}
    if isinstance(participant, str):
        message["participant"] = participant
    return dump(message)


def _speech(kind: str, alternative: Mapping[str, Any], participant: str | None) -> str:
    message: dict[str, Any] = {"type": kind}
    if participant is not None:
        message["participant"] = participant
    message["alternatives"] = [alternative]
    return dump(message)


def hypothesis(text: str, participant: str | None = None) -> str:
    """A partial transcript of the caller: the whole text so far (VAIC also uses it for
    barge-in). ``participant`` names the user stream in agent-assist calls, as in the SDK."""
    return _speech("userStream.speech.hypothesis", {"text": text}, participant)


def recognition(text: str, confidence: float = 1.0, participant: str | None = None) -> str:
    """A final transcript of the caller. The SDK's shape always has a confidence; the backends
    give none, so 1.0 stands in."""
    return _speech("userStream.speech.recognition", {"text": text, "confidence": confidence}, participant)


def play_start(stream_id: str, media_format: str) -> str:
    """Open a play stream (``stream_id`` unique within the conversation)."""
    return dump({"type": "playStream.start", "streamId": stream_id, "mediaFormat": media_format})


def play_chunk(stream_id: str, audio: bytes) -> str:
    """One chunk of bot audio. Hand-built: it runs 50 times a second per call, and both values
    are JSON-safe (our own stream id, base64 text)."""
    chunk = binascii.b2a_base64(audio, newline=False).decode("ascii")
    return f'{{"type":"playStream.chunk","streamId":"{stream_id}","audioChunk":"{chunk}"}}'


def play_stop(stream_id: str) -> str:
    """Close a play stream (end of utterance, or barge-in)."""
    return dump({"type": "playStream.stop", "streamId": stream_id})


def activities(*events: Mapping[str, Any]) -> str:
    """An ``activities`` message carrying ``events``."""
    return dump({"type": "activities", "activities": list(events)})


def hangup(reason: str) -> str:
    """End the call from the bot's side."""
    return activities({"type": "event", "name": "hangup", "activityParams": {"hangupReason": reason}})


MAX_HANDOVER_CHARS = 500
"""``handoverReason`` is shown to the person taking the call: a summary, not a transcript."""


def transfer(target: str, reason: str) -> str:
    """Hand the call to ``target`` (a ``tel:``/``sip:`` URI or whatever VAIC's bot configuration
    routes), with ``reason`` as the ``handoverReason``."""
    params: dict[str, str] = {"transferTarget": target}
    if reason:
        params["handoverReason"] = reason[:MAX_HANDOVER_CHARS]
    return activities({"type": "event", "name": "transfer", "activityParams": params})


def send_dtmf(digits: str) -> str:
    """Play ``digits`` (``0-9*#``, already checked) to the caller, 20 per activity."""
    return activities(*(
        {"type": "event", "name": "sendDtmf", "activityParams": {"dtmfDigits": digits[i:i + DTMF_OUT_MAX]}}
        for i in range(0, len(digits), DTMF_OUT_MAX)
    ))


ENABLE_BARGE_IN = activities({"type": "event", "name": "config", "sessionParams": {"bargeIn": True}})
"""The ``config`` activity that turns VAIC barge-in on for the rest of the call."""
