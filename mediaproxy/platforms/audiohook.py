"""Genesys Cloud AudioHook (protocol v2): Monitor and Audio Connector, as a sans-IO session.

The protocol, as this module speaks it (summary: docs/protocols/audiohook.md)
--------------------------------------------------------------------------

Genesys is the client. It opens a WebSocket (no subprotocol) with ``Audiohook-Organization-Id``,
``Audiohook-Session-Id``, ``Audiohook-Correlation-Id`` and ``X-API-KEY`` headers, plus
``Signature-Input``/``Signature`` when a client secret is configured. :func:`check_upgrade`
refuses a bad key or signature with HTTP 401.

Text frames are JSON, one message each, under 64 KiB::

    {"version": "2", "id": <session uuid>, "type": ..., "seq": n, "parameters": {...},
     client only: "serverseq": <last seq of ours it processed>, "position": "PT<s>S",
     server only: "clientseq": <last seq of theirs we processed>}

Each side numbers its text messages 1, 2, 3... with no gap; ``parameters`` is always present.
Binary frames are raw audio samples, interleaved by sample frame in the selected channel order.

    Genesys                                  us
    open{organizationId, conversationId,  →
         participant, media[...], ...}
                                          ←  opened{media:[one offered entry, unchanged],
                                                    startPaused, [discardTo], [supportedLanguages]}
                                             (at once: never waiting for the backend)
    binary audio ...                      →  CallerAudio per channel
    ping                                  ←  pong            (clientseq = the ping's seq)
    paused / resumed{start, discarded}    →  CallerStreamPaused; the timeline moves on
    discarded{start, discarded}           →  the timeline moves on
    update{language}                      ←  updated          (LanguageChanged when new)
    error{code, message, [retryAfter]}    →  PlatformError (+ PlaybackFlowChanged on 429)
    dtmf{digit}                           →  DtmfReceived              (Audio Connector)
    playback_started / _completed         →  tracked                   (Audio Connector)
                                          ←  pause / resume  (our flow control)
                                          ←  event{entities:[transcript...]}      (Monitor)
                                          ←  binary PCMU bot audio, real-time paced (Connector)
                                          ←  event{entities:[{type:"barge_in"}]}  (Connector)
                                          ←  disconnect{reason: completed|error|unauthorized,
                                                        info, [outputVariables]}
    close{reason}                         →  (always answered, in any state)
                                          ←  closed          → CallEnded; Genesys closes the socket

Genesys's connection probe is a session whose ``conversationId`` is the null UUID: it is answered
open→opened and close→closed and never becomes a call (no CallStarted, no audio, no CallEnded).

Every violation (bad JSON, wrong seq, unknown type, wrong direction, binary before opened,
oversize text, ...) queues ``disconnect{reason:"error", info}`` and returns a ProtocolViolation;
the session then only waits for Genesys's ``close`` (answering ``ping`` meanwhile) and answers it
with ``closed``. It never answers an ``open`` after a ``disconnect``.
"""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mediaproxy.audio.format import FormatPreference
from mediaproxy.options import boolean, choice, integer, name_list, option
from mediaproxy.platforms.audiohook_messages import is_uuid
from mediaproxy.platforms.audiohook_session import DEFAULT_RETRY_AFTER_MS, MAX_PACKET_BYTES, AudioHookSession
from mediaproxy.platforms.audiohook_signature import decode_client_secret, verify_signature
from mediaproxy.platforms.base import PlatformError, PlatformType, UpgradeRefused, UpgradeRequest

__all__ = [
    "AUDIOHOOK", "AudioHookOptions", "check_upgrade", "new_session", "AudioHookSession", "PlatformError",
    "MAX_PACKET_BYTES", "DEFAULT_RETRY_AFTER_MS",
]

_API_KEY = re.compile(r"^[a-zA-Z0-9+/_-]+={0,2}$")


def _api_key(value: str) -> str:
    if value and not _API_KEY.match(value):
        raise ValueError("an AudioHook API key matches ^[a-zA-Z0-9+/_-]+={0,2}$")
    return value


def _packet_ms(value: str) -> int:
    ms = integer(20, MAX_PACKET_BYTES // 8)(value)  # PCMU/8000 mono: 8 bytes per ms
    if ms % 10:
        raise ValueError(f"must be a multiple of 10 ms (a whole number of playout ticks), got {ms}")
    return ms


@dataclass(frozen=True, kw_only=True)
class AudioHookOptions:
    """The keys of a ``[platform:NAME] type = audiohook`` section."""

    mode: str = option(choice("monitor", "connector"), "monitor",
                       "monitor: caller and agent audio in only; connector: Audio Connector, the bot talks back")
    api_key: str = option(_api_key, "", "when set, X-API-KEY must equal it")
    client_secret: bytes = option(decode_client_secret, b"",
                                  "base64; when set, HTTP message signatures are required and verified")
    packet_ms: int = option(_packet_ms, 200, "connector: duration of each outbound audio message, ms (200 ms = 1600 B)")
    start_paused: bool = option(boolean, False, "answer open with startPaused: audio starts on resume")
    discard_to_ms: int = option(integer(0, 3_600_000), 0, "ask Genesys to skip the first N ms of audio")
    languages: tuple[str, ...] = option(name_list, (),
                                        "comma-separated supportedLanguages, sent when open asks for them")


def _public_authority(public_url: str) -> str:
    """The authority Genesys dialed, from ``[proxy] public_url`` (default ports dropped)."""
    if not public_url:
        return ""
    parts = urlsplit(public_url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return ""
    default = 443 if parts.scheme in ("wss", "https") else 80
    return host if port in (None, default) else f"{host}:{port}"


def check_upgrade(request: UpgradeRequest, options: AudioHookOptions, now: float) -> None:
    """Authenticate the upgrade: ``X-API-KEY`` when ``api_key`` is set, the HTTP message signature
    when ``client_secret`` is set (``now`` in Unix seconds). Raises :class:`UpgradeRefused` (401
    for credentials, 400 for a malformed session id). The verdict is immediate; delaying failures
    to 500 ms is the glue's job."""
    headers = request.headers
    api_key = options.api_key
    secret = options.client_secret
    if api_key:
        sent = headers.get("x-api-key", "").strip().encode("utf-8")
        if not hmac.compare_digest(sent, api_key.encode("utf-8")):
            raise UpgradeRefused(401, "X-API-KEY missing or wrong")
    session_id = headers.get("audiohook-session-id")
    if session_id is not None and not is_uuid(session_id.strip()):
        raise UpgradeRefused(400, "Audiohook-Session-Id is not a UUID")
    if secret:
        check = verify_signature(headers, request.target, request.host, secret, now)
        if not check.ok and check.reason == "mismatch":
            # Behind a proxy that rewrites Host, Genesys signed the authority it dialed.
            public = _public_authority(request.public_url)
            if public and public != request.host.strip().lower():
                check = verify_signature(headers, request.target, public, secret, now)
        if not check.ok:
            raise UpgradeRefused(401, f"signature verification failed ({check.reason})")


def new_session(options: AudioHookOptions, formats: FormatPreference = ()) -> AudioHookSession:
    """A fresh session for one AudioHook connection; ``formats`` (the backend's preference) picks
    among the offered media."""
    return AudioHookSession(
        mode=options.mode,
        formats=formats,
        packet_ms=options.packet_ms,
        start_paused=options.start_paused,
        discard_to_ms=options.discard_to_ms,
        languages=options.languages,
    )


AUDIOHOOK = PlatformType(
    name="audiohook",
    options=AudioHookOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("api_key", "client_secret"),
    summary="Genesys Cloud AudioHook v2 (Monitor) and Audio Connector: JSON text control, binary PCMU audio",
)
