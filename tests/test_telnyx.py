"""Tests for the Telnyx Media Streaming session (mediaproxy.platforms.telnyx): the shared session
contract, its formats (PCMU, PCMA, L16 and its byte order), error frames and the streaming auth
token on the upgrade."""

from __future__ import annotations

import base64
import json
import sys
from array import array

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import ALAW_8K, L16_16K, MULAW_8K
from mediaproxy.platforms import telnyx
from mediaproxy.platforms.base import CallerAudio, CallStarted, PlatformError, UpgradeRefused, UpgradeRequest
from mediaproxy.platforms.telnyx import TelnyxOptions, TelnyxSession
from tests.cousins import CALL_ID, PARAMS, TELNYX, Dialect, SessionContract, frame, text


class TelnyxSessionTests(SessionContract, SynchronousTestCase):
    dialect = TELNYX

    def make(self) -> TelnyxSession:  # type: ignore[override]
        return telnyx.new_session(TelnyxOptions())


class TelnyxAlawTests(TelnyxSessionTests):
    dialect = Dialect("telnyx", ALAW_8K, "media", "clear")


class TelnyxL16Tests(TelnyxSessionTests):
    dialect = Dialect("telnyx", L16_16K, "media", "clear")

    def test_big_endian_payloads_are_swapped_both_ways(self) -> None:
        other = "big" if sys.byteorder == "little" else "little"
        s = telnyx.new_session(TelnyxOptions(l16_byte_order=other))
        s.receive_text(text(self.dialect.start()))
        wire = array("h", [1, -2, 300]).tobytes()
        swapped = array("h", [1, -2, 300])
        swapped.byteswap()
        self.assertEqual(s.receive_text(text(self.dialect.media(swapped.tobytes()))), [CallerAudio(wire)])
        s.play(wire)
        [out] = s.take_output()
        self.assertEqual(self.dialect.payload_of(json.loads(out)), swapped.tobytes())


class TelnyxSpecificTests(SynchronousTestCase):
    def test_formats(self) -> None:
        self.assertEqual(telnyx.media_format({"encoding": "PCMU", "sample_rate": 8000, "channels": 1}), MULAW_8K)
        self.assertEqual(telnyx.media_format({"encoding": "PCMA", "sample_rate": 8000}), ALAW_8K)
        self.assertEqual(telnyx.media_format({"encoding": "L16", "sample_rate": 16000}), L16_16K)
        for bad in ({"encoding": "L16", "sample_rate": 22050}, {"encoding": "G722", "sample_rate": 8000},
                    {"encoding": "PCMU", "sample_rate": 8000, "channels": 2}, "PCMU", None,
                    {"encoding": "PCMU", "sample_rate": True}):
            self.assertIsNone(telnyx.media_format(bad))

    def test_call_started(self) -> None:
        [event] = telnyx.new_session(TelnyxOptions()).receive_text(text(TELNYX.start()))
        self.assertEqual(event, CallStarted(CALL_ID, MULAW_8K, PARAMS))

    def test_outbound_track_ignored(self) -> None:
        s = telnyx.new_session(TelnyxOptions())
        s.receive_text(text(TELNYX.start()))
        message = TELNYX.media(frame(MULAW_8K, 1))
        message["media"]["track"] = "outbound"
        self.assertEqual(s.receive_text(text(message)), [])
        message["media"]["track"] = ["inbound"]  # not a track name: not the caller's, and no error
        self.assertEqual(s.receive_text(text(message)), [])
        message["media"]["track"] = "inbound_track"
        self.assertEqual(s.receive_text(text(message)), [CallerAudio(frame(MULAW_8K, 1))])

    def test_error_frame_is_a_platform_error(self) -> None:
        s = telnyx.new_session(TelnyxOptions())
        s.receive_text(text(TELNYX.start()))
        [event] = s.receive_text(text({"event": "error", "payload": {"code": 100002, "title": "Unknown error",
                                                                      "detail": "x" * 5000}}))
        assert isinstance(event, PlatformError)
        self.assertEqual(event.code, "stream_error")
        self.assertLess(len(event.message), 400)
        self.assertEqual(s.receive_text(text({"event": "error", "payload": "x"}))[0].kind, "wrong_type")  # type: ignore[union-attr]

    def test_outbound_shapes(self) -> None:
        s = telnyx.new_session(TelnyxOptions())
        s.receive_text(text(TELNYX.start()))
        s.play(b"\xff" * 160)
        s.mark("1:20")
        s.clear()
        self.assertEqual(s.take_output(), [
            '{"event":"media","media":{"payload":"' + base64.b64encode(b"\xff" * 160).decode() + '"}}',
            '{"event":"mark","mark":{"name":"1:20"}}',
            '{"event":"clear"}',
        ])


class TelnyxUpgradeTests(SynchronousTestCase):
    def request(self, **headers: str) -> UpgradeRequest:
        return UpgradeRequest("/telnyx", "proxy.example.com", headers, "wss://proxy.example.com")

    def test_token(self) -> None:
        options = TelnyxOptions(stream_auth_token="s3cret")
        telnyx.check_upgrade(self.request(**{"x-telnyx-streaming-auth-token": "s3cret"}), options, 0.0)
        for headers in ({}, {"x-telnyx-streaming-auth-token": "wrong"}, {"authorization": "s3cret"}):
            with self.assertRaises(UpgradeRefused) as caught:
                telnyx.check_upgrade(self.request(**headers), options, 0.0)
            self.assertEqual(caught.exception.code, 401)

    def test_no_token_allows_anything(self) -> None:
        telnyx.check_upgrade(self.request(), TelnyxOptions(), 0.0)

    def test_credential_keys(self) -> None:
        self.assertEqual(telnyx.TELNYX.credential_keys, ("stream_auth_token",))
