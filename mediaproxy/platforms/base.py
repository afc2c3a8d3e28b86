"""The neutral interface between a platform's wire protocol and the rest of the proxy.

Every platform adapter (Twilio, AudioHook, AudioCodes, ...) is a *sans-IO* session object: it is
fed the text and binary WebSocket messages the platform sends (``receive_text``,
``receive_binary``) and returns neutral events (the dataclasses below); it is given neutral
commands (``play``, ``mark``, ``clear``, ...) and queues the wire messages they mean. It never
touches a transport or a clock. Replies it owes the platform (a ``pong``, an ``opened``) are queued
the same way. The thin Autobahn glue (:mod:`mediaproxy.server`) drains the queue
with :meth:`PlatformSession.take_output` after every call and sends each item: ``str`` as a text
frame, ``bytes`` as a binary frame.

Malformed or hostile input is never an exception: the session returns a :class:`ProtocolViolation`
event (after queueing whatever error or close message the protocol defines), and the glue counts
it and closes the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mediaproxy.audio.format import AudioFormat, FormatPreference
from mediaproxy.http_requests import HttpRequest as HttpRequest  # re-exported (Twilio builds one)
from mediaproxy.outcome import Outcome
from mediaproxy.transcripts import Transcript

Outbound = str | bytes
"""A queued wire message: ``str`` goes out as a text frame, ``bytes`` as a binary frame."""


@dataclass(frozen=True)
class PlatformCapabilities:
    """What a platform's playback side can do; the playout adapts its pacing to it.

    ``can_flush``: the platform drops audio it has queued when told to (``clear``), so we may send
    ahead of real time. ``has_marks``: it echoes a mark when playback reaches it, which gives the
    exact played position. ``max_lead_ms``: how far ahead of real time we may ever send to it
    (``None``: the ``[playout] lead_ms`` setting applies unchanged; AudioCodes, which cannot flush,
    allows one frame). ``packet_ms``: the duration of each outbound audio message (a multiple of
    the playout tick).
    """

    can_flush: bool
    has_marks: bool
    max_lead_ms: int | None
    packet_ms: int
    plays_audio: bool = True
    """False for listen-only endpoints (AudioHook Monitor): the backend only listens."""
    can_transfer: bool = False
    """:meth:`PlatformSession.transfer` hands the caller on in the platform's own way."""
    can_send_dtmf: bool = False
    """:meth:`PlatformSession.send_dtmf` plays digits to the far end (IVR navigation)."""
    any_message_length: bool = False
    """:meth:`PlatformSession.play` takes any whole number of packets in one message (Twilio
    plays media of any length): the playout then sends up to ``[playout] message_ms`` at once."""


# --- events: platform → proxy -------------------------------------------------------------------


@dataclass(frozen=True)
class CallStarted:
    """The platform has started a call and told us its audio format.

    ``call_id`` is the platform's own identifier (Twilio callSid, AudioHook conversationId,
    AudioCodes conversationId); ``metadata`` carries string parameters that should reach the
    backend session (Twilio customParameters, AudioHook inputVariables, AudioCodes start
    parameters). ``audio_format`` is the format of caller audio in :class:`CallerAudio` events and
    of the packets passed to :meth:`PlatformSession.play`.
    """

    call_id: str
    audio_format: AudioFormat
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallerAudio:
    """Caller audio in the call's ``audio_format`` (mono). ``channel`` names the party for
    platforms that stream several (AudioHook monitor: ``external``/``internal``)."""

    data: bytes
    channel: str = "external"


@dataclass(frozen=True)
class DtmfReceived:
    """The caller pressed keys (one or more of ``0-9*#A-D``)."""

    digits: str


@dataclass(frozen=True)
class MarkPlayed:
    """Playback reached (or a flush discarded) the mark with this name."""

    name: str


@dataclass(frozen=True)
class PlaybackFlowChanged:
    """The platform asks us to slow down (``retry_after_ms`` > 0, e.g. Genesys 429) or lifts it."""

    retry_after_ms: int


@dataclass(frozen=True)
class PlaybackPaused:
    """The platform's client asks us to stop (``paused=True``) or restart sending bot audio
    (client-driven flow control: the generic WebSocket platform's ``pause``/``resume``). The
    playout keeps queueing meanwhile, bounded by ``[playout] max_buffer_ms``. Sessions report
    changes only: a second pause while paused is no event."""

    paused: bool


@dataclass(frozen=True)
class CallerStreamPaused:
    """The platform paused (``paused=True``) or resumed caller audio (hold, secure pause)."""

    paused: bool


@dataclass(frozen=True)
class CallEnded:
    """The platform ended the call normally (``reason`` is the platform's own word for why)."""

    reason: str


@dataclass(frozen=True)
class PlatformError:
    """The platform reported an error of its own (AudioHook ``error``). ``code`` is a bounded
    label for ``platform_errors_total{code}``; ``message`` is for the log."""

    code: str
    message: str


@dataclass(frozen=True)
class ResumeRequested:
    """A new connection asks to continue a call whose socket dropped (AudioCodes
    ``session.resume``). The glue looks the call up by ``call_id``: if it is still held it moves
    the *old* session object onto the new connection and calls its :meth:`PlatformSession.resumed`;
    otherwise it calls :meth:`PlatformSession.resume_rejected` on the new one."""

    call_id: str


@dataclass(frozen=True)
class MessageIgnored:
    """The platform sent something well-formed that we do not act on (a message type the vendor
    added since, a chunk outside a started stream): counted under ``kind`` (a short, bounded
    label, never a value from the input) in ``protocol_errors_total`` and otherwise ignored.
    The call goes on."""

    kind: str


@dataclass(frozen=True)
class LanguageChanged:
    """The platform says the conversation's language changed (AudioHook ``update``): a BCP-47
    tag for the backend's transcription."""

    language: str


@dataclass(frozen=True)
class ProtocolViolation:
    """The platform sent something the protocol does not allow. ``kind`` is a short, bounded
    label for the ``protocol_errors_total{kind}`` metric (never a value taken from the input);
    ``detail`` is for the log. The session has already queued its protocol's error reply."""

    kind: str
    detail: str


PlatformEvent = (
    CallStarted
    | CallerAudio
    | DtmfReceived
    | MarkPlayed
    | PlaybackFlowChanged
    | PlaybackPaused
    | CallerStreamPaused
    | CallEnded
    | PlatformError
    | ResumeRequested
    | MessageIgnored
    | LanguageChanged
    | ProtocolViolation
)


class PlatformSession:
    """Base class of the sans-IO platform sessions: output queue plus no-op command defaults.

    Subclasses implement ``receive_text``/``receive_binary`` and override the commands their
    platform supports. Commands a platform lacks stay harmless no-ops, so the call bridge can issue
    them unconditionally.
    """

    capabilities: PlatformCapabilities

    def __init__(self) -> None:
        self._output: list[Outbound] = []

    # input
    def receive_text(self, text: str) -> list[PlatformEvent]:
        """Parse one text frame from the platform."""
        raise NotImplementedError

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        """Parse one binary frame from the platform."""
        raise NotImplementedError

    def invalid_text(self, payload: bytes) -> list[PlatformEvent]:
        """A text frame that is not UTF-8 (``payload``: its bytes). Only called while the session
        is live. A protocol with an error message queues it here, ends the session and returns
        the violation, as for any malformed input; the default is the violation alone, and the
        glue then closes the socket with 1007 (invalid frame payload data)."""
        return [ProtocolViolation("bad_utf8", "text frame is not UTF-8")]

    def take_output(self) -> list[Outbound]:
        """Return and forget every queued wire message, oldest first."""
        out = self._output
        if out:
            self._output = []
        return out

    # commands (proxy → platform)
    def play(self, packet: bytes) -> None:
        """Queue one packet of bot audio in the call's format (``capabilities.packet_ms`` long, or
        whole packets up to ``[playout] message_ms`` where ``capabilities.any_message_length``)."""
        raise NotImplementedError

    def mark(self, name: str) -> None:
        """Queue a playback mark (only called when ``capabilities.has_marks``)."""

    def clear(self) -> None:
        """Barge-in: make the platform drop the bot audio it has queued, at once."""

    def playback_finished(self) -> None:
        """The current bot utterance has been sent completely (AudioCodes closes its play stream)."""

    def caller_speech(self, started: bool) -> None:
        """The backend's VAD saw the caller start (``True``) or stop speaking."""

    def transcript(self, transcript: Transcript) -> None:
        """A transcript from the backend: ``role`` is ``caller`` (external party), ``agent``
        (internal party, AudioHook Monitor) or ``bot``; its times are on the backend's timeline
        of this call's channel (see :mod:`mediaproxy.transcripts`)."""

    def send_dtmf(self, digits: str) -> None:
        """Ask the platform to play DTMF digits (only called when ``capabilities.can_send_dtmf``)."""

    def pause_caller_audio(self, paused: bool) -> bool:
        """Ask the platform to stop (``True``) or restart sending caller audio. Returns whether
        the platform supports it; the caller falls back to dropping audio when it does not."""
        return False

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        """End the call from our side, saying why in the platform's own terms: ``outcome`` is the
        neutral why (the bot is done, the backend failed, the proxy drains, ...), ``reason`` a
        short text for the platform's logs. ``variables`` are returned to the platform where it
        supports it (AudioHook outputVariables). After this the glue closes the socket once the
        output is sent, unless :attr:`awaits_close` says the protocol runs a close transaction
        first."""

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """Hand the caller to a person at ``target`` (already in the platform's own terms: a
        queue or flow variable, a SIP URI, a number) in the platform's own way, ending our leg.
        ``summary`` is what the bot tells the person. Returns False when the platform cannot
        (only called when ``capabilities.can_transfer``)."""
        return False

    # connection hooks the glue calls on every platform (no-ops unless a platform needs them)
    def bind_upgrade(self, request: UpgradeRequest) -> None:
        """The HTTP upgrade this session's connection arrived with (headers to cross-check)."""

    def refuse(self, reason: str) -> None:
        """The proxy is at capacity: answer the platform's session request with a refusal."""
        self.hangup(Outcome.DRAINED, reason)

    @property
    def finished(self) -> bool:
        """True once the session accepts nothing more: the glue closes after sending output."""
        return False

    def connection_lost(self) -> None:
        """The socket dropped while :attr:`survives_disconnect` (stop queueing output)."""

    # resume (platforms whose calls survive a dropped socket)
    @property
    def survives_disconnect(self) -> bool:
        """True while a dropped socket is not a hang-up: the glue then holds the call for a grace
        period, waiting for a :class:`ResumeRequested` on a new connection."""
        return False

    def resumed(self) -> None:
        """This (old) session continues on a new connection: queue the acceptance."""

    def resume_rejected(self) -> None:
        """No held call matches the resume request: queue the refusal."""

    @property
    def awaits_close(self) -> bool:
        """True while the protocol expects the peer to finish a close handshake (AudioHook
        ``disconnect`` → ``close`` → ``closed``) before the socket may be closed."""
        return False


# --- the upgrade request, and what a platform type is ---------------------------------------------


@dataclass(frozen=True)
class UpgradeRequest:
    """A neutral view of the HTTP request that opens a platform WebSocket.

    ``target`` is the raw request target (path plus query, as sent); ``host`` the Host header;
    ``headers`` maps lower-cased header names to values (repeated headers joined with ", ").
    ``public_url`` is ``[proxy] public_url`` (the URL platforms dial, for signature checks).
    """

    target: str
    host: str
    headers: Mapping[str, str]
    public_url: str = ""


class UpgradeRefused(Exception):
    """Raised by a platform's ``check_upgrade`` to refuse the WebSocket upgrade with an HTTP
    status (401 bad credentials, 403 bad signature, 503 no capacity) and a reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class PlatformType(Generic[OptionsT]):
    """Everything the proxy needs to know about one kind of platform (``[platform:NAME] type``).

    One frozen instance per platform module, registered in :mod:`mediaproxy.catalog`. The
    server glue and the call registry use nothing else of a platform: no generic code reads a
    platform-specific key.

    ``options``: the dataclass of the keys its ``[platform:NAME]`` sections accept besides
    ``type``, ``path`` and ``backend`` (see :mod:`mediaproxy.options`).
    ``check_upgrade(request, options, now)``: authenticate a WebSocket upgrade; raise
    :class:`UpgradeRefused` to refuse it. ``now`` is the reactor's time in Unix seconds, for
    time-window checks. Never blocks.
    ``new_session(options, formats)``: a fresh sans-IO session for one connection; ``formats``
    is the backend's format preference, for platforms that negotiate.
    ``plain_get(request, options)``: the ``(status, JSON body)`` answer to a plain HTTP GET on the
    path (AudioCodes Live Hub validation); None: refused with 426.
    ``refuses_in_band``: at capacity the upgrade is accepted and the session answers with the
    platform's own refusal (:meth:`PlatformSession.refuse`) instead of an HTTP 503.
    ``resume_grace_s(options)``: how long a call whose socket dropped is held for a resume; None
    for platforms whose calls end with their socket.
    ``validate(options, public_url)``: cross-checks at start-up; raises
    :class:`~mediaproxy.options.OptionError`.
    ``transfer_request(options, session, target)``: where the platform moves a live call through
    an HTTP API rather than on the media socket (Twilio REST with account credentials), the
    request that transfers ``session``'s call to ``target``; None: :meth:`PlatformSession.transfer`
    on the socket is all there is.
    """

    name: str
    options: type[OptionsT]
    check_upgrade: Callable[[UpgradeRequest, OptionsT, float], None]
    new_session: Callable[[OptionsT, FormatPreference], PlatformSession]
    summary: str = ""
    plain_get: Callable[[UpgradeRequest, OptionsT], tuple[int, bytes] | None] | None = None
    refuses_in_band: bool = False
    resume_grace_s: Callable[[OptionsT], float] | None = None
    validate: Callable[[OptionsT, str], None] | None = None
    transfer_request: Callable[[OptionsT, PlatformSession, str], HttpRequest | None] | None = None
    subprotocols: tuple[str, ...] = ()
    """WebSocket subprotocols the upgrade accepts: the first the client offers is selected
    (jambonz offers ``audio.jambonz.org`` and insists on it)."""
    credential_keys: tuple[str, ...] = ()
    """The options that authenticate a caller (any one set is enough); with none set, start-up
    refuses a listener other hosts can reach unless ``allow_unauthenticated`` says so."""
