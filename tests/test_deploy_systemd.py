"""deploy/systemd/mediaproxy.service: the same command line as the container's entry point (only
the venv's twistd), an unprivileged user, the secrets from an environment file, SIGTERM to stop
with a stop timeout longer than the drain, and a restart on failure."""

from __future__ import annotations

import configparser
import shlex

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config import load_config
from tests.test_config import ROOT
from tests.test_deploy_container import IMAGE_INI, SECRETS, entry_point

UNIT = ROOT.descendant(["deploy", "systemd", "mediaproxy.service"])


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.getContent().decode(), source=UNIT.path)
    return parser


class SystemdUnitTests(SynchronousTestCase):
    def test_it_runs_the_container_command_line_from_the_venv(self) -> None:
        argv = shlex.split(unit()["Service"]["ExecStart"])
        self.assertTrue(argv[0].endswith("/bin/twistd"), argv)
        self.assertEqual(argv[1:], entry_point()[1:])

    def test_it_stops_with_sigterm_after_the_drain(self) -> None:
        service = unit()["Service"]
        self.assertEqual(service["KillSignal"], "SIGTERM")
        drain_s = load_config(IMAGE_INI.path, SECRETS).proxy.drain_seconds
        self.assertGreater(int(service["TimeoutStopSec"]), drain_s)
        self.assertEqual(service["Restart"], "on-failure")

    def test_it_runs_unprivileged_with_secrets_from_the_environment_file(self) -> None:
        service = unit()["Service"]
        self.assertNotIn(service["User"], ("root", "0"))
        self.assertTrue(service["EnvironmentFile"].startswith("/etc/mediaproxy/"))
        self.assertEqual(service["NoNewPrivileges"], "yes")
        self.assertEqual(unit()["Install"]["WantedBy"], "multi-user.target")
