"""End to end: the real ``twistd mediaproxy`` process, the bot ending and transferring calls and
calling the operator's tools on each platform.

Each test starts the fakes in this process on 127.0.0.1 (the fake OpenAI Realtime service, the
operator's tool endpoint, Twilio's REST API), writes an ini file pointing the proxy at them,
spawns ``twistd --nodaemon mediaproxy --config`` with this checkout first on its path, waits for
"mediaproxy ready" in its output, places one scripted call through the platform's own client
(the loopback suites' clients), and at the end stops the process with SIGTERM and checks that it
shut down cleanly. Nothing here sleeps or polls: every step waits on a Deferred fired by the
event it needs (the process's output, a message at a client, a request at a fake).

The model's behaviour is scripted on the fake: ``next_function_call`` with
``speak_before_function_call`` is a response that says its goodbye (known bytes) and then calls
the function in the same response, as a real model does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from autobahn.twisted.websocket import connectWS
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from mediaproxy.audio.format import MULAW_8K
from mediaproxy.calls.webhook import signature
from mediaproxy.testing.fake_audio import LOUD_FRAME, pattern
from mediaproxy.testing.fake_http import FakeToolEndpoint, FakeTwilioRest
from mediaproxy.testing.fake_realtime import FakeRealtimeConnection, FakeRealtimeServer
from tests.support import cancel_autobahn_timer_buckets
from tests.test_config import Collect
from tests.test_loopback_audiocodes import ScriptedVaic, VaicFactory, chunks_of, loud_frame, of_type, quiet_frame
from tests.test_loopback_audiohook import API_KEY as GENESYS_API_KEY
from tests.test_loopback_audiohook import EXTERNAL, QUIET, SPEECH, STEREO, GenesysFactory, ScriptedGenesys, has
from tests.test_loopback_openai import PlayingTwilio, PlayingTwilioFactory, quiet_frames

ROOT = FilePath(__file__).parent().parent()
API_KEY = "k"
LOUD = LOUD_FRAME["audio/pcmu"]
BYTES_PER_MS = 8  # µ-law 8 kHz on every platform here: the fake's audio passes through unchanged
GOODBYE_MS = 800
GOODBYE = pattern(GOODBYE_MS * BYTES_PER_MS, 77)
"""The bot's farewell: 4 Audio Connector packets, 40 Twilio frames, recognisable byte by byte."""
SUMMARY = "The caller wants a person about order A-17."
TRANSFER = json.dumps({"target": "agent", "summary": SUMMARY})
TWILIO_TOKEN = "twilio-auth-token"
PUBLIC_URL = "wss://proxy.example.com"
TOOL_SECRET = "tool-secret"
AUDIOCODES_TOKEN = "vaic-token"
ORDER_REPLY = b'{"order": "A-17", "status": "shipped", "eta": "tomorrow"}'
LOOKUP_PARAMETERS = json.dumps({"type": "object", "properties": {"order": {"type": "string"}},
                                "required": ["order"]})


def reply(n: int, ms: int = 400) -> bytes:
    """The audio of the fake's response number ``n`` when it is not the goodbye."""
    return pattern(ms * BYTES_PER_MS, 100 + n)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for the process's listeners)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ini_text(sections: Mapping[str, Mapping[str, str]]) -> str:
    lines: list[str] = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


def twilio_signature(token: str, url: str) -> str:
    """``X-Twilio-Signature`` for a WebSocket upgrade to ``url``: base64 HMAC-SHA1 of the URL
    (no parameters), computed here independently of the proxy's code."""
    return base64.b64encode(hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()).decode()


def events_of(connection: FakeRealtimeConnection, kind: str) -> list[dict[str, Any]]:
    return [e for e in connection.received if e.get("type") == kind]


def outputs(connection: FakeRealtimeConnection) -> list[dict[str, Any]]:
    """The ``function_call_output`` items the fake received, in order."""
    return [item for item in connection.items_created if item.get("type") == "function_call_output"]


def marks_sent(client: PlayingTwilio) -> list[str]:
    return [m["mark"]["name"] for m in client.received if m["event"] == "mark"]


def played_out(client: PlayingTwilio) -> bool:
    """Every mark the proxy sent has been echoed (the caller heard all the audio before each),
    and the last message was a mark (nothing received after it is unplayed)."""
    return (bool(client.received) and client.received[-1]["event"] == "mark"
            and [name for _, name in client.echoed] == marks_sent(client))


class ProxyProcessCase(TestCase):
    """Starts the fakes and, per test, one ``twistd mediaproxy`` process on their addresses."""

    timeout = 30

    def setUp(self) -> None:
        self.fake = FakeRealtimeServer(reactor, api_key=API_KEY)
        self.fake_url = self.fake.listen()
        self.fake.response_audio = lambda conn, n, bpm: reply(n)
        self.tool = FakeToolEndpoint((200, ORDER_REPLY))
        self.tool.listen(reactor)
        self.rest: FakeTwilioRest | None = None
        self.process: Collect | None = None
        self.port = 0
        self.metrics_port = 0

    def backend(self, tools: str = "end_call, transfer_call, lookup_order", **extra: str) -> dict[str, str]:
        return {"type": "openai-realtime", "url": self.fake_url, "api_key": API_KEY, "tools": tools,
                "transcription_model": "", "silence_duration_ms": "200", "keepalive_seconds": "0",
                "reconnect_backoff_ms": "0", "reconnect_max_backoff_ms": "0", **extra}

    def lookup_tool(self, **extra: str) -> dict[str, str]:
        return {"url": self.tool.url + "/orders", "description": "Look up an order by its number.",
                "parameters": LOOKUP_PARAMETERS, "secret": TOOL_SECRET, **extra}

    @inlineCallbacks
    def start_proxy(self, sections: Mapping[str, Mapping[str, str]], public_url: str = "") -> Any:
        """Write the ini (``sections`` plus the listeners), spawn twistd and wait until it is ready."""
        self.port, self.metrics_port = free_port(), free_port()
        proxy = {"listen": f"tcp:{self.port}:interface=127.0.0.1", "drain_seconds": "1"}
        if public_url:
            proxy["public_url"] = public_url
        path = os.path.abspath(self.mktemp())
        FilePath(path).setContent(ini_text({
            "proxy": proxy, "metrics": {"listen": f"tcp:{self.metrics_port}:interface=127.0.0.1"}, **sections,
        }).encode())
        self.process = Collect()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        env = {**os.environ, "PYTHONPATH": ROOT.path}
        reactor.spawnProcess(self.process, twistd, [twistd, "--nodaemon", "--pidfile=", "mediaproxy",
                                                    "--config", path], env=env, path=ROOT.path)
        ready = self.process.wait_for(b"mediaproxy ready")

        def exited(code: int) -> int:
            if not ready.called:  # a bad config, an import error: say so rather than time out
                ready.errback(AssertionError(f"twistd exited ({code}) before it was ready: {self.output()}"))
            return code

        self.process.ended.addCallback(exited)
        yield ready

    def output(self) -> str:
        return self.process.output.decode(errors="replace")[-4000:] if self.process is not None else ""

    @inlineCallbacks
    def tearDown(self) -> Any:
        if self.process is not None and not self.process.ended.called:
            self.process.transport.signalProcess("TERM")
            code = yield self.process.ended
            # twistd shuts down cleanly, then re-raises SIGTERM so its exit status says why it ended.
            self.assertEqual(code, -15, self.output())
            self.assertIn(b"Server Shut Down", self.process.output)
            self.assertNotIn(b"Traceback", self.process.output, self.output())
        yield self.fake.stop()
        yield self.tool.stop()
        if self.rest is not None:
            yield self.rest.stop()
        cancel_autobahn_timer_buckets()
        self.assertEqual(self.fake.violations, [])

    @inlineCallbacks
    def metrics(self) -> Any:
        """The process's ``/metrics``, as {(name, sorted labels): value}."""
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{self.metrics_port}/metrics".encode())
        body = yield readBody(response)
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    @inlineCallbacks
    def assertMetric(self, name: str, expected: float, **labels: str) -> Any:
        samples = yield self.metrics()
        self.assertEqual(samples.get((name, tuple(sorted(labels.items()))), 0.0), expected,
                         f"{name}{labels}: {[(k, v) for k, v in samples.items() if k[0] == name]}")

    # --- Twilio ------------------------------------------------------------------------------------

    def twilio_sections(self, backend: dict[str, str] | None = None, **platform: str) -> dict[str, dict[str, str]]:
        return {
            "platform:twilio": {"path": "/twilio", "backend": "openai",
                                "transfer_targets": "agent=+15551230000, billing=sip:billing@pbx.example.com",
                                **platform},
            "backend:openai": backend or self.backend(),
            "tool:lookup_order": self.lookup_tool(),
        }

    @inlineCallbacks
    def twilio_call(self, headers: dict[str, str] | None = None,
                    custom_parameters: dict[str, str] | None = None) -> Any:
        """Dial the process as Twilio; fires with (factory, client, fake connection) once the
        backend session is ready (its ``session.update`` reached the fake)."""
        factory = PlayingTwilioFactory(f"ws://127.0.0.1:{self.port}/twilio", headers=headers,
                                       custom_parameters=custom_parameters)
        connectWS(factory)
        client = yield factory.opened
        yield self.fake.when(lambda: any(events_of(c, "session.update") for c in self.fake.connections))
        return factory, client, self.fake.connection(0)

    @staticmethod
    def caller_turn(client: PlayingTwilio, seed: int = 1) -> None:
        """200 ms of speech, then quiet long enough for the fake's VAD to end the turn."""
        client.send_audio([LOUD] * 10 + quiet_frames(12, seed=seed))

    @inlineCallbacks
    def hang_up(self, factory: PlayingTwilioFactory, client: PlayingTwilio) -> Any:
        client.stop()
        yield factory.closed
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="twilio", outcome="completed")


class TwilioEndAndTransferTests(ProxyProcessCase):
    """Twilio Media Streams: the bot's goodbye is played to its last frame, then the call ends or
    moves the Twilio way."""

    @inlineCallbacks
    def test_end_call_after_the_whole_farewell(self) -> Any:
        """The model says goodbye and calls end_call in the same response; the caller receives
        every byte of the goodbye, Twilio echoes every mark of it (played), and only then does
        the proxy close the stream; the call counts as bot_hangup."""
        self.fake.response_audio = lambda conn, n, bpm: GOODBYE if n == 1 else reply(n)
        self.fake.speak_before_function_call = True
        self.fake.next_function_call = ("end_call", '{"reason": "the caller said goodbye"}')
        yield self.start_proxy(self.twilio_sections())
        factory, client, conn = yield self.twilio_call()
        at_close: dict[str, Any] = {}
        factory.closed.addCallback(lambda code: at_close.update(
            code=code, echoed=[name for _, name in client.echoed], queued_ms=client.player.queued_ms))
        self.caller_turn(client)
        yield factory.closed
        self.assertEqual(list(conn.function_calls.values()), ["end_call"])
        self.assertEqual(conn.assistant_audio_ms, {"item_0_1": GOODBYE_MS})  # all the fake sent
        self.assertEqual(at_close["code"], 1000)
        # Every byte of the goodbye, in exact 160-byte frames, and nothing else.
        self.assertEqual(client.audio(), GOODBYE)
        self.assertEqual({len(payload) for _, payload in client.media}, {160})
        # The last message was a mark after the last frame, and every mark had been echoed (the
        # caller's player had played all of it) before the close: the close came after.
        self.assertEqual(client.received[-1]["event"], "mark")
        self.assertEqual(at_close["echoed"], marks_sent(client))
        self.assertLess(at_close["queued_ms"], 0.01)
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="twilio", outcome="bot_hangup")
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="end_call", platform="twilio",
                                outcome="ok")

    @inlineCallbacks
    def rest_transfer(self, live_calls: set[str]) -> Any:
        """A call on a signed stream whose model says goodbye and transfers to ``agent``, with
        Twilio's REST API knowing ``live_calls``; fires with (client, what the caller had heard
        and echoed when the REST request arrived)."""
        self.rest = FakeTwilioRest("AC1", TWILIO_TOKEN, live_calls)
        self.rest.listen(reactor)
        self.fake.response_audio = lambda conn, n, bpm: GOODBYE if n == 1 else reply(n)
        self.fake.speak_before_function_call = True
        self.fake.next_function_call = ("transfer_call", TRANSFER)
        yield self.start_proxy(self.twilio_sections(auth_token=TWILIO_TOKEN, account_sid="AC1",
                                                    api_url=self.rest.url), public_url=PUBLIC_URL)
        headers = {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, PUBLIC_URL + "/twilio")}
        factory, client, _ = yield self.twilio_call(headers=headers)
        self.caller_turn(client)
        rest = self.rest
        yield rest.when(lambda: bool(rest.requests))
        at_request = {"audio": client.audio(), "echoed": [name for _, name in client.echoed],
                      "marks": marks_sent(client), "closed": factory.closed.called}
        code = yield factory.closed
        self.assertEqual(code, 1000)
        return client, at_request

    @inlineCallbacks
    def test_transfer_redirects_the_live_call_through_the_rest_api(self) -> Any:
        """transfer_call to ``agent``: once the goodbye has been heard (all of it received, every
        mark echoed), the live call is redirected with the Calls API to a ``<Dial>`` of the
        configured number, then the stream closes; the call counts as transferred."""
        _, heard = yield self.rest_transfer({"CA1"})
        assert self.rest is not None
        self.assertEqual(self.rest.updates,
                         [("CA1", "<Response><Dial><Number>+15551230000</Number></Dial></Response>")])
        self.assertEqual(heard["audio"], GOODBYE)
        self.assertEqual(heard["echoed"], heard["marks"])
        self.assertFalse(heard["closed"])
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="twilio", outcome="transferred")
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="transfer_call", platform="twilio",
                                outcome="ok")

    @inlineCallbacks
    def test_transfer_falls_back_to_ending_the_stream_when_rest_refuses(self) -> Any:
        """Twilio's REST API does not know the call (404): the proxy ends the stream instead (the
        call's next TwiML verb dials), after the goodbye, counted as a fallback."""
        client, heard = yield self.rest_transfer(set())
        assert self.rest is not None
        self.assertEqual(self.rest.updates, [])
        self.assertEqual(len(self.rest.requests), 1)
        self.assertEqual(heard["audio"], GOODBYE)
        self.assertEqual(heard["echoed"], heard["marks"])
        self.assertEqual(client.audio(), GOODBYE)
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="twilio", outcome="transferred")
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="transfer_call", platform="twilio",
                                outcome="fallback")


class TwilioToolTests(ProxyProcessCase):
    """The operator's ``[tool:NAME]`` webhooks and the caller's keys on a Twilio call."""

    def check_tool_request(self, index: int, call: Mapping[str, Any]) -> None:
        request = self.tool.requests[index]
        self.assertEqual((request.method, request.path), ("POST", "/orders"))
        self.assertEqual(request.json(), {"tool": "lookup_order", "arguments": {"order": "A-17"}, "call": call})
        timestamp = request.headers["x-mediaproxy-timestamp"]
        self.assertEqual(request.headers["x-mediaproxy-signature"], signature(TOOL_SECRET, timestamp, request.body))

    @inlineCallbacks
    def test_webhook_tool_gets_the_call_context_and_its_answer_reaches_the_model(self) -> Any:
        """lookup_order: the endpoint gets the arguments and the call's context (Twilio's CallSid,
        the platform, the stream's customParameters), correctly signed; its JSON answer is the
        function's output at the model, which then speaks again and the caller hears it."""
        self.fake.next_function_call = ("lookup_order", '{"order": "A-17"}')
        yield self.start_proxy(self.twilio_sections())
        factory, client, conn = yield self.twilio_call(custom_parameters={"tenant": "acme", "line": "support"})
        self.caller_turn(client)
        yield self.fake.when(lambda: bool(outputs(conn)))
        self.check_tool_request(0, {"call_id": "CA1", "platform": "twilio",
                                    "metadata": {"tenant": "acme", "line": "support"}})
        (output,) = outputs(conn)
        self.assertEqual(output["call_id"], "call_0_1")
        self.assertEqual(output["output"], ORDER_REPLY.decode())
        # The model speaks the answer (its second response), and the caller hears all of it.
        yield factory.when(lambda: len(client.audio()) >= len(reply(2)))
        self.assertEqual(client.audio(), reply(2))
        yield self.hang_up(factory, client)
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="lookup_order", platform="twilio",
                                outcome="ok")

    @inlineCallbacks
    def test_slow_tool_while_the_caller_barges_in(self) -> Any:
        """The model says "let me check" and calls lookup_order; the endpoint holds the request.
        Meanwhile the caller talks over the bot: Twilio gets ``clear`` and the model a truncate at
        the played position, and the call stays up. When the endpoint answers, the result
        reaches the model, which speaks again; audio keeps flowing both ways."""
        self.tool.hold = True
        self.fake.response_audio = lambda conn, n, bpm: reply(n, 3000 if n == 1 else 400)
        self.fake.speak_before_function_call = True
        self.fake.next_function_call = ("lookup_order", '{"order": "A-17"}')
        yield self.start_proxy(self.twilio_sections())
        factory, client, conn = yield self.twilio_call()
        self.caller_turn(client)
        yield self.tool.when(lambda: bool(self.tool.requests))
        yield factory.when(lambda: len(client.media) >= 10)
        # Talk over the bot's "let me check" (no pause: the caller's turn is not over).
        seen = len(client.received)
        client.send_audio([LOUD] * 3)
        yield factory.when(lambda: any(m["event"] == "clear" for m in client.received[seen:]))
        yield self.fake.when(lambda: bool(conn.truncations) or bool(conn.errors_sent))
        self.assertEqual(conn.errors_sent, [])
        [(item_id, end_ms)] = conn.truncations
        self.assertEqual(item_id, "item_0_1")
        self.assertLess(end_ms, 3000)
        self.assertFalse(factory.closed.called)
        self.assertEqual(outputs(conn), [])
        heard_before = len(client.audio())
        self.assertEqual(client.audio(), reply(1, 3000)[:heard_before])  # a prefix, then cut
        # The tool answers: its result reaches the model, which speaks it.
        self.tool.release()
        yield self.fake.when(lambda: bool(outputs(conn)))
        self.assertEqual(outputs(conn)[0]["output"], ORDER_REPLY.decode())
        yield factory.when(lambda: len(client.audio()) >= heard_before + len(reply(2)))
        self.assertEqual(client.audio()[heard_before:], reply(2))
        # Up still flows too: the caller's next frames reach the model.
        sent = len(client.sent_audio)
        client.send_audio(quiet_frames(3, seed=5))
        yield self.fake.when(lambda: len(conn.input_audio) >= sent + 3 * 160)
        self.assertEqual(bytes(conn.input_audio), bytes(client.sent_audio))
        self.check_tool_request(0, {"call_id": "CA1", "platform": "twilio", "metadata": {}})
        yield self.hang_up(factory, client)
        yield self.assertMetric("mediaproxy_bargein_seconds_count", 1)

    @inlineCallbacks
    def test_failing_tool_gives_the_model_an_error_and_the_call_goes_on(self) -> Any:
        """The endpoint answers 500: the model gets an error output (not the endpoint's body),
        speaks, and the caller hears it; counted as failed."""
        self.tool.replies = [(500, b'{"detail": "database down"}')]
        self.fake.next_function_call = ("lookup_order", '{"order": "A-17"}')
        yield self.start_proxy(self.twilio_sections())
        factory, client, conn = yield self.twilio_call()
        self.caller_turn(client)
        yield self.fake.when(lambda: bool(outputs(conn)))
        (output,) = outputs(conn)
        self.assertEqual(output["call_id"], "call_0_1")
        self.assertEqual(json.loads(output["output"]), {"error": "the tool answered HTTP 500"})
        yield factory.when(lambda: len(client.audio()) >= len(reply(2)) and played_out(client))
        self.assertEqual(client.audio(), reply(2))
        yield self.hang_up(factory, client)
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="lookup_order", platform="twilio",
                                outcome="failed")

    @inlineCallbacks
    def test_tool_that_does_not_answer_in_time_gives_the_model_an_error(self) -> Any:
        """The endpoint holds the request past the tool's ``timeout_ms``: the model gets an error
        output, speaks, and the caller hears it; counted as timeout. The endpoint's late answer
        changes nothing."""
        self.tool.hold = True
        sections = self.twilio_sections()
        sections["tool:lookup_order"] = self.lookup_tool(timeout_ms="100")
        self.fake.next_function_call = ("lookup_order", '{"order": "A-17"}')
        yield self.start_proxy(sections)
        factory, client, conn = yield self.twilio_call()
        self.caller_turn(client)
        yield self.fake.when(lambda: bool(outputs(conn)))
        self.assertEqual(len(self.tool.requests), 1)
        (output,) = outputs(conn)
        self.assertEqual(json.loads(output["output"]), {"error": "the tool did not answer in time"})
        yield factory.when(lambda: len(client.audio()) >= len(reply(2)) and played_out(client))
        self.assertEqual(client.audio(), reply(2))
        self.tool.release()  # too late: the proxy gave up on it
        yield self.hang_up(factory, client)
        self.assertEqual(len(outputs(conn)), 1)
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="lookup_order", platform="twilio",
                                outcome="timeout")

    @inlineCallbacks
    def test_keys_pressed_one_by_one_reach_the_model_as_one_entry(self) -> Any:
        """Twilio sends one ``dtmf`` event per key: 1, 2, 3, 4 and the terminator # reach the
        model as one user message with 1234 (the # not passed on), and it answers once."""
        yield self.start_proxy(self.twilio_sections())
        factory, client, conn = yield self.twilio_call()
        for n, digit in enumerate("1234#"):
            client.send({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": str(n + 2),
                         "dtmf": {"track": "inbound_track", "digit": digit}})
        # The model's one answer, heard whole: every key had long been handled by then.
        yield factory.when(lambda: len(client.audio()) >= len(reply(1)) and played_out(client))
        self.assertEqual(client.audio(), reply(1))
        messages = [item for item in conn.items_created if item.get("type") == "message"]
        self.assertEqual(len(messages), 1, messages)
        (message,) = messages
        self.assertEqual(message["role"], "user")
        (content,) = message["content"]
        self.assertEqual(content["type"], "input_text")
        self.assertIn("1234", content["text"])
        self.assertNotIn("#", content["text"])
        self.assertEqual(len(events_of(conn, "response.create")), 1)
        yield self.hang_up(factory, client)


class AudioConnectorTransferTests(ProxyProcessCase):
    """Genesys Audio Connector: the transfer is a successful ``disconnect`` whose output
    variables the Architect flow routes on."""

    @inlineCallbacks
    def test_transfer_disconnects_with_the_target_after_the_goodbye(self) -> Any:
        """The model says goodbye and transfers to ``agent``: every packet of the goodbye arrives
        first (and its play time passes), then ``disconnect{completed}`` with the configured
        target and the summary in outputVariables; Genesys's close is answered with closed."""
        self.fake.response_audio = lambda conn, n, bpm: GOODBYE if n == 1 else reply(n)
        self.fake.speak_before_function_call = True
        self.fake.next_function_call = ("transfer_call", TRANSFER)
        yield self.start_proxy({
            "platform:genesys-bot": {"type": "audiohook", "mode": "connector", "path": "/audiohook/bot",
                                     "backend": "openai", "api_key": GENESYS_API_KEY,
                                     "transfer_targets": "agent=Support_Queue, billing=Billing_Queue"},
            "backend:openai": self.backend(),
            "tool:lookup_order": self.lookup_tool(),
        })
        factory = GenesysFactory(f"ws://127.0.0.1:{self.port}/audiohook/bot")
        connectWS(factory)
        client: ScriptedGenesys = yield factory.connected
        client.open([STEREO, EXTERNAL])
        yield factory.wait_for(has("opened"))
        client.send_audio(SPEECH, SPEECH, SPEECH, QUIET, QUIET)
        yield factory.wait_for(has("closed"))
        yield factory.closed
        self.assertEqual(client.problems, [])
        self.assertEqual(b"".join(client.audio), GOODBYE)
        self.assertEqual(client.types(), ["opened", "disconnect", "closed"])
        (disconnect,) = client.of_type("disconnect")
        self.assertEqual(disconnect["parameters"], {
            "reason": "completed", "info": "transferred",
            "outputVariables": {"transferName": "agent", "transferTarget": "Support_Queue",
                                "transferSummary": SUMMARY}})
        # After the last packet, and not before the goodbye's play time (less the lead the
        # proxy may send ahead) has passed since the first.
        binary = [(at, i) for i, (at, kind, _) in enumerate(client.timeline) if kind == "binary"]
        (disconnect_at, disconnect_index), = [(at, i) for i, (at, kind, m) in enumerate(client.timeline)
                                              if kind == "text" and m["type"] == "disconnect"]
        self.assertGreater(disconnect_index, binary[-1][1])
        self.assertGreaterEqual(disconnect_at - binary[0][0], GOODBYE_MS / 1000 - 0.06 - 0.05)
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="genesys-bot", outcome="transferred")
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="transfer_call", platform="genesys-bot",
                                outcome="ok")


class AudioCodesTests(ProxyProcessCase):
    """AudioCodes VoiceAI Connect: the ``transfer`` activity, and a tool with the call's context."""

    def sections(self) -> dict[str, dict[str, str]]:
        return {
            "platform:audiocodes": {"path": "/audiocodes", "backend": "openai", "token": AUDIOCODES_TOKEN,
                                    "transfer_targets": "agent=sip:agents@pbx.example.com, billing=tel:+15551230000"},
            "backend:openai": self.backend(),
            "tool:lookup_order": self.lookup_tool(),
        }

    @inlineCallbacks
    def open_call(self) -> Any:
        """Dial as VAIC (Bearer token), initiate with µ-law, start, open the user stream; fires
        with (factory, client, arrivals) where arrivals are (time, message) of every message."""
        factory = VaicFactory(f"ws://127.0.0.1:{self.port}/audiocodes",
                              headers={"Authorization": f"Bearer {AUDIOCODES_TOKEN}"}, conversation="conv-e2e")
        arrivals: list[tuple[float, dict[str, Any]]] = []
        factory.reactions.append(lambda vaic, message: arrivals.append((reactor.seconds(), message)))
        connectWS(factory)
        client: ScriptedVaic = yield factory.opened
        client.initiate(["raw/mulaw"])
        yield factory.wait_for(of_type("session.accepted"))
        client.start(caller="+14155550123", callee="+18005550100")
        client.send({"type": "userStream.start"})
        yield factory.wait_for(of_type("userStream.started"))
        yield self.fake.when(lambda: any(events_of(c, "session.update") for c in self.fake.connections))
        return factory, client, arrivals

    @staticmethod
    def turn(client: ScriptedVaic) -> None:
        client.speak([loud_frame(MULAW_8K)] * 10 + [quiet_frame(MULAW_8K)] * 12)

    @inlineCallbacks
    def test_transfer_activity_after_the_goodbye(self) -> Any:
        """The model says goodbye and transfers to ``agent``: the whole goodbye is streamed and its
        play stream stopped, then the ``transfer`` activity names the configured SIP URI with the
        summary as handoverReason; VAIC ends the session and the call counts as transferred."""
        self.fake.response_audio = lambda conn, n, bpm: GOODBYE if n == 1 else reply(n)
        self.fake.speak_before_function_call = True
        self.fake.next_function_call = ("transfer_call", TRANSFER)
        yield self.start_proxy(self.sections())
        factory, client, arrivals = yield self.open_call()

        def vaic_transfers(vaic: ScriptedVaic, message: dict[str, Any]) -> None:
            if message["type"] == "activities" and message["activities"][0]["name"] == "transfer":
                vaic.send({"type": "session.end", "reasonCode": "bot-transfer", "reason": "Bot Side"})

        factory.reactions.append(vaic_transfers)
        self.turn(client)
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertEqual(b"".join(chunks_of(client.received, "play-1")), GOODBYE)
        transfers = [i for i, m in enumerate(client.received)
                     if m["type"] == "activities" and m["activities"][0]["name"] == "transfer"]
        self.assertEqual(len(transfers), 1)
        at = transfers[0]
        self.assertEqual(client.received[at]["activities"], [
            {"type": "event", "name": "transfer",
             "activityParams": {"transferTarget": "sip:agents@pbx.example.com", "handoverReason": SUMMARY}}])
        self.assertEqual(client.received[at - 1], {"type": "playStream.stop", "streamId": "play-1"})
        self.assertEqual(client.received[at + 1:], [])
        chunk_times = [t for t, m in arrivals if m["type"] == "playStream.chunk"]
        transfer_at = arrivals[at][0]
        self.assertGreaterEqual(transfer_at - chunk_times[0], GOODBYE_MS / 1000 - 0.06 - 0.05)
        yield self.assertMetric("mediaproxy_calls_total", 1, platform="audiocodes", outcome="transferred")

    @inlineCallbacks
    def test_webhook_tool_gets_the_conversation_context(self) -> Any:
        """lookup_order on AudioCodes: the endpoint gets the conversation id, the platform and the
        start activity's parameters, signed; its answer reaches the model, which speaks it."""
        self.fake.next_function_call = ("lookup_order", '{"order": "A-17"}')
        yield self.start_proxy(self.sections())
        factory, client, _ = yield self.open_call()
        conn = self.fake.connection(0)
        self.turn(client)
        yield self.fake.when(lambda: bool(outputs(conn)))
        request = self.tool.requests[0]
        body = request.json()
        self.assertEqual(body["arguments"], {"order": "A-17"})
        self.assertEqual((body["call"]["call_id"], body["call"]["platform"]), ("conv-e2e", "audiocodes"))
        self.assertEqual(body["call"]["metadata"]["callee"], "+18005550100")
        self.assertEqual(body["call"]["metadata"]["caller"], "+14155550123")
        timestamp = request.headers["x-mediaproxy-timestamp"]
        self.assertEqual(request.headers["x-mediaproxy-signature"], signature(TOOL_SECRET, timestamp, request.body))
        self.assertEqual(outputs(conn)[0]["output"], ORDER_REPLY.decode())
        yield factory.wait_for(of_type("playStream.stop", streamId="play-1"))
        self.assertEqual(b"".join(chunks_of(client.received, "play-1")), reply(2))
        client.send({"type": "session.end", "reasonCode": "client-disconnected"})
        code, _ = yield factory.closed
        self.assertEqual(code, 1000)
        yield self.assertMetric("mediaproxy_call_actions_total", 1, action="lookup_order", platform="audiocodes",
                                outcome="ok")
