"""The ``session`` objects of the flavors whose shape is not OpenAI's GA one, as schemas written
from the vendors' references, for the fake server and the tests to hold the proxy to them.

The ``openai`` and ``azure`` flavors keep the GA shape and are validated with the ``openai``
package's models (:mod:`mediaproxy.testing.realtime_schema`). The two here:

- ``voicelive``: Azure AI Voice Live API reference, version 2026-04-10 ("RealtimeRequestSession",
  "RealtimeAudioFormat", "RealtimeTurnDetection", "RealtimeVoice",
  "RealtimeInputAudioNoiseReductionSettings", "RealtimeInputAudioEchoCancellationSettings",
  "RealtimeAudioInputTranscriptionSettings", "RealtimeTool"), and "How to use the Voice Live
  API" (learn.microsoft.com, azure/ai-services/speech-service/voice-live-how-to).
- ``xai``: xAI "Voice Agent API" (docs.x.ai, guides/voice/agent): session parameters
  ``instructions``, ``voice``, ``turn_detection`` (``server_vad``: ``threshold``,
  ``prefix_padding_ms``, ``silence_duration_ms``, ``idle_timeout_ms``), ``tools``, ``audio``
  (``input``/``output`` ``format``: ``audio/pcm`` with ``rate`` 8000 to 48000, ``audio/pcmu``,
  ``audio/pcma``; ``input.transcription.language_hint``; ``output.speed``).

Each schema is a mapping of key → check; a check returns the problems it found (empty: valid).
Unknown keys are problems, as they are for the GA models, so a key of another flavor's shape
(``type: realtime`` sent to Voice Live, ``input_audio_format`` sent to xAI) is caught.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SESSION_SCHEMAS", "check_session"]

Check = Callable[[Any, str], list[str]]


def _obj(schema: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if not isinstance(value, Mapping):
            return [f"{path}: expected an object, got {value!r}"]
        problems = [f"{path}.{key}: unknown key" for key in value if key not in schema]
        problems += [f"{path}.{key}: required" for key in required if key not in value]
        for key, sub in schema.items():
            if key in value:
                problems += sub(value[key], f"{path}.{key}")
        return problems
    return check


def _one_of(*allowed: Any) -> Check:
    return lambda v, p: [] if v in allowed else [f"{p}: {v!r} not one of {allowed}"]


def _typed(kind: type | tuple[type, ...], low: float | None = None, high: float | None = None) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if isinstance(value, bool) and kind is not bool:
            return [f"{path}: expected {kind}, got a boolean"]
        if not isinstance(value, kind):
            return [f"{path}: expected {kind}, got {value!r}"]
        number: Any = value
        if low is not None and number < low or high is not None and number > high:
            return [f"{path}: {value!r} out of range [{low}, {high}]"]
        return []
    return check


def _list(item: Check) -> Check:
    def check(value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, v in enumerate(value) for p in item(v, f"{path}[{i}]")]
    return check


def _union(tag: str, members: Mapping[str, Check]) -> Check:
    def check(value: Any, path: str) -> list[str]:
        kind = str(value.get(tag)) if isinstance(value, Mapping) else ""
        if kind not in members:
            return [f"{path}.{tag}: {kind!r} not one of {tuple(members)}"]
        return members[kind](value, path)
    return check


_STR, _BOOL, _INT = _typed(str), _typed(bool), _typed(int)
_FUNCTION_TOOL = _obj({"type": _one_of("function"), "name": _STR, "description": _STR, "parameters": _typed(dict)},
                      ("type", "name"))

# --- Azure AI Voice Live (API reference 2026-04-10) ----------------------------------------------

_VL_VAD_COMMON: dict[str, Check] = {
    "threshold": _typed((int, float), 0.01, 1.0), "prefix_padding_ms": _INT, "silence_duration_ms": _INT,
    "speech_duration_ms": _INT, "create_response": _BOOL, "interrupt_response": _BOOL, "auto_truncate": _BOOL,
    "end_of_utterance_detection": _typed(dict),
}
_VL_SEMANTIC: dict[str, Check] = {**_VL_VAD_COMMON, "remove_filler_words": _BOOL, "languages": _list(_STR)}
VOICELIVE_SESSION: Check = _obj({
    "model": _STR,
    "modalities": _list(_one_of("text", "audio", "animation", "avatar")),
    "voice": _union("type", {
        "openai": _obj({"type": _STR, "name": _one_of("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer",
                                                      "verse", "marin", "cedar")}, ("name",)),
        "azure-standard": _obj({"type": _STR, "name": _STR, "temperature": _typed((int, float), 0.0, 1.0),
                                "locale": _STR, "style": _STR, "pitch": _STR, "rate": _STR, "volume": _STR,
                                "prefer_locales": _list(_STR)}, ("name",)),
        "azure-custom": _obj({"type": _STR, "name": _STR, "endpoint_id": _STR, "temperature": _typed(float),
                              "style": _STR, "rate": _STR}, ("name", "endpoint_id")),
    }),
    "instructions": _STR,
    "input_audio_sampling_rate": _one_of(8000, 16000, 24000),
    "input_audio_format": _one_of("pcm16", "g711_ulaw", "g711_alaw"),
    "output_audio_format": _one_of("pcm16", "pcm16_8000hz", "pcm16_16000hz", "g711_ulaw", "g711_alaw"),
    "input_audio_noise_reduction": _obj({"type": _one_of("azure_deep_noise_suppression", "near_field", "far_field")},
                                        ("type",)),
    "input_audio_echo_cancellation": _obj({"type": _one_of("server_echo_cancellation")}, ("type",)),
    "input_audio_transcription": _obj({"model": _STR, "language": _STR, "prompt": _STR,
                                       "phrase_list": _list(_STR)}, ("model",)),
    "turn_detection": _union("type", {
        "server_vad": _obj({"type": _STR, **_VL_VAD_COMMON}),
        "semantic_vad": _obj({"type": _STR, "eagerness": _one_of("low", "medium", "high", "auto"),
                              "create_response": _BOOL, "interrupt_response": _BOOL}),
        "azure_semantic_vad": _obj({"type": _STR, **_VL_SEMANTIC}),
        "azure_semantic_vad_multilingual": _obj({"type": _STR, **_VL_SEMANTIC}),
    }),
    "tools": _list(_FUNCTION_TOOL),
    "tool_choice": _STR,
    "temperature": _typed((int, float), 0.6, 1.2),
    "max_response_output_tokens": _typed((int, str)),
})

# --- xAI Grok Voice Agent ---------------------------------------------------------------------

_XAI_FORMAT = _union("type", {
    "audio/pcm": _obj({"type": _STR, "rate": _one_of(8000, 16000, 21050, 24000, 32000, 44100, 48000)}),
    "audio/pcmu": _obj({"type": _STR}),
    "audio/pcma": _obj({"type": _STR}),
})
XAI_SESSION: Check = _obj({
    "instructions": _STR,
    "voice": _STR,
    "turn_detection": _obj({"type": _one_of("server_vad"), "threshold": _typed((int, float), 0.0, 1.0),
                            "prefix_padding_ms": _typed(int, 0, 10000), "silence_duration_ms": _typed(int, 0, 10000),
                            "idle_timeout_ms": _INT}, ("type",)),
    "audio": _obj({
        "input": _obj({"format": _XAI_FORMAT,
                       "transcription": _obj({"language_hint": _STR, "keyterms": _list(_STR)})}),
        "output": _obj({"format": _XAI_FORMAT, "speed": _typed((int, float), 0.7, 1.5)}),
    }),
    "tools": _list(_FUNCTION_TOOL),
    "reasoning": _obj({"effort": _STR}),
})

SESSION_SCHEMAS: Mapping[str, Check] = {"voicelive": VOICELIVE_SESSION, "xai": XAI_SESSION}


def check_session(flavor: str, session: Any) -> list[str]:
    """Problems with the ``session`` object of a ``session.update`` for ``flavor`` (``voicelive``
    or ``xai``); empty when it fits the vendor's documented shape."""
    return SESSION_SCHEMAS[flavor](session, "$.session")
