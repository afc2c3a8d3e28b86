"""Per-response bookkeeping for the playout: what was sent, what was heard, and
which responses a barge-in cut (so their late audio is dropped)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PlayedAudio:
    """What the caller heard of one response when it was interrupted (milliseconds)."""

    response_id: str
    played_ms: int
    done: bool
    """The response had delivered all its audio before the interruption."""


class ResponseProgress:
    """One response's audio: whether it is complete, milliseconds sent, and the call's stream
    position (ms) at which its first packet went out (None until then)."""

    __slots__ = ("id", "done", "start_pos_ms", "sent_ms")

    def __init__(self, response_id: str) -> None:
        self.id = response_id
        self.done = False
        self.start_pos_ms: float | None = None
        self.sent_ms = 0.0


class ResponseLedger:
    """The recent responses of one call (at most ``recent`` are remembered, oldest forgotten
    first unless still queued) and the ids of the last ``cancelled_memory`` cut responses."""

    def __init__(self, recent: int = 8, cancelled_memory: int = 64) -> None:
        self._recent = recent
        self._responses: OrderedDict[str, ResponseProgress] = OrderedDict()
        self._cancelled: deque[str] = deque(maxlen=cancelled_memory)
        self._cancelled_set: set[str] = set()

    def get(self, response_id: str) -> ResponseProgress | None:
        return self._responses.get(response_id)

    def open(self, response_id: str, still_queued: Callable[[ResponseProgress], bool]) -> ResponseProgress:
        """Start tracking a new response; forget the oldest ones beyond ``recent`` unless
        ``still_queued`` says their audio is still waiting to be sent."""
        response = ResponseProgress(response_id)
        self._responses[response_id] = response
        while len(self._responses) > self._recent:
            oldest = next(iter(self._responses.values()))
            if still_queued(oldest):
                break
            del self._responses[oldest.id]
        return response

    def has_open(self) -> bool:
        """Some remembered response has not delivered all its audio."""
        return any(not response.done for response in self._responses.values())

    def is_cancelled(self, response_id: str) -> bool:
        return response_id in self._cancelled_set

    def cut_unfinished(self) -> None:
        """Barge-in: remember every unfinished response as cut, and forget them all."""
        for response in self._responses.values():
            if not response.done and response.id not in self._cancelled_set:
                if len(self._cancelled) == self._cancelled.maxlen:
                    self._cancelled_set.discard(self._cancelled[0])
                self._cancelled.append(response.id)
                self._cancelled_set.add(response.id)
        self._responses.clear()

    def clear(self) -> None:
        self._responses.clear()

    def heard(self, position_ms: float) -> PlayedAudio | None:
        """The response playing at stream position ``position_ms`` and how much of it was heard
        (None when no response had started playing)."""
        heard: ResponseProgress | None = None
        for response in self._responses.values():
            if response.start_pos_ms is not None and response.start_pos_ms <= position_ms:
                heard = response
        if heard is None or heard.start_pos_ms is None:
            return None
        played = min(max(position_ms - heard.start_pos_ms, 0.0), heard.sent_ms)
        return PlayedAudio(
            response_id=heard.id,
            played_ms=round(played),
            done=heard.done,
        )
