"""A local stand-in for the OpenAI Realtime service (GA protocol), for tests and benchmarks.

:class:`FakeRealtimeServer` listens on ``127.0.0.1`` (Autobahn). Per connection it: checks
``Authorization: Bearer``; sends ``session.created`` with the service defaults (24 kHz PCM) and
answers ``session.update`` with the merged effective session; runs an energy VAD
(:class:`~mediaproxy.audio.vad.EnergyDetector`) over the appended caller audio, 20 ms at a time
whatever the append sizes (speech_started / speech_stopped, a response at the end of a turn when
``create_response``); streams responses in irregular delta sizes, either one delta per reactor
turn (far faster than real time) or, with ``speed``, at that multiple of real time from one
shared 10 ms timer; applies the real service's truncate rules (error when ``audio_end_ms``
exceeds the item's audio, or the item is not assistant audio); cancels (by VAD with
``interrupt_response``, or ``response.cancel``); and can be told to drop, expire or refuse
credentials. Counts of what it saw are kept in ``server.stats``.

With ``validate`` (the default, for tests) every client event is validated with the ``openai``
package's GA pydantic models (a discriminated union, unknown keys rejected by walking
``model_extra``), and every event the fake sends is validated against the GA server models, so
both sides are held to the real protocol; violations are collected in ``server.violations``.
``openai`` and ``pydantic`` are imported only then: a benchmark runs the fake without them, and
with ``record=False`` it keeps no per-event history, so that it costs little.

This module is the server (its knobs, the shared delivery timer, its statistics) and the command
line; one connection is :mod:`~mediaproxy.testing.fake_realtime_connection`, the responses it
streams :mod:`~mediaproxy.testing.fake_realtime_responses`, each flavor's session shape
:mod:`~mediaproxy.testing.fake_realtime_sessions`, and the audio it sends
:mod:`~mediaproxy.testing.fake_audio`.

Run it alone (its own process, so that its CPU is not the proxy's)::

    python -m mediaproxy.testing.fake_realtime --port 9123 --speed 10 --stats out.json

Nothing here sleeps: tests wait on Deferreds from :meth:`FakeRealtimeServer.when` and
:meth:`~mediaproxy.testing.recording_listener.RecordingListener.when`, which fire as soon as a condition holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.task import LoopingCall

from mediaproxy.testing.fake_audio import (
    BENCH_VAD,
    FORMAT_BYTES_PER_MS,
    LOUD_FRAME,
    TEST_VAD,
    VadSettings,
    pattern,
    reply_audio,
)
from mediaproxy.testing.fake_realtime_connection import FakeRealtimeConnection
from mediaproxy.testing.fake_realtime_responses import RealtimeResponses
from mediaproxy.testing.fake_realtime_sessions import FLAVOR_PATHS
from mediaproxy.testing.waiting import ConditionWaiting

# The audio helpers and the connection live in their own modules; tests and the other fakes have
# always imported them from here.
__all__ = [
    "BENCH_VAD", "LOUD_FRAME", "TEST_VAD", "FakeRealtimeConnection", "FakeRealtimeServer", "Stats", "VadSettings",
    "main", "pattern", "reply_audio",
]

TICK_S = 0.010
"""The shared delivery timer's period with ``speed``, in seconds."""


class Stats:
    """What the fake saw (all counts), written as JSON by the command line at exit."""

    def __init__(self) -> None:
        self.connections = 0
        self.refused = 0
        self.appends = 0
        self.speech_started = 0
        self.responses = 0
        self.responses_cancelled_by_vad = 0
        self.cancels_received = 0
        self.truncates_ok = 0
        self.truncate_errors = 0
        self.truncate_ms: list[int] = []
        #: Connections cut on purpose (SIGUSR1 on the command line): time, connection index and
        #: the session's instructions (which carry the call's parameters when the proxy passes them).
        self.drops: list[dict[str, Any]] = []

class FakeRealtimeFactory(WebSocketServerFactory):
    protocol = FakeRealtimeConnection  # type: ignore[assignment]
    server: FakeRealtimeServer


class FakeRealtimeServer(ConditionWaiting):
    """The fake service. Construction: ``reactor`` (listening and time), ``api_key`` (the key
    accepted), ``validate`` (hold both sides to the ``openai`` models), ``record`` (keep every
    received event, handshake and input byte for inspection), ``speed`` (None: one delta per
    reactor turn; a number: that multiple of real time, from one shared 10 ms timer), ``vad``
    (:data:`TEST_VAD` or :data:`BENCH_VAD`).

    Knobs (set before the client connects): ``reject_auth``: refuse every upgrade with HTTP 401.
    ``error_after_created``: ``{code, message}`` of an error sent right after
    ``session.created`` (then the socket closes), e.g. ``invalid_api_key``.
    ``hold_session_updated``: keep ``session.update`` unanswered until
    ``connection.release_session_updated()``. ``force_output_format``: report this output format
    in ``session.updated`` whatever was asked. ``response_audio(conn, n, bytes_per_ms)``: the
    audio of response ``n`` on connection ``conn`` (default: 1 s of :func:`pattern`).
    ``turn_audio(turn_ms, bytes_per_ms)``: when set, the audio of a response to a caller turn of
    ``turn_ms`` (the benchmark answers as long as the caller talked). ``chunk_sizes``: the delta
    sizes cycled through, in bytes. ``pause_after_ms``: hold every response after this much
    audio until ``connection.continue_response()``. ``late_deltas``: deltas still sent after a
    VAD barge-in before the response is cancelled (in flight). ``fail_responses``: codes of
    the next responses to fail (one per response, e.g. ``["server_error"]``).
    ``next_function_call``: ``(name, arguments)`` the response to the next caller turn calls
    instead of speaking (or call ``connection.call_function`` directly); a
    ``function_call_output`` for an unknown call is an error, a known one is accepted.
    ``speak_before_function_call``: that response first speaks (its audio as any response's,
    output 0) and then makes the call (output 1), as a model saying goodbye before ``end_call``
    does; a response cut short (barge-in, cancel) makes no call.

    ``flavor`` makes the fake act as that member of the family (``openai``, ``azure``,
    ``voicelive``, ``xai``): it listens on the flavor's path, accepts only the flavor's
    credential header (``api-key`` equal to ``api_key``, or ``Authorization: Bearer`` with
    ``entra_token``, for the Azure ones) and query string (HTTP 401/404/400 otherwise), opens
    with the flavor's event, holds ``session.update`` to the flavor's documented session shape
    (:mod:`mediaproxy.testing.flavor_schema`; a key of another shape is a violation) and answers
    in it, and sends Voice Live's event names. xAI's VAD does not cancel a response by itself.
    """

    def __init__(self, reactor: Any, api_key: str = "test-key", validate: bool = True, record: bool = True,
                 speed: float | None = None, vad: VadSettings = TEST_VAD, flavor: str = "openai",
                 entra_token: str | None = None) -> None:
        self.reactor = reactor
        self.api_key = api_key
        self.flavor = flavor
        self.entra_token = entra_token
        self.validate = validate
        self.record = record
        self.speed = speed
        self.vad = vad
        # Appends are parsed by hand only when nothing needs the parsed event.
        self.fast_appends = not validate and not record
        self.reject_auth = False
        self.error_after_created: dict[str, str] | None = None
        self.hold_session_updated = False
        self.force_output_format: dict[str, Any] | None = None
        self.response_audio: Callable[[int, int, int], bytes] = lambda conn, n, bpm: pattern(1000 * bpm, conn * 10 + n)
        self.turn_audio: Callable[[int, int], bytes] | None = None
        self.chunk_sizes: Sequence[int] = (160, 333, 97, 801, 41, 1200, 7, 512)
        self.pause_after_ms: int | None = None
        self.late_deltas = 0
        self.fail_responses: list[str] = []
        self.next_function_call: tuple[str, str] | None = None
        self.speak_before_function_call = False
        self.connections: list[FakeRealtimeConnection] = []
        self.handshakes: list[dict[str, str]] = []
        self.violations: list[str] = []
        self.stats = Stats()
        #: With ``speed``: the connections whose response is being delivered (insertion order).
        self.streaming: dict[RealtimeResponses, None] = {}
        self._ticker: LoopingCall | None = None
        self._port: Any = None

    def listen(self, port: int = 0, backlog: int = 50) -> str:
        """Start listening on 127.0.0.1 (``port`` 0: any free one); return the ws:// URL to configure."""
        url = "ws://127.0.0.1" + (f":{port}" if port else "")
        factory = FakeRealtimeFactory(url, reactor=self.reactor)
        factory.server = self
        factory.setProtocolOptions(maxMessagePayloadSize=16 * 1024 * 1024)
        self._port = self.reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=backlog)
        if self.speed is not None and self._ticker is None:
            self._ticker = LoopingCall(self._tick)
            self._ticker.clock = self.reactor
            self._ticker.start(TICK_S, now=False)
        return f"ws://127.0.0.1:{self._port.getHost().port}{FLAVOR_PATHS[self.flavor]}"

    def _tick(self) -> None:
        """Every 10 ms: each response in progress sends its next ``speed * 10`` ms of audio."""
        assert self.speed is not None
        for connection in list(self.streaming):
            connection.tick(int(self.speed * TICK_S * 1000 * FORMAT_BYTES_PER_MS[connection.output_format]))

    def drop_random(self, choose: Callable[[Sequence[FakeRealtimeConnection]], FakeRealtimeConnection]) -> None:
        """Cut one open connection chosen by ``choose`` (:meth:`FakeRealtimeConnection.drop`) and
        record it in ``stats.drops``; nothing when none is open."""
        open_ = [c for c in self.connections if not c.closed]
        if not open_:
            return
        victim = choose(open_)
        self.stats.drops.append({"t": self.reactor.seconds(), "connection": victim.index,
                                 "instructions": str(victim.session.get("instructions", ""))})
        victim.drop()

    def connection(self, index: int = -1) -> FakeRealtimeConnection:
        return self.connections[index]

    def stop_listening(self) -> Deferred[Any]:
        """Refuse new connections from now on (existing ones stay up)."""
        port, self._port = self._port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)

    def stop(self) -> Deferred[Any]:
        """Stop listening and wait until every connection has closed."""
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None
        closing = [self.stop_listening(), self.when(lambda: all(c.closed for c in self.connections))]
        return DeferredList(closing, fireOnOneErrback=True)


# --- the command line (benchmarks) -------------------------------------------------------------

#: The delta sizes the benchmark cycles through, in bytes.
BENCH_CHUNK_SIZES = (160, 333, 97, 801, 41, 1200, 7, 512, 250, 640)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake in this process for a benchmark: no validation, no history, the echo
    parrot's VAD, answers as long as the caller's turn at ``--speed`` times real time. Counts go
    to ``--stats`` (JSON) when the process gets SIGTERM or after ``--max-seconds``. Each SIGUSR1
    cuts one random open connection without a closing handshake (chaos benchmarks; ``--seed``),
    recorded in the stats' ``drops``."""
    import random
    import signal

    from twisted.internet import reactor as installed

    reactor: Any = installed

    p = argparse.ArgumentParser(description="A fake OpenAI Realtime service (GA protocol) for benchmarks.")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-key", default="dummy")
    p.add_argument("--speed", type=float, default=10.0, help="delivery speed, times real time (default 10)")
    p.add_argument("--reply-ms", type=int, default=2000,
                   help="audio of a response not provoked by caller speech (greeting, response.create), ms")
    p.add_argument("--stats", default="", help="write counts here as JSON on exit")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop by itself after this long")
    p.add_argument("--seed", type=int, default=None, help="seed of SIGUSR1's choice of connection")
    args = p.parse_args(argv)

    server = FakeRealtimeServer(reactor, api_key=args.api_key, validate=False, record=False, speed=args.speed,
                                vad=BENCH_VAD)
    server.chunk_sizes = BENCH_CHUNK_SIZES
    server.response_audio = lambda conn, n, bpm: reply_audio(args.reply_ms, bpm)
    server.turn_audio = reply_audio
    server.listen(args.port, backlog=1024)

    def write_stats() -> None:
        if args.stats:
            with open(args.stats, "w") as f:
                json.dump(vars(server.stats), f)

    reactor.addSystemEventTrigger("before", "shutdown", write_stats)
    reactor.callLater(args.max_seconds, reactor.stop)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    rng = random.Random(args.seed)
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(server.drop_random, rng.choice))
    print("fake realtime ready", flush=True)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
