"""What a replacement Gemini connection must be told to carry on the call.

A handover or reconnect that cannot resume the service's own session starts a fresh one: the
model then gets a note with the recent transcript (:meth:`ConversationMemory.resume_context`). A
tool result that arrives for a call made on a connection that has since been replaced cannot be
a ``toolResponse`` any more: it goes in as a text note naming the function
(:meth:`ConversationMemory.result_note`). Results that arrive while no connection is up wait here.
The transcript and the call names are bounded (a few lines, a few characters, a few names).
"""

from __future__ import annotations

from collections import OrderedDict

HISTORY_LINES = 12
"""Final transcript lines kept for the resume note."""

HISTORY_CHARS = 2000
"""The resume note's and a result note's output at most, in characters."""

TOOL_CALLS = 32
"""Tool call names kept (the oldest forgotten first)."""


class ConversationMemory:
    """The recent conversation of one call, across its connections."""

    def __init__(self) -> None:
        self._lines: OrderedDict[str, str] = OrderedDict()
        self._said = 0
        self._tool_names: OrderedDict[str, str] = OrderedDict()
        self._held_results: list[tuple[str, str]] = []

    def final_line(self, connection: int, role: str, text: str) -> None:
        """A final transcript line of ``role`` (``caller`` or ``bot``) said on connection number
        ``connection``."""
        # A count of every line ever said keys it: the table's length stops growing at the bound,
        # and a key made from it would overwrite a kept line instead of adding the newest.
        self._said += 1
        self._lines[f"{connection}-{self._said}-{role}"] = f"{'caller' if role == 'caller' else 'assistant'}: {text}"
        while len(self._lines) > HISTORY_LINES:
            self._lines.popitem(last=False)

    def resume_context(self) -> str:
        """The recent transcript, oldest first, for a fresh session's note ('' when none)."""
        if not self._lines:
            return ""
        text = "Recent conversation, oldest first:\n" + "\n".join(self._lines.values())
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
        return f"The result of the function call {name} made before the connection was restored: " \
               f"{output[:HISTORY_CHARS]}"

    def hold_result(self, call_id: str, output: str) -> None:
        """A tool result that arrived while no connection was up."""
        self._held_results.append((call_id, output))

    def take_held_results(self) -> list[tuple[str, str]]:
        """The held tool results, oldest first, forgotten here."""
        held, self._held_results = self._held_results, []
        return held
