"""How the fake OpenAI Realtime service answers: its responses, streamed as the real one does.

:class:`RealtimeResponses` is the part of
:class:`~mediaproxy.testing.fake_realtime_connection.FakeRealtimeConnection` that makes
responses: audio deltas in irregular sizes (one per reactor turn, or paced by the server's shared
timer with ``speed``), a response held at ``pause_after_ms``, ended (``completed`` or
``cancelled``), failed at once, or a function call, with or without speech before it. The
server's knobs (:class:`~mediaproxy.testing.fake_realtime.FakeRealtimeServer`) choose which.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerProtocol

from mediaproxy.testing.fake_audio import FORMAT_BYTES_PER_MS

if TYPE_CHECKING:
    from mediaproxy.testing.fake_realtime import FakeRealtimeFactory


class RealtimeResponses(WebSocketServerProtocol):
    """The half of a connection that makes responses: the base of
    :class:`~mediaproxy.testing.fake_realtime_connection.FakeRealtimeConnection`, which sets
    the state below when the client connects and implements :meth:`send`."""

    factory: FakeRealtimeFactory
    index: int
    """The connection's number on its server (ids carry it)."""
    session: dict[str, Any]
    response: dict[str, Any] | None = None
    """The response in progress, if any."""
    responses: int
    """Responses made on this connection so far."""
    assistant_audio_ms: dict[str, int]
    """item_id → ms of its audio sent so far (what a truncate may cut)."""
    function_calls: dict[str, str]
    """call_id → function name of every call made on this connection."""

    @property
    def output_format(self) -> str:
        return str(self.session["audio"]["output"]["format"]["type"])

    def send(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def send_error(self, code: str, message: str, event_id: str | None = None) -> None:
        raise NotImplementedError

    # --- responses -----------------------------------------------------------------------------

    def start_response(self, turn_ms: int | None = None) -> None:
        """A response: to a caller turn of ``turn_ms`` (VAD), else to ``response.create``. With
        ``server.fail_responses`` queued, it fails with the first code instead; with
        ``server.next_function_call`` set, a caller turn's response calls that function."""
        server = self.factory.server
        if self.response is not None:
            self.send_error("conversation_already_has_active_response", "Conversation already has an active response")
            return
        if server.fail_responses:
            self.fail_response(server.fail_responses.pop(0))
            return
        then_call: tuple[str, str] | None = None
        if turn_ms is not None and server.next_function_call is not None:
            name, arguments = server.next_function_call
            server.next_function_call = None
            if not server.speak_before_function_call:
                self.call_function(name, arguments)
                return
            then_call = (name, arguments)
        self.responses += 1
        server.stats.responses += 1
        n = self.responses
        response_id, item_id = f"resp_{self.index}_{n}", f"item_{self.index}_{n}"
        bpm = FORMAT_BYTES_PER_MS[self.output_format]
        if turn_ms is not None and server.turn_audio is not None:
            audio = server.turn_audio(turn_ms, bpm)
        else:
            audio = server.response_audio(self.index, n, bpm)
        self.response = {"id": response_id, "item_id": item_id, "audio": audio, "sent": 0, "chunk": 0,
                         "stopped": False, "then_call": then_call, "n": n}
        self.assistant_audio_ms[item_id] = 0
        self.send({"type": "response.created",
                   "response": {"id": response_id, "object": "realtime.response", "status": "in_progress",
                                "output": []}})
        self.send({"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 1000, "remaining": 999 - n, "reset_seconds": 0.06},
            {"name": "tokens", "limit": 50000, "remaining": 40000 - n, "reset_seconds": 1.5}]})
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        self.send({"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item})
        self.send({"type": "response.content_part.added", "response_id": response_id, "item_id": item_id,
                   "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
        self._resume_stream()

    def _resume_stream(self) -> None:
        server = self.factory.server
        if server.speed is None:
            self.factory.reactor.callLater(0, self._stream, self.response)
        else:
            server.streaming[self] = None

    def _paused_here(self, response: dict[str, Any]) -> bool:
        """True (and the response marked paused) once it reached ``pause_after_ms``."""
        server = self.factory.server
        pause_ms = server.pause_after_ms
        if pause_ms is None or response["sent"] < pause_ms * FORMAT_BYTES_PER_MS[self.output_format]:
            return False
        response["paused"] = True
        server.streaming.pop(self, None)
        server.poke()
        return True

    def _stream(self, response: dict[str, Any]) -> None:
        """Deliver one irregular chunk per reactor turn (much faster than real time), so that
        client events can interleave with a response in progress."""
        if response is not self.response or response["stopped"] or self._paused_here(response):
            return
        if response["sent"] >= len(response["audio"]):
            self.finish_response("completed", None)
            return
        self._deliver_chunk()
        self.factory.reactor.callLater(0, self._stream, response)

    def tick(self, budget: int) -> None:
        """With ``speed``: send the next ``budget`` bytes of the response (the shared timer)."""
        response = self.response
        if response is None:
            self.factory.server.streaming.pop(self, None)
            return
        audio = response["audio"]
        while budget > 0 and response["sent"] < len(audio):
            if self._paused_here(response):
                return
            budget -= self._deliver_chunk(budget)
        if response["sent"] >= len(audio):
            self.finish_response("completed", None)

    def _deliver_chunk(self, limit: int | None = None) -> int:
        """Sends the next delta (at most ``limit`` bytes); returns its size."""
        response = self.response
        if response is None or response["sent"] >= len(response["audio"]):
            return 0
        sizes = self.factory.server.chunk_sizes
        size = sizes[response["chunk"] % len(sizes)]
        if limit is not None:
            size = min(size, limit)
        response["chunk"] += 1
        chunk = response["audio"][response["sent"]: response["sent"] + size]
        response["sent"] += len(chunk)
        self.assistant_audio_ms[response["item_id"]] = response["sent"] // FORMAT_BYTES_PER_MS[self.output_format]
        self.send({"type": "response.output_audio.delta", "response_id": response["id"],
                   "item_id": response["item_id"], "output_index": 0, "content_index": 0,
                   "delta": base64.b64encode(chunk).decode("ascii")})
        return len(chunk)

    def continue_response(self) -> None:
        """Resume a response held at ``pause_after_ms`` (it then runs to the end)."""
        if self.response is not None and self.response.pop("paused", False):
            self.factory.server.pause_after_ms = None
            self._resume_stream()

    def finish_response(self, status: str, reason: str | None) -> None:
        response, self.response = self.response, None
        if response is None:
            return
        self.factory.server.streaming.pop(self, None)
        response["stopped"] = True
        rid, iid = response["id"], response["item_id"]
        item_status = "completed" if status == "completed" else "incomplete"
        base = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        self.send({"type": "response.output_audio.done", **base})
        self.send({"type": "response.output_audio_transcript.done", **base, "transcript": f"bot says {rid}"})
        item = {"id": iid, "type": "message", "role": "assistant", "status": item_status,
                "content": [{"type": "output_audio", "transcript": f"bot says {rid}"}]}
        self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": item})
        output: list[dict[str, Any]] = [item]
        then_call = response.get("then_call")
        if then_call is not None and status == "completed":  # a cut response never makes its call
            name, arguments = then_call
            output.append(self._function_call_item(rid, 1, name, arguments, response["n"]))
        done: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": status, "output": output,
                                "usage": {"total_tokens": 60, "input_tokens": 20, "output_tokens": 40,
                                          "input_token_details": {"audio_tokens": 15, "text_tokens": 5,
                                                                  "cached_tokens": 0},
                                          "output_token_details": {"audio_tokens": 30, "text_tokens": 10}}}
        if reason is not None:
            done["status_details"] = {"type": status, "reason": reason}
        self.send({"type": "response.done", "response": done})
        self.factory.server.poke()

    # --- scripted responses --------------------------------------------------------------------

    def fail_response(self, code: str, message: str | None = None) -> None:
        """A response that fails at once (``response.done`` ``failed``, the cause in
        ``status_details.error``), as the service does on a rate limit or quota error."""
        self.responses += 1
        self.factory.server.stats.responses += 1
        rid = f"resp_{self.index}_{self.responses}"
        self.send({"type": "response.created", "response": {"id": rid, "object": "realtime.response",
                                                             "status": "in_progress", "output": []}})
        kind = {"server_error": "server_error", "rate_limit_exceeded": "rate_limit_error",
                "insufficient_quota": "insufficient_quota", "invalid_api_key": "authentication_error"}
        error = {"type": kind.get(code, "invalid_request_error"), "code": code, "message": message or f"{code}"}
        self.send({"type": "response.done", "response": {
            "id": rid, "object": "realtime.response", "status": "failed", "output": [],
            "status_details": {"type": "failed", "error": error}}})
        self.factory.server.poke()

    def call_function(self, name: str, arguments: str) -> str:
        """A response whose only output is a call of the function ``name`` (which must be in
        the session's tools) with ``arguments`` (JSON text); returns its ``call_id``."""
        self.responses += 1
        self.factory.server.stats.responses += 1
        n = self.responses
        rid = f"resp_{self.index}_{n}"
        self.send({"type": "response.created", "response": {"id": rid, "object": "realtime.response",
                                                             "status": "in_progress", "output": []}})
        done = self._function_call_item(rid, 0, name, arguments, n)
        self.send({"type": "response.done", "response": {"id": rid, "object": "realtime.response",
                                                         "status": "completed", "output": [done]}})
        self.factory.server.poke()
        return str(done["call_id"])

    def _function_call_item(self, rid: str, output_index: int, name: str, arguments: str, n: int) -> dict[str, Any]:
        """Stream the function call item at ``output_index`` of response ``rid`` (added, the
        arguments, done); returns the finished item, for ``response.done``."""
        tools = [t.get("name") for t in self.session.get("tools") or ()]
        if name not in tools:
            self.factory.server.violations.append(f"function {name!r} called but not offered ({tools})")
        iid, call_id = f"fc_{self.index}_{n}", f"call_{self.index}_{n}"
        self.function_calls[call_id] = name
        item = {"id": iid, "type": "function_call", "status": "in_progress", "name": name, "call_id": call_id,
                "arguments": ""}
        self.send({"type": "response.output_item.added", "response_id": rid, "output_index": output_index,
                   "item": item})
        self.send({"type": "response.function_call_arguments.delta", "response_id": rid, "item_id": iid,
                   "output_index": output_index, "call_id": call_id, "delta": arguments})
        self.send({"type": "response.function_call_arguments.done", "response_id": rid, "item_id": iid,
                   "output_index": output_index, "call_id": call_id, "name": name, "arguments": arguments})
        done = {**item, "status": "completed", "arguments": arguments}
        self.send({"type": "response.output_item.done", "response_id": rid, "output_index": output_index,
                   "item": done})
        return done
