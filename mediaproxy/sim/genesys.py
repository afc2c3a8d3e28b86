"""Genesys Cloud AudioHook as Genesys speaks it (protocol v2): what ``audiohook`` (Monitor) and
``connector`` (Audio Connector) share.

* The upgrade carries ``Audiohook-Organization-Id``, ``-Session-Id``, ``-Correlation-Id`` and
  ``X-API-KEY``, and, with a client secret, an HTTP message signature over all of them (RFC
  9421 style, HMAC-SHA256 keyed with the base64-decoded secret, as Genesys signs): computed here,
  independently of the proxy's verifier, at dial time (a signature is good for 10 s).
* ``open`` (the media offer of the mode) → ``opened``; then audio as binary frames (PCMU, 200 ms
  per frame as the reference client sends, ``--chunk-ms``), ``ping`` 1 s after ``opened``, right
  after the first ``pong``, then every 5 s (the reference client's cadence); ``paused`` /
  ``resumed`` for ``--pause-at-ms``; at the end ``close`` → ``closed``, then the socket closes.
* The proxy's ``disconnect`` is answered with ``close``, as Genesys does; its ``pause``/``resume``
  with ``paused``/``resumed`` (audio stops meanwhile).
* Every server message is checked as the reference client checks it: ``version`` "2", ``id``
  the session id, a server type, ``seq`` one more than the last, ``clientseq`` of the message it
  answers (``pong``, ``closed``, ``opened``), ``parameters`` an object, no other envelope field.
  A failure is a protocol error; so is a ``pong`` still missing at the next ping (Genesys: 408).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from twisted.internet.interfaces import IDelayedCall

from mediaproxy.sim.caller import COMPLETED, SimCall

__all__ = ["GenesysCall", "add_genesys_options", "sign_upgrade", "DEV_API_KEY", "DEV_CLIENT_SECRET"]

# The development credentials of etc/mediaproxy.ini (public, never for a real deployment).
DEV_API_KEY = "mediaproxy-dev-api-key"
DEV_CLIENT_SECRET = "bWVkaWFwcm94eS1kZXYtY2xpZW50LXNlY3JldA=="
DEV_ORGANIZATION = "6f1c2a9e-3b7d-4c21-9a55-0d2e8b4f7a10"

SERVER_TYPES = frozenset({"opened", "pong", "closed", "pause", "resume", "event", "disconnect", "reconnect",
                          "updated"})
_ENVELOPE = frozenset({"version", "id", "type", "seq", "clientseq", "parameters"})
_ANSWERS = {"ping": "pong", "close": "closed", "open": "opened"}
_COMPONENTS = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
               "audiohook-correlation-id", "x-api-key")
_FIRST_PING_S, _PING_S = 1.0, 5.0
_CLOSED_WAIT_S = 5.0
_MAX_AHEAD_MS = 1000.0  # audio further ahead than this is "faster than real time" (Genesys: 429)


def duration(us: int) -> str:
    """Microseconds as an AudioHook duration, ``PT<s>[.mmm]S``."""
    ms = max(0, (us + 500) // 1000)
    seconds, frac = divmod(ms, 1000)
    return f"PT{seconds}.{frac:03d}".rstrip("0").rstrip(".") + "S"


def sign_upgrade(headers: dict[str, str], target: str, authority: str, secret_b64: str, created: int) -> dict[str, str]:
    """``headers`` plus ``Signature-Input`` and ``Signature`` as Genesys signs an upgrade."""
    nonce = base64.b64encode(os.urandom(18)).decode()
    params = ("(" + " ".join(f'"{c}"' for c in _COMPONENTS) + ")"
              + f';keyid="{headers["X-API-KEY"]}";nonce="{nonce}";alg="hmac-sha256"'
              + f";created={created};expires={created + 30}")
    values = {"@request-target": target, "@authority": authority.lower(),
              **{k.lower(): v.strip() for k, v in headers.items()}}
    base = "\n".join([f'"{c}": {values[c]}' for c in _COMPONENTS] + [f'"@signature-params": {params}'])
    key = base64.b64decode(secret_b64 + "=" * (-len(secret_b64) % 4))
    digest = hmac.new(key, base.encode(), hashlib.sha256).digest()
    return {**headers, "Signature-Input": f"sig1={params}", "Signature": f"sig1=:{base64.b64encode(digest).decode()}:"}


class GenesysCall(SimCall):
    """One AudioHook session; a mode sets :attr:`media` (its offer) and what to do with audio."""

    channels = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_id = str(uuid.uuid4())
        self.conversation_id = str(uuid.uuid4())
        self.record.call_id = self.conversation_id
        self._seq = 0
        self._serverseq = 0
        self._last_clientseq = 0
        self._awaiting: dict[str, list[int]] = {"pong": [], "closed": [], "opened": []}
        self._samples = 0
        self._skipped_us = 0
        self._ping_call: IDelayedCall | None = None
        self._closed_call: IDelayedCall | None = None
        self._ping_sent_at = 0.0
        self._rtt_s: float | None = None
        self._pongs = 0
        self._opened = False
        self._paused_by_server = False
        self._client_paused = False
        self._closing = False
        self.rtts: list[float] = []

    # --- what a mode gives ------------------------------------------------------------------------

    def media_offer(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def interleave(self, caller: bytes) -> bytes:
        """The binary frame for ``caller`` audio (mono: itself)."""
        return caller

    def on_event(self, entities: list[Any]) -> None:
        """An ``event`` message's entities."""

    # --- the upgrade and the session ---------------------------------------------------------------

    def upgrade_headers(self) -> dict[str, str]:
        o = self.options
        headers = {"Audiohook-Organization-Id": o.organization_id, "Audiohook-Session-Id": self.session_id,
                   "Audiohook-Correlation-Id": str(uuid.uuid4()), "X-API-KEY": o.api_key or "",
                   "User-Agent": "GenesysCloud-AudioHook-Client (mediaproxy-sim)"}
        if not o.client_secret:
            return headers
        url = urlparse(self.url_text)
        target = url.path + (f"?{url.query}" if url.query else "")
        port = url.port or (443 if url.scheme == "wss" else 80)
        # Autobahn sends Host as host:port, always.
        return sign_upgrade(headers, target or "/", f"{url.hostname}:{port}", o.client_secret, int(time.time()))

    def on_open(self) -> None:
        self._send("open", {
            "organizationId": self.options.organization_id, "conversationId": self.conversation_id,
            "participant": {"id": str(uuid.uuid4()), "ani": "+15550100", "aniName": "mediaproxy-sim",
                            "dnis": "+15550199"},
            "media": self.media_offer(), "language": "en-US",
        })

    def _send(self, mtype: str, parameters: dict[str, Any] | None = None) -> int:
        self._seq += 1
        if mtype in _ANSWERS:
            self._awaiting[_ANSWERS[mtype]].append(self._seq)
        self.send_json({"version": "2", "id": self.session_id, "type": mtype, "seq": self._seq,
                        "serverseq": self._serverseq, "position": self.position,
                        "parameters": {} if parameters is None else parameters})
        return self._seq

    @property
    def position(self) -> str:
        return duration(self._samples * 1_000_000 // self.audio_format.rate_hz + self._skipped_us)

    # --- audio ------------------------------------------------------------------------------------

    def send_chunk(self, first: int, frames: Sequence[bytes]) -> None:
        caller = b"".join(frames)
        self.send_binary(self.interleave(caller))
        self._samples += len(caller) // self.audio_format.sample_bytes

    def withhold(self, first: int) -> bool:
        o = self.options
        chunk_us = len(self.frames[first:first + self.chunk_frames]) * 20_000
        if self._paused_by_server:
            self._skipped_us += chunk_us
            return True
        if o.pause_at_ms is None:
            return False
        at = self.script_position_ms
        pausing: bool = o.pause_at_ms <= at < o.pause_at_ms + o.pause_ms
        if pausing and not self._client_paused:
            self._client_paused = True
            self._send("paused")
        elif not pausing and self._client_paused:
            self._client_paused = False
            self._send("resumed", {"start": self.position, "discarded": duration(o.pause_ms * 1000)})
        if pausing:
            self._skipped_us += chunk_us
        return pausing

    def bot_frame(self, payload: bytes) -> None:
        """Bot audio (Audio Connector): played; too far ahead of real time is what Genesys
        answers with 429."""
        self.bot_audio(payload)
        if self.playout.queued_ms > _MAX_AHEAD_MS + self.options.lead_ms:
            self.protocol_error(f"audio {self.playout.queued_ms:.0f} ms ahead of real time (Genesys: 429)")

    # --- receiving --------------------------------------------------------------------------------

    def on_text(self, message: dict[str, Any]) -> None:
        mtype = message.get("type")
        self.record.received[str(mtype)] += 1
        self._check(message)
        if not isinstance(mtype, str):
            return
        parameters = message.get("parameters") if isinstance(message.get("parameters"), dict) else {}
        assert isinstance(parameters, dict)
        if mtype == "opened":
            self._on_opened(parameters)
        elif mtype == "pong":
            self._pongs += 1
            self._rtt_s = self.clock.seconds() - self._ping_sent_at
            self.rtts.append(self._rtt_s)
            if self._pongs == 1:
                self._schedule_ping(0.0)
        elif mtype == "closed":
            self._cancel_genesys_timers()
            self.hang_up()
        elif mtype == "disconnect":
            self.record.close_reason = f"disconnect {parameters.get('reason')} {str(parameters.get('info', ''))[:60]}"
            self._close(str(parameters.get("reason", "disconnect")))
        elif mtype == "event":
            entities = parameters.get("entities")
            if isinstance(entities, list):
                self.on_event(entities)
            else:
                self.protocol_error("event without entities")
        elif mtype == "pause":
            self._paused_by_server = True
            self._send("paused")
        elif mtype == "resume":
            self._paused_by_server = False
            self._send("resumed", {"start": self.position, "discarded": "PT0S"})

    def _check(self, message: dict[str, Any]) -> None:
        def problem(text: str) -> None:
            self.protocol_error(f"{text}: {str(message)[:120]}")

        mtype = message.get("type")
        if message.get("version") != "2":
            problem('version is not "2"')
        if str(message.get("id", "")).lower() != self.session_id:
            problem("id is not the session id")
        if mtype not in SERVER_TYPES:
            problem("not a server message type")
        seq, clientseq = message.get("seq"), message.get("clientseq")
        if seq != self._serverseq + 1:
            problem(f"seq is not {self._serverseq + 1}")
        if not isinstance(clientseq, int) or not self._last_clientseq <= clientseq <= self._seq:
            problem(f"clientseq outside [{self._last_clientseq}, {self._seq}]")
        if not isinstance(message.get("parameters"), dict):
            problem("parameters missing")
        if set(message) != _ENVELOPE:
            problem("unexpected or missing envelope fields")
        waiting = self._awaiting.get(mtype) if isinstance(mtype, str) else None
        if waiting is not None:
            if not waiting:
                problem("a reply nobody asked for")
            elif clientseq != waiting.pop(0):
                problem("clientseq is not the seq of the message it answers")
        if isinstance(seq, int):
            self._serverseq = seq
        if isinstance(clientseq, int):
            self._last_clientseq = clientseq

    def _on_opened(self, parameters: dict[str, Any]) -> None:
        media = parameters.get("media")
        offer = self.media_offer()
        if not isinstance(media, list) or len(media) != 1 or media[0] not in offer:
            self.protocol_error(f"opened chose no offered media: {str(media)[:120]}")
        self._opened = True
        self._schedule_ping(_FIRST_PING_S)
        self.begin_script()

    # --- pings, the end -----------------------------------------------------------------------------

    def _schedule_ping(self, delay: float) -> None:
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = self.clock.callLater(delay, self._ping)

    def _ping(self) -> None:
        self._ping_call = None
        if self._closing or self.live is None:
            return
        if self._awaiting["pong"]:
            self.protocol_error("no pong before the next ping (Genesys: 408)")
        self._ping_sent_at = self.clock.seconds()
        self._send("ping", {} if self._rtt_s is None else {"rtt": duration(round(self._rtt_s * 1e6))})
        self._ping_call = self.clock.callLater(_PING_S, self._ping)

    def end_call(self) -> None:
        self._close("end")

    def _close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._send("close", {"reason": reason})
        if not self.record.close_reason:
            self.record.close_reason = COMPLETED

        def no_closed() -> None:
            self.protocol_error(f"no closed within {_CLOSED_WAIT_S:g} s of close")
            self.hang_up()

        self._closed_call = self.clock.callLater(_CLOSED_WAIT_S, no_closed)

    def _cancel_genesys_timers(self) -> None:
        for call in (self._ping_call, self._closed_call):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._closed_call = None

    def connection_closed(self, connection: Any, code: int | None, reason: str | None) -> None:
        self._cancel_genesys_timers()
        if connection is self.live and not self._closing and self._opened:
            self.protocol_error(f"socket closed before closed ({code})")
        super().connection_closed(connection, code, reason)


def add_genesys_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", default=DEV_API_KEY,
                        help=f"X-API-KEY (default: the development key of etc/mediaproxy.ini, {DEV_API_KEY})")
    parser.add_argument("--client-secret", default=DEV_CLIENT_SECRET,
                        help="base64 client secret: sign the upgrade (default: etc/mediaproxy.ini's development "
                             "secret; '' sends no signature)")
    parser.add_argument("--organization-id", default=DEV_ORGANIZATION, help="Audiohook-Organization-Id (a UUID)")
    parser.add_argument("--pause-at-ms", type=int, default=None,
                        help="send paused this far into the script, then resumed --pause-ms later (default: never)")
    parser.add_argument("--pause-ms", type=int, default=2000,
                        help="how long a --pause-at-ms pause lasts (default 2000)")
