"""What the Twilio-dialect platforms share: JSON text frames carrying base64 audio.

Twilio Media Streams and its cousins (Telnyx Media Streaming, Plivo Audio Streams, Exotel
Voicebot) all send one JSON object per text frame, named by an ``event`` key, with caller audio as
a base64 ``payload``; they take bot audio back the same way. Their sessions derive from
:class:`JsonMediaSession`, which holds the parts that do not depend on the vendor's field names:

- :meth:`JsonMediaSession.parse` bounds the frame (``oversize``), decodes it (``bad_json``) and
  insists on an object; a binary frame is a violation (``binary_frame``).
- :meth:`JsonMediaSession.decode_payload` checks a payload's size *before* decoding it (a base64
  string of ``n`` characters holds at most ``3n/4`` bytes), decodes it strictly (``bad_base64``)
  and checks the decoded size (``oversize_frame``).
- :func:`is_dtmf` validates a digit string.
- :class:`MediaTemplate` renders an outbound media message from a JSON prefix and suffix built
  once per stream, so the hot path is one base64 encode and one string join.

- :class:`MediaStreamSession` adds what the cousins' ``start``, ``media`` and ``dtmf`` events
  share once the vendor's field names are read.

Every violation ends the session; nothing is parsed after it (or after the vendor's own end of
stream). The vendor modules keep their own event dispatch and field names.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat
from mediaproxy.platforms.base import (
    DtmfReceived,
    MarkPlayed,
    MessageIgnored,
    PlatformEvent,
    PlatformSession,
    ProtocolViolation,
)

MAX_MESSAGE_CHARS = 64 * 1024
"""The largest text frame accepted, in characters."""

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def digits_int(text: str) -> int | None:
    """``text`` as a number when it is one to nine ASCII digits (a sample rate sent as a
    string), else None. ``str.isdigit`` alone is not enough: it is true for digits ``int()``
    refuses (``"²"``) and for strings too long to convert (over 4300 digits)."""
    if 0 < len(text) <= 9 and text.isascii() and text.isdigit():
        return int(text)
    return None


def is_dtmf(value: object) -> bool:
    """True for a non-empty string of ``0-9*#A-D``."""
    return isinstance(value, str) and bool(value) and set(value) <= DTMF_DIGITS


class MediaTemplate:
    """One stream's outbound media message: ``prefix + base64(packet) + suffix``. The prefix holds
    every field before the payload string (with the stream's id already JSON-escaped), the
    suffix closes the payload string and the objects around it."""

    __slots__ = ("prefix", "suffix")

    def __init__(self, prefix: str, suffix: str) -> None:
        self.prefix = prefix
        self.suffix = suffix

    def render(self, packet: bytes) -> str:
        """The text frame that carries ``packet``."""
        return self.prefix + base64.b64encode(packet).decode("ascii") + self.suffix


class JsonMediaSession(PlatformSession):
    """Base of the JSON media-stream sessions: parsing, payload decoding, ending on a violation.

    ``max_frame_bytes`` bounds one decoded inbound payload. ``vendor`` names the platform in log
    details. Subclasses implement :meth:`receive_text` with :meth:`parse` and their dispatch.
    """

    vendor = "the platform"

    def __init__(self, max_frame_bytes: int) -> None:
        super().__init__()
        self.max_frame_bytes = max_frame_bytes
        self._started = False
        self._ended = False

    @property
    def started(self) -> bool:
        """True once the stream's ``start`` has been accepted."""
        return self._started

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        if self._ended:
            return []
        return self._violation("binary_frame", f"{self.vendor} sends text frames only")

    def invalid_text(self, payload: bytes) -> list[PlatformEvent]:
        if self._ended:
            return []
        return self._violation("bad_utf8", "text frame is not UTF-8")

    def parse(self, text: str) -> dict[str, Any] | list[PlatformEvent]:
        """The frame as a JSON object, or the violation it is (after which the session is
        ended). Callers check ``self._ended`` first."""
        if len(text) > MAX_MESSAGE_CHARS:
            return self._violation("oversize", f"message of {len(text)} characters")
        try:
            message = strict_json.loads(text)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
            return self._violation("bad_json", "not JSON")
        if not isinstance(message, dict):
            return self._violation("bad_json", "not a JSON object")
        return message

    def decode_payload(self, payload: str) -> bytes | list[PlatformEvent]:
        """The audio bytes of a base64 ``payload``, or the violation (``oversize_frame``,
        ``bad_base64``). The size is bounded before anything is decoded."""
        if len(payload) > (self.max_frame_bytes * 4) // 3 + 4:
            return self._violation("oversize_frame", f"media payload of {len(payload)} characters")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return self._violation("bad_base64", "media payload is not base64")
        if len(data) > self.max_frame_bytes:
            return self._violation("oversize_frame", f"media payload of {len(data)} bytes")
        return data

    def mark_event(self, message: dict[str, Any]) -> list[PlatformEvent]:
        """A ``mark`` echo (``{"mark": {"name": ...}}``, the Twilio family's shape)."""
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            return self._violation("wrong_type", "mark without a name string")
        return [MarkPlayed(name)]

    def _violation(self, kind: str, detail: str) -> list[PlatformEvent]:
        self._ended = True
        return [ProtocolViolation(kind, detail)]


def json_string(value: str) -> str:
    """``value`` as a JSON string literal (quotes included), for message prefixes."""
    return json.dumps(value)


MAX_METADATA_VALUE_CHARS = 1024
"""The longest metadata value kept from a platform's opening message (longer ones are cut)."""


def string_metadata(message: dict[str, Any], skip: frozenset[str]) -> dict[str, str]:
    """The top-level fields of an opening message (Vonage NCCO ``headers``, jambonz call
    attributes and ``metadata``) as string metadata: strings as sent, any other JSON value
    (a number, an object) in compact JSON, each cut to :data:`MAX_METADATA_VALUE_CHARS`; the
    protocol's own keys (``skip``) and nulls are left out."""
    out: dict[str, str] = {}
    for key, value in message.items():
        if key in skip or value is None:
            continue
        if not isinstance(value, str):
            value = json.dumps(value, separators=(",", ":"))
        out[key] = value[:MAX_METADATA_VALUE_CHARS]
    return out


class MediaStreamSession(JsonMediaSession):
    """Base of the Twilio cousins' sessions (Telnyx, Plivo, Exotel): one stream that a ``start``
    event opens and names the format of, then ``media`` payloads of caller audio, ``dtmf``
    digits and marks, until the vendor's end of stream or the socket's.

    It holds what their events share once the vendor's field names are read: the ``start``
    checks (:meth:`start_object`, :meth:`checked_parameters`, :meth:`accept_start`), the caller
    audio of a ``media`` event (:meth:`media_audio`), a ``dtmf`` event (:meth:`dtmf_event`), an
    event of no known name (:meth:`unknown_event`) and the end of a live stream for a transfer
    (:meth:`end_live_stream`). ``audio_format`` is the format until ``start`` announces its own;
    ``max_frame_ms`` bounds one inbound payload, in ms of the stream's format.
    """

    def __init__(self, max_frame_ms: int, audio_format: AudioFormat) -> None:
        super().__init__(audio_format.bytes_for_ms(max_frame_ms))
        self.max_frame_ms = max_frame_ms
        self.audio_format = audio_format

    def start_object(self, message: dict[str, Any]) -> dict[str, Any] | list[PlatformEvent]:
        """The ``start`` object of a ``start`` event, or the violation: a second ``start``
        (``duplicate_start``), or none (``bad_message``)."""
        if self._started:
            return self._violation("duplicate_start", "second start event")
        start = message.get("start")
        if not isinstance(start, dict):
            return self._violation("bad_message", "start without a start object")
        return start

    def checked_parameters(self, value: Any) -> dict[str, str] | list[PlatformEvent]:
        """A ``start``'s custom parameters (null: none) as a copy, or the ``wrong_type``
        violation when they do not map strings to strings."""
        if value is None:
            value = {}
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            return self._violation("wrong_type", "custom_parameters must map strings to strings")
        return dict(value)

    def accept_start(self, fmt: AudioFormat) -> None:
        """The stream has started in ``fmt``: from now on its payloads are bounded to
        ``max_frame_ms`` of that format."""
        self._started = True
        self.audio_format = fmt
        self.max_frame_bytes = fmt.bytes_for_ms(self.max_frame_ms)

    def media_audio(self, message: dict[str, Any],
                    inbound_tracks: tuple[str, ...] | None = None) -> bytes | list[PlatformEvent]:
        """The caller audio of a ``media`` event (``{"media": {"payload": base64}}``): whole
        samples of ``audio_format``. Otherwise the events it is instead: none for an empty
        payload, or for a ``media.track`` (``inbound`` when absent) not in ``inbound_tracks``
        (with both tracks streamed, the other one is our own audio; None: no track check), or the
        violation (``media_before_start``, ``wrong_type``, the payload's own, ``bad_payload``)."""
        if not self._started:
            return self._violation("media_before_start", "media before start")
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return self._violation("wrong_type", "media without a payload string")
        # A tuple, not a set: a track that is not a string (a list) must compare, not raise.
        if inbound_tracks is not None and media.get("track", "inbound") not in inbound_tracks:  # type: ignore[union-attr]
            return []
        data = self.decode_payload(payload)
        if isinstance(data, list):
            return data
        if not data:
            return []
        if len(data) % self.audio_format.frame_bytes:
            return self._violation("bad_payload", f"media payload of {len(data)} bytes is not whole samples")
        return data

    def dtmf_event(self, message: dict[str, Any]) -> list[PlatformEvent]:
        """A ``dtmf`` event (``{"dtmf": {"digit": ...}}``): the key pressed, or the violation
        (``dtmf_before_start``, ``wrong_type``)."""
        if not self._started:
            return self._violation("dtmf_before_start", "dtmf before start")
        dtmf = message.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not is_dtmf(digit):
            return self._violation("wrong_type", "dtmf without a valid digit")
        return [DtmfReceived(digit)]  # type: ignore[arg-type]

    def unknown_event(self, event: Any) -> list[PlatformEvent]:
        """An ``event`` the dispatch did not know: without a name string a violation
        (``bad_message``); else an event the vendor added since, counted and never fatal."""
        if not isinstance(event, str):
            return self._violation("bad_message", "no event name")
        return [MessageIgnored("unknown_event")]

    def end_live_stream(self) -> bool:
        """End the stream so the call goes on without us (the vendor's next step does the
        transfer): True when it was live, False when it had not started or had ended."""
        if not self._started or self._ended:
            return False
        self._ended = True
        return True
