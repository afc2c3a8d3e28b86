"""The Deepgram Voice Agent ``Settings`` message: what one connection asks the agent to be.

The first client message of every connection (the service keeps nothing across connections, so
a reconnect sends it again, with its own prompt and without the greeting). It names the audio
format both ways, the listen/think/speak providers, the prompt, the greeting, the language and the
client-side functions. :mod:`mediaproxy.testing.fake_deepgram` checks it against the vendor's
documented shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mediaproxy.audio.format import ALAW_8K, MULAW_8K, AudioFormat
from mediaproxy.backends.base import ToolSpec

if TYPE_CHECKING:
    from mediaproxy.backends.deepgram import DeepgramOptions


def wire_encoding(fmt: AudioFormat) -> dict[str, Any]:
    """The ``audio.input`` fields for ``fmt`` (``mulaw``/``alaw`` 8 kHz or ``linear16``)."""
    if fmt == MULAW_8K:
        return {"encoding": "mulaw", "sample_rate": 8000}
    if fmt == ALAW_8K:
        return {"encoding": "alaw", "sample_rate": 8000}
    if fmt.encoding == "l16" and fmt.channels == 1:
        return {"encoding": "linear16", "sample_rate": fmt.rate_hz}
    raise ValueError(f"Deepgram Voice Agent cannot exchange {fmt}")


def settings_message(
    options: DeepgramOptions,
    fmt: AudioFormat,
    tools: Sequence[ToolSpec] = (),
    *,
    prompt: str,
    greeting: str,
    language: str,
) -> dict[str, Any]:
    """The ``Settings`` message for a call exchanging ``fmt`` both ways, offering ``tools`` as
    client-side functions (``agent.think.functions``). ``prompt``/``greeting``/``language`` are
    given apart from ``options`` because a reconnect and the call's context change them."""
    think: dict[str, Any] = {"provider": {"type": options.think_provider, "model": options.think_model}}
    if prompt:
        think["prompt"] = prompt
    if tools:
        think["functions"] = [
            {"name": t.name, "description": t.description, "parameters": dict(t.parameters)} for t in tools
        ]
    agent: dict[str, Any] = {
        "listen": {"provider": {"type": "deepgram", "model": options.listen_model}},
        "think": think,
        "speak": {"provider": {"type": "deepgram", "model": options.speak_model}},
    }
    if language:
        agent["language"] = language
    if greeting:
        agent["greeting"] = greeting
    return {
        "type": "Settings",
        "audio": {"input": wire_encoding(fmt), "output": {**wire_encoding(fmt), "container": "none"}},
        "agent": agent,
    }
