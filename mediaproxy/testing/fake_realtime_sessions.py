"""The session the fake OpenAI Realtime service keeps, for each member of the family.

Each flavor's default session (as ``session.created`` reports it), where its endpoint listens,
what its upgrade must carry (:func:`upgrade_refusal`), Voice Live's older event names, and how a
``session.update`` in each flavor's own shape lands on the GA view of the session the fake runs
on (:func:`merge_session`, :func:`apply_voicelive_update`, :func:`apply_xai_update`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

DEFAULT_SESSION: Mapping[str, Any] = {
    "type": "realtime",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "Default instructions.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 200,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    },
}


#: Each flavor's default session in its own shape, as ``session.created`` reports it.
VOICELIVE_DEFAULT_SESSION: Mapping[str, Any] = {
    "model": "gpt-realtime",
    "modalities": ["text", "audio"],
    "voice": {"type": "openai", "name": "alloy"},
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_sampling_rate": 24000,
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 400, "silence_duration_ms": 500},
}
XAI_DEFAULT_SESSION: Mapping[str, Any] = {
    "voice": "eve",
    "turn_detection": {"type": "server_vad"},
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}}},
}

#: Where each flavor's fake listens (the path of its real endpoint).
FLAVOR_PATHS: Mapping[str, str] = {"openai": "/v1/realtime", "xai": "/v1/realtime", "azure": "/openai/v1/realtime",
                                   "voicelive": "/voice-live/realtime"}
#: GA server event names → Voice Live's (which keeps the older names for audio and text).
VOICELIVE_NAMES: Mapping[str, str] = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
_VOICELIVE_FORMATS: Mapping[str, dict[str, Any]] = {
    "g711_ulaw": {"type": "audio/pcmu"}, "g711_alaw": {"type": "audio/pcma"},
    "pcm16": {"type": "audio/pcm", "rate": 24000},
}


def upgrade_refusal(flavor: str, headers: Mapping[str, str], params: Mapping[str, Any], path: str,
                     api_key: str, entra_token: str | None) -> tuple[int, str] | None:
    """Why the real service of ``flavor`` would refuse this upgrade (HTTP status, reason), or
    ``None``: its credential header, its path and its query string."""
    bearer = headers.get("authorization")
    if flavor in ("openai", "xai"):
        if bearer != f"Bearer {api_key}":
            return 401, "Unauthorized"
    elif not (headers.get("api-key") == api_key or entra_token is not None and bearer == f"Bearer {entra_token}"):
        return 401, "Unauthorized"
    if flavor == "xai" and (path != "/v1/realtime" or "model" not in params):
        return 404, "Not Found"
    if flavor == "azure":
        ga = path == "/openai/v1/realtime" and "model" in params and "api-version" not in params
        dated = path == "/openai/realtime" and "api-version" in params and "deployment" in params
        if not (ga or dated):
            return 404, "Resource not found"
    if flavor == "voicelive" and (path != "/voice-live/realtime" or "api-version" not in params
                                  or "model" not in params):
        return 400, "Bad Request"
    return None


def merge_session(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``base`` as the service merges a ``session.update`` (an audio
    ``format`` or a ``turn_detection`` replaced whole); returns ``base``."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key not in ("format", "turn_detection"):
            merge_session(base[key], value)
        else:
            base[key] = json.loads(json.dumps(value))
    return base


def apply_voicelive_update(session: dict[str, Any], flavor_session: dict[str, Any], update: Mapping[str, Any]) -> None:
    """A Voice Live (flat) update: kept as sent in ``flavor_session``, and its formats, turn
    detection and tools mapped onto the GA view ``session``."""
    merge_session(flavor_session, update)
    flat, audio = flavor_session, session["audio"]
    audio["input"]["format"] = dict(_VOICELIVE_FORMATS[flat["input_audio_format"]])
    audio["output"]["format"] = dict(_VOICELIVE_FORMATS[flat["output_audio_format"]])
    if "turn_detection" in update:
        detection = dict(update["turn_detection"] or {})
        detection.setdefault("interrupt_response", True)  # the documented default
        audio["input"]["turn_detection"] = detection
    if "tools" in update:
        session["tools"] = update["tools"]


def apply_xai_update(session: dict[str, Any], flavor_session: dict[str, Any], update: Mapping[str, Any]) -> None:
    """An xAI update: kept as sent in ``flavor_session``; formats under ``audio``, turn detection
    and tools at the top level, mapped onto the GA view ``session``."""
    merge_session(flavor_session, update)
    for direction in ("input", "output"):
        fmt = ((update.get("audio") or {}).get(direction) or {}).get("format")
        if fmt is not None:
            session["audio"][direction]["format"] = dict(fmt)
    if "turn_detection" in update:
        session["audio"]["input"]["turn_detection"] = {**update["turn_detection"], "interrupt_response": False}
    if "tools" in update:
        session["tools"] = update["tools"]
