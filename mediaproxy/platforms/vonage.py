"""Vonage Voice API WebSockets (NCCO ``connect`` to a ``websocket`` endpoint), as a sans-IO session.

Protocol (summary in docs/protocols/vonage.md):

    Vonage → us   text   {"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                          ...the endpoint's NCCO headers, at the top level}   (always first)
                  binary 16-bit signed little-endian PCM, mono, exactly one 20 ms frame each
                         (320 bytes at 8 kHz, 640 at 16 kHz, 960 at 24 kHz)
                  text   {"event": "websocket:dtmf", "digit": "5", "duration": 260}
                  text   {"event": "websocket:notify", "payload": {"name": ...}}  (the audio sent
                         before our notify has played)
                  text   {"event": "websocket:cleared"}                 (our clear was done)
    us → Vonage   binary the same format, exactly one 20 ms frame per message
                  text   {"action": "notify", "payload": {"name": ...}}, {"action": "clear"}

Vonage buffers what it is sent (a few thousand frames) and plays it in order; ``clear`` drops the
buffer, and ``notify`` comes back as ``websocket:notify`` with our payload once everything sent
before it has played: marks, so the played position is measured and the usual ``[playout]
lead_ms`` applies. Every outbound audio message is exactly one frame (``packet_ms`` 20); a shorter
packet is padded with silence to it.

Authentication: with ``signature_secret`` set, the upgrade must carry ``Authorization: Bearer``
and a JWT signed HS256 with that secret (Vonage's signed-callback scheme; ``exp``, ``iat`` and,
with ``application_id`` set, the ``application_id`` claim are checked). With ``authorization``
set (the NCCO endpoint's custom ``authorization`` value), the header must equal it exactly. Both
are compared in constant time.

Any malformed input ends the session with a :class:`ProtocolViolation` (Vonage has no error
message: the glue closes the socket); a well-formed ``event`` we do not know is counted
(:class:`MessageIgnored`) and the call goes on, and so is an empty binary frame. Closing the
socket ends the websocket leg; Vonage then runs the rest of the NCCO (or the ``eventUrl``'s
answer to ``disconnected``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mediaproxy import strict_json
from mediaproxy.audio.format import AudioFormat, FormatPreference
from mediaproxy.options import OptionError, integer, option, text
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
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import JsonMediaSession, digits_int, is_dtmf, json_string, string_metadata

RATES = (8000, 16000, 24000)
FRAME_MS = 20
CLOCK_SKEW_S = 30
"""Leeway on a JWT's ``exp`` and ``iat`` for clocks that disagree."""
CALL_ID_KEYS = ("uuid", "call_uuid", "conversation_uuid")
"""Header names (in the NCCO ``headers``) whose value is taken as the call id, first found."""
_OPENING_KEYS = frozenset({"event", "content-type"})
_CLEAR = '{"action":"clear"}'


@dataclass(frozen=True, kw_only=True)
class VonageOptions:
    """The keys of a ``[platform:NAME] type = vonage`` section."""

    signature_secret: str = option(text, "", "the account's signature secret; when set, the upgrade must carry "
                                   "Authorization: Bearer with a JWT signed HS256 with it")
    application_id: str = option(text, "", "with signature_secret: the JWT's application_id claim must equal it")
    jwt_max_age_s: int = option(integer(10, 3600), 300, "oldest JWT (by its iat claim) accepted, in seconds")
    authorization: str = option(text, "", "the NCCO endpoint's custom authorization value; when set, the "
                                "upgrade's Authorization header must equal it")


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_jwt(token: str, secret: str, now: float, max_age_s: int, application_id: str = "") -> str:
    """Why ``token`` is not an HS256 JWT signed with ``secret`` and valid at ``now``; "" if it is."""
    parts = token.split(".")
    if len(parts) != 3:
        return "not a JWT"
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    expected = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    try:
        header, claims = strict_json.loads(_b64url(parts[0])), strict_json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (ValueError, binascii.Error, RecursionError):
        return "not a JWT"
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return "not an HS256 JWT"
    if not hmac.compare_digest(signature, expected):
        return "bad signature"
    exp, iat = claims.get("exp"), claims.get("iat")
    if exp is not None and (not isinstance(exp, int | float) or exp < now - CLOCK_SKEW_S):
        return "expired"
    if iat is not None and (not isinstance(iat, int | float) or not now - max_age_s <= iat <= now + CLOCK_SKEW_S):
        return "iat out of range"
    if application_id and claims.get("application_id") != application_id:
        return "wrong application_id"
    return ""


def check_upgrade(request: UpgradeRequest, options: VonageOptions, now: float) -> None:
    """Require the configured ``authorization`` value, or a valid JWT when ``signature_secret``
    is set (either one passes when both are)."""
    if not (options.signature_secret or options.authorization):
        return
    given = request.headers.get("authorization", "").strip()
    if not given:
        raise UpgradeRefused(401, "missing Authorization")
    if options.authorization and hmac.compare_digest(given.encode(), options.authorization.encode()):
        return
    if options.signature_secret:
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer":
            raise UpgradeRefused(401, "Authorization is not a Bearer token")
        why = verify_jwt(token.strip(), options.signature_secret, now, options.jwt_max_age_s, options.application_id)
        if why:
            raise UpgradeRefused(401, f"bad JWT: {why}")
        return
    raise UpgradeRefused(401, "bad Authorization")


def validate(options: VonageOptions, public_url: str) -> None:
    """``application_id`` is a JWT claim: it means nothing without the secret."""
    if options.application_id and not options.signature_secret:
        raise OptionError("signature_secret", "required with application_id (the JWT carries the claim)")


def new_session(options: VonageOptions, formats: FormatPreference = ()) -> VonageSession:
    """A fresh session for one websocket leg (the rate comes with ``websocket:connected``)."""
    return VonageSession()


def content_type_format(value: Any) -> AudioFormat | None:
    """The :class:`AudioFormat` of a ``content-type`` such as ``audio/l16;rate=16000``, or None."""
    if not isinstance(value, str):
        return None
    media, _, params = value.replace(" ", "").lower().partition(";")
    if media != "audio/l16":
        return None
    rate = digits_int(dict(p.partition("=")[::2] for p in params.split(";") if p).get("rate", ""))
    if rate not in RATES:
        return None
    return AudioFormat("l16", rate)


def _random_id() -> str:
    return str(uuid.uuid4())


class VonageSession(JsonMediaSession):
    """One Vonage websocket leg. ``headers`` are the NCCO endpoint headers from
    ``websocket:connected``; ``audio_format`` is its ``content-type``."""

    capabilities = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=FRAME_MS,
                                        can_transfer=True)
    vendor = "Vonage"

    def __init__(self, new_id: Callable[[], str] = _random_id) -> None:
        super().__init__(0)
        self._new_id = new_id
        self.call_id = ""
        self.headers: dict[str, str] = {}
        self.audio_format = AudioFormat("l16", 16000)
        self.frame_bytes = self.audio_format.bytes_for_ms(FRAME_MS)

    # --- input ---------------------------------------------------------------------------------

    def receive_binary(self, data: bytes) -> list[PlatformEvent]:
        if self._ended:
            return []
        if len(data) == self.frame_bytes and self._started:
            return [CallerAudio(data)]  # the hot path: one exact frame, passed on as it came
        if not self._started:
            return self._violation("media_before_start", "audio before websocket:connected")
        if not data:
            return [MessageIgnored("empty_frame")]
        return self._violation("bad_frame_size", f"audio frame of {len(data)} bytes, not {self.frame_bytes}")

    def receive_text(self, text: str) -> list[PlatformEvent]:
        if self._ended:
            return []
        message = self.parse(text)
        if isinstance(message, list):
            return message
        event = message.get("event")
        if event == "websocket:dtmf":
            return self._dtmf(message)
        if event == "websocket:notify":
            payload = message.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str):
                return self._violation("wrong_type", "websocket:notify without our payload name")
            return [MarkPlayed(name)]
        if event == "websocket:cleared":
            return []  # the acknowledgement of our clear: marks already say what was played
        if event == "websocket:connected":
            return self._connected(message)
        if not isinstance(event, str):
            return self._violation("bad_message", "no event name")
        return [MessageIgnored("unknown_event")]

    def _connected(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._started:
            return self._violation("duplicate_start", "second websocket:connected")
        fmt = content_type_format(message.get("content-type"))
        if fmt is None:
            return self._violation("unsupported_format", f"content-type {message.get('content-type')!r:.80}")
        headers = string_metadata(message, _OPENING_KEYS)
        self._started = True
        self.audio_format = fmt
        self.frame_bytes = fmt.bytes_for_ms(FRAME_MS)
        self.headers = headers
        self.call_id = next((headers[k] for k in CALL_ID_KEYS if headers.get(k)), "") or self._new_id()
        return [CallStarted(self.call_id, fmt, dict(headers))]

    def _dtmf(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if not self._started:
            return self._violation("dtmf_before_start", "dtmf before websocket:connected")
        digit = message.get("digit")
        if digit is None and isinstance(message.get("dtmf"), dict):
            digit = message["dtmf"].get("digit")  # the Audio Connector's nested shape
        if not is_dtmf(digit):
            return self._violation("wrong_type", "websocket:dtmf without a valid digit")
        return [DtmfReceived(digit)]  # type: ignore[arg-type]

    # --- commands --------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if not self._started or self._ended:
            return
        size = self.frame_bytes
        if len(packet) == size:
            self._output.append(packet)
            return
        # Vonage takes exactly one frame per message: split, and pad the tail with silence.
        for start in range(0, len(packet), size):
            frame = packet[start:start + size]
            self._output.append(frame if len(frame) == size else frame + bytes(size - len(frame)))

    def mark(self, name: str) -> None:
        if self._started and not self._ended:
            self._output.append('{"action":"notify","payload":{"name":' + json_string(name) + "}}")

    def clear(self) -> None:
        # Always sent: Vonage may still hold audio we think was played.
        if self._started and not self._ended:
            self._output.append(_CLEAR)

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # Closing the socket ends the websocket leg; Vonage runs the rest of the NCCO.
        self._ended = True

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """End the websocket leg so Vonage goes on without us: the NCCO actions after ``connect``
        (or the ``eventUrl``'s answer to ``disconnected``) dial the person. The target is not
        used on the wire."""
        if not self._started or self._ended:
            return False
        self._ended = True
        return True


VONAGE = PlatformType(
    name="vonage",
    options=VonageOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("signature_secret", "authorization"),
    validate=validate,
    summary="Vonage Voice API WebSockets (NCCO connect): binary 16-bit PCM 8/16/24 kHz in 20 ms frames, "
            "JSON text events",
)
