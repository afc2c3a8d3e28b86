"""Config validation, the twistd plugin, and the real twistd process."""

from __future__ import annotations

import base64
import os
import re
import sys
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.plugin import getPlugins
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mediaproxy.config import ConfigError, load_config

ROOT = FilePath(__file__).parent().parent()
GOOD = """
[proxy]
listen = tcp:0:interface=127.0.0.1
[metrics]
listen = tcp:0:interface=127.0.0.1
[platform:twilio]
path = /twilio
backend = echo
[backend:echo]
type = echo
"""


class ConfigTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        FilePath(path).setContent(text.encode())
        return path

    def assertConfigError(self, text: str, section: str | None, key: str | None, words: str,
                          env: dict[str, str] | None = None) -> ConfigError:
        path = self.write(text)
        error = self.assertRaises(ConfigError, load_config, path, env or {})
        self.assertEqual((error.path, error.section, error.key), (path, section, key))
        self.assertIn(words, str(error))
        self.assertTrue(str(error).startswith(path))
        return error

    def test_default_config_loads(self) -> None:
        config = load_config(ROOT.child("etc").child("mediaproxy.ini").path, {})
        self.assertEqual([p.path for p in config.platforms],
                         ["/twilio", "/audiohook", "/audiohook/connector", "/audiocodes", "/telnyx", "/plivo",
                          "/exotel", "/vonage", "/jambonz", "/asterisk", "/freeswitch", "/browser"])
        # mediaproxy-sim's defaults are the file's development credentials (README "Try it").
        from mediaproxy.sim.audiocodes import DEV_TOKEN
        from mediaproxy.sim.genesys import DEV_API_KEY, DEV_CLIENT_SECRET

        by_path = {p.path: p for p in config.platforms}
        for path in ("/audiohook", "/audiohook/connector"):
            self.assertEqual(by_path[path].options.api_key, DEV_API_KEY)
            self.assertEqual(by_path[path].options.client_secret, base64.b64decode(DEV_CLIENT_SECRET))
        self.assertEqual(by_path["/audiocodes"].options.token, DEV_TOKEN)
        from mediaproxy.sim import asterisk, exotel, freeswitch, jambonz, modes, telnyx, vonage

        self.assertEqual(by_path["/telnyx"].options.stream_auth_token, telnyx.DEV_TOKEN)
        self.assertEqual((by_path["/exotel"].options.api_key, by_path["/exotel"].options.api_token),
                         (exotel.DEV_API_KEY, exotel.DEV_API_TOKEN))
        self.assertEqual(by_path["/vonage"].options.authorization, vonage.DEV_AUTHORIZATION)
        self.assertEqual((by_path["/jambonz"].options.username, by_path["/jambonz"].options.password),
                         (jambonz.DEV_USERNAME, jambonz.DEV_PASSWORD))
        self.assertEqual((by_path["/asterisk"].options.username, by_path["/asterisk"].options.password),
                         (asterisk.DEV_USERNAME, asterisk.DEV_PASSWORD))
        self.assertEqual(by_path["/freeswitch"].options.authorization, freeswitch.DEV_AUTHORIZATION)
        # Every simulator mode's default URL is served by this file.
        self.assertEqual({mode.default_path for mode in modes.load_modes().values()} - set(by_path), set())
        text = ROOT.child("etc").child("mediaproxy.ini").getContent().decode()
        for value in (telnyx.DEV_TOKEN, exotel.DEV_API_KEY, vonage.DEV_AUTHORIZATION, jambonz.DEV_PASSWORD,
                      asterisk.DEV_PASSWORD, freeswitch.DEV_AUTHORIZATION):
            lines = text.splitlines()
            at = next(i for i, line in enumerate(lines) if line.endswith(value))
            self.assertIn("DEVELOPMENT VALUE", " ".join(lines[at - 2:at]), lines[at])  # marked right above
        self.assertEqual(config.backends["echo"].type.name, "echo")
        self.assertFalse(config.log.transcripts, "transcripts are personal data: off by default")
        self.assertEqual(config.playout.frame_ms, 20)

    def test_example_configs_with_every_commented_platform_enabled(self) -> None:
        """The commented platform examples in etc/*.ini are valid when an operator enables them."""
        env = {"OPENAI_API_KEY": "sk-test", "AUDIOHOOK_API_KEY": "bXlBcGlLZXk=",
               "AUDIOHOOK_CLIENT_SECRET": "c2VjcmV0", "AUDIOCODES_TOKEN": "t", "TWILIO_AUTH_TOKEN": "t"}
        keys = ("type|path|backend|mode|api_key|client_secret|packet_ms|token|barge_in|resume_seconds"
                "|allow_unauthenticated|stream_auth_token|l16_byte_order|auth_token|api_token"
                "|signature_secret|authorization|username|password"
                "|encodings"
                "|marks|sample_rate")
        for name in ("mediaproxy.ini", "openai.ini"):
            text = ROOT.child("etc").child(name).getContent().decode()
            enabled = re.sub(rf"^; ?(\[platform:[^\]]+\]|(?:{keys}) += .*)$", r"\1", text, flags=re.M)
            path = self.write(enabled)
            config = load_config(path, env)
            self.assertGreaterEqual(len(config.platforms), 3, name)
            self.assertEqual(len({p.path for p in config.platforms}), len(config.platforms))

    def test_the_bot_example_loads_and_the_websocket_backend_wants_a_key(self) -> None:
        config = load_config(ROOT.child("etc").child("bot.ini").path, {"BOT_API_KEY": "k", "TWILIO_AUTH_TOKEN": "t"})
        bot = config.backends["bot"]
        self.assertEqual((bot.type.name, bot.options.audio_format, bot.common.tools),
                         ("websocket", "l16/16000", ("end_call", "transfer_call")))
        section = "[backend:bot]\ntype = websocket\nurl = ws://127.0.0.1:9000/bot\n"
        text = GOOD.replace("backend = echo", "backend = bot") + section
        self.assertConfigError(text, "backend:bot", "api_key", "allow_unauthenticated")
        config = load_config(self.write(text + "allow_unauthenticated = true\n"), {})
        self.assertEqual(config.backends["bot"].options.api_key, "")

    def test_environment_substitution(self) -> None:
        text = GOOD.replace("[metrics]", "public_url = wss://proxy.example.com\n[metrics]")
        path = self.write(text + "[platform:x]\ntype = twilio\npath = /x\nbackend = echo\nauth_token = ${TOKEN}\n")
        config = load_config(path, {"TOKEN": "s3cret"})
        self.assertEqual(config.platforms[1].options.auth_token, "s3cret")

    def test_signature_check_needs_public_url(self) -> None:
        self.assertConfigError(GOOD.replace("backend = echo", "backend = echo\nauth_token = t"), "proxy", "public_url",
                               "[platform:twilio]")

    def test_missing_environment_variable(self) -> None:
        self.assertConfigError(GOOD.replace("path = /twilio", "path = ${MISSING}"), "platform:twilio", "path",
                               "MISSING is not set")

    def test_unknown_section(self) -> None:
        self.assertConfigError(GOOD + "[proxi]\n", "proxi", None, "unknown section")

    def test_unknown_key(self) -> None:
        self.assertConfigError(GOOD.replace("[proxy]", "[proxy]\nlisten_port = 3"), "proxy", "listen_port",
                               "unknown key")

    def test_bad_endpoint(self) -> None:
        bad = GOOD.replace("listen = tcp:0:interface=127.0.0.1\n[metrics]", "listen = tpc:80\n[metrics]")
        self.assertConfigError(bad,
                               "proxy", "listen", "bad endpoint")

    def test_missing_backend(self) -> None:
        self.assertConfigError(GOOD.replace("backend = echo", "backend = openai"), "platform:twilio", "backend",
                               "no [backend:openai]")

    def test_bad_number(self) -> None:
        self.assertConfigError(GOOD + "[playout]\nlead_ms = soon\n", "playout", "lead_ms", "whole number")
        self.assertConfigError(GOOD + "[playout]\nmax_buffer_ms = 10\n", "playout", "max_buffer_ms", "at least")

    def test_message_ms_is_whole_frames(self) -> None:
        self.assertConfigError(GOOD + "[playout]\nmessage_ms = 50\n", "playout", "message_ms", "multiple of frame_ms")

    def test_unknown_platform_type(self) -> None:
        self.assertConfigError(GOOD + "[platform:nosuch]\npath = /v\nbackend = echo\n", "platform:nosuch", "type",
                               "unknown platform type")

    def test_duplicate_path(self) -> None:
        self.assertConfigError(GOOD + "[platform:t2]\ntype = twilio\npath = /twilio\nbackend = echo\n",
                               "platform:t2", "path", "already used")

    def test_no_platform(self) -> None:
        self.assertConfigError("[backend:echo]\ntype = echo\n", None, None, "no [platform:NAME]")

    def test_required_key_missing(self) -> None:
        self.assertConfigError(GOOD.replace("path = /twilio\n", ""), "platform:twilio", "path", "required")

    def test_open_listener_needs_a_credential(self) -> None:
        """A platform without a credential on a listener other hosts reach would let anyone spend
        the operator's AI minutes: refused unless allowed in so many words."""
        open_listener = GOOD.replace("listen = tcp:0:interface=127.0.0.1\n[metrics]", "listen = tcp:8080\n[metrics]")
        error = self.assertConfigError(open_listener, "platform:twilio", "auth_token", "allow_unauthenticated")
        self.assertIn("tcp:8080", str(error))
        path = self.write(open_listener.replace("backend = echo", "backend = echo\nallow_unauthenticated = true"))
        self.assertEqual(len(load_config(path, {}).platforms), 1)
        path = self.write(open_listener.replace("[proxy]", "[proxy]\npublic_url = wss://p.example.com")
                          .replace("backend = echo", "backend = echo\nauth_token = t"))
        self.assertEqual(load_config(path, {}).platforms[0].options.auth_token, "t")
        for local in ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=\\:\\:1", "unix:/run/mediaproxy.sock"):
            text = GOOD.replace("listen = tcp:0:interface=127.0.0.1\n[metrics]", f"listen = {local}\n[metrics]")
            path = self.write(text)
            self.assertEqual(len(load_config(path, {}).platforms), 1, local)

    def test_tools_and_transfer_targets(self) -> None:
        text = (GOOD.replace("type = echo", "type = echo\ntools = end_call, transfer_call, lookup_order")
                .replace("backend = echo", "backend = echo\ntransfer_targets = agent=+15551230000, billing=sip:b@pbx")
                + '[tool:lookup_order]\nurl = https://tools.example.com/orders\ndescription = Find an order\n'
                + 'parameters = {"type": "object", "properties": {"order": {"type": "string"}}}\n'
                + "secret = ${TOOL_SECRET}\ntimeout_ms = 1500\n")
        config = load_config(self.write(text), {"TOOL_SECRET": "k"})
        self.assertEqual(config.backends["echo"].common.tools, ("end_call", "transfer_call", "lookup_order"))
        self.assertEqual(dict(config.platforms[0].transfer_targets), {"agent": "+15551230000", "billing": "sip:b@pbx"})
        tool = config.tools["lookup_order"]
        self.assertEqual((tool.url, tool.timeout_ms, tool.secret), ("https://tools.example.com/orders", 1500, "k"))
        self.assertEqual(tool.parameters["properties"], {"order": {"type": "string"}})

    def test_tool_errors_name_the_key(self) -> None:
        self.assertConfigError(GOOD.replace("type = echo", "type = echo\ntools = fly"), "backend:echo", "tools",
                               "[tool:fly]")
        self.assertConfigError(GOOD.replace("type = echo", "type = echo\ntools = transfer_call"), "platform:twilio",
                               "transfer_targets", "offers transfer_call")
        self.assertConfigError(GOOD.replace("backend = echo", "backend = echo\ntransfer_targets = agent"),
                               "platform:twilio", "transfer_targets", "name=value")
        tool = "[tool:t]\nurl = https://x.example.com\ndescription = d\n"
        self.assertConfigError(GOOD + tool.replace("https://x.example.com", "http://x.example.com"), "tool:t", "url",
                               "loopback")
        self.assertConfigError(GOOD + tool + "parameters = [1]\n", "tool:t", "parameters", "JSON object")
        self.assertConfigError(GOOD + tool.replace("[tool:t]", "[tool:end_call]"), "tool:end_call", None, "built-in")
        self.assertConfigError(GOOD + "[tool:t]\ndescription = d\n", "tool:t", "url", "required")

    def test_not_an_ini_file(self) -> None:
        self.assertConfigError("listen = 1\n", None, None, "not a valid ini file")


class PluginTests(SynchronousTestCase):
    def test_plugin_is_discovered(self) -> None:
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("mediaproxy", makers)
        options = makers["mediaproxy"].options()
        options.parseOptions(["--config", ROOT.child("etc").child("mediaproxy.ini").path])
        self.assertEqual(options.loaded.platforms[0].name, "twilio")


class Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int] = Deferred()
        self.seen: list[tuple[bytes, Deferred[None]]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for needle, d in list(self.seen):
            if needle in self.output:
                self.seen.remove((needle, d))
                d.callback(None)

    errReceived = outReceived

    def wait_for(self, needle: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.seen.append((needle, d))
        self.outReceived(b"")
        return d

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode if reason.value.exitCode is not None else -(reason.value.signal or 0))


class TwistdProcessTests(TestCase):
    """The real ``twistd mediaproxy`` process, as an operator runs it."""

    timeout = 60

    def twistd(self, *args: str) -> Collect:
        collect = Collect()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        reactor.spawnProcess(collect, twistd, [twistd, "-n", "--pidfile=", "mediaproxy", *args],
                             env=dict(os.environ), path=ROOT.path)
        return collect

    @inlineCallbacks
    def test_bad_config_exits_nonzero_naming_file_section_key(self) -> Any:
        path = os.path.abspath(self.mktemp())
        FilePath(path).setContent(GOOD.replace("[proxy]", "[proxy]\nbogus = 1").encode())
        process = self.twistd("--config", path)
        code = yield process.ended
        self.assertNotEqual(code, 0)
        self.assertIn(f"{path}: [proxy] bogus: unknown key".encode(), process.output)

    @inlineCallbacks
    def test_starts_and_stops_cleanly(self) -> Any:
        path = os.path.abspath(self.mktemp())
        FilePath(path).setContent(GOOD.encode())
        process = self.twistd("--config", path)
        yield process.wait_for(b"mediaproxy ready")
        process.transport.signalProcess("TERM")
        code = yield process.ended
        # twistd shuts down cleanly, then re-raises SIGTERM so its exit status says why it ended.
        self.assertEqual(code, -15, process.output.decode(errors="replace")[-2000:])
        self.assertIn(b"Server Shut Down", process.output)
        self.assertNotIn(b"Traceback", process.output)
