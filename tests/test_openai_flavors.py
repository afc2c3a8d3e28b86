"""The OpenAI-compatible family, per flavor: the URL and headers dialled, the exact
``session.update`` (byte for byte, and valid against the GA models or the vendor's schema), the
events each flavor renames or opens with, the start-up checks, and the example configs."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import replace
from typing import Any

from twisted.trial import unittest

from mediaproxy.audio.format import L16_24K, MULAW_8K, AudioFormat
from mediaproxy.backends.base import ToolSpec
from mediaproxy.backends.openai_dialect import RealtimeDialect
from mediaproxy.backends.openai_events import AudioReceived, SessionReady
from mediaproxy.backends.openai_flavors import endpoint, resolved, validate
from mediaproxy.backends.openai_session_config import RealtimeOptions
from mediaproxy.config import ConfigError, load_config
from mediaproxy.options import OptionError
from mediaproxy.testing.flavor_schema import check_session
from mediaproxy.testing.realtime_schema import adapters, check_event

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOOL = ToolSpec("end_call", "End the call.", {"type": "object", "properties": {}})

AZURE = RealtimeOptions(flavor="azure", url="wss://res.openai.azure.com/openai/v1/realtime", api_key="azkey",
                        deployment="my-rt", instructions="Be brief.", transcription_model="")
VOICELIVE = RealtimeOptions(flavor="voicelive", url="wss://res.services.ai.azure.com/voice-live/realtime",
                            api_key="vlkey", instructions="Be brief.", transcription_model="")
XAI = RealtimeOptions(flavor="xai", api_key="xkey", instructions="Be brief.", transcription_model="")


def first_update(options: RealtimeOptions, fmt: AudioFormat = MULAW_8K, opening: str = "session.created") -> str:
    """The text of the ``session.update`` the dialect sends on the flavor's opening event."""
    dialect = RealtimeDialect(options, fmt, tools=(TOOL,), event_prefix="c1")
    dialect.receive(json.dumps({"type": opening, "event_id": "s1", "session": {}}))
    [message] = dialect.take_output()
    return message


class EndpointTests(unittest.TestCase):
    def test_openai_default_and_any_ga_server_at_url(self) -> None:
        self.assertEqual(endpoint(RealtimeOptions(api_key="k")),
                         ("wss://api.openai.com/v1/realtime?model=gpt-realtime", {"Authorization": "Bearer k"}))
        other = RealtimeOptions(api_key="k", url="wss://realtime.example.com/v1/realtime", model="m 1")
        self.assertEqual(endpoint(other)[0], "wss://realtime.example.com/v1/realtime?model=m%201")

    def test_azure_ga_and_dated(self) -> None:
        self.assertEqual(endpoint(AZURE), ("wss://res.openai.azure.com/openai/v1/realtime?model=my-rt",
                                           {"api-key": "azkey"}))
        dated = replace(AZURE, url="wss://res.openai.azure.com/openai/realtime", api_version="2025-04-01-preview",
                        api_key="", entra_token="tok")
        self.assertEqual(endpoint(dated), (
            "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=my-rt",
            {"Authorization": "Bearer tok"}))

    def test_voicelive(self) -> None:
        self.assertEqual(endpoint(VOICELIVE), (
            "wss://res.services.ai.azure.com/voice-live/realtime?api-version=2026-04-10&model=gpt-realtime",
            {"api-key": "vlkey"}))

    def test_xai(self) -> None:
        self.assertEqual(endpoint(XAI), ("wss://api.x.ai/v1/realtime?model=grok-voice-latest",
                                         {"Authorization": "Bearer xkey"}))


class SessionUpdateTests(unittest.TestCase):
    def test_openai_ga(self) -> None:
        message = first_update(RealtimeOptions(api_key="k", instructions="Be brief.", transcription_model=""))
        event = json.loads(message)
        self.assertEqual(check_event(adapters()[0], event), [])
        self.assertEqual(event["session"]["model"], "gpt-realtime")

    def test_azure_keeps_the_ga_shape_without_model(self) -> None:
        message = first_update(AZURE)
        self.assertEqual(message, json.dumps({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["audio"],
            "audio": {"input": {"format": {"type": "audio/pcmu"},
                                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                                   "silence_duration_ms": 500, "create_response": True,
                                                   "interrupt_response": True},
                                "noise_reduction": {"type": "near_field"}},
                      "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
            "instructions": "Be brief.",
            "tools": [{"type": "function", "name": "end_call", "description": "End the call.",
                       "parameters": {"type": "object", "properties": {}}}],
            "tool_choice": "auto"}, "event_id": "c1_1"}, separators=(",", ":")))
        self.assertEqual(check_event(adapters()[0], json.loads(message)), [])

    def test_voicelive_flat_with_azure_extras_on_by_default(self) -> None:
        message = first_update(VOICELIVE)
        self.assertEqual(message, json.dumps({"type": "session.update", "session": {
            "modalities": ["text", "audio"],
            "voice": {"type": "azure-standard", "name": "en-US-Ava:DragonHDLatestNeural"},
            "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
            "instructions": "Be brief.",
            "turn_detection": {"type": "azure_semantic_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500, "create_response": True, "interrupt_response": True},
            "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
            "input_audio_echo_cancellation": {"type": "server_echo_cancellation"},
            "tools": [{"type": "function", "name": "end_call", "description": "End the call.",
                       "parameters": {"type": "object", "properties": {}}}],
            "tool_choice": "auto"}, "event_id": "c1_1"}, separators=(",", ":")))
        self.assertEqual(check_session("voicelive", json.loads(message)["session"]), [])

    def test_voicelive_extras_off_pcm_and_an_openai_voice(self) -> None:
        options = replace(VOICELIVE, azure_semantic_vad=False, deep_noise_suppression=False, echo_cancellation=False,
                          voice="marin", noise_reduction="far_field", transcription_model="azure-speech",
                          transcription_language="en")
        session = json.loads(first_update(options, L16_24K))["session"]
        self.assertEqual(check_session("voicelive", session), [])
        self.assertEqual(session["voice"], {"type": "openai", "name": "marin"})
        self.assertEqual((session["input_audio_format"], session["input_audio_sampling_rate"]), ("pcm16", 24000))
        self.assertEqual(session["turn_detection"]["type"], "server_vad")
        self.assertEqual(session["input_audio_noise_reduction"], {"type": "far_field"})
        self.assertNotIn("input_audio_echo_cancellation", session)
        self.assertEqual(session["input_audio_transcription"], {"model": "azure-speech", "language": "en"})

    def test_xai_shape(self) -> None:
        message = first_update(XAI, opening="conversation.created")
        self.assertEqual(message, json.dumps({"type": "session.update", "session": {
            "voice": "eve", "instructions": "Be brief.",
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500},
            "audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}},
            "tools": [{"type": "function", "name": "end_call", "description": "End the call.",
                       "parameters": {"type": "object", "properties": {}}}]}, "event_id": "c1_1"},
            separators=(",", ":")))
        self.assertEqual(check_session("xai", json.loads(message)["session"]), [])

    def test_the_schemas_reject_another_flavors_shape(self) -> None:
        ga = json.loads(first_update(AZURE))["session"]
        self.assertIn("$.session.type: unknown key", check_session("voicelive", ga))
        flat = json.loads(first_update(VOICELIVE))["session"]
        self.assertIn("$.session.input_audio_format: unknown key", check_session("xai", flat))


class EventTests(unittest.TestCase):
    def test_voicelive_audio_names_and_flat_session_updated(self) -> None:
        dialect = RealtimeDialect(VOICELIVE, MULAW_8K)
        dialect.receive(json.dumps({"type": "session.created", "session": {}}))
        events = dialect.receive(json.dumps({"type": "session.updated", "session": {
            "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
            "turn_detection": {"type": "azure_semantic_vad", "interrupt_response": True}}}))
        self.assertIsInstance(events[0], SessionReady)
        self.assertTrue(events[0].interrupt_response)
        dialect.receive(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
        events = dialect.receive(json.dumps({"type": "response.audio.delta", "response_id": "r1", "item_id": "i1",
                                             "content_index": 0, "delta": "AAAA"}))
        self.assertEqual(events, [AudioReceived("i1", "r1", b"\x00\x00\x00")])
        self.assertEqual(dialect.receive(json.dumps({"type": "warning", "warning": {}})), [])

    def test_voicelive_format_mismatch_is_fatal(self) -> None:
        dialect = RealtimeDialect(VOICELIVE, MULAW_8K)
        dialect.receive(json.dumps({"type": "session.created", "session": {}}))
        [error] = dialect.receive(json.dumps({"type": "session.updated", "session": {
            "input_audio_format": "pcm16", "output_audio_format": "pcm16"}}))
        self.assertTrue(error.fatal)

    def test_xai_barge_in_cancels_without_response_id(self) -> None:
        dialect = RealtimeDialect(XAI, MULAW_8K)
        dialect.receive(json.dumps({"type": "conversation.created", "conversation": {"id": "c"}}))
        dialect.receive(json.dumps({"type": "session.updated", "session": {"audio": {
            "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcmu"}}}}}))
        dialect.take_output()
        dialect.receive(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
        dialect.receive(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0}))
        self.assertEqual([json.loads(m)["type"] for m in dialect.take_output()], ["response.cancel"])

    def test_language_change_per_flavor(self) -> None:
        def change(options: RealtimeOptions) -> Any:
            dialect = RealtimeDialect(replace(options, transcription_model="whisper-1"), MULAW_8K)
            dialect.set_language("de")
            return json.loads(dialect.take_output()[0])["session"]
        self.assertEqual(change(VOICELIVE), {"input_audio_transcription": {"model": "whisper-1", "language": "de"}})
        self.assertEqual(change(XAI), {"audio": {"input": {"transcription": {"language_hint": "de"}}}})
        self.assertEqual(change(AZURE)["audio"]["input"]["transcription"]["language"], "de")


class ValidationTests(unittest.TestCase):
    def test_each_flavor_needs_its_credential_and_endpoint(self) -> None:
        for options, key in ((replace(AZURE, url=""), "url"), (replace(VOICELIVE, api_key=""), "api_key"),
                             (replace(AZURE, entra_token="t"), "entra_token"), (replace(XAI, api_key=""), "api_key"),
                             (replace(XAI, turn_detection="semantic_vad"), "turn_detection"),
                             (RealtimeOptions(api_key="k", entra_token="t"), "entra_token")):
            with self.assertRaises(OptionError) as caught:
                validate(options)
            self.assertEqual(caught.exception.key, key)
        validate(replace(VOICELIVE, api_key="", entra_token="t"))

    def test_flavor_defaults(self) -> None:
        self.assertEqual((resolved(XAI).model, resolved(XAI).voice), ("grok-voice-latest", "eve"))
        self.assertEqual(resolved(AZURE).voice, "marin")


class ExampleConfigTests(unittest.TestCase):
    def test_every_example_loads(self) -> None:
        paths = sorted(glob.glob(os.path.join(ROOT, "etc", "*.ini")))
        self.assertGreaterEqual(len(paths), 5)
        env = {name: f"dummy-{name.lower()}" for name in (
            "OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "AUDIOHOOK_API_KEY", "AUDIOHOOK_CLIENT_SECRET",
            "AUDIOCODES_TOKEN", "AZURE_OPENAI_API_KEY", "AZURE_ENTRA_TOKEN", "AZURE_VOICELIVE_API_KEY", "XAI_API_KEY",
            "DEEPGRAM_API_KEY", "GEMINI_API_KEY", "BOT_API_KEY", "ELEVENLABS_API_KEY")}
        flavors = set()
        for path in paths:
            try:
                config = load_config(path, env)
            except ConfigError as e:  # pragma: no cover - the message names the file and key
                self.fail(str(e))
            flavors |= {b.options.flavor for b in config.backends.values() if hasattr(b.options, "flavor")}
        self.assertEqual(flavors, {"openai", "azure", "voicelive", "xai"})
