"""What was said: the neutral transcript a backend reports and a platform passes on.

Times are milliseconds on the timeline of the caller audio the backend received for one channel
of one call: 0 is the first sample the bridge forwarded on that channel. A platform that reports
transcripts with offsets (AudioHook) maps them onto its own stream timeline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    """One recognised word and where it lies (ms), with the recogniser's confidence (0 to 1)."""

    text: str
    start_ms: int
    end_ms: int
    confidence: float | None = None


@dataclass(frozen=True)
class Transcript:
    """A transcript of ``role`` (``caller``; ``agent`` for the other party of a monitored call;
    ``bot``). ``final`` false: a partial hypothesis (the whole text so far, never a fragment).
    ``start_ms``/``end_ms``: the first and last speech sample of the utterance on the channel's
    timeline, None when the backend does not say. ``words``: word timings where the backend gives
    them. ``language``: a BCP-47 tag when known."""

    role: str
    text: str
    final: bool = True
    start_ms: int | None = None
    end_ms: int | None = None
    words: tuple[Word, ...] = ()
    confidence: float | None = None
    language: str | None = None


def heard_part(text: str, heard_ms: int, total_ms: int) -> str:
    """What the caller heard of ``text`` when ``heard_ms`` of the ``total_ms`` of bot audio that
    says it had played before a barge-in: ``text`` cut in proportion, back to a word boundary
    (half a word was not said). All of it when everything played; nothing when nothing did."""
    if heard_ms <= 0 or total_ms <= 0:
        return ""
    if heard_ms >= total_ms:
        return text
    end = len(text) * heard_ms // total_ms
    if end < len(text) and not text[end].isspace():
        space = text.rfind(" ", 0, end + 1)
        end = space if space >= 0 else 0
    return text[:end].rstrip()
