"""Per-item and per-response bookkeeping for one OpenAI Realtime connection: what bot audio arrived
for each assistant item, which items and responses a barge-in cut (so their late deltas are
dropped), and where an interrupted item is truncated.

The dialect (:mod:`mediaproxy.backends.openai_dialect`) parses and produces the wire events and
asks this ledger what to do; the ledger knows nothing of JSON, base64 or event ids. Memory is
bounded: only the most recent items and cut responses are remembered (interrupts may come long
after an item's audio finished, because the playout is behind the server, so items outlive their
response).

Truncation rules (from the service's documented errors): ``audio_end_ms`` is a whole number of
milliseconds, never more than the audio received for the item (larger values are rejected); no
truncate when nothing was heard (the server refuses one at 0 ms) or when the caller heard the whole
finished item (a needless truncate makes the model repeat itself).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

REMEMBERED = 64
"""Items and cut responses remembered per connection (oldest forgotten first)."""


class ItemAudio:
    """What arrived for one assistant audio item: ``received_bytes`` in the session format;
    ``done`` once no more audio will come; ``interrupted`` once a barge-in cut it."""

    __slots__ = ("response_id", "content_index", "received_bytes", "done", "interrupted")

    def __init__(self, response_id: str, content_index: int) -> None:
        self.response_id = response_id
        self.content_index = content_index
        self.received_bytes = 0
        self.done = False
        self.interrupted = False


@dataclass(frozen=True)
class Truncation:
    """Where to cut an item the caller only partly heard (``audio_end_ms``: whole milliseconds
    from the start of the item's audio)."""

    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True)
class Cut:
    """What a barge-in on one item means: the response it belongs to (to cancel when still in
    progress) and the truncation to send, if any."""

    response_id: str
    truncation: Truncation | None


class RealtimeLedger:
    """The recent assistant items and cut responses of one connection.

    ``bytes_per_ms``: bytes of one millisecond of the session's audio format, to turn what arrived
    into milliseconds. ``remember``: how many items and cut responses are kept.
    """

    def __init__(self, bytes_per_ms: int, remember: int = REMEMBERED) -> None:
        self._bytes_per_ms = bytes_per_ms
        self._remember = remember
        self._items: OrderedDict[str, ItemAudio] = OrderedDict()
        self._cut_responses: OrderedDict[str, None] = OrderedDict()
        self.late_audio_bytes_dropped = 0
        """Bot audio that arrived for an interrupted item or cut response, in bytes."""

    # --- bot audio -----------------------------------------------------------------------------

    def audio_arrived(self, item_id: str, response_id: str, content_index: int, size: int) -> bool:
        """``size`` bytes of audio arrived for ``item_id``; True when they are to be played,
        False when the item or its response was cut (the bytes are counted as dropped).

        The per-delta path: one or two dict lookups, nothing else."""
        item = self._items.get(item_id)
        if item is None:
            if response_id in self._cut_responses:
                # An item the barge-in never saw: not remembered, so it cannot evict live ones.
                self.late_audio_bytes_dropped += size
                return False
            # int(): the field comes from the peer; a bad one fails the delta as malformed.
            item = self._items[item_id] = ItemAudio(response_id, int(content_index))
            while len(self._items) > self._remember:
                self._items.popitem(last=False)
        item.received_bytes += size
        if item.interrupted or response_id in self._cut_responses:
            self.late_audio_bytes_dropped += size
            return False
        return True

    def audio_done(self, item_id: str) -> bool:
        """The server says ``item_id``'s audio is complete; True when the bridge is to be told
        (the item is known, not already finished, and not interrupted)."""
        item = self._items.get(item_id)
        if item is None or item.done:
            return False
        item.done = True
        return not item.interrupted

    def response_finished(self, response_id: str) -> list[str]:
        """``response.done`` for ``response_id``: its items that had not finished, which the
        bridge must still hear are complete (a failed or cut-short response may never send
        ``output_audio.done``). Interrupted items are marked done but not returned."""
        finished = []
        for item_id, item in self._items.items():
            if item.response_id == response_id and not item.done:
                item.done = True
                if not item.interrupted:
                    finished.append(item_id)
        return finished

    def unfinished_items(self) -> list[str]:
        """Items whose audio started but did not finish and were not interrupted: what the
        bridge is still waiting on when the connection drops."""
        return [i for i, a in self._items.items() if not a.done and not a.interrupted]

    def received_ms(self, item_id: str) -> int:
        """Whole milliseconds of audio that arrived for ``item_id`` (0 when unknown)."""
        item = self._items.get(item_id)
        return 0 if item is None else item.received_bytes // self._bytes_per_ms

    # --- barge-in ------------------------------------------------------------------------------

    def cut_item(self, item_id: str, played_ms: float) -> Cut | None:
        """The caller heard ``played_ms`` of ``item_id`` and barged in. None when the item is
        unknown (an earlier connection's) or was already cut; otherwise the cut, with the
        truncation at min(played, received) whole milliseconds unless nothing or all of it was
        heard. The item's later audio is dropped from now on."""
        item = self._items.get(item_id)
        if item is None or item.interrupted:
            return None
        item.interrupted = True
        received_ms = item.received_bytes // self._bytes_per_ms
        end_ms = min(int(played_ms), received_ms)
        heard_all = item.done and played_ms >= received_ms
        truncation = Truncation(item_id, item.content_index, end_ms) if end_ms >= 1 and not heard_all else None
        return Cut(item.response_id, truncation)

    def cut_response(self, response_id: str) -> bool:
        """Drop every later delta of ``response_id`` (any of its items); True the first time."""
        if response_id in self._cut_responses:
            return False
        self._cut_responses[response_id] = None
        while len(self._cut_responses) > self._remember:
            self._cut_responses.popitem(last=False)
        return True

    def is_dropped(self, item_id: str, response_id: str | None) -> bool:
        """Output of ``item_id`` of ``response_id`` (e.g. a transcript delta) belongs to an
        interrupted item or a cut response."""
        item = self._items.get(item_id)
        return (item is not None and item.interrupted) or response_id in self._cut_responses
