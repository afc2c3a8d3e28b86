"""What a replacement OpenAI Realtime connection must be told to carry on the call.

The server keeps nothing across connections: after a drop or the session limit the model gets a
note with the recent transcript (:meth:`RealtimeMemory.resume_context`). Lines are kept per
conversation item, so a barge-in can rewrite the bot's line to what the caller actually heard
(:meth:`RealtimeMemory.bot_line_heard`). A tool result for a call made on a connection that has
since dropped cannot be a ``function_call_output`` any more: it goes in as a system note naming
the function (:meth:`RealtimeMemory.result_note`); results that arrive while no connection is up
wait here. Everything is bounded (a few lines, a few characters, a few names).

Transcripts are personal data: they are kept here only for the resume note and never logged.
"""

from __future__ import annotations

from collections import OrderedDict

HISTORY_LINES = 12
"""Final transcript lines kept for the resume note."""

HISTORY_CHARS = 2000
"""The resume note's and a result note's output at most, in characters."""

TOOL_CALLS = 32
"""Tool calls remembered per session (their names, for a result that outlives its connection)."""


class RealtimeMemory:
    """The recent conversation of one call, across its connections."""

    def __init__(self) -> None:
        # Final transcript lines by item id (a barge-in rewrites a bot line to what was heard).
        self._history: OrderedDict[str, str] = OrderedDict()
        self._tool_names: OrderedDict[str, str] = OrderedDict()
        self._held_results: list[tuple[str, str]] = []

    def final_line(self, item_id: str | None, connection: int, caller: bool, text: str) -> None:
        """A final transcript line of item ``item_id`` (when the server named one) said by the
        caller or the bot on connection number ``connection``."""
        key = item_id or f"line-{len(self._history)}-{connection}"
        self._history[key] = f"{'caller' if caller else 'assistant'}: {text}"
        self._history.move_to_end(key)
        while len(self._history) > HISTORY_LINES:
            self._history.popitem(last=False)

    def bot_line_heard(self, item_id: str, heard: str) -> None:
        """The caller heard only ``heard`` of bot item ``item_id`` (a barge-in after its final
        transcript): what is replayed after a reconnect is only that, or nothing."""
        if item_id not in self._history:
            return
        if heard:
            self._history[item_id] = f"assistant: {heard}"
        else:
            del self._history[item_id]

    def resume_context(self) -> str:
        """The recent transcript, oldest first, for a fresh connection's note ('' when none)."""
        if not self._history:
            return ""
        text = "Recent conversation, oldest first:\n" + "\n".join(self._history.values())
        return text[-HISTORY_CHARS:]

    def tool_called(self, call_id: str, name: str) -> None:
        """The model called ``name`` under ``call_id``."""
        self._tool_names[call_id] = name
        while len(self._tool_names) > TOOL_CALLS:
            self._tool_names.popitem(last=False)

    def result_note(self, call_id: str, output: str) -> str:
        """The text that carries ``output`` for ``call_id`` to a connection that did not make
        the call."""
        name = self._tool_names.get(call_id, "a function")
        return (f"The result of the function call {name} made before the connection was "
                f"restored: {output[:HISTORY_CHARS]}")

    def hold_result(self, call_id: str, output: str) -> None:
        """A tool result that arrived while no connection was up."""
        self._held_results.append((call_id, output))

    def take_held_results(self) -> list[tuple[str, str]]:
        """The held tool results, oldest first, forgotten here."""
        held, self._held_results = self._held_results, []
        return held
