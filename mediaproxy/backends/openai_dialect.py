"""The OpenAI Realtime (GA) WebSocket protocol as a sans-IO object: server messages in, neutral
events out (:mod:`mediaproxy.backends.openai_events`); neutral commands in, client messages
queued for :meth:`RealtimeDialect.take_output`. No transport, no clock.

One dialect serves one WebSocket connection (a reconnect builds a fresh one: the server keeps
nothing across connections). The exchange it speaks::

    server: session.created
    client: session.update            (GA shape, see openai_session_config)
    server: session.updated           (effective formats checked → SessionReady or fatal error)
    client: [conversation.item.create + response.create]   greeting, first connection only
    client: [conversation.item.create]  system note that the conversation continues, on resume
    client: input_audio_buffer.append*  caller audio, base64
    server: input_audio_buffer.speech_started / speech_stopped
    server: response.created, response.output_audio.delta*, response.output_audio.done,
            response.output_audio_transcript.*, response.done{usage}, rate_limits.updated
    client: conversation.item.truncate{audio_end_ms}, [response.cancel]   on barge-in
    server: response.output_item.done{function_call}   the model calls a tool (reported once)
    client: conversation.item.create{function_call_output} + response.create   its result
    client: session.update{audio.input.transcription.language}   the language changed

Barge-in: where to truncate (``audio_end_ms`` clamped to what arrived, none when nothing or all
was heard) and which late deltas to drop is the bookkeeping of
:class:`~mediaproxy.backends.openai_ledger.RealtimeLedger`; this module turns its answers into
wire events. ``response.cancel`` is sent only when the server will not cancel by itself
(``interrupt_response`` off, or an interrupt that did not come from the server's own VAD); on
``speech_started`` it goes out at once, even when nothing of the response has been heard yet
(nothing to truncate then, but the answer must stop).

This module is the state machine: when each message goes out and what each server event
means for the call. Around it: what the server's event types and error codes mean (ignored
events, fatal errors, the session-limit text, usage token kinds) is tabled in
:mod:`~mediaproxy.backends.openai_catalogue`; the shapes of the client messages and the
coalescing of caller audio are in :mod:`~mediaproxy.backends.openai_client_messages`; per-item
transcript text and what was heard of a cut item in :mod:`~mediaproxy.backends.openai_transcripts`.
The catalogue's names are re-exported here for older callers.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat
from mediaproxy.backends.base import ToolSpec
from mediaproxy.backends.openai_catalogue import (
    FATAL_ERROR_CODES,
    FATAL_ERROR_TYPES,
    IGNORED_EVENTS,
    SESSION_LIMIT_TEXT,
    USAGE_TOKEN_KINDS,
    is_fatal_failure,
    is_session_limit,
    session_summary,
    usage_tokens,
)
from mediaproxy.backends.openai_client_messages import (
    RESUME_NOTE,
    CallerAudioChunks,
    audio_append,
    function_call_output,
    greeting_instruction,
    keypad_message,
    resume_note,
    system_message,
    truncate_message,
)
from mediaproxy.backends.openai_events import (
    AudioFinished,
    AudioReceived,
    RateLimitsReported,
    RealtimeEvent,
    ResponseEnded,
    ResponseFailed,
    ServerError,
    SessionExpired,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    ToolCalled,
    UnknownEventReceived,
    UsageReported,
)
from mediaproxy.backends.openai_flavors import flavor_of, resolved
from mediaproxy.backends.openai_ledger import RealtimeLedger
from mediaproxy.backends.openai_session_config import RealtimeOptions
from mediaproxy.backends.openai_transcripts import RealtimeTranscripts, remember, text_field

__all__ = [
    "FATAL_ERROR_CODES",
    "FATAL_ERROR_TYPES",
    "IGNORED_EVENTS",
    "RESUME_NOTE",
    "SESSION_LIMIT_TEXT",
    "USAGE_TOKEN_KINDS",
    "RealtimeDialect",
    "is_session_limit",
    "usage_tokens",
]

class RealtimeDialect:
    """One connection's worth of the GA Realtime protocol.

    ``fmt`` is the audio format exchanged both ways (µ-law, A-law or 24 kHz PCM). ``resumed``
    marks a reconnect: the greeting is not repeated and a system note (plus ``resume_context``,
    e.g. the recent transcript) tells the model the conversation continues. ``event_prefix``
    makes client ``event_id``s unique across connections of a call, so an ``error`` can be tied
    to the event that caused it.
    """

    def __init__(
        self,
        options: RealtimeOptions,
        fmt: AudioFormat,
        *,
        resumed: bool = False,
        resume_context: str = "",
        event_prefix: str = "mp",
        tools: Sequence[ToolSpec] = (),
    ) -> None:
        # The family member's differences (session shape, event names): see openai_flavors.
        self._flavor = flavor_of(options)
        options = resolved(options)
        self._options = options
        self._renames = self._flavor.event_names or None
        self._format = fmt
        self._resumed = resumed
        self._resume_context = resume_context
        self._event_prefix = event_prefix
        self._event_seq = 0
        self._output: list[str] = []
        self._update_event_id: str | None = None
        self._ready = False
        self._interrupt_response = options.interrupt_response
        self._ledger = RealtimeLedger(fmt.bytes_per_ms)
        self._active_response: str | None = None
        self._server_cancels_active = False
        # 20 ms (the smallest) means "forward each frame as it arrives": no coalescing.
        self._input = CallerAudioChunks(fmt.bytes_for_ms(options.input_chunk_ms) if options.input_chunk_ms > 20 else 0)
        self._tools = tuple(tools)
        self._transcripts = RealtimeTranscripts(self._ledger)
        self._tool_calls: OrderedDict[str, None] = OrderedDict()
        self._create_after_done = False

    # --- state ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """``session.updated`` confirmed the configuration; caller audio is heard."""
        return self._ready

    @property
    def response_active(self) -> bool:
        """A response is being generated (between ``response.created`` and ``response.done``)."""
        return self._active_response is not None

    @property
    def late_audio_bytes_dropped(self) -> int:
        """Bot audio that arrived for an interrupted item or cancelled response, in bytes."""
        return self._ledger.late_audio_bytes_dropped

    def unfinished_items(self) -> list[str]:
        """Assistant items whose audio started but did not finish and were not interrupted:
        what the bridge is still waiting on when the connection drops."""
        return self._ledger.unfinished_items()

    def take_output(self) -> list[str]:
        """The client messages queued since the last call, oldest first, as JSON text frames."""
        out, self._output = self._output, []
        return out

    # --- commands ------------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in the session format, any size (coalesced per ``input_chunk_ms``)."""
        for chunk in self._input.add(data):
            self._append(chunk)

    @property
    def has_pending_audio(self) -> bool:
        """Caller audio is waiting for its chunk to fill (see :meth:`flush_audio`)."""
        return self._input.pending

    def flush_audio(self) -> None:
        """Send whatever caller audio is waiting for its chunk to fill (the glue calls this a
        chunk after it was queued, so a caller who falls silent is not held back)."""
        if self._input.pending:
            self._append(self._input.flush())

    def interrupt(self, item_id: str, played_ms: float) -> None:
        """Barge-in: the caller heard ``played_ms`` of assistant item ``item_id``. Truncates the
        item at what was heard, cancels its response if the server will not, and drops any more
        audio of it."""
        cut = self._ledger.cut_item(item_id, played_ms)
        if cut is None:
            return  # an item of an earlier connection, or already handled
        if cut.truncation is not None:
            self._transcripts.item_cut(item_id, cut.truncation.audio_end_ms)
        elif played_ms < 1:
            self._transcripts.item_cut(item_id, 0)
        if cut.truncation is not None:
            self._send(truncate_message(cut.truncation))
        if cut.response_id == self._active_response:
            self._cancel_active_response()

    def heard_transcript(self, item_id: str) -> str | None:
        """The final bot transcript of ``item_id`` cut to what the caller heard, when both the
        transcript and a cut are known (a transcript that arrived before the barge-in); None
        otherwise."""
        return self._transcripts.heard_transcript(item_id)

    def create_response(self) -> None:
        """Ask for a response now (a retry of a failed turn); after the active one if any."""
        if self._active_response is not None:
            self._create_after_done = True
        else:
            self._send({"type": "response.create"})

    def tool_result(self, call_id: str, output: str) -> None:
        """The answer to the tool call ``call_id``, then a response so the model speaks it (once
        the response that made the call is done: the server refuses a second active one)."""
        self._send(function_call_output(call_id, output))
        self.create_response()

    def has_tool_call(self, call_id: str) -> bool:
        """``call_id`` was called on this connection."""
        return call_id in self._tool_calls

    def set_language(self, language: str) -> None:
        """Transcribe the caller in ``language`` (an ISO-639-1 code) from now on."""
        if not self._options.transcription_model:
            return  # no transcription configured: nothing to change
        self._send({"type": "session.update", "session": self._flavor.language(self._options, language)})

    def send_system_note(self, text: str) -> None:
        """A system message in the conversation (no response asked for)."""
        self._send(system_message(text))

    def send_dtmf(self, digits: str) -> None:
        """Tell the model which keys the caller pressed (the WebSocket API has no DTMF event),
        and ask for a response when none is under way."""
        self._send(keypad_message(digits))
        if self._active_response is None:
            self._send({"type": "response.create"})

    # --- server messages -----------------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[RealtimeEvent]:
        """Parse one server message; never raises (garbage becomes a ``ServerError``)."""
        try:
            event = strict_json.loads(message)
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
            return [ServerError("malformed_event", "server sent a message that is not JSON")]
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [ServerError("malformed_event", "server event without a type")]
        try:
            return self._dispatch(event)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as e:
            # A known event with missing or mistyped fields: data, not a crash (int() of an
            # infinite number overflows; str() of a deeply nested field recurses).
            return [ServerError("malformed_event", f"bad {event['type']} event: {e!r}")]

    def _dispatch(self, event: dict[str, Any]) -> list[RealtimeEvent]:
        kind: str = event["type"]
        if self._renames is not None:
            kind = self._renames.get(kind, kind)
        if kind == "response.output_audio.delta":
            return self._audio_delta(event)
        if kind == "response.output_audio.done":
            item_id = event["item_id"]
            return [AudioFinished(item_id)] if self._ledger.audio_done(item_id) else []
        if kind == "input_audio_buffer.speech_started":
            if self._active_response is not None:
                # Speech is a barge-in (the bridge flushes on it): the response in progress has
                # to stop even if none of its audio has been played, so there is nothing to
                # truncate and interrupt() never comes. With interrupt_response the server
                # cancels it by itself on this event; otherwise we do.
                self._server_cancels_active = self._interrupt_response
                self._cancel_active_response()
            start = int(event.get("audio_start_ms", 0))
            if event.get("item_id"):
                self._transcripts.speech_started(str(event["item_id"]), start)
            return [SpeechStarted(start)]
        if kind == "input_audio_buffer.speech_stopped":
            end = int(event.get("audio_end_ms", 0))
            self._transcripts.speech_stopped(str(event.get("item_id")), end)
            return [SpeechStopped(end)]
        if kind == "response.created":
            self._active_response = str(event["response"]["id"])
            self._server_cancels_active = False
            return []
        if kind == "response.done":
            return self._response_done(event["response"])
        if kind == "response.output_audio_transcript.delta":
            if self._is_dropped(event):
                return []  # a cut item: the rest was not said
            return self._transcripts.partial("bot", str(event["item_id"]), event.get("delta"))
        if kind == "response.output_audio_transcript.done":
            return [self._transcripts.bot_final(str(event["item_id"]), event.get("transcript"))]
        if kind == "conversation.item.input_audio_transcription.delta":
            return self._transcripts.partial("caller", str(event["item_id"]), event.get("delta"))
        if kind == "conversation.item.input_audio_transcription.completed":
            return [self._transcripts.caller_final(str(event["item_id"]), event.get("transcript"))]
        if kind == "response.output_item.done":
            return self._output_item(event["item"], event.get("response_id"))
        if kind == "conversation.item.input_audio_transcription.failed":
            error = event.get("error") or {}
            return [ServerError(str(error.get("code") or "transcription_failed"), str(error.get("message", "")))]
        if kind == "rate_limits.updated":
            remaining = {
                str(limit["name"]): int(limit["remaining"])
                for limit in event["rate_limits"]
                if limit.get("name") and limit.get("remaining") is not None
            }
            return [RateLimitsReported(remaining)]
        if kind in self._flavor.opening_events:
            if self._update_event_id is None:
                session = self._flavor.session(self._options, self._format, self._tools)
                self._update_event_id = self._send({"type": "session.update", "session": session})
            return []
        if kind == "session.updated":
            return self._session_updated(event["session"])
        if kind == "error":
            return self._error(event.get("error") or {})
        if kind in IGNORED_EVENTS or kind in self._flavor.ignored_events:
            return []
        return [UnknownEventReceived(kind)]  # counted by the session, never fatal

    def _output_item(self, item: Mapping[str, Any], response_id: Any) -> list[RealtimeEvent]:
        """A finished output item: a completed function call is reported (once per call_id;
        ``response.done`` lists the same items again). A call of a cut response is not."""
        if item.get("type") != "function_call" or item.get("status") not in (None, "completed"):
            return []
        call_id = str(item["call_id"])
        if call_id in self._tool_calls or self._ledger.is_dropped("", response_id):
            return []
        remember(self._tool_calls, call_id, None)
        return [ToolCalled(call_id, str(item["name"]), text_field(item.get("arguments")) or "{}")]

    def _audio_delta(self, event: dict[str, Any]) -> list[RealtimeEvent]:
        item_id, response_id = str(event["item_id"]), str(event["response_id"])
        try:
            data = base64.b64decode(event["delta"], validate=True)
        except (binascii.Error, ValueError):
            return [ServerError("malformed_event", "audio delta is not valid base64")]
        if self._ledger.audio_arrived(item_id, response_id, event.get("content_index", 0), len(data)):
            return [AudioReceived(item_id, response_id, data)]
        return []

    def _is_dropped(self, event: dict[str, Any]) -> bool:
        return self._ledger.is_dropped(str(event.get("item_id")), event.get("response_id"))

    def _response_done(self, response: dict[str, Any]) -> list[RealtimeEvent]:
        response_id = str(response.get("id"))
        if response_id == self._active_response:
            self._active_response = None
            self._server_cancels_active = False
        # A failed or cut-short response may never send output_audio.done for its item; the
        # bridge must still learn that no more audio is coming.
        events: list[RealtimeEvent] = [AudioFinished(i) for i in self._ledger.response_finished(response_id)]
        for item in response.get("output") or ():
            if isinstance(item, Mapping):
                events += self._output_item(item, response_id)
        status = str(response.get("status"))
        details = response.get("status_details") or {}
        events.append(ResponseEnded(response_id, status, str(details.get("reason") or "")))
        if status == "failed":
            # The cause is in status_details.error ({type, code, message}); reason is only for
            # cancelled/incomplete responses.
            error = details.get("error") or {}
            kind = str(error.get("type") or "")
            code = str(error.get("code") or kind or "unknown")
            fatal = is_fatal_failure(code, kind)
            events.append(ResponseFailed(response_id, code, str(error.get("message") or ""), fatal))
        if self._create_after_done and self._active_response is None:
            self._create_after_done = False
            self._send({"type": "response.create"})
        tokens = usage_tokens(response.get("usage"))
        if tokens:
            events.append(UsageReported(tokens))
        return events

    def _session_updated(self, session: Mapping[str, Any]) -> list[RealtimeEvent]:
        if self._ready or self._update_event_id is None:
            return []
        mismatch = self._flavor.mismatch(self._format, session)
        if mismatch is not None:
            return [ServerError("format_mismatch", f"server did not apply the audio format: {mismatch}", fatal=True)]
        self._ready = True
        self._interrupt_response = self._flavor.interrupts(session, self._options.interrupt_response)
        if self._resumed:
            self._send(system_message(resume_note(self._resume_context)))
        elif self._options.greeting:
            self._send(system_message(greeting_instruction(self._options.greeting)))
            self._send({"type": "response.create"})
        return [SessionReady(self._interrupt_response, session_summary(self._flavor.name, session))]

    def _error(self, error: Mapping[str, Any]) -> list[RealtimeEvent]:
        code = str(error.get("code") or error.get("type") or "unknown")
        message = str(error.get("message") or "")
        if code == "session_expired" or is_session_limit(message):
            return [SessionExpired(message)]
        if code in FATAL_ERROR_CODES:
            return [ServerError(code, message, fatal=True)]
        if not self._ready and error.get("event_id") is not None and error.get("event_id") == self._update_event_id:
            # The configuration was refused: waiting for a session.updated that never comes
            # would only delay the same failure until the connect timeout.
            return [ServerError(code, f"session.update rejected: {message}", fatal=True)]
        return [ServerError(code, message)]

    # --- helpers -------------------------------------------------------------------------------

    def _append(self, chunk: bytes) -> None:
        self._event_seq += 1
        self._output.append(audio_append(chunk, self._event_prefix + "_" + str(self._event_seq)))

    def _send(self, event: dict[str, Any]) -> str:
        self._event_seq += 1
        event_id = f"{self._event_prefix}_{self._event_seq}"
        event["event_id"] = event_id
        self._output.append(json.dumps(event, separators=(",", ":")))
        return event_id

    def _cancel_active_response(self) -> None:
        """Stop the response in progress (once): its late audio is dropped from now on, and
        ``response.cancel`` goes out unless the server cancels it by itself."""
        response_id = self._active_response
        if response_id is None or not self._ledger.cut_response(response_id):
            return
        if not self._server_cancels_active:
            cancel: dict[str, Any] = {"type": "response.cancel"}
            if self._flavor.cancel_names_response:
                cancel["response_id"] = response_id
            self._send(cancel)
