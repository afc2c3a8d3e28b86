"""FreeSWITCH ``mod_audio_stream`` (the community module), as a sans-IO session: a best-effort
dialect, since the module's socket schema is thin.

FreeSWITCH dials us when an application runs
``uuid_audio_stream <uuid> start wss://proxy.example.com/freeswitch?uuid=<uuid> mono 16k <metadata>``.
Summary in docs/protocols/freeswitch.md::

    FreeSWITCH → us  text   the command's optional metadata, any UTF-8 text (first, if given;
                            a JSON object's fields become the call's metadata)
                     binary 16-bit signed little-endian PCM, mono, at the command's rate
                            (8k or 16k: not said on the socket), STREAM_BUFFER_SIZE ms each
                            (20 ms by default)
                     text   whatever ``uuid_audio_stream <uuid> send_text`` sends; our
                            convention for DTMF: {"event": "dtmf", "digit": "5"}
    us → FreeSWITCH  text   {"type": "streamAudio", "data": {"audioDataType": "raw",
                            "sampleRate": N, "audioData": "<base64 L16>"}}
                     text   {"type": "killAudio"}   (on barge-in; our convention)

The rate is ``sample_rate`` (8000 or 16000), or the upgrade's ``sample_rate`` query parameter.
The call starts with the first message of either kind; its id is the metadata's (or the
query's) ``uuid``, else generated. The module does not play ``streamAudio`` itself: it writes
each message's audio to a temporary file and fires a ``mod_audio_stream::play`` event naming it,
which the FreeSWITCH application plays (in order). Every other JSON we send fires
``mod_audio_stream::json``, which is how ``killAudio`` reaches the application (which may
``uuid_break`` the playback). There is no flush and no mark: ``can_flush`` is False, the playout
sends at most one frame ahead of real time, and each message is ``packet_ms`` of audio (default
200) so that the application plays few, longer files. A barge-in drops our queue at once; what
the application already holds plays on unless it acts on ``killAudio``.

Authentication: with ``authorization`` set, the upgrade's ``Authorization`` header (set with the
``STREAM_EXTRA_HEADERS`` channel variable) must equal it exactly, compared in constant time.

Any malformed input ends the session with a :class:`ProtocolViolation`; a well-formed JSON
message we do not know is counted (:class:`MessageIgnored`) and the call goes on, and so is an
empty binary frame. Hanging up closes the socket (the module fires
``mod_audio_stream::disconnect``; the FreeSWITCH call goes on under its application).
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat, FormatPreference
from mediaproxy.options import OptionError, integer, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.asterisk import query_metadata
from mediaproxy.platforms.base import (
    CallerAudio,
    CallStarted,
    DtmfReceived,
    MessageIgnored,
    PlatformCapabilities,
    PlatformEvent,
    PlatformType,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import (
    MAX_MESSAGE_CHARS,
    MAX_METADATA_VALUE_CHARS,
    JsonMediaSession,
    MediaTemplate,
    is_dtmf,
    string_metadata,
)

RATES = (8000, 16000)
FRAME_MS = 20
CALL_ID_KEYS = ("uuid", "call_uuid", "call_id")
"""Metadata (or query) keys whose value is taken as the call id, first found."""
_KILL_AUDIO = '{"type":"killAudio"}'


def _rate(value: str) -> int:
    """8000 or 16000 (``8k``/``16k`` as in the module's command are accepted too)."""
    rate = {"8k": 8000, "16k": 16000}.get(value.strip().lower()) or (int(value) if value.strip().isdigit() else 0)
    if rate not in RATES:
        raise ValueError(f"expected 8000 or 16000, got {value!r}")
    return rate


@dataclass(frozen=True, kw_only=True)
class FreeswitchOptions:
    """The keys of a ``[platform:NAME] type = freeswitch`` section."""

    sample_rate: int = option(_rate, 8000, "the uuid_audio_stream command's sampling rate (8000 or 16000); an "
                              "upgrade query parameter sample_rate overrides it per call")
    packet_ms: int = option(integer(20, 2000), 200, "duration of each streamAudio message (a file the "
                            "FreeSWITCH application plays), a multiple of 20 ms")
    authorization: str = option(text, "", "when set, the upgrade's Authorization header (STREAM_EXTRA_HEADERS) "
                                "must equal it")
    max_frame_ms: int = option(integer(20, 5000), 1000, "largest inbound audio frame accepted, in ms "
                               "(STREAM_BUFFER_SIZE)")


def check_upgrade(request: UpgradeRequest, options: FreeswitchOptions, now: float) -> None:
    """Require the configured ``authorization`` value when it is set."""
    if not options.authorization:
        return
    given = request.headers.get("authorization", "").strip()
    if not given:
        raise UpgradeRefused(401, "missing Authorization")
    if not hmac.compare_digest(given.encode(), options.authorization.encode()):
        raise UpgradeRefused(401, "bad Authorization")


def validate(options: FreeswitchOptions, public_url: str) -> None:
    """Messages are whole playout frames."""
    if options.packet_ms % FRAME_MS:
        raise OptionError("packet_ms", f"must be a multiple of {FRAME_MS}")


def new_session(options: FreeswitchOptions, formats: FormatPreference = ()) -> FreeswitchSession:
    """A fresh session for one ``uuid_audio_stream``."""
    return FreeswitchSession(options.sample_rate, options.packet_ms, options.max_frame_ms)


def _random_id() -> str:
    return str(uuid.uuid4())


class FreeswitchSession(JsonMediaSession):
    """One ``uuid_audio_stream`` socket. ``metadata`` is the command's metadata (and the
    upgrade's query parameters); ``audio_format`` is L16 at the configured (or queried) rate."""

    vendor = "FreeSWITCH"

    def __init__(self, sample_rate: int = 8000, packet_ms: int = 200, max_frame_ms: int = 1000,
                 new_id: Callable[[], str] = _random_id) -> None:
        self.audio_format = AudioFormat("l16", sample_rate)
        super().__init__(self.audio_format.bytes_for_ms(max_frame_ms))
        self.capabilities = PlatformCapabilities(can_flush=False, has_marks=False, max_lead_ms=FRAME_MS,
                                                 packet_ms=packet_ms)
        self.max_frame_ms = max_frame_ms
        self._new_id = new_id
        self._bad_rate: str | None = None
        """The upgrade's unusable ``sample_rate`` (even an empty one), which refuses the call."""
        self.call_id = ""
        self.query: dict[str, str] = {}
        self.metadata: dict[str, str] = {}
        self._template = self._media_template()

    def _media_template(self) -> MediaTemplate:
        prefix = ('{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":'
                  f'{self.audio_format.rate_hz},"audioData":"')
        return MediaTemplate(prefix, '"}}')

    def bind_upgrade(self, request: UpgradeRequest) -> None:
        self.query = query_metadata(request.target)
        rate = self.query.get("sample_rate")
        if rate is not None:
            try:
                self.audio_format = AudioFormat("l16", _rate(rate))
            except ValueError:
                self._bad_rate = rate[:20]
                return
            self.max_frame_bytes = self.audio_format.bytes_for_ms(self.max_frame_ms)
            self._template = self._media_template()

    # --- input ---------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        if self._ended:
            return []
        size = len(data)
        if self._started and size and not size & 1 and size <= self.max_frame_bytes:
            return [CallerAudio(data)]  # the hot path: passed on as it came
        events: list[PlatformEvent] = []
        if not self._started:
            events = self._start({})  # no metadata was given: the audio starts the call
            if self._ended:
                return events
        if not size:
            return events + [MessageIgnored("empty_frame")]
        if size & 1:
            return events + self._violation("bad_payload", f"audio frame of {size} bytes is not whole samples")
        if size > self.max_frame_bytes:
            return events + self._violation("oversize_frame", f"audio frame of {size} bytes")
        return events + [CallerAudio(data)]

    def receive_text(self, text: str) -> list[PlatformEvent]:
        if self._ended:
            return []
        if not self._started:
            if len(text) > MAX_MESSAGE_CHARS:
                return self._violation("oversize", f"message of {len(text)} characters")
            return self._start(self._opening_metadata(text))
        message = self.parse(text)
        if isinstance(message, list):
            return message
        kind = message.get("type")
        event = message.get("event")
        if event == "dtmf" or kind == "dtmf":
            digit = message.get("digit")
            if not is_dtmf(digit):
                return self._violation("wrong_type", "dtmf without a valid digit")
            return [DtmfReceived(digit)]  # type: ignore[arg-type]
        if not isinstance(kind, str) and not isinstance(event, str):
            return self._violation("bad_message", "neither a type nor an event name")
        return [MessageIgnored("unknown_event")]

    @staticmethod
    def _opening_metadata(text: str) -> dict[str, str]:
        """The metadata of the first text frame: a JSON object's fields, else the text itself."""
        try:
            message = strict_json.loads(text)
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict):
            return string_metadata(message, frozenset())
        return {"metadata": text[:MAX_METADATA_VALUE_CHARS]}

    def _start(self, metadata: dict[str, str]) -> list[PlatformEvent]:
        if self._bad_rate is not None:
            return self._violation("unsupported_format", f"sample_rate {self._bad_rate!r}")
        merged = {**self.query, **metadata}
        merged.pop("sample_rate", None)
        self._started = True
        self.metadata = merged
        self.call_id = next((merged[k] for k in CALL_ID_KEYS if merged.get(k)), "") or self._new_id()
        return [CallStarted(self.call_id, self.audio_format, dict(merged))]

    # --- commands --------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if self._started and not self._ended:
            self._output.append(self._template.render(packet))

    def clear(self) -> None:
        # The module cannot flush: killAudio reaches the application as mod_audio_stream::json.
        if self._started and not self._ended:
            self._output.append(_KILL_AUDIO)

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # Closing the socket ends the stream; the FreeSWITCH call goes on under its application.
        self._ended = True




FREESWITCH = PlatformType(
    name="freeswitch",
    options=FreeswitchOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("authorization",),
    validate=validate,
    summary="FreeSWITCH mod_audio_stream (best effort): binary 16-bit PCM 8/16 kHz in, JSON streamAudio "
            "(base64 raw) out, no flush",
)
