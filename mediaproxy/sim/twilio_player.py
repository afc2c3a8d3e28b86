"""`TwilioPlayer`: what Twilio's player does with the media a stream sends it (sans IO).

Twilio buffers whatever it is sent and plays it in order at real time (8 kHz µ-law, 8 bytes per
ms); a ``mark`` is echoed when playback reaches it (at once when nothing is queued before it);
``clear`` empties the buffer and echoes every pending mark at once. That is the simulator's
general :class:`~mediaproxy.sim.playout.Playout` at µ-law 8 kHz; the simulator and the tests'
scripted Twilio clients share it and send the echoes it reports.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from mediaproxy.sim.playout import Playout

__all__ = ["TwilioPlayer", "BYTES_PER_MS"]

BYTES_PER_MS = 8


class TwilioPlayer(Playout):
    """One stream's player. ``on_mark(name)`` is called for every echo, at the reactor time it
    is due. With ``keep_audio`` the received audio is kept, for :meth:`heard`."""

    def __init__(self, clock: IReactorTime, on_mark: Callable[[str], None], keep_audio: bool = False) -> None:
        super().__init__(clock, on_mark, keep_audio, BYTES_PER_MS, 1)
