"""The ElevenLabs session glue on a ``task.Clock`` with an injected connection (no network): the
per-call transcoding the conversation's formats decide, held audio, the end of a response, the
agent ending the conversation, reconnects into a new conversation, the signed-URL exchange and its
refusals; and the backend type's configuration surface."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from mediaproxy.audio.format import L16_16K, MULAW_8K, AudioFormat
from mediaproxy.backends.base import CallInfo
from mediaproxy.backends.elevenlabs import (
    ELEVENLABS,
    ElevenLabsBackend,
    ElevenLabsOptions,
    SignedUrls,
    format_preference,
    session_format_for,
    validate,
)
from mediaproxy.backends.elevenlabs_session import HANGUP_WAIT_MAX_S, RESPONSE_QUIET_S, ElevenLabsSession
from mediaproxy.config import ConfigError, parse_config
from mediaproxy.http_requests import HttpRequest, HttpResponse
from mediaproxy.metrics import Metrics
from mediaproxy.options import OptionError
from mediaproxy.testing.recording_listener import RecordingListener


class FakeProto:
    """Stands in for an open conversation WebSocket."""

    session: Any = None
    dialect: Any = None
    ready: Any = None

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: Any = None

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append(json.loads(payload))

    def sendClose(self, code: int | None = None) -> None:
        self.closed = code

    def dropConnection(self, abort: bool = False) -> None:
        self.closed = "abort"

    def receive(self, kind: str, body: dict[str, Any] | None = None, **extra: Any) -> None:
        message: dict[str, Any] = {"type": kind, **extra}
        if body is not None:
            message[f"{kind}_event"] = body
        assert self.session is not None
        self.session.message_received(self, json.dumps(message).encode())

    def start(self, up: str = "ulaw_8000", down: str = "ulaw_8000") -> None:
        self.receive("conversation_initiation_metadata", {
            "conversation_id": "conv", "user_input_audio_format": up, "agent_output_audio_format": down})

    def audio(self, event_id: int, data: bytes) -> None:
        self.receive("audio", {"audio_base_64": base64.b64encode(data).decode(), "event_id": event_id})

    def chunks(self) -> bytes:
        return b"".join(base64.b64decode(m["user_audio_chunk"]) for m in self.sent if "user_audio_chunk" in m)

    def close_from_server(self, code: int) -> None:
        assert self.session is not None
        self.session.connection_closed(self, code, None)


def options(**kw: Any) -> ElevenLabsOptions:
    base: dict[str, Any] = {"agent_id": "agent_1", "reconnect_backoff_ms": 100, "reconnect_max_backoff_ms": 100}
    return ElevenLabsOptions(**{**base, **kw})


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.listener = RecordingListener()
        self.protos: list[FakeProto] = []
        self.urls: list[str] = []
        self.signed: list[Deferred[str]] = []

    def connect(self, url: str) -> Deferred[Any]:
        self.urls.append(url)
        proto = FakeProto()
        self.protos.append(proto)
        return succeed(proto)

    def session(self, fmt: AudioFormat = MULAW_8K, signed: bool = False, call: CallInfo | None = None,
                **kw: Any) -> ElevenLabsSession:
        def signed_url() -> Deferred[str]:
            d: Deferred[str] = Deferred()
            self.signed.append(d)
            return d

        session = ElevenLabsSession("el", options(**kw), call or CallInfo("c1", "twilio"), self.listener, fmt,
                                    self.clock, self.metrics, signed_url=signed_url if signed else None,
                                    random=lambda: 0.5, connect=self.connect)
        self.addCleanup(session.close)
        session.start()
        return session

    def errors(self, code: str) -> float:
        labels = {"backend": "el", "code": code}
        value = self.metrics.registry.get_sample_value("mediaproxy_backend_errors_total", labels)
        return value or 0.0

    def test_a_public_agent_is_dialled_by_id_and_held_audio_is_transcoded_once_formats_are_known(self) -> None:
        call = CallInfo("c1", "twilio", {"customer": "Ada", "x": "y"})
        session = self.session(call=call, call_context_keys=("customer",))
        [proto] = self.protos
        self.assertEqual(self.urls, ["wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_1"])
        self.assertEqual(proto.sent, [{"type": "conversation_initiation_client_data",
                                       "dynamic_variables": {"customer": "Ada"}}])
        session.send_audio(b"\xff" * 160)  # 20 ms of µ-law silence, held
        self.assertEqual(self.listener.kinds(), [])
        proto.start(up="pcm_16000", down="pcm_16000")
        self.assertEqual(self.listener.kinds(), ["ready"])
        # The held 20 ms went up as 16 kHz PCM (the resampler keeps its delay line's worth back).
        held = len(proto.chunks())
        self.assertGreater(held, 640 - 64)
        self.assertLessEqual(held, 640)
        session.send_audio(b"\xff" * 160)
        self.assertEqual(len(proto.chunks()) % 2, 0)
        self.assertLessEqual(len(proto.chunks()), 1280)
        self.assertGreater(len(proto.chunks()), 1280 - 64)
        # 20 ms of 16 kHz PCM down become µ-law 8 kHz for the bridge.
        proto.audio(1, b"\x00\x00" * 320)
        self.assertLessEqual(len(self.listener.audio["c1e1"]), 160)
        self.assertGreater(len(self.listener.audio["c1e1"]), 160 - 32)

    def test_mulaw_agents_pass_through_untouched(self) -> None:
        session = self.session()
        proto = self.protos[0]
        proto.start()
        session.send_audio(b"\x01\x02\x03")
        self.assertEqual(proto.chunks(), b"\x01\x02\x03")
        proto.audio(4, b"\x10\x20")
        self.assertEqual(bytes(self.listener.audio["c1e4"]), b"\x10\x20")

    def test_a_response_is_finished_once_its_audio_goes_quiet(self) -> None:
        self.session()
        proto = self.protos[0]
        proto.start()
        proto.audio(2, b"a" * 160)
        self.clock.advance(RESPONSE_QUIET_S / 2)
        proto.audio(2, b"b" * 160)
        self.clock.advance(RESPONSE_QUIET_S / 2 + 0.01)
        self.assertFalse(self.listener.has("done"))
        self.clock.advance(RESPONSE_QUIET_S / 2)
        self.assertTrue(self.listener.has("done", "c1e2"))
        self.assertEqual(self.clock.getDelayedCalls(), [])  # one timer at most, none left

    def test_the_agent_ending_the_conversation_hangs_up_after_its_last_words(self) -> None:
        self.session()
        proto = self.protos[0]
        proto.start()
        proto.audio(2, b"a" * 8000)  # 1 s of µ-law, arrived at t=0
        self.clock.advance(0.3)
        proto.close_from_server(1000)
        self.assertTrue(self.listener.has("done", "c1e2"))
        self.clock.advance(0.85)
        self.assertFalse(self.listener.has("hangup"))
        self.clock.advance(0.1)
        self.assertTrue(self.listener.has("hangup", "the agent ended the conversation"))
        self.assertEqual(len(self.protos), 1)  # no new conversation

    def test_the_hangup_wait_is_bounded(self) -> None:
        self.session()
        proto = self.protos[0]
        proto.start()
        proto.audio(2, b"a" * 8000 * 120)
        proto.close_from_server(1000)
        self.clock.advance(HANGUP_WAIT_MAX_S)
        self.assertTrue(self.listener.has("hangup"))

    def test_a_drop_starts_a_new_conversation_and_tells_it_the_recent_exchange(self) -> None:
        session = self.session()
        first = self.protos[0]
        first.start()
        first.receive("user_transcript", user_transcription_event={"user_transcript": "I need help"})
        first.receive("client_tool_call", client_tool_call={"tool_name": "lookup", "tool_call_id": "t1"})
        first.close_from_server(1006)
        session.tool_result("t1", '{"order": "shipped"}')  # its conversation is gone
        self.assertEqual(len(self.protos), 1)
        self.clock.advance(0.1)
        second = self.protos[1]
        self.assertEqual(second.sent, [{"type": "conversation_initiation_client_data"}])
        second.start()
        self.assertEqual(self.listener.kinds().count("ready"), 1)
        [update] = [m for m in second.sent if m.get("type") == "contextual_update"]
        self.assertIn("caller: I need help", update["text"])
        self.assertIn('{"order": "shipped"}', update["text"])
        self.assertFalse(any(m.get("type") == "client_tool_result" for m in first.sent + second.sent))
        value = self.metrics.registry.get_sample_value("mediaproxy_backend_reconnects_total", {"backend": "el"})
        self.assertEqual(value, 1)

    def test_no_greeting_on_a_new_conversation_when_configured(self) -> None:
        self.session(greet_on_reconnect=False, greeting="Hi!")
        self.assertEqual(self.protos[0].sent[0]["conversation_config_override"], {"agent": {"first_message": "Hi!"}})
        self.protos[0].start()
        self.protos[0].close_from_server(1011)
        self.clock.advance(0.1)
        self.assertEqual(self.protos[1].sent[0]["conversation_config_override"], {"agent": {"first_message": ""}})

    def test_a_policy_close_before_the_conversation_started_is_final(self) -> None:
        self.session(greeting="Hi!")
        self.protos[0].close_from_server(1008)
        self.clock.advance(10)
        self.assertEqual(len(self.protos), 1)
        [(kind, reason)] = self.listener.events
        self.assertEqual(kind, "failed")
        self.assertIn("conversation refused: closed with code 1008", reason)

    def test_an_agent_format_that_cannot_be_exchanged_ends_the_call(self) -> None:
        self.session()
        self.protos[0].start(down="pcm_44100")
        [(kind, reason)] = self.listener.events
        self.assertEqual(kind, "failed")
        self.assertIn("'pcm_44100' cannot be exchanged", reason)
        self.assertEqual(self.errors("unsupported_audio_format"), 1)
        self.assertEqual(self.protos[0].closed, "abort")

    def test_interruption_is_barge_in_and_pings_are_answered(self) -> None:
        session = self.session()
        proto = self.protos[0]
        proto.start()
        proto.audio(3, b"a" * 800)
        self.listener.on_speech_started = lambda: session.interrupt("c1e3", 40)
        proto.receive("interruption", {"event_id": 3})
        proto.audio(3, b"stale")
        proto.audio(4, b"new")
        proto.receive("ping", {"event_id": 9, "ping_ms": 30})
        self.assertEqual(self.listener.kinds(), ["ready", "audio", "speech_started", "audio"])
        self.assertEqual(bytes(self.listener.audio["c1e4"]), b"new")
        self.assertEqual(proto.sent[-1], {"type": "pong", "event_id": 9})

    def test_signed_url_per_conversation_and_its_failures(self) -> None:
        self.session(signed=True)
        self.assertEqual(self.protos, [])
        self.signed[0].errback(ConnectionError("HTTP 503"))  # retrying may help
        self.clock.advance(0.1)
        self.signed[1].callback("wss://example.test/conv?conversation_signature=s")
        self.assertEqual(self.urls, ["wss://example.test/conv?conversation_signature=s"])
        self.protos[0].start()
        self.protos[0].close_from_server(1006)
        self.clock.advance(0.1)
        self.assertEqual(len(self.signed), 3)  # a new conversation needs a new signed URL

    def test_a_signed_url_that_never_comes_times_out_and_redials(self) -> None:
        self.session(signed=True, connect_timeout_seconds=2)
        self.clock.advance(2)
        self.assertEqual(len(self.signed), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.signed), 2)

    def test_a_conversation_that_never_starts_times_out_and_redials(self) -> None:
        self.session(connect_timeout_seconds=2)
        self.clock.advance(2)
        self.assertEqual(self.protos[0].closed, "abort")
        self.clock.advance(0.1)
        self.assertEqual(len(self.protos), 2)
        self.protos[1].start()
        self.assertEqual(self.listener.kinds(), ["ready"])

    def test_a_refused_key_is_final(self) -> None:
        from mediaproxy.backends.elevenlabs_session import SignedUrlRefused

        self.session(signed=True)
        self.signed[0].errback(SignedUrlRefused("the API refused the key for a signed URL (HTTP 401)"))
        self.clock.advance(10)
        self.assertEqual(self.listener.events, [("failed", "the API refused the key for a signed URL (HTTP 401)")])
        self.assertEqual(len(self.signed), 1)


class RecordingHttp:
    def __init__(self, *answers: HttpResponse | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[HttpRequest, float]] = []

    def request(self, request: HttpRequest, timeout_s: float) -> Deferred[HttpResponse]:
        self.requests.append((request, timeout_s))
        answer = self.answers.pop(0)
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)


class SignedUrlTests(TestCase):
    def fetch(self, *answers: HttpResponse) -> tuple[RecordingHttp, list[Any]]:
        http = RecordingHttp(*answers)
        results: list[Any] = []
        SignedUrls(http, "https://api.example.test/", "agent 1", "sk_secret", 3.0).fetch().addBoth(results.append)
        return http, results

    def test_the_request_and_the_answer(self) -> None:
        http, [url] = self.fetch(HttpResponse(200, b'{"signed_url": "wss://x.test/c?conversation_signature=a"}'))
        [(request, timeout)] = http.requests
        self.assertEqual(request, HttpRequest("GET", "https://api.example.test/v1/convai/conversation/get-signed-url"
                                              "?agent_id=agent%201", {"xi-api-key": "sk_secret",
                                                                      "accept": "application/json"}))
        self.assertEqual(timeout, 3.0)
        self.assertEqual(url, "wss://x.test/c?conversation_signature=a")

    def test_refusals_are_final_and_the_rest_transient(self) -> None:
        from mediaproxy.backends.elevenlabs_session import SignedUrlRefused

        for status, final in ((401, True), (403, True), (404, True), (422, True), (429, False), (503, False)):
            _, [failure] = self.fetch(HttpResponse(status, b"{}"))
            self.assertEqual(bool(failure.check(SignedUrlRefused)), final, status)
        for body in (b"not json", b"[]", b'{"signed_url": "https://x"}', b'{"signed_url": 3}'):
            _, [failure] = self.fetch(HttpResponse(200, body))
            self.assertTrue(failure.check(ConnectionError), body)


class ConfigurationTests(TestCase):
    def test_the_type_in_a_config_file(self) -> None:
        config = parse_config("t.ini", {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": "el"},
            "backend:el": {"type": "elevenlabs", "agent_id": "agent_1", "api_key": "k", "tools": "end_call",
                           "agent_audio_format": "ulaw_8000"},
        }, {})
        settings = config.backends["el"]
        self.assertIs(settings.type, ELEVENLABS)
        self.assertEqual(settings.options.url, "wss://api.elevenlabs.io/v1/convai/conversation")
        self.assertEqual(settings.options.api_url, "https://api.elevenlabs.io")
        backend = ELEVENLABS.create("el", settings.options, Clock(), Metrics(), RecordingHttp())
        self.assertIsInstance(backend, ElevenLabsBackend)
        self.assertEqual(backend.format_preference[0], MULAW_8K)

    def test_agent_id_is_required_and_http_only_to_loopback(self) -> None:
        with self.assertRaises(ConfigError):
            parse_config("t.ini", {"platform:twilio": {"path": "/twilio", "backend": "el"},
                                   "backend:el": {"type": "elevenlabs"}}, {})
        with self.assertRaises(OptionError):
            validate(options(agent_id=" "))
        with self.assertRaises(ConfigError):
            parse_config("t.ini", {"platform:twilio": {"path": "/twilio", "backend": "el"},
                                   "backend:el": {"type": "elevenlabs", "agent_id": "a",
                                                  "api_url": "http://api.example.com"}}, {})

    def test_formats(self) -> None:
        self.assertEqual(session_format_for(MULAW_8K), MULAW_8K)
        self.assertEqual(session_format_for(AudioFormat("l16", 16000, 2)), L16_16K)
        self.assertEqual(format_preference("pcm_16000")[:2], (L16_16K, MULAW_8K))
        self.assertEqual(len(set(format_preference("pcm_8000"))), len(format_preference("pcm_8000")))

    def test_etc_elevenlabs_ini_loads_with_dummy_environment(self) -> None:
        from twisted.python.filepath import FilePath

        from mediaproxy.config import load_config

        path = FilePath(__file__).parent().parent().child("etc").child("elevenlabs.ini").path
        config = load_config(path, {"ELEVENLABS_API_KEY": "k", "TWILIO_AUTH_TOKEN": "t"})
        settings = config.backends["elevenlabs"]
        self.assertIs(settings.type, ELEVENLABS)
        self.assertEqual(settings.options.agent_audio_format, "ulaw_8000")
        self.assertEqual(settings.common.tools, ("end_call", "transfer_call"))
