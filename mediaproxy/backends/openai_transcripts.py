"""The transcripts of one OpenAI Realtime connection, per conversation item: the text so far
while deltas arrive, the bot's final text, where the caller's speech lies on the input audio
(ms), and how much of a cut bot item the caller heard, so that the final text can be cut to
what was actually said.

Sans-IO bookkeeping for :class:`~mediaproxy.backends.openai_dialect.RealtimeDialect`, which
feeds it the transcript and speech events it parses and forwards the
:class:`~mediaproxy.backends.openai_events.TranscriptReceived` events it returns. How much of an
item's audio arrived is the ledger's (:class:`~mediaproxy.backends.openai_ledger.RealtimeLedger`).
Every table is bounded (:data:`REMEMBERED_ITEMS`, oldest first out).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mediaproxy.backends.openai_events import RealtimeEvent, TranscriptReceived
from mediaproxy.backends.openai_ledger import RealtimeLedger

REMEMBERED_ITEMS = 64
"""Transcripts, caller speech times and tool calls remembered per connection (oldest first out)."""


class RealtimeTranscripts:
    """Per-item transcript state of one connection; ``ledger`` tells how much audio arrived."""

    def __init__(self, ledger: RealtimeLedger) -> None:
        self._ledger = ledger
        self._partial: OrderedDict[str, str] = OrderedDict()
        self._bot_final: OrderedDict[str, str] = OrderedDict()
        self._speech: OrderedDict[str, list[int | None]] = OrderedDict()
        self._heard_ms: OrderedDict[str, int] = OrderedDict()

    # --- caller speech -------------------------------------------------------------------------

    def speech_started(self, item_id: str, start_ms: int) -> None:
        """The caller began the item ``item_id`` at ``start_ms`` of this connection's input."""
        remember(self._speech, item_id, [start_ms, None])

    def speech_stopped(self, item_id: str, end_ms: int) -> None:
        """The caller's item ``item_id`` ended at ``end_ms`` (ignored for an unknown item)."""
        times = self._speech.get(item_id)
        if times is not None:
            times[1] = end_ms

    def speech_times(self, item_id: str) -> tuple[int | None, int | None]:
        """Where the caller's item lies on this connection's input audio (ms), when known."""
        times = self._speech.get(item_id)
        return (None, None) if times is None else (times[0], times[1])

    # --- transcript text -----------------------------------------------------------------------

    def partial(self, role: str, item_id: str, delta: Any) -> list[RealtimeEvent]:
        """A delta: the item's whole text so far (a null or empty delta adds nothing)."""
        piece = text_field(delta)
        if not piece:
            return []
        text = self._partial.get(item_id, "") + piece
        remember(self._partial, item_id, text)
        start, end = self.speech_times(item_id) if role == "caller" else (None, None)
        return [TranscriptReceived(role, text, False, item_id, start, end)]

    def bot_final(self, item_id: str, transcript: Any) -> TranscriptReceived:
        """The bot's final text of ``item_id``, cut to what the caller heard of it."""
        text = text_field(transcript)
        self._partial.pop(item_id, None)
        remember(self._bot_final, item_id, text)
        return TranscriptReceived("bot", self.heard_text(item_id, text), True, item_id)

    def caller_final(self, item_id: str, transcript: Any) -> TranscriptReceived:
        """The caller's final text of ``item_id`` with where it was spoken."""
        self._partial.pop(item_id, None)
        spoke_from, spoke_to = self.speech_times(item_id)
        return TranscriptReceived("caller", text_field(transcript), True, item_id, spoke_from, spoke_to)

    # --- what was heard of a cut item ----------------------------------------------------------

    def item_cut(self, item_id: str, heard_ms: int) -> None:
        """The caller heard ``heard_ms`` of the bot item ``item_id`` before it was cut."""
        remember(self._heard_ms, item_id, heard_ms)

    def heard_transcript(self, item_id: str) -> str | None:
        """The final bot transcript of ``item_id`` cut to what the caller heard, when both the
        transcript and a cut are known (a transcript that arrived before the barge-in); None
        otherwise."""
        text = self._bot_final.get(item_id)
        return None if text is None or item_id not in self._heard_ms else self.heard_text(item_id, text)

    def heard_text(self, item_id: str, text: str) -> str:
        """``text`` of ``item_id`` cut in proportion to what of its audio the caller heard.

        Proportional truncation rather than dropping: the caller did hear the first part, and
        the replay after a reconnect should say so; speech runs at a roughly even number of
        characters per second, so heard ms / received ms of the item's audio is a fair measure
        of the words heard. The cut goes back to a word boundary (a half word was not said)."""
        heard = self._heard_ms.get(item_id)
        if heard is None:
            return text
        total = self._ledger.received_ms(item_id)
        if heard <= 0 or total <= 0:
            return ""
        if heard >= total:
            return text
        end = len(text) * heard // total
        if end < len(text) and not text[end].isspace():
            space = text.rfind(" ", 0, end + 1)
            end = space if space >= 0 else 0
        return text[:end].rstrip()


def text_field(value: Any) -> str:
    """A peer's text field: itself when a string, empty otherwise (never ``"None"``)."""
    return value if isinstance(value, str) else ""


def remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Store ``value`` under ``key`` as the newest entry, forgetting the oldest past
    :data:`REMEMBERED_ITEMS`."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > REMEMBERED_ITEMS:
        table.popitem(last=False)
