"""The layers of the house, checked: each package imports only the layers below it, and the proxy
never imports the test fakes."""

from __future__ import annotations

import ast

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

PACKAGE = FilePath(__file__).parent().sibling("mediaproxy")

# What each part of mediaproxy may import (besides itself). Imports under ``if TYPE_CHECKING:``
# are annotations only and are not counted.
ALLOWED: dict[str, set[str]] = {
    "audio": set(),
    "options": set(),
    "metrics": set(),
    "outcome": set(),
    "transcripts": set(),
    "wsframe": set(),
    "strict_json": set(),
    "http_requests": set(),
    "platforms": {"audio", "options", "outcome", "transcripts", "http_requests", "strict_json"},
    "backends": {"audio", "options", "metrics", "transcripts", "http_requests", "wsframe", "strict_json"},
    "playout": {"audio", "platforms", "metrics"},
    "catalog": {"platforms", "backends"},
    "config": {"platforms", "backends", "catalog", "options"},
    "config_reference": {"catalog", "config", "options"},
    "calls": {"audio", "platforms", "backends", "playout", "metrics", "config", "outcome", "transcripts",
              "http_requests"},
    "server": {"calls", "platforms", "wsframe"},
    "workers": {"metrics"},
    "json_log": set(),
    "service": {"calls", "config", "json_log", "metrics", "playout", "server", "workers"},
    "supervisor": {"calls", "config", "json_log", "metrics", "server", "service", "workers"},
    "tap": {"config", "service", "supervisor", "workers"},
    "sim": {"audio"},
    "testing": {"audio", "transcripts"},
}


def imported_parts(tree: ast.Module) -> set[str]:
    """The ``mediaproxy.X`` parts a module imports at run time."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mediaproxy."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mediaproxy."))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(tree.body)
    return found


class LayerTests(SynchronousTestCase):
    def test_each_part_imports_only_the_layers_below(self) -> None:
        problems = []
        for path in PACKAGE.walk():
            if not path.basename().endswith(".py"):
                continue
            relative = path.segmentsFrom(PACKAGE)
            part = relative[0].removesuffix(".py")
            if part == "__init__":
                continue
            self.assertIn(part, ALLOWED, f"{'/'.join(relative)} belongs to no layer: add it to ALLOWED")
            for used in imported_parts(ast.parse(path.getContent())) - {part}:
                if used not in ALLOWED[part]:
                    problems.append(f"mediaproxy/{'/'.join(relative)} imports mediaproxy.{used}")
        self.assertEqual(problems, [])

    def test_the_checker_sees_imports(self) -> None:
        tree = ast.parse("from mediaproxy.calls import CallBridge\nif TYPE_CHECKING:\n    import mediaproxy.server\n"
                         "def f():\n    from mediaproxy.testing import fake_realtime\n")
        self.assertEqual(imported_parts(tree), {"calls", "testing"})
