"""Twilio Media Streams, bidirectional (``<Connect><Stream>``), as a sans-IO session.

Protocol (JSON text frames; summary in docs/protocols/twilio.md):

    Twilio → us   connected {protocol, version}
                  start     {streamSid, start: {streamSid, accountSid, callSid, tracks,
                             customParameters, mediaFormat: {encoding: audio/x-mulaw,
                             sampleRate: 8000, channels: 1}}}
                  media     {streamSid, media: {track, chunk, timestamp, payload: base64 µ-law}}
                  dtmf      {streamSid, dtmf: {track, digit}}
                  mark      {streamSid, mark: {name}}   (playback reached our mark, or a clear
                                                          flushed it)
                  stop      {streamSid, stop: {accountSid, callSid}}
    us → Twilio   media {streamSid, media: {payload}}, mark {streamSid, mark: {name}},
                  clear {streamSid}

Twilio buffers whatever it is sent and plays it in order; ``clear`` drops the buffer and
immediately echoes every pending mark, which is why the playout tags marks with a generation.
The upgrade carries ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with the account's auth
token, over the exact URL Twilio dialled (``wss://`` public URL plus path); query strings are
stripped by Twilio, so per-call data arrives as ``customParameters``.

Any malformed input ends the session with a :class:`ProtocolViolation` (Twilio has no error
message: the glue closes the socket); nothing here raises on input. An ``event`` name we do not
know is well-formed input from a newer Twilio: it is counted (:class:`MessageIgnored`) and the
call goes on.

Transfers: closing the stream hands the call back to TwiML (the verbs after ``<Connect>``, where
an operator's ``<Dial>`` lives). With REST credentials configured, :func:`transfer_request` builds
the Calls API request that redirects the live call to a ``<Dial>`` of the target instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape

from mediaproxy.audio.format import MULAW_8K, FormatPreference
from mediaproxy.options import OptionError, integer, option, text
from mediaproxy.outcome import Outcome
from mediaproxy.platforms.base import (
    CallEnded,
    CallerAudio,
    CallStarted,
    DtmfReceived,
    HttpRequest,
    MessageIgnored,
    PlatformCapabilities,
    PlatformEvent,
    PlatformSession,
    PlatformType,
    UpgradeRefused,
    UpgradeRequest,
)
from mediaproxy.platforms.jsonmedia import MAX_MESSAGE_CHARS as MAX_MESSAGE_CHARS  # re-exported
from mediaproxy.platforms.jsonmedia import JsonMediaSession, MediaTemplate, is_dtmf, json_string


def _api_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


@dataclass(frozen=True, kw_only=True)
class TwilioOptions:
    """The keys of a ``[platform:NAME] type = twilio`` section."""

    auth_token: str = option(text, "", "account auth token; when set, X-Twilio-Signature is required on the upgrade")
    max_frame_ms: int = option(integer(20, 1000), 200, "largest inbound media payload accepted, in ms")
    account_sid: str = option(text, "", "account SID (AC...); with auth_token, transfers redirect the live call "
                              "through the REST API instead of ending the stream")
    api_url: str = option(_api_url, "https://api.twilio.com", "base URL of the Twilio REST API (a stand-in for tests)")




def _signature(auth_token: str, url: str) -> bytes:
    return base64.b64encode(hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest())


def _url_variants(url: str) -> list[str]:
    """The URL as configured, and with/without the explicit default port, as Twilio's own
    validators try both."""
    variants = [url]
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    default = {"wss": "443", "https": "443", "ws": "80", "http": "80"}.get(scheme)
    if default:
        if host.endswith(":" + default):
            variants.append(f"{scheme}{sep}{host[: -len(default) - 1]}{slash}{path}")
        elif ":" not in host:
            variants.append(f"{scheme}{sep}{host}:{default}{slash}{path}")
    return variants


def check_upgrade(request: UpgradeRequest, options: TwilioOptions, now: float) -> None:
    """Require a valid ``X-Twilio-Signature`` when ``auth_token`` is configured."""
    token = options.auth_token
    if not token:
        return
    given = request.headers.get("x-twilio-signature", "").encode()
    if not given:
        raise UpgradeRefused(403, "missing X-Twilio-Signature")
    url = request.public_url + request.target
    ok = False
    for candidate in _url_variants(url):
        # Every candidate is compared, in constant time, so timing says nothing.
        ok |= hmac.compare_digest(_signature(token, candidate), given)
    if not ok:
        raise UpgradeRefused(403, "bad X-Twilio-Signature")


def new_session(options: TwilioOptions, formats: FormatPreference = ()) -> TwilioSession:
    """A fresh session for one media stream (Twilio always sends µ-law: nothing to negotiate)."""
    return TwilioSession(max_frame_bytes=MULAW_8K.bytes_for_ms(options.max_frame_ms))


def validate(options: TwilioOptions, public_url: str) -> None:
    """The signature covers the URL Twilio dialled, which only ``[proxy] public_url`` knows."""
    if options.auth_token and not public_url:
        raise OptionError("public_url", "required because this platform checks X-Twilio-Signature", section="proxy")
    if options.account_sid and not options.auth_token:
        raise OptionError("auth_token", "required with account_sid (the REST API authenticates with both)")


# The media message as Twilio writes it (compact JSON, these keys in this order; other top-level
# string fields before or after "media"), with no escapes and no control characters in any
# string: for such a text json.loads gives exactly the fields captured here, so the fast path
# below answers what the general one would. Anything else takes the general path.
_STRING = r'"[^"\\\x00-\x1f]*"'
_FIELD = r'"[A-Za-z]+":' + _STRING
_FAST_MEDIA = re.compile(
    r'\{"event":"media",((?:' + _FIELD + r',)*)"media":\{"track":"([^"\\\x00-\x1f]*)","chunk":' + _STRING
    + r',"timestamp":' + _STRING + r',"payload":"([^"\\\x00-\x1f]*)"\}((?:,' + _FIELD + r')*)\}'
)


_NUMBER = re.compile(r"\+?[0-9][0-9 ().-]{1,30}\Z")
MAX_TARGET_CHARS = 512


def dial_twiml(target: str) -> str:
    """The TwiML that dials ``target``: a SIP URI as ``<Sip>``, a phone number as ``<Number>``,
    anything else (``client:...``, an application name) as the ``<Dial>`` text. XML-escaped."""
    target = target.strip()
    if target.lower().startswith(("sip:", "sips:")):
        noun = f"<Sip>{escape(target)}</Sip>"
    elif _NUMBER.match(target):
        noun = f"<Number>{escape(target)}</Number>"
    else:
        noun = escape(target)
    return f"<Response><Dial>{noun}</Dial></Response>"


def transfer_request(options: TwilioOptions, session: PlatformSession, target: str) -> HttpRequest | None:
    """The Calls API request that redirects ``session``'s live call to a ``<Dial>`` of
    ``target``: ``POST {api_url}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with
    HTTP Basic auth (account SID, auth token) and the form field ``Twiml``. None without REST
    credentials, a started stream or a target (the socket transfer then applies). Pure: the call
    layer sends it."""
    if not (options.account_sid and options.auth_token) or not isinstance(session, TwilioSession):
        return None
    target = target.strip()
    if not session.call_sid or not target or len(target) > MAX_TARGET_CHARS:
        return None
    # The stream's own account (a subaccount's calls are reachable with the parent's credentials).
    account = session.account_sid or options.account_sid
    url = (f"{options.api_url.rstrip('/')}/2010-04-01/Accounts/{quote(account, safe='')}"
           f"/Calls/{quote(session.call_sid, safe='')}.json")
    credentials = base64.b64encode(f"{options.account_sid}:{options.auth_token}".encode()).decode("ascii")
    return HttpRequest(
        method="POST",
        url=url,
        headers={
            "Authorization": f"Basic {credentials}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=urlencode({"Twiml": dial_twiml(target)}).encode("ascii"),
    )


class TwilioSession(JsonMediaSession):
    """One Twilio media stream. ``stream_sid``, ``call_sid``, ``account_sid`` and
    ``custom_parameters`` are kept from ``start`` (the only copy Twilio sends)."""

    capabilities = PlatformCapabilities(can_flush=True, has_marks=True, max_lead_ms=None, packet_ms=20,
                                        can_transfer=True, any_message_length=True)
    vendor = "Twilio"
    fast_media: re.Pattern[str] = _FAST_MEDIA
    """The shape of the media messages read without a general JSON decode."""

    def __init__(self, max_frame_bytes: int = 1600) -> None:
        super().__init__(max_frame_bytes)
        self.stream_sid = ""
        self.call_sid = ""
        self.account_sid = ""
        self.custom_parameters: dict[str, str] = {}
        self._media = MediaTemplate("", "")

    # --- input ---------------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[PlatformEvent]:
        if self._ended:
            return []
        if self._started and text.startswith('{"event":"media",') and len(text) <= MAX_MESSAGE_CHARS:
            # Fifty a second per call: no general JSON decode for the usual shape.
            fast = self.fast_media.fullmatch(text)
            # A repeated "event" or "media" key would override the one matched (json.loads keeps
            # the last): such a text goes the general way. Values hold no quotes, so a match of
            # '"event":' in the other fields can only be a key.
            if fast is not None and '"event":' not in (others := fast[1] + fast[4]) and '"media":' not in others:
                return self._media_payload(fast[3], fast[2])
        message = self.parse(text)
        if isinstance(message, list):
            return message
        event = message.get("event")
        if event == "media":
            return self._media_event(message)
        if event == "mark":
            return self.mark_event(message)
        if event == "start":
            return self._start(message)
        if event == "dtmf":
            return self._dtmf(message)
        if event == "stop":
            self._ended = True
            return [CallEnded("stop")]
        if event == "connected":
            return []
        if not isinstance(event, str):
            return self._violation("bad_message", "no event name")
        # An event Twilio added since: well-formed, not ours to act on. Counted, never fatal.
        return [MessageIgnored("unknown_event")]

    def _start(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if self._started:
            return self._violation("duplicate_start", "second start event")
        start = message.get("start")
        if not isinstance(start, dict):
            return self._violation("bad_message", "start without a start object")
        stream_sid = start.get("streamSid", message.get("streamSid"))
        call_sid = start.get("callSid")
        account_sid = start.get("accountSid", "")
        params = start.get("customParameters", {})
        fmt = start.get("mediaFormat", {})
        if not (isinstance(stream_sid, str) and stream_sid and isinstance(call_sid, str) and call_sid):
            return self._violation("bad_message", "start without streamSid/callSid")
        if not isinstance(account_sid, str) or not isinstance(params, dict) or not isinstance(fmt, dict):
            return self._violation("wrong_type", "start fields of the wrong type")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            return self._violation("wrong_type", "customParameters must map strings to strings")
        if (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")) != ("audio/x-mulaw", 8000, 1):
            return self._violation("unsupported_format", f"mediaFormat {fmt!r:.80}")
        self._started = True
        self.stream_sid, self.call_sid, self.account_sid = stream_sid, call_sid, account_sid
        self.custom_parameters = dict(params)
        # Escaped once: every outbound message reuses the streamSid.
        sid = json_string(stream_sid)
        self._media = MediaTemplate('{"event":"media","streamSid":' + sid + ',"media":{"payload":"', '"}}')
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"
        return [CallStarted(call_sid, MULAW_8K, dict(params))]

    def _media_event(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if not self._started:
            return self._violation("media_before_start", "media before start")
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return self._violation("wrong_type", "media without a payload string")
        return self._media_payload(payload, media.get("track", "inbound"))  # type: ignore[union-attr]

    def _media_payload(self, payload: str, track: object) -> list[PlatformEvent]:
        """The caller audio of a started stream's media message (its ``payload`` and ``track``)."""
        if len(payload) > (self.max_frame_bytes * 4) // 3 + 4:
            return self._violation("oversize_frame", f"media payload of {len(payload)} characters")
        if track not in ("inbound", "inbound_track"):
            return []  # another track (a misconfigured <Start><Stream> both_tracks): not the caller
        data = self.decode_payload(payload)
        if isinstance(data, list):
            return data
        return [CallerAudio(data)] if data else []

    def _dtmf(self, message: dict[str, Any]) -> list[PlatformEvent]:
        if not self._started:
            return self._violation("dtmf_before_start", "dtmf before start")
        dtmf = message.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not is_dtmf(digit):
            return self._violation("wrong_type", "dtmf without a valid digit")
        return [DtmfReceived(digit)]  # type: ignore[arg-type]

    # --- commands --------------------------------------------------------------------------------

    def play(self, packet: bytes) -> None:
        if self._started and not self._ended:
            self._output.append(self._media.render(packet))

    def mark(self, name: str) -> None:
        if self._started and not self._ended:
            self._output.append(self._mark_prefix + json.dumps(name) + "}}")

    def clear(self) -> None:
        # Always sent, even when we think everything was played: Twilio may still hold audio.
        if self._started and not self._ended:
            self._output.append(self._clear)

    def hangup(self, outcome: Outcome, reason: str = "", variables: Mapping[str, str] | None = None) -> None:
        # Closing the socket is all a media stream can do; Twilio then runs the next TwiML verb.
        self._ended = True

    def transfer(self, target: str, summary: str, variables: Mapping[str, str] | None = None) -> bool:
        """End the stream so Twilio runs the TwiML after ``<Connect>`` (where the operator's
        ``<Dial>`` lives). With REST credentials the call layer first sends
        :func:`transfer_request`, which replaces that TwiML with a ``<Dial>`` of ``target``."""
        if not self._started or self._ended:
            return False
        self._ended = True
        return True


TWILIO = PlatformType(
    name="twilio",
    options=TwilioOptions,
    check_upgrade=check_upgrade,
    new_session=new_session,
    credential_keys=("auth_token",),
    validate=validate,
    transfer_request=transfer_request,
    summary="Twilio Media Streams, bidirectional (<Connect><Stream>): JSON text frames, µ-law 8 kHz",
)
