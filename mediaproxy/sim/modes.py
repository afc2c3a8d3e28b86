"""The table of simulator modes: one platform each, one module each.

A mode is a :class:`SimMode` named ``MODE`` in its own module (``mediaproxy/sim/<name>.py``): the
:class:`~mediaproxy.sim.caller.SimCall` subclass that speaks the platform, the URL path the
default configuration serves it on, and the mode's own command-line options. Adding a platform to
``mediaproxy-sim`` is that module plus one line in :data:`MODE_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mediaproxy.sim.caller import SimCall

__all__ = ["SimMode", "MODE_MODULES", "load_modes"]

#: Subcommand -> the module whose ``MODE`` it is, in the order ``--help`` lists them.
MODE_MODULES: dict[str, str] = {
    "twilio": "mediaproxy.sim.twilio",
    "audiohook": "mediaproxy.sim.audiohook",
    "connector": "mediaproxy.sim.connector",
    "audiocodes": "mediaproxy.sim.audiocodes",
}


def _no_options(parser: argparse.ArgumentParser) -> None:
    """A mode without options of its own."""


@dataclass(frozen=True)
class SimMode:
    """One ``mediaproxy-sim`` subcommand."""

    name: str
    call: type[SimCall]
    """The call class; constructed as ``call(url, script, reactor, index, start_at, options, ...)``."""
    help: str
    default_path: str
    """Where etc/mediaproxy.ini serves this platform (for ``--help`` and the README)."""
    add_options: Callable[[argparse.ArgumentParser], None] = _no_options
    chunk_ms: int = 20
    """How much caller audio the platform puts in one message by default (``--chunk-ms``)."""
    plays_audio: bool = True
    """False for listen-only platforms (AudioHook Monitor): no replies are expected."""


def load_modes() -> dict[str, SimMode]:
    """Every mode of :data:`MODE_MODULES`, imported."""
    modes = {}
    for name, module in MODE_MODULES.items():
        mode = importlib.import_module(module).MODE
        if not isinstance(mode, SimMode) or mode.name != name:
            raise RuntimeError(f"{module}.MODE is not the SimMode {name!r}")
        modes[name] = mode
    return modes
