"""The proxy's own bot protocol (``[backend:NAME] type = websocket``, published in
docs/protocols/websocket-backend.md) as a sans-IO object: bot frames in, neutral events out;
neutral commands in, frames queued for :meth:`BotDialect.take_output`. No transport, no clock.

One dialect serves one WebSocket connection (a reconnect builds a fresh one, whose ``start``
says ``resumed``). The exchange, version 1::

    proxy: start{version, call_id, platform, audio_format, context, resumed}
    proxy: binary caller audio*          (in audio_format, as it comes)
    bot:   binary bot audio*             (in audio_format, any size)
    bot:   clear | mark{name} | hangup{reason} | transfer{target, summary} | transcript{role, text}
    proxy: mark{name, played}            (once the caller heard the audio before the mark)
    proxy: dtmf{digits}, speech_started, speech_stopped, action_result{action, outcome, detail}
    proxy: error{code, detail}           (the bot sent a malformed message)
    proxy: stop{reason}                  (the call ended; the proxy then closes)

Bot audio carries no id: the dialect numbers the bot's *turns* itself. A turn opens with the
first audio frame after the previous one ended, and ends when the glue says the bot went quiet
(:meth:`BotDialect.finish_turn`), before a ``hangup``/``transfer`` (so the goodbye is played to its
end), or is cut by a ``clear`` or a barge-in (:meth:`BotDialect.interrupt`); the next audio opens a
new turn. Audio of a partial sample is carried to the next frame.

A text frame that is not a JSON object with a string ``type``, or a known message with a field
of the wrong type, is :class:`MalformedMessage` and answered with ``error``; a well-formed message
of another type is :class:`UnknownMessage` (a newer bot: ignored, counted by the glue). Unknown
fields are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat
from mediaproxy.backends.json_frames import text_frame

PROTOCOL_VERSION = 1
MAX_NAME_CHARS = 256
"""Longest mark name, in characters."""
MAX_REASON_CHARS = 200
MAX_TEXT_CHARS = 4000
"""Longest transcript text or transfer summary kept, in characters (the rest is cut)."""

UNKNOWN_MESSAGE = "unknown_message"
MALFORMED_MESSAGE = "malformed_message"
TOO_MANY_MARKS = "too_many_marks"
ERROR_CODES = frozenset({UNKNOWN_MESSAGE, MALFORMED_MESSAGE, TOO_MANY_MARKS})
"""The ``backend_errors_total{code}`` labels of this backend."""

# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BotAudio:
    """Bot audio in the session format (whole samples), part of the bot turn ``response_id``."""

    response_id: str
    data: bytes


@dataclass(frozen=True)
class ClearRequested:
    """``clear``: flush the bot audio not played yet (the open turn is cut)."""


@dataclass(frozen=True)
class MarkRequested:
    """``mark``: tell the bot when the caller has heard everything it sent before this."""

    name: str


@dataclass(frozen=True)
class HangupRequested:
    """``hangup``: end the call once the audio sent before it has been heard."""

    reason: str


@dataclass(frozen=True)
class TransferRequested:
    """``transfer``: hand the caller to ``target`` (a name of the platform's
    ``transfer_targets``) once the audio sent before it has been heard."""

    target: str
    summary: str


@dataclass(frozen=True)
class TranscriptReceived:
    """``transcript``: what the bot (``role`` bot) or the caller (``caller``) said."""

    role: str
    text: str
    final: bool


@dataclass(frozen=True)
class TurnFinished:
    """All of the bot turn ``response_id`` has arrived (never reported for a cut turn)."""

    response_id: str


@dataclass(frozen=True)
class UnknownMessage:
    """A well-formed text frame of a type this version does not know."""

    message_type: str


@dataclass(frozen=True)
class MalformedMessage:
    """A text frame that breaks the protocol (``detail`` says how); ``error`` was queued."""

    detail: str


BotEvent = (
    BotAudio | ClearRequested | MarkRequested | HangupRequested | TransferRequested | TranscriptReceived
    | TurnFinished | UnknownMessage | MalformedMessage
)


def start_message(call_id: str, platform: str, audio_format: AudioFormat, context: Mapping[str, str],
                  *, resumed: bool) -> dict[str, Any]:
    """The ``start`` message of a connection: the call, the format both ways, the call context
    the operator allowed (``call_context_keys``) and whether this continues an earlier connection
    of the same call."""
    return {
        "type": "start",
        "version": PROTOCOL_VERSION,
        "call_id": call_id,
        "platform": platform,
        "audio_format": str(audio_format),
        "context": dict(context),
        "resumed": resumed,
    }


class BotDialect:
    """One connection's worth of the bot protocol. ``start`` is the ``start`` message (see
    :func:`start_message`), queued first; ``response_prefix`` makes turn ids unique across the
    connections of a call. Output is a list of frames: ``str`` for text, ``bytes`` for audio."""

    def __init__(self, start: Mapping[str, Any], audio_format: AudioFormat, *, response_prefix: str = "t") -> None:
        self._prefix = response_prefix
        self._sample_bytes = audio_format.frame_bytes
        self._output: list[str | bytes] = []
        self._carry = b""
        self._turns = 0
        self._turn: str | None = None
        self._stopped = False
        self._send(start)

    @property
    def open_turn(self) -> str | None:
        """The bot turn whose audio is arriving (not finished, not cut), if any."""
        return self._turn

    def take_output(self) -> list[str | bytes]:
        """Frames queued since the last call, oldest first."""
        out, self._output = self._output, []
        return out

    # --- commands ---------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in the session format, one binary frame."""
        if data and not self._stopped:
            self._output.append(data)

    def send_dtmf(self, digits: str) -> None:
        """The caller's keys (collected by the bridge into one entry)."""
        if digits:
            self._send({"type": "dtmf", "digits": digits})

    def speech(self, started: bool) -> None:
        """The proxy's own detector heard the caller start (or stop) speaking."""
        self._send({"type": "speech_started" if started else "speech_stopped"})

    def mark_played(self, name: str, played: bool) -> None:
        """Answer the bot's mark ``name``: ``played`` False when a clear or barge-in flushed
        audio before it unheard."""
        self._send({"type": "mark", "name": name, "played": played})

    def action_result(self, action: str, outcome: str, detail: str) -> None:
        """A ``hangup`` or ``transfer`` was not carried out: ``outcome`` is ``refused`` (not
        allowed, unknown target) or ``cancelled`` (the caller spoke over the goodbye)."""
        self._send({"type": "action_result", "action": action, "outcome": outcome, "detail": detail})

    def refuse(self, code: str, detail: str) -> None:
        """Tell the bot a message of its was not taken (``code``: one of :data:`ERROR_CODES`)."""
        self._send({"type": "error", "code": code, "detail": detail})

    def stop(self, reason: str) -> None:
        """The call ended with ``reason`` (a ``calls_total{outcome}`` value); nothing follows."""
        self._send({"type": "stop", "reason": reason})
        self._stopped = True

    def finish_turn(self) -> TurnFinished | None:
        """The bot went quiet (or is about to hang up): the open turn is complete."""
        turn, self._turn = self._turn, None
        return None if turn is None else TurnFinished(turn)

    def interrupt(self, response_id: str) -> None:
        """The bridge cut ``response_id`` (barge-in): the bot's next audio opens a new turn."""
        if response_id == self._turn:
            self._turn = None

    # --- bot frames ------------------------------------------------------------------------------

    def receive(self, payload: bytes | str, is_binary: bool) -> list[BotEvent]:
        """One frame from the bot; the events it means, in order."""
        if is_binary:
            return self._audio(payload if isinstance(payload, bytes) else payload.encode())
        try:
            message = strict_json.loads(payload)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
            return [self._malformed("not JSON")]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [self._malformed("not an object with a string type")]
        kind: str = message["type"]
        if kind == "clear":
            self._turn = None
            return [ClearRequested()]
        if kind == "mark":
            name = message.get("name")
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
                return [self._malformed(f"mark needs a name of 1 to {MAX_NAME_CHARS} characters")]
            return [MarkRequested(name)]
        if kind == "hangup":
            reason = _optional_text(message, "reason", MAX_REASON_CHARS)
            if reason is None:
                return [self._malformed("hangup reason must be a string")]
            return self._finishing(HangupRequested(reason))
        if kind == "transfer":
            target, summary = message.get("target"), _optional_text(message, "summary", MAX_TEXT_CHARS)
            if not isinstance(target, str) or not target or summary is None:
                return [self._malformed("transfer needs a target string (and an optional summary string)")]
            return self._finishing(TransferRequested(target[:MAX_NAME_CHARS], summary))
        if kind == "transcript":
            role, text, final = message.get("role"), message.get("text"), message.get("final", True)
            if role not in ("bot", "caller") or not isinstance(text, str) or not isinstance(final, bool):
                return [self._malformed("transcript needs role bot or caller, a text string, final a boolean")]
            return [TranscriptReceived(role, text[:MAX_TEXT_CHARS], final)]
        return [UnknownMessage(kind)]

    def _audio(self, data: bytes) -> list[BotEvent]:
        if self._carry:
            data = self._carry + data
        # Only whole samples reach the playout: a split sample would shift every later one.
        whole = len(data) - len(data) % self._sample_bytes
        self._carry = data[whole:]
        if not whole:
            return []
        if self._turn is None:
            self._turns += 1
            self._turn = f"{self._prefix}{self._turns}"
        return [BotAudio(self._turn, data[:whole])]

    def _finishing(self, event: BotEvent) -> list[BotEvent]:
        """``event`` preceded by the end of the open turn (its goodbye is complete)."""
        finished = self.finish_turn()
        return [event] if finished is None else [finished, event]

    def _malformed(self, detail: str) -> MalformedMessage:
        self.refuse(MALFORMED_MESSAGE, detail)
        return MalformedMessage(detail)

    def _send(self, message: Mapping[str, Any]) -> None:
        if self._stopped:
            return
        self._output.append(text_frame(message))


def _optional_text(message: Mapping[str, Any], key: str, limit: int) -> str | None:
    """``message[key]`` cut to ``limit`` characters, "" when absent, None when not a string."""
    value = message.get(key, "")
    return value[:limit] if isinstance(value, str) else None
