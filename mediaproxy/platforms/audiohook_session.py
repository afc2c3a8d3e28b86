"""The AudioHook session: one Genesys connection as a sans-IO state machine.

The protocol it speaks is described at the top of :mod:`mediaproxy.platforms.audiohook`; the
messages are parsed and built in :mod:`~mediaproxy.platforms.audiohook_messages` and the media is
split in :mod:`~mediaproxy.platforms.audiohook_media`. This module holds the state: the one writer
that numbers every message we send, the session phase, the selected media and the timeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from mediaproxy.audio.format import AudioFormat, FormatPreference, choose_format
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.audiohook_media import BackendTimeline, ChannelSplitter, StreamTimeline
from mediaproxy.platforms.audiohook_messages import (
    CLIENT_TYPES,
    ERROR_CODES,
    NULL_UUID,
    SERVER_TYPES,
    Envelope,
    ErrorReport,
    Malformed,
    MediaOffer,
    OpenParameters,
    PositionSpan,
    choose_offer,
    format_duration,
    is_uuid,
    parse_envelope,
    parse_parameters,
    server_message,
)
from mediaproxy.platforms.audiohook_transcripts import MonitorTranscripts
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallerStreamPaused,
    CallStarted,
    DtmfReceived,
    LanguageChanged,
    PlatformCapabilities,
    PlatformError,
    PlatformSession,
    PlaybackFlowChanged,
    ProtocolViolation,
    UpgradeRequest,
)
from mediaproxy.transcripts import Transcript

__all__ = ["AudioHookSession", "MAX_PACKET_BYTES", "DEFAULT_RETRY_AFTER_MS"]

MAX_PACKET_BYTES = 64000
"""The largest outbound audio message (Genesys's own sample chunks at this size)."""

DEFAULT_RETRY_AFTER_MS = 1000
"""How long to hold back after a 429 that names no ``retryAfter``."""

METADATA_PREFIX = "audiohook."
"""Prefix of the metadata keys the session adds from ``open`` besides ``inputVariables``
(``audiohook.participant.ani``, ``audiohook.language``, ``audiohook.customConfig.<key>``), so
they cannot collide with the flow's own variable names."""

MAX_SUMMARY_CHARS = 1000
"""``transferSummary`` in Audio Connector ``outputVariables``: a summary for the agent."""


class _State(Enum):
    AWAIT_OPEN = "await_open"
    OPEN = "open"
    DISCONNECTING = "disconnecting"  # we sent disconnect; waiting for Genesys's close
    CLOSED = "closed"  # we sent closed; Genesys closes the socket


def _random_id() -> str:
    return str(uuid.uuid4())


DISCONNECT_REASONS: Mapping[Outcome, str] = {
    Outcome.COMPLETED: "completed",
    Outcome.BOT_HANGUP: "completed",
    Outcome.TRANSFERRED: "completed",
    Outcome.BACKEND_FAILED: "error",
    Outcome.PROTOCOL_ERROR: "error",
    Outcome.DISCONNECTED: "error",
    Outcome.DRAINED: "error",
    Outcome.TIMEOUT: "error",
}
"""The ``disconnect`` reason for each way a call ends. Architect routes ``completed`` down the
success path, so only a conversation the bot finished (or handed on) says it; a failure, a drain
or a timeout says ``error`` and the flow's failure path (an agent queue) takes over."""


class AudioHookSession(PlatformSession):
    """One AudioHook connection, sans-IO (see the module docstring for the protocol).

    ``mode`` is ``monitor`` (audio in; transcripts back as events) or ``connector`` (Audio
    Connector: mono caller audio in, bot audio out in ``packet_ms`` packets). ``formats`` (the
    backend's preference) chooses among the offered formats. ``new_id`` makes ids for transcript entities.
    """

    def __init__(
        self,
        mode: str,
        formats: FormatPreference = (),
        *,
        packet_ms: int = 200,
        start_paused: bool = False,
        discard_to_ms: int = 0,
        languages: Sequence[str] = (),
        new_id: Callable[[], str] = _random_id,
    ) -> None:
        super().__init__()
        if mode not in ("monitor", "connector"):
            raise ValueError(f"unknown AudioHook mode {mode!r}")
        self.mode = mode
        self._formats = formats
        self._packet_ms = packet_ms
        self._start_paused = start_paused
        self._discard_to_ms = discard_to_ms
        self._languages = tuple(languages)
        self._new_id = new_id
        connector = mode == "connector"
        # Audio Connector discards what it holds on `barge_in`, so the usual `[playout] lead_ms`
        # applies: without it a tick a few ms late is a gap the caller hears. The lead is a fixed
        # offset, never a burst (the playout sends only what came due and re-anchors after a
        # stall), so the rate stays real time, which is what Genesys's 429 guards.
        self.capabilities = PlatformCapabilities(
            can_flush=connector, has_marks=False, max_lead_ms=None if connector else 0,
            packet_ms=packet_ms, plays_audio=connector, can_transfer=connector,
        )
        self._state = _State.AWAIT_OPEN
        self._seq = 0  # last seq we sent
        self._clientseq = 0  # last client seq we processed
        self._session_id: str | None = None
        self._expected_org: str | None = None
        self.correlation_id: str | None = None
        self.conversation_id: str | None = None
        self.language: str | None = None
        self.is_probe = False
        self._call_started = False
        self._offer: MediaOffer | None = None
        self._splitter: ChannelSplitter | None = None
        self._timeline = StreamTimeline(8000)
        self._server_paused = False  # we asked for a pause and have not resumed
        self._reported_paused = False  # we told the bridge the caller stream is paused
        self.playback_active = False  # between playback_started and playback_completed
        self._audio_since_clear = False
        self._transcripts = MonitorTranscripts(self._timeline, BackendTimeline(8000), new_id)

    # --- binding -----------------------------------------------------------------------------

    def bind_upgrade(self, request: UpgradeRequest) -> None:
        """Learn the upgrade headers (call right after creation): every message's ``id`` must
        then equal ``Audiohook-Session-Id``, and ``open.organizationId`` must equal
        ``Audiohook-Organization-Id``."""
        headers = request.headers
        session_id = headers.get("audiohook-session-id", "").strip()
        if is_uuid(session_id):
            self._session_id = session_id
        org = headers.get("audiohook-organization-id", "").strip()
        self._expected_org = org or None
        self.correlation_id = headers.get("audiohook-correlation-id", "").strip() or None

    # --- state the glue reads ----------------------------------------------------------------

    @property
    def awaits_close(self) -> bool:
        """True from our ``disconnect`` until Genesys's ``close`` has been answered."""
        return self._state is _State.DISCONNECTING

    @property
    def finished(self) -> bool:
        """True once ``closed`` is sent: nothing more is accepted, so the glue may close the
        socket even when no call was started (a probe, or a session that failed before open)
        instead of relying on Genesys to close it."""
        return self._state is _State.CLOSED

    @property
    def session_id(self) -> str | None:
        """The AudioHook session id (from the upgrade header or the first message)."""
        return self._session_id

    @property
    def position_us(self) -> int:
        """The stream position: samples received plus skipped spans, in microseconds."""
        return self._timeline.position_us

    # --- the writer: every text message we send goes through here ----------------------------

    def _send(self, mtype: str, parameters: Mapping[str, Any]) -> None:
        self._seq += 1
        self._output.append(
            server_message(mtype, self._session_id or NULL_UUID, self._seq, self._clientseq, parameters)
        )

    def _violation(self, kind: str, info: str, reason: str = "error") -> list[Any]:
        self._send("disconnect", {"reason": reason, "info": f"Client Error: {info}" if reason == "error" else info})
        self._state = _State.DISCONNECTING
        return [ProtocolViolation(kind, info)]

    def _answer_close(self, reason: str) -> list[Any]:
        self._send("closed", {})
        self._state = _State.CLOSED
        if self._call_started:
            self._call_started = False
            return [CallEnded(reason)]
        return []

    # --- input -------------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[Any]:
        """Handle one text frame; returns neutral events (see the module docstring)."""
        if self._state is _State.CLOSED:
            return []
        parsed = parse_envelope(text)
        if isinstance(parsed, Malformed):
            return self._malformed(parsed)
        if self._state is _State.DISCONNECTING:
            return self._while_disconnecting(parsed)
        if parsed.seq != self._clientseq + 1:
            events = self._violation(
                "bad_seq", f"Invalid seq value (expected {self._clientseq + 1}, got {str(parsed.seq)[:20]})"
            )
            return events + self._close_too(parsed)
        self._clientseq = parsed.seq
        if self._session_id is None:
            self._session_id = parsed.id
        if parsed.serverseq > self._seq:
            detail = f"serverseq {str(parsed.serverseq)[:20]} is above our seq {self._seq}"
            return self._violation("bad_serverseq", detail) \
                + self._close_too(parsed)
        if parsed.id.lower() != self._session_id.lower():
            return self._violation("bad_id", "Session identifier mismatch") + self._close_too(parsed)
        if parsed.type in SERVER_TYPES:
            return self._violation("wrong_direction", f"'{parsed.type}' is a server message")
        if parsed.type not in CLIENT_TYPES:
            return self._violation("unknown_type", f"'{parsed.type[:32]}' is not a supported client message")
        params = parse_parameters(parsed.type, parsed.parameters)
        if isinstance(params, Malformed):
            return self._violation(params.kind, params.info) + self._close_too(parsed)
        return self._dispatch(parsed, params)

    def invalid_text(self, payload: bytes) -> list[Any]:
        """A text frame that is not UTF-8: ``disconnect`` with reason ``error`` (as for any
        malformed message), then the close transaction; nothing once disconnecting."""
        if self._state in (_State.CLOSED, _State.DISCONNECTING):
            return []
        return self._violation("bad_utf8", "text frame is not UTF-8")

    def _malformed(self, bad: Malformed) -> list[Any]:
        if self._session_id is None and bad.id is not None:
            self._session_id = bad.id
        if self._state is _State.DISCONNECTING:
            # A second fault while we wait for close is not reported again; a close we can read
            # enough of is still answered, so the close transaction completes.
            if bad.type == "close" and bad.seq is not None:
                self._clientseq = bad.seq
                return self._answer_close("error")
            return []
        if bad.seq is not None and bad.seq == self._clientseq + 1:
            self._clientseq = bad.seq
        events = self._violation(bad.kind, bad.info)
        if bad.type == "close" and bad.seq is not None:
            self._clientseq = bad.seq
            events += self._answer_close("error")
        return events

    def _close_too(self, message: Envelope) -> list[Any]:
        """After a violation found in a ``close``, still complete the close transaction."""
        return self._while_disconnecting(message) if message.type == "close" else []

    def _while_disconnecting(self, message: Envelope) -> list[Any]:
        # Our numbering of theirs may be off after a fault (a frame we could not parse still
        # counted on their side), so follow the seq they send from here on.
        self._clientseq = message.seq
        if message.type == "close":
            reason = parse_parameters("close", message.parameters)
            return self._answer_close(reason if isinstance(reason, str) else "unknown")
        if message.type == "ping":
            self._send("pong", {})
        return []

    def _dispatch(self, message: Envelope, params: Any) -> list[Any]:
        mtype = message.type
        if mtype == "close":
            return self._answer_close(params)
        if mtype == "error":
            return self._on_error(params)
        if self._state is _State.AWAIT_OPEN:
            if mtype == "open":
                return self._on_open(message, params)
            return self._violation("unexpected_message", f"'{mtype}' before open")
        if mtype == "open":
            return self._violation("unexpected_message", "open after the session was opened")
        if mtype == "ping":
            self._send("pong", {})
            return []
        if mtype == "update":
            changed = bool(params) and params != self.language
            if changed:
                self._close_utterances()  # the transcript of what was said goes out first
                self.language = params
            self._send("updated", {})
            return self._call_event(LanguageChanged(params)) if changed else []
        if mtype in ("discarded", "resumed"):
            assert isinstance(params, PositionSpan)
            self._timeline.add_skipped(params.discarded_us)
            self._transcripts.backend_timeline.skipped()
            if mtype == "resumed" and self._reported_paused:
                self._reported_paused = False
                return self._call_event(CallerStreamPaused(False))
            return []
        if mtype == "paused":
            self._close_utterances()
            # Our own pause confirmed is not news to the bridge; the caller's hold or a secure
            # pause (or our resume refused because one is in force) is.
            if not self._server_paused and not self._reported_paused:
                self._reported_paused = True
                return self._call_event(CallerStreamPaused(True))
            return []
        if mtype == "dtmf":
            return self._call_event(DtmfReceived(params))
        if mtype == "playback_started":
            self.playback_active = True
        elif mtype == "playback_completed":
            self.playback_active = False
        return []

    def _call_event(self, event: Any) -> list[Any]:
        return [event] if self._call_started else []

    def _on_error(self, report: ErrorReport) -> list[Any]:
        code = str(report.code) if report.code in ERROR_CODES else "other"
        events: list[Any] = [PlatformError(code, report.message)]
        if report.code == 429:
            retry_us = report.retry_after_us
            retry_ms = DEFAULT_RETRY_AFTER_MS if retry_us is None else max(1, (retry_us + 999) // 1000)
            events.append(PlaybackFlowChanged(retry_ms))
        return events

    def _on_open(self, message: Envelope, params: OpenParameters) -> list[Any]:
        if self._expected_org is not None and self._expected_org.lower() != params.organization_id.lower():
            return self._violation("organization_mismatch",
                                   "organizationId does not match Audiohook-Organization-Id", "unauthorized")
        self.conversation_id = params.conversation_id
        self.language = params.language
        self.is_probe = params.is_probe
        offer = self._select_media(params)
        if offer is None and not self.is_probe:
            return self._violation("unsupported_media", "no supported media format offered")
        opened: dict[str, Any] = {
            "startPaused": self._start_paused,
            "media": [offer.raw] if offer is not None else [],
        }
        if self._discard_to_ms:
            opened["discardTo"] = format_duration(self._discard_to_ms * 1000)
        if params.supported_languages:
            opened["supportedLanguages"] = list(self._languages)
        self._send("opened", opened)
        self._state = _State.OPEN
        self._server_paused = self._start_paused
        self._offer = offer
        if offer is not None:
            self._splitter = ChannelSplitter(len(offer.channels), offer.channel_format.sample_bytes)
            self._timeline = StreamTimeline(offer.channel_format.rate_hz)
            rate = offer.channel_format.rate_hz
            self._transcripts = MonitorTranscripts(self._timeline, BackendTimeline(rate), self._new_id)
        if self.is_probe or offer is None:
            return []
        self._call_started = True
        metadata = dict(params.input_variables)
        # Genesys's own fields come last, under a prefix: they cannot be spoofed by a variable.
        for name, value in params.participant.items():
            metadata[f"{METADATA_PREFIX}participant.{name}"] = value
        if params.language:
            metadata[f"{METADATA_PREFIX}language"] = params.language
        for name, value in params.custom_config.items():
            metadata[f"{METADATA_PREFIX}customConfig.{name}"] = value
        return [CallStarted(params.conversation_id, offer.channel_format, metadata)]

    def _select_media(self, params: OpenParameters) -> MediaOffer | None:
        offers = [o for o in params.offers if self.mode == "monitor" or len(o.channels) == 1]
        formats: list[AudioFormat] = []
        for offer in offers:
            if offer.channel_format not in formats:
                formats.append(offer.channel_format)
        preferred = None if params.is_probe else choose_format(formats, self._formats)
        return choose_offer(offers, preferred, want_stereo=self.mode == "monitor")

    def receive_binary(self, data: bytes) -> list[Any]:
        """Handle one binary frame (audio of any size, including none)."""
        if self._state is _State.AWAIT_OPEN:
            return self._violation("unexpected_binary", "Received audio before opened")
        if self._state is not _State.OPEN:
            return []  # in flight when we disconnected or they closed: dropped
        if self._splitter is None or self._offer is None:
            if not data:
                return []
            return self._violation("unexpected_binary", "Received audio but no media was selected")
        frames, channels = self._splitter.split(data)
        if not frames:
            return []
        timeline = self._timeline
        if self._call_started and not self._reported_paused:
            # The bridge forwards this to the backend: its timeline advances with the stream's.
            self._transcripts.backend_timeline.forward(frames, timeline.position_us)
        else:
            self._transcripts.backend_timeline.skipped()
        timeline.add_samples(frames)
        if not self._call_started:
            return []
        return [CallerAudio(chunk, name) for name, chunk in zip(self._offer.channels, channels, strict=True)]

    # --- commands from the call bridge --------------------------------------------------------

    def play(self, packet: bytes) -> None:
        """Connector: queue one packet of bot audio (PCMU/8000 mono), split at 64000 bytes."""
        if self.mode != "connector" or self._state is not _State.OPEN or not packet:
            return
        for start in range(0, len(packet), MAX_PACKET_BYTES):
            self._output.append(packet[start:start + MAX_PACKET_BYTES])
        self._audio_since_clear = True

    def clear(self) -> None:
        """Connector barge-in: tell Genesys to drop the bot audio it holds (``barge_in``)."""
        if self.mode != "connector" or self._state is not _State.OPEN or not self._audio_since_clear:
            return
        self._audio_since_clear = False
        self._send("event", {"entities": [{"type": "barge_in", "data": {}}]})

    def caller_speech(self, started: bool) -> None:
        """Remember where the caller's utterance began, for its transcript's offset."""
        if started and self._state is _State.OPEN:
            self._transcripts.speech_started("caller")

    def transcript(self, transcript: Transcript) -> None:
        """Monitor: send a final transcript as an ``event`` entity placed on the stream timeline
        (see :class:`~mediaproxy.platforms.audiohook_transcripts.MonitorTranscripts`)."""
        if self.mode != "monitor" or self._state is not _State.OPEN or self._offer is None:
            return
        for entity in self._transcripts.transcript(transcript, self._offer.channels, self.language):
            self._send("event", {"entities": [entity]})

    def _close_utterances(self) -> None:
        """Close every utterance in progress with its last partial before the stream changes."""
        if self.mode != "monitor" or self._state is not _State.OPEN or self._offer is None:
            return
        for entity in self._transcripts.close_utterances(self._offer.channels, self.language):
            self._send("event", {"entities": [entity]})

    def pause_caller_audio(self, paused: bool) -> bool:
        """Flow control: ask Genesys to ``pause`` or ``resume`` streaming caller audio."""
        if self._state is not _State.OPEN:
            return False
        if paused and not self._server_paused:
            self._server_paused = True
            self._send("pause", {})
        elif not paused and self._server_paused:
            self._server_paused = False
            self._send("resume", {})
        return True

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """Audio Connector: end the bot session successfully (``disconnect{reason:"completed"}``)
        with ``outputVariables`` carrying ``variables`` plus ``transferTarget`` and
        ``transferSummary`` (bounded); the Architect flow maps them to the action's output
        variables of the same names and routes the call on. Monitor: False (nothing to hand on)."""
        if self.mode != "connector" or self._state is not _State.OPEN or not target.strip():
            return False
        output = {str(k): str(v) for k, v in (variables or {}).items()}
        output["transferTarget"] = target.strip()[:MAX_SUMMARY_CHARS]
        output["transferSummary"] = summary[:MAX_SUMMARY_CHARS]
        self._send("disconnect", {"reason": DISCONNECT_REASONS[Outcome.TRANSFERRED],
                                  "info": "transferred", "outputVariables": output})
        self._state = _State.DISCONNECTING
        return True

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        """End the session: ``disconnect{reason, info, [outputVariables]}`` with the reason
        :data:`DISCONNECT_REASONS` gives ``outcome``; then :attr:`awaits_close` holds until
        Genesys's ``close`` is answered."""
        if self._state is _State.OPEN or (self._state is _State.AWAIT_OPEN and self._session_id):
            info = (reason or outcome.value)[:200]
            parameters: dict[str, Any] = {"reason": DISCONNECT_REASONS[outcome], "info": info}
            if variables and self.mode == "connector":
                parameters["outputVariables"] = {str(k): str(v) for k, v in variables.items()}
            self._send("disconnect", parameters)
            self._state = _State.DISCONNECTING
