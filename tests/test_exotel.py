"""Tests for the Exotel Voicebot session (mediaproxy.platforms.exotel): the shared session contract
at 8 and 16 kHz, its chunk rules (200 ms packets, the tail padded to the minimum) and Basic auth
on the upgrade."""

from __future__ import annotations

import base64
import json

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.audio.format import L16_8K, L16_16K
from mediaproxy.options import OptionError
from mediaproxy.platforms import exotel
from mediaproxy.platforms.base import CallStarted, UpgradeRefused, UpgradeRequest
from mediaproxy.platforms.exotel import ExotelOptions, ExotelSession
from tests.cousins import CALL_ID, EXOTEL, PARAMS, STREAM_ID, Dialect, SessionContract, text


class ExotelSessionTests(SessionContract, SynchronousTestCase):
    dialect = EXOTEL

    def make(self) -> ExotelSession:  # type: ignore[override]
        return exotel.new_session(ExotelOptions())


class Exotel16kTests(ExotelSessionTests):
    dialect = Dialect("exotel", L16_16K, "media", "clear")


class ExotelSpecificTests(SynchronousTestCase):
    def started(self) -> ExotelSession:
        s = exotel.new_session(ExotelOptions())
        s.receive_text(text(EXOTEL.start()))
        return s

    def test_call_started(self) -> None:
        [event] = exotel.new_session(ExotelOptions()).receive_text(text(EXOTEL.start()))
        self.assertEqual(event, CallStarted(CALL_ID, L16_8K, PARAMS))

    def test_numeric_rate_and_defaults(self) -> None:
        s = exotel.new_session(ExotelOptions())
        [event] = s.receive_text(text(EXOTEL.start(media_format={"encoding": "audio/x-raw", "sample_rate": 16000})))
        self.assertEqual(event, CallStarted(CALL_ID, L16_16K, PARAMS))

    def test_chunk_rules(self) -> None:
        s = self.started()
        self.assertEqual(s.capabilities.packet_ms, 200)
        s.play(b"\x01\x02" * 1600)  # 200 ms: as is
        s.play(b"\x01\x02" * 160)  # the 20 ms tail of a response: padded to the 3200-byte minimum
        sizes = [len(base64.b64decode(json.loads(m)["media"]["payload"])) for m in s.take_output()]
        self.assertEqual(sizes, [3200, 3200])
        self.assertTrue(all(size % 320 == 0 for size in sizes))

    def test_outbound_shapes(self) -> None:
        s = self.started()
        s.mark("1:200")
        s.clear()
        self.assertEqual([json.loads(m) for m in s.take_output()], [
            {"event": "mark", "stream_sid": STREAM_ID, "mark": {"name": "1:200"}},
            {"event": "clear", "stream_sid": STREAM_ID},
        ])

    def test_wrong_bit_rate(self) -> None:
        s = exotel.new_session(ExotelOptions())
        [event] = s.receive_text(text(EXOTEL.start(media_format={"encoding": "audio/x-raw", "sample_rate": "8000",
                                                                 "bit_rate": "8"})))
        self.assertEqual(event.kind, "unsupported_format")  # type: ignore[union-attr]


class ExotelUpgradeTests(SynchronousTestCase):
    options = ExotelOptions(api_key="KEY", api_token="TOKEN")

    def request(self, **headers: str) -> UpgradeRequest:
        return UpgradeRequest("/exotel", "proxy.example.com", headers)

    def test_basic_auth(self) -> None:
        exotel.check_upgrade(self.request(authorization="Basic " + base64.b64encode(b"KEY:TOKEN").decode()),
                             self.options, 0.0)
        for headers in ({}, {"authorization": "Basic " + base64.b64encode(b"KEY:nope").decode()},
                        {"authorization": "Bearer TOKEN"}):
            with self.assertRaises(UpgradeRefused) as caught:
                exotel.check_upgrade(self.request(**headers), self.options, 0.0)
            self.assertEqual(caught.exception.code, 401)

    def test_no_credentials_allow_anything(self) -> None:
        exotel.check_upgrade(self.request(), ExotelOptions(), 0.0)

    def test_both_halves_required(self) -> None:
        with self.assertRaises(OptionError):
            exotel.validate(ExotelOptions(api_key="KEY"), "")
        with self.assertRaises(OptionError):
            exotel.validate(ExotelOptions(api_token="T"), "")
