"""The JSON text frames the backend dialects send (Deepgram, ElevenLabs, the bot protocol)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def text_frame(message: Mapping[str, Any]) -> str:
    """``message`` as the text of one WebSocket text frame. Non-ASCII text goes out as itself,
    except where the message holds a lone surrogate (a tool's output, a name the peer sent as
    ``"\\ud800"``): that cannot be encoded as UTF-8, so the message is then written all-ASCII."""
    text = json.dumps(message, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(message)
    return text


__all__ = ["text_frame"]
