"""``[log] format = json``: the line formatter (fields, order, call scope, redaction, failures,
hostile text), the per-call logger and directory, and a real ``twistd mediaproxy`` whose every
output line is one JSON object: a Twilio call on the OpenAI backend (the fake service) with
both credentials from the environment, where every line about the call carries ``call_id``,
``platform``, ``backend`` and ``outcome`` (the backend session's own lines included) and no
secret appears anywhere."""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from autobahn.twisted.websocket import connectWS
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mediaproxy.calls.scope import RECENTLY_ENDED, CallDirectory, CallLogger, CallScope
from mediaproxy.config import parse_config
from mediaproxy.json_log import JsonLogObserver, Redactor, event_as_line
from mediaproxy.service import MediaProxyService
from mediaproxy.tap import Options, twistd_log_stream
from mediaproxy.testing.fake_realtime import FakeRealtimeServer
from tests.test_config import ROOT, Collect
from tests.test_drain import free_port
from tests.test_loopback_openai import quiet_frames
from tests.test_loopback_twilio import ScriptedTwilioFactory
from tests.test_twilio import sign as twilio_sign

TWILIO_TOKEN = "twilio-token-json-log-0123456789"
OPENAI_KEY = "sk-test-json-log-0123456789abcdefghij"
PUBLIC_URL = "wss://proxy.example.com"


def emitted(log_call: Any) -> dict[str, Any]:
    """The one event ``log_call(logger)`` emits, captured."""
    events: list[dict[str, Any]] = []
    publisher = LogPublisher(events.append)
    log_call(publisher)
    assert len(events) == 1, events
    return events[0]


class FormatterTests(SynchronousTestCase):
    def line(self, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        text = event_as_line(event, **kwargs)
        self.assertTrue(text.endswith("\n"))
        self.assertNotIn("\n", text[:-1])
        parsed: dict[str, Any] = json.loads(text)
        return parsed

    def test_a_plain_line_has_time_level_namespace_message_and_nothing_else(self) -> None:
        event = emitted(lambda observer: Logger(namespace="mediaproxy.x", observer=observer).info(
            "hello {who}", who="world", audio=b"\x00\xff" * 80, transport=object()))
        event["log_time"] = 1764590400.1234  # 2025-12-01T12:00:00.123Z
        line = self.line(event)
        self.assertEqual(list(line), ["time", "level", "namespace", "message"])
        self.assertEqual(line, {"time": "2025-12-01T12:00:00.123Z", "level": "info", "namespace": "mediaproxy.x",
                                "message": "hello world"})

    def test_each_level_by_name(self) -> None:
        for level in LogLevel.iterconstants():
            event = emitted(lambda observer, level=level: Logger(observer=observer).emit(level, "x"))
            self.assertEqual(self.line(event)["level"], level.name)

    def test_a_call_scoped_line_carries_the_four_fields_in_order(self) -> None:
        scope = CallScope("twilio", "openai", "CA1")
        event = emitted(lambda observer: _observed(CallLogger(scope, "mediaproxy.calls.bridge"), observer).info(
            "call {call_id} started on {platform}"))
        line = self.line(event)
        self.assertEqual(list(line), ["time", "level", "namespace", "message", "call_id", "platform", "backend",
                                      "outcome"])
        self.assertEqual((line["call_id"], line["platform"], line["backend"], line["outcome"]),
                         ("CA1", "twilio", "openai", None))
        self.assertEqual(line["message"], "call CA1 started on twilio")
        self.assertEqual(line["namespace"], "mediaproxy.calls.bridge")

    def test_missing_call_fields_come_from_the_lookup(self) -> None:
        directory = CallDirectory()
        scope = CallScope("audiohook", "openai")
        scope.call_id = "abc"
        directory.started("abc", scope)
        event = {"log_format": "backend session closed", "log_level": LogLevel.info, "call_id": "abc",
                 "backend": "openai", "log_namespace": "mediaproxy.backends.openai_session"}
        scope.outcome = "completed"
        line = self.line(event, find_call=directory.fields)
        self.assertEqual((line["platform"], line["backend"], line["outcome"]), ("audiohook", "openai", "completed"))
        unknown = self.line({**event, "call_id": "nope"}, find_call=directory.fields)
        self.assertEqual((unknown["call_id"], unknown["platform"], unknown["outcome"]), ("nope", None, None))

    def test_secrets_are_redacted_in_every_field(self) -> None:
        secret = "sk-secret-0123456789"
        event = {"log_format": "failed: {detail}", "detail": f"bad key {secret}", "log_level": LogLevel.warn,
                 "call_id": secret, "log_namespace": secret}
        text = event_as_line(event, redact=Redactor([secret, "short"]))
        self.assertNotIn(secret, text)
        self.assertIn("bad key [secret]", text)

    def test_a_longer_secret_containing_a_shorter_is_replaced_whole(self) -> None:
        redact = Redactor(["abcdefgh", "abcdefgh-and-more"])
        self.assertEqual(redact("x abcdefgh-and-more y abcdefgh"), "x [secret] y [secret]")

    def test_a_failure_adds_its_traceback(self) -> None:
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            failure = Failure()
        event = emitted(lambda observer: Logger(observer=observer).failure("it broke", failure))
        line = self.line(event)
        self.assertEqual(line["level"], "critical")
        self.assertIn("ZeroDivisionError", line["traceback"])

    def test_hostile_text_stays_one_ascii_line(self) -> None:
        event = {"log_format": "{detail}", "detail": "a\nb\ud800\u00e9\"}", "log_level": LogLevel.info}
        text = event_as_line(event)
        text.encode("ascii")
        self.assertEqual(json.loads(text)["message"], "a\nb\ud800\u00e9\"}")

    def test_a_legacy_event_and_a_bad_format_still_give_a_line(self) -> None:
        legacy = {"message": ("twistd", "says"), "isError": 0, "log_format": "twistd says",
                  "log_level": LogLevel.info, "log_time": 0}
        self.assertEqual(self.line(legacy)["message"], "twistd says")
        broken = self.line({"log_format": "{missing", "log_level": LogLevel.info})
        self.assertIn("missing", broken["message"])

    def test_the_observer_writes_and_flushes_each_event(self) -> None:
        stream = io.StringIO()
        observer = JsonLogObserver(stream, secrets=["sk-secret-0123456789"])
        observer({"log_format": "key sk-secret-0123456789", "log_level": LogLevel.info})
        self.assertEqual(json.loads(stream.getvalue())["message"], "key [secret]")


class CallScopeTests(SynchronousTestCase):
    def test_an_explicit_field_wins_and_the_outcome_follows_the_scope(self) -> None:
        scope = CallScope("twilio", "echo")
        event = emitted(lambda observer: _observed(CallLogger(scope, "n"), observer).info("x"))
        self.assertEqual((event["call_id"], event["outcome"]), (None, None))
        scope.call_id, scope.outcome = "CA9", "drained"
        logger = CallLogger(scope, "n")
        event = emitted(lambda observer: _observed(logger, observer).info("x", backend="other"))
        self.assertEqual((event["call_id"], event["backend"], event["outcome"]), ("CA9", "other", "drained"))

    def test_the_directory_keeps_live_calls_and_a_bounded_number_of_ended_ones(self) -> None:
        directory = CallDirectory()
        live = CallScope("p", "b", "live")
        directory.started("live", live)
        for n in range(RECENTLY_ENDED + 10):
            scope = CallScope("p", "b", f"c{n}")
            directory.started(f"c{n}", scope)
            directory.ended(f"c{n}", scope)
        self.assertIs(directory.find("live"), live)
        self.assertIsNone(directory.find("c0"))
        self.assertIsNotNone(directory.find(f"c{RECENTLY_ENDED + 9}"))
        self.assertEqual(len(directory), RECENTLY_ENDED + 1)


def _observed(logger: CallLogger, observer: Any) -> CallLogger:
    logger.observer = observer
    return logger


def json_config(**log: str) -> Any:
    return parse_config("test.ini", {
        "proxy": {"listen": "tcp:0:interface=127.0.0.1", "public_url": PUBLIC_URL},
        "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
        "log": log,
        "platform:twilio": {"path": "/twilio", "backend": "echo", "auth_token": "${TOKEN}"},
        "backend:echo": {"type": "echo"},
    }, {"TOKEN": TWILIO_TOKEN})


class ServiceObserverTests(SynchronousTestCase):
    def test_json_format_sets_the_applications_log_observer(self) -> None:
        stream = io.StringIO()
        service = MediaProxyService(json_config(format="json"), reactor, tune_gc=False, log_stream=stream)
        application = Application("mediaproxy")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        self.assertIs(observer, service.log_observer)
        observer({"log_format": f"token {TWILIO_TOKEN}", "log_level": LogLevel.info})
        self.assertEqual(json.loads(stream.getvalue())["message"], "token [secret]")

    def test_text_format_leaves_twistds_observer(self) -> None:
        service = MediaProxyService(json_config(), reactor, tune_gc=False, log_stream=io.StringIO())
        application = Application("mediaproxy")
        service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_the_config_knows_which_values_came_from_the_environment(self) -> None:
        self.assertEqual(json_config().secrets, (TWILIO_TOKEN,))
        self.assertEqual(json_config().log.format, "text")

    def test_a_credential_written_in_the_file_is_a_secret_too(self) -> None:
        config = parse_config("test.ini", {
            "proxy": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:audiocodes": {"path": "/ac", "backend": "echo", "token": "literal-token-123"},
            "backend:echo": {"type": "echo", "mode": "${MODE}"},
        }, {"MODE": "parrot"})
        self.assertEqual(config.secrets, ("literal-token-123", "parrot"))


class LogStreamTests(SynchronousTestCase):
    """Where the JSON lines go: where twistd's own observer would write them."""

    def stream(self, **twistd: Any) -> Any:
        options = Options()
        options.parent = {"logfile": None, "nodaemon": 0, "syslog": 0, **twistd}
        return twistd_log_stream(options)

    def test_stdout_with_nodaemon_or_a_dash(self) -> None:
        self.assertIs(self.stream(nodaemon=1), sys.stdout)
        self.assertIs(self.stream(logfile="-"), sys.stdout)

    def test_the_logfile_otherwise_written_as_text_lines(self) -> None:
        path = FilePath(self.mktemp())
        stream = self.stream(logfile=path.path, nodaemon=1)
        self.addCleanup(stream.close)
        JsonLogObserver(stream)({"log_format": "to the file", "log_level": LogLevel.info})
        self.assertEqual(json.loads(path.getContent())["message"], "to the file")

    def test_none_outside_twistd_and_with_syslog(self) -> None:
        self.assertIsNone(twistd_log_stream(Options()))
        self.assertIsNone(self.stream(syslog=1, nodaemon=1))


CONFIG = """
[proxy]
listen = tcp:{port}:interface=127.0.0.1
public_url = {public_url}
drain_seconds = 1
workers = {workers}
[metrics]
listen = tcp:{metrics}:interface=127.0.0.1
[log]
format = json
[platform:twilio]
path = /twilio
backend = openai
auth_token = ${{TWILIO_AUTH_TOKEN}}
[backend:openai]
type = openai-realtime
url = {fake}
api_key = ${{OPENAI_API_KEY}}
transcription_model =
reconnect_attempts = 1
keepalive_seconds = 0
"""


class JsonLogProcessTests(TestCase):
    timeout = 60

    def test_every_line_is_json_and_call_lines_carry_the_call_fields(self) -> Any:
        return self.one_call(workers=1)

    @inlineCallbacks
    def test_with_workers_the_supervisor_passes_on_each_workers_json_lines(self) -> Any:
        lines = yield self.one_call(workers=2)
        relayed = [line for line in lines if "worker" in line]
        self.assertEqual({line["worker"] for line in relayed if "mediaproxy ready" in line["message"]}, {"0", "1"})
        call_lines = [line for line in lines if "call_id" in line]
        self.assertEqual(len({line["worker"] for line in call_lines}), 1)  # the call lives on one worker
        for line in lines:
            self.assertEqual(list(line)[-1] == "worker", line in relayed)
        self.assertTrue(any("supervisor ready" in line["message"] and "worker" not in line for line in lines))

    @inlineCallbacks
    def one_call(self, workers: int) -> Any:
        """A call through a real twistd with ``workers``; the parsed log lines (every line
        checked: JSON, the call's fields, no secret)."""
        fake = FakeRealtimeServer(reactor, api_key=OPENAI_KEY)
        fake_url = fake.listen()
        self.addCleanup(fake.stop)
        port, metrics = free_port(), free_port()
        path = os.path.abspath(self.mktemp())
        FilePath(path).setContent(CONFIG.format(port=port, metrics=metrics, fake=fake_url, workers=workers,
                                                public_url=PUBLIC_URL).encode())
        process = Collect()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        env = {**os.environ, "PYTHONPATH": ROOT.path, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
               "OPENAI_API_KEY": OPENAI_KEY}
        reactor.spawnProcess(process, sys.executable, [sys.executable, twistd, "-n", "--pidfile=", "mediaproxy",
                                                       "--config", path], env=env, path=ROOT.path)
        yield process.wait_for(b"mediaproxy ready")
        if workers > 1:
            yield process.wait_for(b"supervisor ready")
            for worker in range(workers):  # each worker's ready line, passed on
                yield process.wait_for(f'metrics on tcp:{metrics}:interface=127.0.0.1","worker":"{worker}"}}'.encode())

        # A refused upgrade (wrong signature), then a whole call.
        bad = ScriptedTwilioFactory(f"ws://127.0.0.1:{port}/twilio", headers={"X-Twilio-Signature": "AAAA"})
        connectWS(bad)
        yield bad.closed
        signature = twilio_sign(TWILIO_TOKEN, f"{PUBLIC_URL}/twilio")
        call = ScriptedTwilioFactory(f"ws://127.0.0.1:{port}/twilio", headers={"X-Twilio-Signature": signature})
        connectWS(call)
        client = yield call.opened
        yield fake.when(lambda: any(c.received for c in fake.connections))
        client.send_audio(quiet_frames(10, seed=1))
        yield fake.when(lambda: sum(c.input_bytes for c in fake.connections) >= 1600)
        client.send({"event": "stop", "streamSid": "MZ1"})
        yield call.closed
        yield process.wait_for(b"ended on twilio")
        process.transport.signalProcess("TERM")
        yield process.ended

        output = process.output.decode()
        lines = [json.loads(line) for line in output.splitlines()]  # every line, or this fails
        self.assertGreater(len(lines), 5)
        for line in lines:
            self.assertEqual(list(line)[:4], ["time", "level", "namespace", "message"], line)
        call_lines = [line for line in lines if "call_id" in line]
        for line in call_lines:
            self.assertEqual(list(line)[4:8], ["call_id", "platform", "backend", "outcome"], line)
            self.assertEqual((line["call_id"], line["platform"], line["backend"]), ("CA1", "twilio", "openai"),
                             line)
        messages = [line["message"] for line in call_lines]
        self.assertTrue(any("started on twilio" in m for m in messages), messages)
        ended = [line for line in call_lines if "ended on twilio" in line["message"]]
        self.assertEqual([line["outcome"] for line in ended], ["completed"])
        backend_lines = [line for line in call_lines if line["namespace"].startswith("mediaproxy.backends")]
        self.assertTrue(backend_lines, messages)  # found through the call directory
        self.assertTrue(any("twistd" in line["message"] and "starting up" in line["message"] for line in lines))
        self.assertTrue(any("upgrade refused" in line["message"] for line in lines))
        for secret in (TWILIO_TOKEN, OPENAI_KEY):
            self.assertNotIn(secret, output)
        return lines
