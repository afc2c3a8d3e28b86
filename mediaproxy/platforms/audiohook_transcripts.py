"""Placing a Monitor call's transcripts on each channel's own stream timeline.

Genesys's Transcription Connector reads an utterance's ``offset`` and ``duration`` as positions in
that channel's stream: the position of its first and last speech sample, paused and discarded
spans included. Backends report times on the timeline of the audio they were sent (the
``Transcript``'s ``start_ms``/``end_ms``); :class:`MonitorTranscripts` maps them onto the stream
through the channel's :class:`~mediaproxy.platforms.audiohook_media.BackendTimeline` and builds
the ``event`` entities, with word ``tokens`` (the backend's word timings, or the words spread
over the utterance in proportion to their length). Without times it falls back to where the
utterance was first noticed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mediaproxy.platforms.audiohook_media import BackendTimeline, StreamTimeline
from mediaproxy.platforms.audiohook_messages import Token, transcript_entity
from mediaproxy.transcripts import Transcript

Entity = dict[str, Any]
"""One ``event`` entity, ready for the session's writer."""


class MonitorTranscripts:
    """The transcripts of one Monitor session: utterances in progress per party, and where the
    last one of each party ended (microseconds on the stream timeline)."""

    def __init__(self, timeline: StreamTimeline, backend_timeline: BackendTimeline,
                 new_id: Callable[[], str]) -> None:
        self._timeline = timeline
        self.backend_timeline = backend_timeline
        """The backend's timeline of this session's audio, kept in step by the session."""
        self._new_id = new_id
        self._utterance_start_us: dict[str, int] = {}
        self._last_final_end_us: dict[str, int] = {}
        self._partial: dict[str, Transcript] = {}  # the last partial of each party's utterance
        # A party whose utterance we closed ourselves (update, paused): the backend's rest of it
        # is dropped up to its final. The value is where we closed it (backend ms, if known).
        self._closed_early: dict[str, int | None] = {}

    def speech_started(self, role: str) -> None:
        """The backend heard ``role`` start speaking: the fallback offset of its utterance."""
        self._utterance_start_us[role] = self._timeline.position_us

    def transcript(self, transcript: Transcript, channels: Sequence[str], language: str | None) -> list[Entity]:
        """The entities (none or one) that ``transcript`` becomes on a stream of ``channels``.

        With ``start_ms``/``end_ms`` (backend times of the channel) the utterance and its words
        are mapped onto the stream timeline, paused and discarded spans included; without them
        the offset is where the utterance was first noticed (the caller's VAD, a first partial;
        the agent: the end of its previous transcript) and the duration runs to now. Partials are
        not sent (the last one is kept: an ``update`` or ``paused`` mid-utterance closes the
        utterance with it)."""
        role = "caller" if transcript.role == "caller" else "agent"
        if role in self._closed_early:
            closed_at = self._closed_early[role]
            if transcript.start_ms is None or closed_at is None or transcript.start_ms < closed_at:
                # The rest of an utterance we already closed: dropped, up to its final.
                if transcript.final:
                    del self._closed_early[role]
                return []
            del self._closed_early[role]  # it starts after the close: a new utterance
        text = transcript.text if isinstance(transcript.text, str) else ""
        if not transcript.final:
            if role not in self._utterance_start_us:
                self._utterance_start_us[role] = self._timeline.position_us
            if text.strip():
                self._partial[role] = transcript
            return []
        self._partial.pop(role, None)
        entities = [self._final(role, transcript, text, channels, language)] if text.strip() else []
        self._utterance_start_us.pop(role, None)
        return entities

    def close_utterances(self, channels: Sequence[str], language: str | None) -> list[Entity]:
        """Close every utterance in progress with its last partial (the whole text so far), as a
        final transcript, before the stream changes (a language update, a pause)."""
        entities = []
        for role, partial in list(self._partial.items()):
            entities.append(self._final(role, partial, partial.text, channels, language))
            self._utterance_start_us.pop(role, None)
            self._closed_early[role] = partial.end_ms
        self._partial.clear()
        return entities

    def _final(self, role: str, transcript: Transcript, text: str, channels: Sequence[str],
               language: str | None) -> Entity:
        now_us = self._timeline.position_us
        mapping = self.backend_timeline
        start_us = end_us = None
        if transcript.start_ms is not None and transcript.end_ms is not None:
            start_us = mapping.stream_us(transcript.start_ms)
            end_us = mapping.stream_us(max(transcript.start_ms, transcript.end_ms), end=True)
        if start_us is None or end_us is None:
            start_us = self._utterance_start_us.get(role)
            if start_us is None:
                start_us = min(self._last_final_end_us.get(role, 0), now_us)
            end_us = now_us
        end_us = max(start_us, end_us)
        self._last_final_end_us[role] = end_us
        channel = "external" if role == "caller" else "internal"
        channel_id = channels.index(channel) if channel in channels else 0
        confidence = 1.0 if transcript.confidence is None else transcript.confidence
        tokens = self._tokens(transcript, text, start_us, end_us, confidence)
        return transcript_entity(self._new_id(), channel_id, text, True, start_us, end_us - start_us,
                                 transcript.language or language, confidence, tokens)

    def _tokens(self, transcript: Transcript, text: str, start_us: int, end_us: int,
                confidence: float) -> list[Token]:
        """Word tokens on the stream timeline: the backend's word timings where it gives them,
        else the words spread over the utterance in proportion to their length."""
        mapping = self.backend_timeline
        if transcript.words:
            tokens: list[Token] = []
            for word in transcript.words:
                offset = mapping.stream_us(word.start_ms)
                finish = mapping.stream_us(max(word.start_ms, word.end_ms), end=True)
                if offset is None or finish is None:
                    break
                word_confidence = confidence if word.confidence is None else word.confidence
                tokens.append(Token(word.text, offset, max(0, finish - offset), word_confidence))
            else:
                return tokens
        words = text.split()
        total = sum(len(word) for word in words)
        if not total:
            return []
        span = end_us - start_us
        spread: list[Token] = []
        done = 0
        for value in words:
            offset = start_us + span * done // total
            done += len(value)
            spread.append(Token(value, offset, start_us + span * done // total - offset, confidence))
        return spread
