"""The documentation travels with the code: generated parts match, nothing points outside the
repository, every module says what it is for."""

from __future__ import annotations

import ast
import re
import subprocess

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.config_reference import render

ROOT = FilePath(__file__).parent().parent()


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT.path, capture_output=True, text=True, check=False)
    if out.returncode != 0:  # not a checkout (an sdist): check what is on disk
        return [p.path[len(ROOT.path) + 1:] for p in ROOT.walk() if p.isfile() and "/." not in p.path]
    return [line for line in out.stdout.splitlines() if line]


class ConfigurationReferenceTests(SynchronousTestCase):
    def test_reference_is_generated_from_the_schema(self) -> None:
        on_disk = ROOT.descendant(["docs", "configuration.md"]).getContent().decode("utf-8")
        self.assertEqual(on_disk, render(), "regenerate: python -m mediaproxy.config_reference > docs/configuration.md")

    def test_every_key_has_a_doc(self) -> None:
        for line in render().splitlines():
            if line.startswith("| `"):
                self.assertFalse(line.endswith("|  |"), line)


class SelfContainedTests(SynchronousTestCase):
    OUTSIDE = re.compile(r"\.\./shared|shared/protocols|DESIGN\.md|DESIGN §|\bissue #?\d+|\bissues? \d+\b")

    def test_nothing_points_outside_the_repository(self) -> None:
        found = []
        for name in tracked_files():
            if not name.endswith((".py", ".md", ".ini", ".sh", ".toml", ".cfg", ".txt", ".html", ".yaml", ".json")):
                continue
            if name == "tests/test_docs.py":
                continue
            text = ROOT.preauthChild(name).getContent().decode("utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                if self.OUTSIDE.search(line):
                    found.append(f"{name}:{number}: {line.strip()}")
        self.assertEqual(found, [])

    def test_every_module_has_a_docstring(self) -> None:
        missing = []
        for path in ROOT.child("mediaproxy").walk():
            if path.basename().endswith(".py"):
                tree = ast.parse(path.getContent())
                if not ast.get_docstring(tree) and tree.body:
                    missing.append(path.path)
        self.assertEqual(missing, [])


class MetricsReferenceTests(SynchronousTestCase):
    def test_every_exported_family_is_documented_and_nothing_else(self) -> None:
        from mediaproxy.metrics import Metrics, SupervisorMetrics

        registries = (Metrics().registry, SupervisorMetrics().registry)  # a proxy's, a supervisor's
        exported = {family.name for registry in registries for family in registry.collect()}
        text = ROOT.descendant(["docs", "metrics.md"]).getContent().decode("utf-8")
        names = re.findall(r"^\| `((?:mediaproxy|process)_\w+)`", text, re.M)
        documented = {name.removesuffix("_total") for name in names}
        self.assertEqual(documented, exported)
