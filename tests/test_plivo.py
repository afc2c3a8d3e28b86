"""Tests for the Plivo Audio Streams session (mediaproxy.platforms.plivo): the shared session
contract in µ-law and L16, extra_headers, and the X-Plivo-Signature-V3 check on the upgrade."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import L16_8K, L16_16K, MULAW_8K
from mediaproxy.options import OptionError
from mediaproxy.platforms import plivo
from mediaproxy.platforms.base import CallerAudio, CallStarted, UpgradeRefused, UpgradeRequest
from mediaproxy.platforms.plivo import PlivoOptions, PlivoSession
from tests.cousins import CALL_ID, PARAMS, PLIVO, STREAM_ID, Dialect, SessionContract, frame, text


class PlivoSessionTests(SessionContract, SynchronousTestCase):
    dialect = PLIVO

    def make(self) -> PlivoSession:  # type: ignore[override]
        return plivo.new_session(PlivoOptions())


class PlivoL16Tests(PlivoSessionTests):
    dialect = Dialect("plivo", L16_16K, "playAudio", "clearAudio")


class PlivoSpecificTests(SynchronousTestCase):
    def test_call_started_with_extra_headers(self) -> None:
        [event] = plivo.new_session(PlivoOptions()).receive_text(text(PLIVO.start()))
        self.assertEqual(event, CallStarted(CALL_ID, MULAW_8K, PARAMS))

    def test_extra_headers(self) -> None:
        self.assertEqual(plivo.extra_headers("a=1,b=2;c="), {"a": "1", "b": "2", "c": ""})
        self.assertEqual(plivo.extra_headers("junk"), {})
        self.assertEqual(plivo.extra_headers(None), {})
        self.assertEqual(plivo.extra_headers("a=1;" * 500), {})

    def test_outbound_shapes(self) -> None:
        s = plivo.new_session(PlivoOptions())
        s.receive_text(text(PLIVO.start(mediaFormat={"encoding": "audio/x-l16", "sampleRate": 8000})))
        self.assertEqual(s.audio_format, L16_8K)
        s.play(b"\x00\x01" * 160)
        s.mark("1:20")
        s.clear()
        self.assertEqual([json.loads(m) for m in s.take_output()], [
            {"event": "playAudio", "media": {"contentType": "audio/x-l16", "sampleRate": 8000,
                                             "payload": base64.b64encode(b"\x00\x01" * 160).decode()}},
            {"event": "checkpoint", "streamId": STREAM_ID, "name": "1:20"},
            {"event": "clearAudio", "streamId": STREAM_ID},
        ])

    def test_only_the_inbound_track_is_the_callers(self) -> None:
        s = plivo.new_session(PlivoOptions())
        s.receive_text(text(PLIVO.start()))
        message = PLIVO.media(frame(MULAW_8K, 1))
        for track in ("outbound", ["inbound"]):
            message["media"]["track"] = track
            self.assertEqual(s.receive_text(text(message)), [])
        message["media"]["track"] = "inbound"
        self.assertEqual(s.receive_text(text(message)), [CallerAudio(frame(MULAW_8K, 1))])

    def test_cleared_audio_acknowledgement_is_quiet(self) -> None:
        s = plivo.new_session(PlivoOptions())
        s.receive_text(text(PLIVO.start()))
        self.assertEqual(s.receive_text(text({"event": "clearedAudio", "streamId": STREAM_ID})), [])

    def test_stop_still_ends(self) -> None:
        s = plivo.new_session(PlivoOptions())
        s.receive_text(text(PLIVO.start()))
        self.assertEqual(type(s.receive_text(text({"event": "stop"}))[0]).__name__, "CallEnded")


def reference_signature(token: str, base: str, query: dict[str, list[str]], nonce: str) -> str:
    """Plivo's V3 scheme for a GET, written out independently: sorted k=v pairs after ``?``."""
    pairs = "&".join(f"{k}={v}" for k in sorted(query) for v in sorted(query[k]))
    data = (f"{base}?{pairs}" if pairs else base) + "." + nonce
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha256).digest()).decode()


class PlivoUpgradeTests(SynchronousTestCase):
    token = "MzAxNGQ0ZGQ5YTFmNGI3ZTY"
    public = "wss://proxy.example.com"

    def request(self, target: str = "/plivo", **headers: str) -> UpgradeRequest:
        return UpgradeRequest(target, "proxy.example.com", headers, self.public)

    def signed(self, target: str, signature: str, nonce: str = "05429567804466091622") -> UpgradeRequest:
        return self.request(target, **{"x-plivo-signature-v3": signature, "x-plivo-signature-v3-nonce": nonce})

    def test_valid_signature(self) -> None:
        options = PlivoOptions(auth_token=self.token)
        good = reference_signature(self.token, self.public + "/plivo", {}, "05429567804466091622")
        plivo.check_upgrade(self.signed("/plivo", good), options, 0.0)
        # one of several comma-separated signatures (key rotation) is enough
        plivo.check_upgrade(self.signed("/plivo", "AAAA," + good), options, 0.0)

    def test_query_is_sorted(self) -> None:
        options = PlivoOptions(auth_token=self.token)
        good = reference_signature(self.token, self.public + "/plivo", {"b": ["2"], "a": ["1", "0"]}, "n1")
        plivo.check_upgrade(self.signed("/plivo?b=2&a=1&a=0", good, "n1"), options, 0.0)

    def test_refusals(self) -> None:
        options = PlivoOptions(auth_token=self.token)
        good = reference_signature(self.token, self.public + "/plivo", {}, "n1")
        for request in (self.request(), self.signed("/plivo", good, ""), self.signed("/plivo", good, "n2"),
                        self.signed("/other", good, "n1"), self.signed("/plivo", "AAAA", "n1")):
            with self.assertRaises(UpgradeRefused) as caught:
                plivo.check_upgrade(request, options, 0.0)
            self.assertEqual(caught.exception.code, 403)

    def test_no_token_allows_anything(self) -> None:
        plivo.check_upgrade(self.request(), PlivoOptions(), 0.0)

    def test_public_url_required(self) -> None:
        with self.assertRaises(OptionError):
            plivo.validate(PlivoOptions(auth_token="t"), "")
        plivo.validate(PlivoOptions(auth_token="t"), self.public)
