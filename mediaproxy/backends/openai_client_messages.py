"""The client side of the OpenAI Realtime (GA) exchange as pure builders: what the proxy says
to the model (system notes, the greeting and resume instructions, keypad presses, tool results,
truncations) and how caller audio becomes ``input_audio_buffer.append`` frames, coalesced to
``input_chunk_ms``.

:class:`~mediaproxy.backends.openai_dialect.RealtimeDialect` decides *when* each message goes
out and numbers it (``event_id``); this module only knows the messages' shapes, so the wire
format of what we send can be read (and checked against the ``openai`` package's GA models, see
the dialect tests) in one place.
"""

from __future__ import annotations

import base64
from typing import Any

from mediaproxy.backends.openai_ledger import Truncation

__all__ = [
    "RESUME_NOTE",
    "CallerAudioChunks",
    "audio_append",
    "function_call_output",
    "greeting_instruction",
    "keypad_message",
    "resume_note",
    "system_message",
    "truncate_message",
]

RESUME_NOTE = (
    "The connection to the caller was briefly interrupted and has been restored. This is the "
    "same call: continue the conversation where it left off and do not greet the caller again."
)
"""The system note that opens a reconnected session (followed by the recent transcript)."""


def resume_note(context: str) -> str:
    """The system note for a reconnect, with ``context`` (e.g. the recent transcript) if any."""
    return RESUME_NOTE if not context else f"{RESUME_NOTE}\n\n{context}"


def greeting_instruction(greeting: str) -> str:
    """The system note that makes the model say ``greeting`` as the call is answered."""
    return f"The call has just been answered. Greet the caller now by saying exactly: {greeting}"


def system_message(text: str) -> dict[str, Any]:
    """A system message in the conversation (``conversation.item.create``)."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]},
    }


def keypad_message(digits: str) -> dict[str, Any]:
    """The user message telling the model which keys were pressed (the WebSocket API has no
    DTMF event)."""
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": f"The caller pressed the keys {digits} on the phone keypad."}],
        },
    }


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """The answer to the tool call ``call_id`` as a conversation item."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }


def truncate_message(truncation: Truncation) -> dict[str, Any]:
    """``conversation.item.truncate``: the item was heard up to ``audio_end_ms`` only."""
    return {
        "type": "conversation.item.truncate",
        "item_id": truncation.item_id,
        "content_index": truncation.content_index,
        "audio_end_ms": truncation.audio_end_ms,
    }


def audio_append(chunk: bytes, event_id: str) -> str:
    """The ``input_audio_buffer.append`` text frame for ``chunk`` of caller audio.

    The per-frame hot path (50 events a second per call): built as text rather than through
    json.dumps, the same bytes for a fraction of the cost (base64 and our event ids need no
    escaping)."""
    return (
        '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(chunk).decode("ascii")
        + '","event_id":"' + event_id + '"}'
    )


class CallerAudioChunks:
    """Caller audio coalesced into chunks of ``chunk_bytes`` (0: every frame as it arrives).

    Fewer, larger append events cost less per call on both ends; the glue flushes a part chunk
    after a chunk's time so a caller who falls silent is not held back."""

    def __init__(self, chunk_bytes: int) -> None:
        self._chunk_bytes = chunk_bytes
        self._pending = bytearray()

    def add(self, data: bytes) -> list[bytes]:
        """Take ``data`` (any size); returns the chunks now complete, oldest first."""
        if not self._chunk_bytes:
            return [data] if data else []
        self._pending += data
        chunks = []
        while len(self._pending) >= self._chunk_bytes:
            chunks.append(bytes(self._pending[: self._chunk_bytes]))
            del self._pending[: self._chunk_bytes]
        return chunks

    @property
    def pending(self) -> bool:
        """Audio is waiting for its chunk to fill."""
        return bool(self._pending)

    def flush(self) -> bytes:
        """Whatever audio is waiting (empty when none), as a part chunk."""
        data = bytes(self._pending)
        self._pending.clear()
        return data
