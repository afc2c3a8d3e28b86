"""A late reactor for clock-driven tests: every timer fires up to ``max_late`` seconds after it
was due (random, seeded), the way a busy reactor delivers ticks; and the gap check for paced
playback."""

from __future__ import annotations

import random
from collections.abc import Sequence

from twisted.internet.task import Clock


def advance_late(clock: Clock, seconds: float, rng: random.Random, max_late: float = 0.010) -> None:
    """Run ``clock`` for ``seconds``, firing each delayed call ``rng.uniform(0, max_late)`` after
    its due time (calls due within that window fire together, as they would)."""
    end = clock.seconds() + seconds
    while True:
        calls = clock.getDelayedCalls()
        if not calls:
            break
        due = min(call.getTime() for call in calls)
        fire_at = max(due, clock.seconds()) + rng.uniform(0.0, max_late)
        if fire_at > end:
            break
        clock.advance(fire_at - clock.seconds())
    if end > clock.seconds():
        clock.advance(end - clock.seconds())


def gaps(send_times: Sequence[float], packet_s: float) -> list[int]:
    """The packets that arrived after the platform needed them: playback starts with the first
    packet and runs without a pause, so packet ``n`` must have been sent by ``t0 + n * packet``."""
    if not send_times:
        return []
    t0 = send_times[0]
    return [n for n, sent in enumerate(send_times) if sent > t0 + n * packet_s + 1e-9]


def max_ahead(send_times: Sequence[float], packet_s: float) -> float:
    """How far ahead of its play time any packet was sent (the burst check), in seconds."""
    if not send_times:
        return 0.0
    t0 = send_times[0]
    return max(t0 + n * packet_s - sent for n, sent in enumerate(send_times))
