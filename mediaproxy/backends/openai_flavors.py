"""The OpenAI-compatible family: one table of what differs per ``flavor`` of ``openai-realtime``.

Every flavor speaks the OpenAI Realtime event protocol (``session.update``, ``input_audio_buffer``,
``response.*``, ``conversation.item.truncate``); they differ in where to dial and how to
authenticate, in the shape of the session object, in a few server event names, and in which
event opens the session. This module holds those differences as plain data and small pure
functions, so that :mod:`~mediaproxy.backends.openai_dialect` stays one protocol:

- ``openai``: OpenAI's GA Realtime API (``wss://api.openai.com/v1/realtime?model=``,
  ``Authorization: Bearer``), or any other server of the GA shape at ``url``.
- ``azure``: Azure OpenAI Realtime, GA (``wss://RESOURCE.openai.azure.com/openai/v1/realtime
  ?model=DEPLOYMENT``; the dated preview form ``/openai/realtime?api-version=&deployment=`` when
  ``api_version`` is set), ``api-key`` header or an Entra bearer token; the GA session shape.
- ``voicelive``: Azure AI Voice Live (``wss://RESOURCE.services.ai.azure.com/voice-live/realtime
  ?api-version=&model=``): the flat session shape (``input_audio_format``, ``turn_detection`` and
  ``voice`` at the top level, ``modalities``), Azure extras (``azure_semantic_vad``,
  ``azure_deep_noise_suppression``, ``server_echo_cancellation``, Azure voices) and the older
  server event names (``response.audio.delta``), renamed here to the GA ones on receipt.
- ``xai``: xAI's Grok Voice Agent (``wss://api.x.ai/v1/realtime?model=``, ``Authorization:
  Bearer``): GA event names, its own session shape (``voice``, ``turn_detection`` and ``tools``
  at the top level, formats under ``audio``, no ``type``/``model``/``output_modalities``); the
  connection opens with ``conversation.created``, not ``session.created``.

Sources: the vendors' references (OpenAI Realtime API reference; Azure "Use the GPT Realtime API
via WebSockets" and the Realtime preview-to-GA migration guide; Azure "How to use the Voice Live
API" and the Voice Live API reference 2026-04-10; xAI "Voice Agent API"). Where they disagree
with older notes, ``docs/protocols/openai-realtime.md`` ("Flavors") says so.

Nothing here runs per audio frame: the session objects are built once per connection, the
event renames are one dictionary look-up per server message, and only for ``voicelive``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from mediaproxy.audio.format import ALAW_8K, L16_24K, MULAW_8K, AudioFormat
from mediaproxy.backends.base import ToolSpec
from mediaproxy.backends.openai_session_config import (
    DEFAULT_URL,
    RealtimeOptions,
    effective_interrupt_response,
    format_mismatch,
    session_config,
    turn_detection,
    wire_format,
)
from mediaproxy.options import OptionError

XAI_URL = "wss://api.x.ai/v1/realtime"
VOICELIVE_API_VERSION = "2026-04-10"
"""The Voice Live api-version used when ``api_version`` is empty (the current reference's)."""

_AZURE_VOICE = re.compile(r"^[a-z]{2,3}-[A-Za-z0-9]{2,4}-")
"""Azure voice names start with their locale (``en-US-AvaNeural``); any other name in the
``voicelive`` flavor is an OpenAI voice (``marin``)."""


def _tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [{"type": "function", "name": t.name, "description": t.description, "parameters": dict(t.parameters)}
            for t in tools]


# --- openai and azure: the GA shape -------------------------------------------------------------


def _ga_session(options: RealtimeOptions, fmt: AudioFormat, tools: Sequence[ToolSpec]) -> dict[str, Any]:
    return session_config(options, fmt, tools)


def _azure_session(options: RealtimeOptions, fmt: AudioFormat, tools: Sequence[ToolSpec]) -> dict[str, Any]:
    # The deployment in the URL chooses the model; a session.model naming the OpenAI model
    # rather than the deployment is not Azure's to interpret, so none is sent.
    session = session_config(options, fmt, tools)
    del session["model"]
    return session


def _ga_language(options: RealtimeOptions, language: str) -> dict[str, Any]:
    return {"type": "realtime", "audio": {"input": {"transcription": {
        "model": options.transcription_model, "language": language}}}}


# --- voicelive: the flat shape plus Azure extras ------------------------------------------------

_VOICELIVE_FORMATS = {MULAW_8K: "g711_ulaw", ALAW_8K: "g711_alaw", L16_24K: "pcm16"}


def voicelive_format(fmt: AudioFormat) -> str:
    """Voice Live's ``input_audio_format``/``output_audio_format`` value for ``fmt``."""
    try:
        return _VOICELIVE_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"Voice Live cannot exchange {fmt}") from None


def _voicelive_voice(options: RealtimeOptions) -> dict[str, Any]:
    if _AZURE_VOICE.match(options.voice):
        voice: dict[str, Any] = {"type": "azure-standard", "name": options.voice}
        if options.speed != 1.0:
            voice["rate"] = f"{options.speed:g}"  # Azure voices take the rate as text
        return voice
    return {"type": "openai", "name": options.voice}


def _voicelive_turn_detection(options: RealtimeOptions) -> dict[str, Any]:
    if not options.azure_semantic_vad:
        detection = turn_detection(options)
        detection.pop("idle_timeout_ms", None)  # not in Voice Live's schema
        return detection
    return {
        "type": "azure_semantic_vad",
        "threshold": options.vad_threshold,
        "prefix_padding_ms": options.prefix_padding_ms,
        "silence_duration_ms": options.silence_duration_ms,
        "create_response": options.create_response,
        "interrupt_response": options.interrupt_response,
    }


def _voicelive_session(options: RealtimeOptions, fmt: AudioFormat, tools: Sequence[ToolSpec]) -> dict[str, Any]:
    wire = voicelive_format(fmt)
    session: dict[str, Any] = {
        # Voice Live cannot output audio alone; the text is the transcript we read anyway.
        "modalities": ["text", "audio"],
        "voice": _voicelive_voice(options),
        "input_audio_format": wire,
        "output_audio_format": wire,
    }
    if wire == "pcm16":
        session["input_audio_sampling_rate"] = 24000
    if options.instructions:
        session["instructions"] = options.instructions
    session["turn_detection"] = _voicelive_turn_detection(options)
    if options.deep_noise_suppression:
        session["input_audio_noise_reduction"] = {"type": "azure_deep_noise_suppression"}
    elif options.noise_reduction != "off":
        session["input_audio_noise_reduction"] = {"type": options.noise_reduction}
    if options.echo_cancellation:
        session["input_audio_echo_cancellation"] = {"type": "server_echo_cancellation"}
    if options.transcription_model:
        transcription: dict[str, Any] = {"model": options.transcription_model}
        if options.transcription_language:
            transcription["language"] = options.transcription_language
        session["input_audio_transcription"] = transcription
    if tools:
        session["tools"] = _tools(tools)
        session["tool_choice"] = "auto"
    return session


def _voicelive_language(options: RealtimeOptions, language: str) -> dict[str, Any]:
    return {"input_audio_transcription": {"model": options.transcription_model, "language": language}}


def _voicelive_mismatch(asked: AudioFormat, effective: Any) -> str | None:
    want = voicelive_format(asked)
    if not isinstance(effective, Mapping):
        return "session missing"
    for key in ("input_audio_format", "output_audio_format"):
        got = effective.get(key)
        # The reference's own session.updated example reports only what changed: a format it
        # does not repeat is taken as applied, one it reports otherwise is not.
        if got is not None and got != want:
            return f"{key} is {got!r}, asked for {want}"
    return None


def _voicelive_interrupt(effective: Any, default: bool) -> bool:
    detection = effective.get("turn_detection", {}) if isinstance(effective, Mapping) else {}
    if detection is None:
        return False
    value = detection.get("interrupt_response") if isinstance(detection, Mapping) else None
    return default if value is None else bool(value)


VOICELIVE_EVENT_NAMES: Mapping[str, str] = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
}
"""Voice Live's server event names → the GA names the dialect reads."""


# --- xai: GA events, its own session shape -------------------------------------------------------


def _xai_session(options: RealtimeOptions, fmt: AudioFormat, tools: Sequence[ToolSpec]) -> dict[str, Any]:
    detection: dict[str, Any] = {
        "type": "server_vad",
        "threshold": options.vad_threshold,
        "prefix_padding_ms": options.prefix_padding_ms,
        "silence_duration_ms": options.silence_duration_ms,
    }
    if options.idle_timeout_ms:
        detection["idle_timeout_ms"] = options.idle_timeout_ms
    audio_input: dict[str, Any] = {"format": wire_format(fmt)}
    if options.transcription_language:
        audio_input["transcription"] = {"language_hint": options.transcription_language}
    audio_output: dict[str, Any] = {"format": wire_format(fmt)}
    if options.speed != 1.0:
        audio_output["speed"] = options.speed
    session: dict[str, Any] = {"voice": options.voice}
    if options.instructions:
        session["instructions"] = options.instructions
    session["turn_detection"] = detection
    session["audio"] = {"input": audio_input, "output": audio_output}
    if tools:
        session["tools"] = _tools(tools)
    return session


def _xai_language(options: RealtimeOptions, language: str) -> dict[str, Any]:
    return {"audio": {"input": {"transcription": {"language_hint": language}}}}


def _xai_interrupt(effective: Any, default: bool) -> bool:
    # xAI documents no interrupt_response: the proxy cancels the response itself on barge-in.
    return False


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavor:
    """What one member of the family needs that the GA protocol does not say.

    ``session(options, fmt, tools)``: the ``session`` object of the first ``session.update``.
    ``language(options, iso)``: the ``session`` object that changes the transcription language.
    ``mismatch(asked, effective)``: the first audio-format difference in ``session.updated``
    (``None``: as asked). ``interrupts(effective, default)``: whether the server cancels a
    response by itself on caller speech. ``event_names``: server event names renamed to the GA
    ones. ``opening_events``: the server events after which the session is configured.
    ``ignored_events``: the flavor's own events the dialect needs nothing from.
    ``cancel_names_response``: ``response.cancel`` carries ``response_id``.
    """

    name: str
    session: Callable[[RealtimeOptions, AudioFormat, Sequence[ToolSpec]], dict[str, Any]]
    language: Callable[[RealtimeOptions, str], dict[str, Any]]
    mismatch: Callable[[AudioFormat, Any], str | None]
    interrupts: Callable[[Any, bool], bool]
    default_model: str
    default_voice: str
    event_names: Mapping[str, str]
    opening_events: frozenset[str]
    ignored_events: frozenset[str]
    cancel_names_response: bool


_SESSION_CREATED = frozenset({"session.created"})

FLAVORS: Mapping[str, Flavor] = {
    "openai": Flavor("openai", _ga_session, _ga_language, format_mismatch, effective_interrupt_response,
                     "gpt-realtime", "marin", {}, _SESSION_CREATED, frozenset(), True),
    "azure": Flavor("azure", _azure_session, _ga_language, format_mismatch, effective_interrupt_response,
                    "gpt-realtime", "marin", {}, _SESSION_CREATED, frozenset(), True),
    "voicelive": Flavor(
        "voicelive", _voicelive_session, _voicelive_language, _voicelive_mismatch, _voicelive_interrupt,
        "gpt-realtime", "en-US-Ava:DragonHDLatestNeural", VOICELIVE_EVENT_NAMES, _SESSION_CREATED,
        frozenset({"warning", "response.audio_timestamp.delta", "response.audio_timestamp.done",
                   "response.animation_viseme.delta", "response.animation_viseme.done",
                   "response.animation_blendshapes.delta", "response.animation_blendshapes.done",
                   "response.audio_transcript.annotation.added", "session.avatar.connecting"}),
        False),
    "xai": Flavor("xai", _xai_session, _xai_language, format_mismatch, _xai_interrupt,
                  "grok-voice-latest", "eve", {}, frozenset({"conversation.created", "session.created"}),
                  frozenset({"ping", "conversation.item.input_audio_transcription.updated"}), False),
}


def flavor_of(options: RealtimeOptions) -> Flavor:
    """The :class:`Flavor` of a parsed section."""
    return FLAVORS[options.flavor]


def resolved(options: RealtimeOptions) -> RealtimeOptions:
    """``options`` with the flavor's defaults filled in (model, voice)."""
    flavor = flavor_of(options)
    return replace(options, model=options.model or flavor.default_model,
                   voice=options.voice or flavor.default_voice)


def endpoint(options: RealtimeOptions) -> tuple[str, dict[str, str]]:
    """The URL to dial (query string included) and the upgrade headers carrying the credential.

    The OpenAI-Beta header is never sent by any flavor."""
    model = quote(options.model or flavor_of(options).default_model, safe="")
    flavor = options.flavor
    if flavor in ("openai", "xai"):
        base = options.url or (DEFAULT_URL if flavor == "openai" else XAI_URL)
        return f"{base}?model={model}", {"Authorization": f"Bearer {options.api_key}"}
    headers = ({"Authorization": f"Bearer {options.entra_token}"} if options.entra_token
               else {"api-key": options.api_key})
    if flavor == "azure":
        deployment = quote(options.deployment or options.model or "gpt-realtime", safe="")
        if options.api_version:
            query = f"api-version={quote(options.api_version, safe='')}&deployment={deployment}"
        else:
            query = f"model={deployment}"
        return f"{options.url}?{query}", headers
    version = quote(options.api_version or VOICELIVE_API_VERSION, safe="")
    return f"{options.url}?api-version={version}&model={model}", headers


def validate(options: RealtimeOptions) -> None:
    """Start-up cross-checks of a section: the flavor has what it needs to dial."""
    flavor = options.flavor
    if flavor in ("azure", "voicelive"):
        if not options.url:
            raise OptionError("url", f"flavor {flavor} needs url (the resource's Realtime endpoint)")
        if not options.api_key and not options.entra_token:
            raise OptionError("api_key", f"flavor {flavor} needs api_key or entra_token")
        if options.api_key and options.entra_token:
            raise OptionError("entra_token", "set api_key or entra_token, not both")
    else:
        if not options.api_key:
            raise OptionError("api_key", "required key is missing")
        if options.entra_token:
            raise OptionError("entra_token", f"flavor {flavor} does not take an Entra token")
    if flavor == "xai" and options.turn_detection != "server_vad":
        raise OptionError("turn_detection", "flavor xai supports server_vad only")
