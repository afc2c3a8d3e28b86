"""jambonz ``listen`` verb with bidirectional streaming audio, as a sans-IO session.

Protocol (WebSocket subprotocol ``audio.jambonz.org``; summary in docs/protocols/jambonz.md):

    jambonz → us  text   {callSid, from, to, direction, ..., sampleRate: 8000|16000|24000|
                          48000|64000, mixType: mono|mixed, ...the verb's metadata}  (always first)
                  binary 16-bit signed little-endian PCM, mono, at sampleRate, any whole number
                         of samples per frame
                  text   {"event": "dtmf", "dtmf": "5", "duration": ...}   (with passDtmf)
                  text   {"type": "mark", "data": {"name": ..., "event": "playout"|"cleared"}}
                  text   {"type": "playDone", ...}                (file playAudio only; not used)
    us → jambonz  binary the same format (``bidirectionalAudio.streaming: true``)
                  text   {"type": "mark", "data": {"name": ...}}, {"type": "killAudio"},
                         {"type": "disconnect"}

The verb must say ``bidirectionalAudio: {enabled: true, streaming: true, sampleRate: N}`` with
``N`` equal to its ``sampleRate``: bot audio goes back in the call's own format, and without
``streaming`` jambonz drops binary frames. jambonz buffers what it is sent and plays it in
order; a ``mark`` is returned with ``event: playout`` when playback reaches it, and ``killAudio``
drops the buffer and returns every pending mark with ``event: cleared`` (the playout tags marks
with a generation, as for Twilio). jambonz keeps at most 30 pending marks and drops later ones.

Authentication: the verb's ``wsAuth`` (username, password) arrives as ``Authorization: Basic``
on the upgrade; with ``username`` and ``password`` configured it is required and compared in
constant time.

Any malformed input ends the session with a :class:`ProtocolViolation`; a well-formed message
we do not know is counted (:class:`MessageIgnored`) and the call goes on, and so is an empty
binary frame. Hanging up (and a transfer) sends ``disconnect``, which ends the ``listen`` verb:
jambonz calls its ``actionHook`` and runs what the application answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediaproxy.audio.format import L16_8K, AudioFormat, FormatPreference
from mediaproxy.options import integer, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformCapabilities,
    PlatformEvent,
    PlatformType,
    UpgradeRequest,
)
from mediaproxy.platforms.basic_auth import check_basic_auth, require_both_halves
from mediaproxy.platforms.jsonmedia import JsonMediaSession, is_dtmf, json_string, string_metadata

SUBPROTOCOL = "audio.jambonz.org"
RATES = (8000, 16000, 24000, 48000, 64000)
MIX_TYPES = ("mono", "mixed")
"""The single-channel mixTypes (``stereo`` carries both legs of a bridge: not a caller stream)."""
_OPENING_KEYS = frozenset({"sampleRate", "mixType"})
_KILL_AUDIO = '{"type":"killAudio"}'
_DISCONNECT = '{"type":"disconnect"}'


@dataclass(frozen=True, kw_only=True)
class JambonzOptions:
    """The keys of a ``[platform:NAME] type = jambonz`` section."""

    username: str = option(text, "", "the listen verb's wsAuth.username; with password, the upgrade must carry "
                           "it as Authorization: Basic")
    password: str = option(text, "", "the listen verb's wsAuth.password")
    max_frame_ms: int = option(integer(20, 2000), 500, "largest inbound audio frame accepted, in ms")


def check_upgrade(request: UpgradeRequest, options: JambonzOptions, now: float) -> None:
    """Require ``Authorization: Basic base64(username:password)`` when the credentials are set."""
    check_basic_auth(request, options.username, options.password)


def validate(options: JambonzOptions, public_url: str) -> None:
    """Basic auth needs both halves."""
    require_both_halves("username", options.username, "password", options.password, "wsAuth")


def new_session(options: JambonzOptions, formats: FormatPreference = ()) -> JambonzSession:
    """A fresh session for one ``listen`` (the rate comes with the first text frame)."""
    return JambonzSession(max_frame_ms=options.max_frame_ms)


class JambonzSession(JsonMediaSession):
    """One jambonz ``listen`` socket. ``call_sid`` and ``attributes`` (the call attributes and
    the verb's metadata) are kept from the first text frame; ``audio_format`` is its rate."""

    capabilities = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=20,
                                        can_transfer=True)
    vendor = "jambonz"

    def __init__(self, max_frame_ms: int = 500) -> None:
        super().__init__(L16_8K.bytes_for_ms(max_frame_ms))
        self.max_frame_ms = max_frame_ms
        self.call_sid = ""
        self.attributes: dict[str, str] = {}
        self.audio_format = L16_8K

    # --- input ---------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        if self._ended:
            return []
        if not self._started:
            return self._violation("media_before_start", "audio before the call metadata")
        size = len(data)
        if size and not size & 1 and size <= self.max_frame_bytes:
            return [CallerAudio(data)]  # the hot path: passed on as it came
        if not size:
            return [MessageIgnored("empty_frame")]
        if size & 1:
            return self._violation("bad_payload", f"audio frame of {size} bytes is not whole samples")
        return self._violation("oversize_frame", f"audio frame of {size} bytes")

    def receive_text(self, text: str) -> list[PlatformEvent]:
        if self._ended:
            return []
        message = self.parse(text)
        if isinstance(message, list):
            return message
        if not self._started:
            return self._metadata(message)
        kind = message.get("type")
        event = message.get("event")
        if kind == "mark":
            data = message.get("data")
            name = data.get("name") if isinstance(data, dict) else None
            if not isinstance(name, str):
                return self._violation("wrong_type", "mark without a name string")
            return [MarkPlayed(name)]  # played out, or cleared by killAudio: either way, done
        if event == "dtmf":
            digit = message.get("dtmf")
            if not is_dtmf(digit):
                return self._violation("wrong_type", "dtmf without a valid digit")
            return [DtmfReceived(digit)]  # type: ignore[arg-type]
        if kind == "playDone":
            return []  # the end of a file playAudio: we stream, so never ours
        if not isinstance(kind, str) and not isinstance(event, str):
            return self._violation("bad_message", "neither a type nor an event name")
        return [MessageIgnored("unknown_event")]

    def _metadata(self, message: dict[str, Any]) -> list[PlatformEvent]:
        call_sid = message.get("callSid")
        if not isinstance(call_sid, str) or not call_sid:
            return self._violation("bad_message", "call metadata without a callSid")
        rate, mix = message.get("sampleRate", 8000), message.get("mixType", "mono")
        if type(rate) is not int or rate not in RATES or mix not in MIX_TYPES:
            return self._violation("unsupported_format", f"sampleRate {rate!r:.20} mixType {mix!r:.20}")
        fmt = AudioFormat("l16", rate)
        self._started = True
        self.call_sid = call_sid
        self.attributes = string_metadata(message, _OPENING_KEYS)
        self.audio_format = fmt
        self.max_frame_bytes = fmt.bytes_for_ms(self.max_frame_ms)
        return [CallStarted(call_sid, fmt, dict(self.attributes))]

    # --- commands --------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if self._started and not self._ended:
            self._output.append(packet)

    def mark(self, name: str) -> None:
        if self._started and not self._ended:
            self._output.append('{"type":"mark","data":{"name":' + json_string(name) + "}}")

    def clear(self) -> None:
        # killAudio drops jambonz's buffer and returns the pending marks as "cleared".
        if self._started and not self._ended:
            self._output.append(_KILL_AUDIO)

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # disconnect ends the listen verb (jambonz then calls its actionHook); the glue closes.
        if self._started and not self._ended:
            self._output.append(_DISCONNECT)
        self._ended = True

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """End the ``listen`` verb so jambonz runs the application's next verbs (its
        ``actionHook`` answer, where a ``dial`` to the person lives). The target is not used on
        the wire: the socket's ``transfer`` message is not acted on by the feature server."""
        if not self._started or self._ended:
            return False
        self.hangup(Outcome.TRANSFERRED)
        return True


JAMBONZ = PlatformType(
    name="jambonz",
    options=JambonzOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("username",),
    validate=validate,
    subprotocols=(SUBPROTOCOL,),
    summary="jambonz listen verb, bidirectional streaming: binary 16-bit PCM 8-64 kHz, JSON text commands",
)
