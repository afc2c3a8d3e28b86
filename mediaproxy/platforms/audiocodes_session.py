"""The sans-IO AudioCodes Bot API (streaming mode) session: JSON text in, neutral events out;
neutral commands in, JSON text out. The wire protocol is summarised in
:mod:`mediaproxy.platforms.audiocodes`; this module is only the state machine.

States: ``new`` (waiting for ``session.initiate`` or ``session.resume``) → ``open`` (accepted; a
dropped socket is not a hang-up) → ``hanging_up`` (we sent the ``hangup`` activity; waiting for
``session.end``) → ``ended`` (``session.end`` received, a protocol error, a refusal). A session that
asked to resume sits in ``resuming`` until the glue either moves the held call's session onto the
connection or calls :meth:`AudioCodesSession.resume_rejected`.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat, FormatPreference, choose_format
from mediaproxy.outcome import Outcome
from mediaproxy.platforms import audiocodes_messages as msg
from mediaproxy.platforms.audiocodes_messages import MEDIA_FORMATS
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MessageIgnored,
    PlatformCapabilities,
    PlatformEvent,
    PlatformSession,
    ProtocolViolation,
    ResumeRequested,
)
from mediaproxy.transcripts import Transcript

# What the official SDK answers when VAIC names no formats: it always accepts raw/lpcm16.
_DEFAULT_OFFER = ("raw/lpcm16",)
_DTMF_IN = re.compile(r"[0-9A-Da-d*#]+\Z")
_NEW, _RESUMING, _OPEN, _HANGING_UP, _ENDED = "new", "resuming", "open", "hanging_up", "ended"
_MAX_STREAMS = 8  # user streams tracked at once (agent assist has two): input never grows state


class AudioCodesSession(PlatformSession):
    """One VoiceAI Connect / Live Hub conversation over one WebSocket (or several, after resumes).

    ``formats`` (the backend's preference) chooses the media format at ``session.initiate``;
    ``barge_in`` sends the ``config`` activity enabling VAIC barge-in after the ``start`` activity.
    Bot audio goes out in play
    streams that the session opens on the first packet of an utterance and closes on
    :meth:`playback_finished`, :meth:`clear`, hang-up and the end of the session.
    """

    # `playStream.stop` makes VAIC stop and discard what it holds of the stream (with barge-in
    # on), so the playout may keep its usual `[playout] lead_ms` cushion against late ticks.
    capabilities = PlatformCapabilities(can_flush=True, has_marks=False, max_lead_ms=None, packet_ms=20,
                                        can_transfer=True, can_send_dtmf=True)

    def __init__(self, formats: FormatPreference = (), barge_in: bool = False) -> None:
        super().__init__()
        self._formats = formats
        self._barge_in = barge_in
        self._state = _NEW
        self._connected = True
        self._refusal: str | None = None
        self._conversation_id = ""
        self._format_name = ""
        self._format: AudioFormat | None = None
        self._metadata: dict[str, str] = {}
        self._call_started = False
        self._start_seen = False
        # The caller's user stream: the first participant VAIC opens a stream for (None when it
        # names none). Agent-assist calls open a second stream for the other party; its audio is
        # not the caller's and is dropped (counted once per stream).
        self._caller: str | None = None
        self._caller_known = False
        self._open_streams: set[str | None] = set()
        self._user_stream_open = False  # the caller's stream is open
        self._carry = b""  # an odd trailing byte of L16 caller audio, completed by the next chunk
        self._play_stream_id: str | None = None
        self._play_streams = 0
        self._speaking = False  # userStream.speech.started sent, .stopped not yet

    # --- read-only views -----------------------------------------------------------------------

    @property
    def conversation_id(self) -> str:
        """VAIC's ``conversationId`` (empty before ``session.initiate``/``session.resume``)."""
        return self._conversation_id

    @property
    def audio_format(self) -> AudioFormat | None:
        """The negotiated format of caller and bot audio (``None`` before acceptance)."""
        return self._format

    @property
    def play_stream_id(self) -> str | None:
        """The ``streamId`` of the open play stream, if one is open."""
        return self._play_stream_id

    @property
    def finished(self) -> bool:
        """True once the session accepts nothing more (ended, refused, rejected, protocol error):
        the glue may close the socket after sending the output."""
        return self._state == _ENDED

    @property
    def survives_disconnect(self) -> bool:
        return self._state == _OPEN

    @property
    def awaits_close(self) -> bool:
        # After our hangup activity VAIC hangs up, sends session.end and closes the socket itself.
        return self._state == _HANGING_UP

    # --- input ---------------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[PlatformEvent]:
        """Parse one text frame from VAIC."""
        if self._state == _ENDED:
            return []
        try:
            message = strict_json.loads(text)
        except (ValueError, RecursionError):
            return self._violation("bad_json", "not valid JSON")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return self._violation("bad_message", "not a JSON object with a string type")
        kind = message["type"]
        handler = self._HANDLERS.get(kind)
        if handler is None:
            # A message type VAIC added since (the SDK logs and ignores these): counted, not fatal.
            return [MessageIgnored("unknown_event")]
        if self._state == _HANGING_UP and kind not in ("session.end", "connection.validate"):
            return []  # the call is ending at our request; audio and events no longer matter
        return handler(self, message)

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        """The Bot API carries audio as base64 inside JSON; a binary frame is an error."""
        if self._state == _ENDED:
            return []
        return self._violation("binary_frame", "binary frames are not part of the Bot API")

    def _on_initiate(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._state != _NEW:
            return self._violation("out_of_order", "session.initiate on an initiated session")
        conversation_id = message.get("conversationId")
        if not isinstance(conversation_id, str) or not conversation_id:
            return self._violation("bad_message", "session.initiate without conversationId")
        self._conversation_id = conversation_id
        if self._refusal is not None:
            self._state = _ENDED
            self._send(msg.session_error(self._refusal))
            return []
        if message.get("expectAudioMessages", True) is False:
            # VAIC then expects the bot's turns as text for its own TTS; this bot only speaks.
            self._state = _ENDED
            detail = ("expectAudioMessages is false: this bot sends audio (playStream) only; "
                      "enable audio messages for the bot in VoiceAI Connect")
            self._send(msg.session_error(detail))
            return [ProtocolViolation("audio_not_expected", detail)]
        offer = message.get("supportedMediaFormats", _DEFAULT_OFFER)
        if not isinstance(offer, (list, tuple)):
            return self._violation("bad_message", "supportedMediaFormats is not a list")
        names: dict[AudioFormat, str] = {}
        for name in offer:
            if isinstance(name, str) and name in MEDIA_FORMATS:
                names.setdefault(MEDIA_FORMATS[name], name)
        chosen = choose_format(list(names), self._formats)
        if chosen is None:
            return self._violation(
                "no_media_format", "no supported media format offered (need one of "
                + ", ".join(MEDIA_FORMATS) + ")"
            )
        self._format, self._format_name = chosen, names[chosen]
        for key in ("botName", "caller"):
            value = message.get(key)
            if isinstance(value, str):
                self._metadata[key] = value[:msg.MAX_VALUE_CHARS]
        self._metadata["conversationId"] = conversation_id
        self._state = _OPEN
        self._send(msg.session_accepted(self._format_name))
        # The call starts at the `start` activity, whose parameters (callee, SIP headers, ...)
        # must reach the backend session; VAIC sends it right after the acceptance.
        return []

    def _on_resume(self, message: dict[str, Any]) -> list[PlatformEvent]:
        conversation_id = message.get("conversationId")
        if not isinstance(conversation_id, str) or not conversation_id:
            return self._violation("bad_message", "session.resume without conversationId")
        if self._state == _NEW:
            self._state = _RESUMING
            self._conversation_id = conversation_id
            return [ResumeRequested(conversation_id)]
        if self._state == _OPEN and conversation_id == self._conversation_id:
            self._send(msg.session_accepted())  # VAIC re-sent it on the same socket
            return []
        return self._violation("out_of_order", "session.resume for another conversation")

    def _on_end(self, message: dict[str, Any]) -> list[PlatformEvent]:
        reason = message.get("reasonCode")
        if not isinstance(reason, str) or not reason:
            reason = "unspecified"
        self._close_play_stream()
        self._state = _ENDED
        self._close_user_streams()
        return [CallEnded(reason[:64])]

    def _on_validate(self, message: dict[str, Any]) -> list[PlatformEvent]:
        self._send(msg.CONNECTION_VALIDATED)
        return []

    def _on_activities(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._state != _OPEN:
            return self._violation("out_of_order", "activities before session.accepted")
        activities = message.get("activities")
        if not isinstance(activities, list):
            return self._violation("bad_message", "activities is not a list")
        # Events of the activities before a bad one still count: the call may have started.
        events: list[PlatformEvent] = []
        for activity in activities:
            if not isinstance(activity, dict):
                return events + self._violation("bad_message", "an activity is not an object")
            if activity.get("type") != "event":
                continue  # text messages and the like have no meaning for an audio bot
            name = activity.get("name")
            if name == "start" and not self._start_seen:
                parameters = activity.get("parameters", {})
                if not isinstance(parameters, dict):
                    return events + self._violation("bad_message", "start parameters are not an object")
                self._start_seen = True
                if not self._call_started:
                    # The initiate's own fields (conversationId, caller, ...) stay authoritative.
                    self._metadata = {**msg.start_metadata(parameters), **self._metadata}
                self._start_call(events)
                if self._barge_in:
                    self._send(msg.ENABLE_BARGE_IN)
            elif name == "DTMF":
                digits = activity.get("value")
                if not isinstance(digits, str) or not _DTMF_IN.match(digits):
                    return events + self._violation("bad_message", "DTMF value is not a string of digits")
                self._start_call(events)
                events.append(DtmfReceived(digits.upper()))
            # Other events (hangup before session.end, noUserInput, ...) need no action here.
        return events

    @staticmethod
    def _participant(message: dict[str, Any]) -> str | None:
        participant = message.get("participant")
        return participant[:msg.MAX_KEY_CHARS] if isinstance(participant, str) else None

    def _on_user_start(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._state != _OPEN:
            return self._violation("out_of_order", "userStream.start before session.accepted")
        events: list[PlatformEvent] = []
        self._start_call(events)
        participant = self._participant(message)
        if not self._caller_known:
            self._caller, self._caller_known = participant, True
        # A repeated start (for instance after a resume) is acknowledged again, not refused.
        if participant == self._caller:
            self._user_stream_open = True
        elif participant not in self._open_streams and len(self._open_streams) < _MAX_STREAMS:
            events.append(MessageIgnored("other_participant"))  # once per stream, not per chunk
        if len(self._open_streams) < _MAX_STREAMS:
            self._open_streams.add(participant)
        self._send(msg.user_stream_ack("userStream.started", message.get("participant")))
        return events

    def _on_user_chunk(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._state != _OPEN:
            return self._violation("out_of_order", "userStream.chunk before session.accepted")
        chunk = message.get("audioChunk")
        if not isinstance(chunk, str):
            return self._violation("bad_message", "userStream.chunk without audioChunk")
        participant = self._participant(message)
        if participant is not None and participant != self._caller:
            # Another party's stream (agent assist), or one never started: not the caller.
            return [] if participant in self._open_streams else [MessageIgnored("chunk_outside_stream")]
        if not self._user_stream_open:
            # The SDK drops a chunk of a stream it does not have; so do we, counted.
            return [MessageIgnored("chunk_outside_stream")]
        try:
            data = binascii.a2b_base64(chunk, strict_mode=True)
        except ValueError:  # binascii.Error, and non-ASCII text
            return self._violation("bad_base64", "audioChunk is not valid base64")
        assert self._format is not None
        if self._format.sample_bytes == 2 and (self._carry or len(data) % 2):
            # Keep 16-bit samples whole across chunk boundaries.
            data = self._carry + data
            cut = len(data) - len(data) % 2
            data, self._carry = data[:cut], data[cut:]
        if not data:
            return []
        return [CallerAudio(data)]

    def _on_user_stop(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._state != _OPEN:
            return self._violation("out_of_order", "userStream.stop before session.accepted")
        participant = self._participant(message)
        self._open_streams.discard(participant)
        if participant is None or participant == self._caller:
            self._user_stream_open = False
            self._carry = b""
        self._send(msg.user_stream_ack("userStream.stopped", message.get("participant")))
        return []

    _HANDLERS: Mapping[str, Callable[[AudioCodesSession, dict[str, Any]], list[PlatformEvent]]] = {
        "session.initiate": _on_initiate,
        "session.resume": _on_resume,
        "session.end": _on_end,
        "connection.validate": _on_validate,
        "activities": _on_activities,
        "userStream.start": _on_user_start,
        "userStream.chunk": _on_user_chunk,
        "userStream.stop": _on_user_stop,
    }

    # --- commands (proxy → VAIC) ---------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        """Send one packet of bot audio (the call's format, 20 ms), opening a play stream first
        when none is open."""
        if self._state != _OPEN or not packet or not self._connected:
            return
        if self._play_stream_id is None:
            self._play_streams += 1
            self._play_stream_id = f"play-{self._play_streams}"
            self._send(msg.play_start(self._play_stream_id, self._format_name))
        self._send(msg.play_chunk(self._play_stream_id, packet))

    def playback_finished(self) -> None:
        """The utterance has been sent completely: close its play stream."""
        self._close_play_stream()

    def clear(self) -> None:
        """Barge-in: stop the active play stream at once (VAIC honours it only with barge-in on).

        The bridge flushes before it reports the caller's speech, but VAIC expects
        ``userStream.speech.started`` first (it is what cuts VAIC's own playback; the reference
        bridges send it before the stop), so it goes out here, ahead of the stop, once."""
        if self._state == _OPEN and self._play_stream_id is not None:
            self._report_speech_started()
        self._close_play_stream()

    def caller_speech(self, started: bool) -> None:
        """Report the backend's VAD: VAIC uses these for barge-in and its no-input timers."""
        if self._state != _OPEN:
            return
        if started:
            self._report_speech_started()
        else:
            self._speaking = False
            self._send(msg.SPEECH_STOPPED)
            self._send(msg.SPEECH_COMMITTED)

    def transcript(self, transcript: Transcript) -> None:
        """Forward the caller's transcript: partial as a hypothesis, final as a recognition.
        Bot transcripts have no Bot API message and are dropped."""
        text = transcript.text
        # The text is the whole hypothesis so far (the backend accumulates it); an empty or
        # missing one says nothing and must never reach VAIC as "" or "None".
        if self._state != _OPEN or transcript.role != "caller" or not isinstance(text, str) or not text.strip():
            return
        caller = self._caller
        self._send(msg.recognition(text, participant=caller) if transcript.final
                   else msg.hypothesis(text, caller))

    def send_dtmf(self, digits: str) -> None:
        """Play DTMF to the caller (``0-9*#``; other characters are dropped; 20 per activity)."""
        if self._state != _OPEN:
            return
        clean = "".join(c for c in digits if c in "0123456789*#")
        if clean:
            self._send(msg.send_dtmf(clean))

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        """End the call from the bot's side with a ``hangup`` activity (``variables`` have no Bot
        API counterpart). Before acceptance this refuses the session instead."""
        reason = reason or outcome.value
        if self._state in (_NEW, _RESUMING):
            self.refuse(reason)
            return
        if self._state != _OPEN:
            return
        self._close_play_stream()
        self._send(msg.hangup(reason))
        self._state = _HANGING_UP

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """Hand the call on with the ``transfer`` activity (``activityParams.transferTarget``,
        ``handoverReason`` = ``summary``, bounded). VAIC transfers the call and then ends the
        conversation with ``session.end``; ``variables`` have no Bot API counterpart."""
        target = target.strip()
        if self._state != _OPEN or not target or len(target) > msg.MAX_VALUE_CHARS:
            return False
        self._close_play_stream()
        self._send(msg.transfer(target, summary))
        self._state = _HANGING_UP
        return True

    def refuse(self, reason: str) -> None:
        """Decline the conversation (no capacity, draining) with ``session.error {reason}``. Before
        ``session.initiate`` arrives the refusal is remembered and becomes its answer."""
        if self._state == _NEW:
            self._refusal = reason
            return
        if self._state == _ENDED:
            return
        self._close_play_stream()
        self._send(msg.session_error(reason))
        self._state = _ENDED

    # --- resume --------------------------------------------------------------------------------

    def connection_lost(self) -> None:
        """The socket dropped while the call survives: stop queueing messages nobody will read."""
        self._connected = False
        self._output.clear()

    def resumed(self) -> None:
        """This session continues on a new connection: drop what was queued for the dead socket,
        re-accept (the SDK's shape: no mediaFormat), and close the play stream the drop cut off,
        so it cannot hold back the caller's audio."""
        if self._state != _OPEN:
            return
        self._connected = True
        self._output.clear()
        self._send(msg.session_accepted())
        self._close_play_stream()

    def resume_rejected(self) -> None:
        """No held call matches: answer as the SDK does, and end this session."""
        if self._state != _RESUMING:
            return
        self._send(msg.session_error("conversation not found", self._conversation_id))
        self._state = _ENDED

    # --- helpers -------------------------------------------------------------------------------

    def _send(self, frame: str) -> None:
        if self._connected:  # while the socket is down nobody reads it; resumed() starts afresh
            self._output.append(frame)

    def _report_speech_started(self) -> None:
        if not self._speaking:
            self._speaking = True
            self._send(msg.SPEECH_STARTED)

    def _close_play_stream(self) -> None:
        if self._play_stream_id is not None:
            self._send(msg.play_stop(self._play_stream_id))
            self._play_stream_id = None

    def _start_call(self, events: list[PlatformEvent]) -> None:
        # Normally at the start activity; if VAIC sends audio or DTMF first, the call starts then
        # (without start parameters) so that no caller event precedes CallStarted.
        if not self._call_started:
            self._call_started = True
            assert self._format is not None
            events.append(CallStarted(self._conversation_id, self._format, dict(self._metadata)))

    def invalid_text(self, payload: bytes) -> list[PlatformEvent]:
        """A text frame that is not UTF-8: ``session.error``, as for any malformed message."""
        if self._state == _ENDED:
            return []
        return self._violation("bad_utf8", "text frame is not UTF-8")

    def _violation(self, kind: str, detail: str) -> list[PlatformEvent]:
        """Answer bad input with ``session.error`` (VAIC then ends the call and closes the socket)
        after closing any open play stream, and end the session."""
        self._close_play_stream()
        self._send(msg.session_error(f"protocol error: {detail}"))
        self._state = _ENDED
        self._close_user_streams()
        return [ProtocolViolation(kind, detail)]

    def _close_user_streams(self) -> None:
        self._user_stream_open = False
        self._open_streams.clear()
