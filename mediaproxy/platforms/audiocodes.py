"""AudioCodes VoiceAI Connect / Live Hub, Bot API in streaming mode: the platform type hooks.

Protocol (summary in docs/protocols/audiocodes.md; message shapes follow the official SDK,
``audiocodes/ac-bot-api``). VAIC dials us, one WebSocket per conversation, JSON text frames only,
audio as base64 in ``audioChunk``::

    upgrade        Authorization: Bearer <token>  (401 when [platform] token is set and differs)
    plain GET      200 {"type":"ac-bot-api","success":true}   (Live Hub "validate bot connection")
    VAIC → bot     connection.validate                   bot → VAIC  connection.validated {success}
                   session.initiate {conversationId, caller, botName, expectAudioMessages,
                                     supportedMediaFormats[]}   →  session.accepted {mediaFormat}
                                                                   | session.error {reason}
                                     (expectAudioMessages false: refused, we only send audio)
                   session.resume {conversationId}       →  session.accepted | session.error
                   activities [{type:"event", name:"start", parameters}]   (call starts: greet)
                   activities [{type:"event", name:"DTMF", value:"12#"}]
                   userStream.start  →  userStream.started
                   userStream.chunk {audioChunk}         (only between started and stop)
                   userStream.stop   →  userStream.stopped
                   session.end {reasonCode, reason}
    bot → VAIC     playStream.start {streamId, mediaFormat} / playStream.chunk {streamId,
                   audioChunk} / playStream.stop {streamId}   (one open at a time, paced at 1x)
                   userStream.speech.started | .stopped | .committed | .hypothesis | .recognition
                   activities: hangup {activityParams.hangupReason},
                               transfer {activityParams.transferTarget, handoverReason},
                               sendDtmf {activityParams.dtmfDigits}, config {sessionParams}
    Unknown message types are counted and ignored (as the SDK does); user streams are tracked
    per ``participant`` (the first one is the caller's).

Media formats: ``raw/mulaw`` (µ-law 8 kHz), ``raw/lpcm16_8`` / ``raw/lpcm16`` / ``raw/lpcm16_24``
(L16 at 8/16/24 kHz). The backend picks the one that costs it least (``Backend.choose_format``);
play streams use the same format.

There is no playback acknowledgement. Barge-in is ``userStream.speech.started`` plus
``playStream.stop``, which discards what VAIC holds of the stream, so bot audio is paced at real
time plus the usual ``[playout] lead_ms`` cushion against late ticks. **Barge-in must be
enabled on the VoiceAI Connect side** (bot parameter ``bargeIn: true``, or the Live Hub bot
connection's "Barge-in" toggle, which defaults to off); otherwise VAIC withholds the caller's
audio while a play stream is open and ignores the stop. With ``barge_in = true`` in the
``[platform:...]`` section the proxy also sends ``config {sessionParams: {bargeIn: true}}`` right
after the ``start`` activity. Enable ``sendDTMF`` on the bot for DTMF to arrive.

A dropped WebSocket is not a hang-up: VAIC reconnects with ``session.resume``. Only the
``hangup`` activity (ours) or ``session.end`` (theirs) ends the call.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from mediaproxy.audio.format import FormatPreference
from mediaproxy.options import boolean, integer, option, text
from mediaproxy.platforms.audiocodes_messages import MEDIA_FORMATS
from mediaproxy.platforms.audiocodes_session import AudioCodesSession
from mediaproxy.platforms.base import PlatformType, UpgradeRefused, UpgradeRequest

__all__ = [
    "AUDIOCODES",
    "MEDIA_FORMATS",
    "VALIDATION_BODY",
    "AudioCodesOptions",
    "AudioCodesSession",
    "check_upgrade",
    "new_session",
    "plain_get",
]


@dataclass(frozen=True, kw_only=True)
class AudioCodesOptions:
    """The keys of a ``[platform:NAME] type = audiocodes`` section."""

    token: str = option(text, "", "when set, the upgrade must carry Authorization: Bearer <token>")
    barge_in: bool = option(boolean, False, "send the config activity enabling VAIC barge-in at call start")
    resume_seconds: int = option(integer(0, 3600), 30, "seconds a call whose socket dropped is held for session.resume")

VALIDATION_BODY = b'{"type":"ac-bot-api","success":true}'
"""The answer Live Hub expects to a plain GET on the bot URL."""
_UNAUTHORIZED_BODY = b'{"type":"ac-bot-api","success":false,"reason":"unauthorized"}'


def _authorized(request: UpgradeRequest, options: AudioCodesOptions) -> bool:
    token = options.token
    if not token:
        return True
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    # compare_digest takes as long for a wrong token as for a right one of the same length.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode("utf-8"), token.encode("utf-8")
    )


def check_upgrade(request: UpgradeRequest, options: AudioCodesOptions, now: float) -> None:
    """Refuse the WebSocket upgrade with 401 unless the Bearer token matches (when one is set)."""
    if not _authorized(request, options):
        raise UpgradeRefused(401, "missing or wrong bearer token")


def plain_get(request: UpgradeRequest, options: AudioCodesOptions) -> tuple[int, bytes] | None:
    """Answer Live Hub's validation GET (no upgrade): 200 with the validation JSON, or 401."""
    if not _authorized(request, options):
        return 401, _UNAUTHORIZED_BODY
    return 200, VALIDATION_BODY


def new_session(options: AudioCodesOptions, formats: FormatPreference = ()) -> AudioCodesSession:
    """A fresh session for one connection; ``formats`` (the backend's preference) picks the media
    format at ``session.initiate``."""
    return AudioCodesSession(formats, barge_in=options.barge_in)


AUDIOCODES = PlatformType(
    name="audiocodes",
    options=AudioCodesOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("token",),
    plain_get=plain_get,
    # At capacity the upgrade is accepted and session.initiate is answered with session.error
    # (VAIC then ends the call cleanly) instead of an HTTP 503.
    refuses_in_band=True,
    resume_grace_s=lambda options: float(options.resume_seconds),
    summary="AudioCodes VoiceAI Connect / Live Hub, Bot API streaming mode: JSON text frames, base64 audio",
)
