"""One call's leg toward a team's own bot: the thin Twisted/Autobahn glue around
:class:`~mediaproxy.backends.bot_websocket_dialect.BotDialect`.

The session dials ``url`` with ``Authorization: Bearer <api_key>`` (none when the key is empty
and ``allow_unauthenticated`` is set) through the shared
:class:`~mediaproxy.backends.reconnect.Redialer`; a connection is up once its WebSocket is open
and ``start`` went out. Caller audio that arrives before that, while reconnecting, or while the
bot's socket does not drain (its write buffer over its bound) is kept up to ``early_audio_ms``,
oldest dropped and counted. A mid-call drop redials with backoff and sends ``start`` again with
``resumed``; credentials refused at the upgrade end the call through ``backend_failed``.

The bridge carries out what the bot asks: ``clear`` flushes the platform and the playout; a
``mark`` is answered when ``when_heard`` fires (at most :data:`MAX_PENDING_MARKS` wait);
``hangup``/``transfer`` are the call actions ``end_call``/``transfer_call`` (named in ``tools``),
refusals and cancellations coming back as ``action_result``. With ``detect_speech`` an energy
detector judges the caller's audio: speech starting is told to the bot, then is a barge-in. A
bot turn ends after ``turn_end_ms`` without bot audio (:class:`QuietTimer`, nothing per frame).
The socket is always read, whatever the playout holds; the playout bounds its own queue.
"""

from __future__ import annotations

import json
import random as _random
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from mediaproxy.audio.format import AudioFormat
from mediaproxy.audio.vad import EnergyDetector
from mediaproxy.backends.base import BackendListener, CallInfo
from mediaproxy.backends.bot_websocket_dialect import (
    MALFORMED_MESSAGE,
    TOO_MANY_MARKS,
    UNKNOWN_MESSAGE,
    BotAudio,
    BotDialect,
    BotEvent,
    ClearRequested,
    HangupRequested,
    MalformedMessage,
    MarkRequested,
    TranscriptReceived,
    TransferRequested,
    TurnFinished,
    UnknownMessage,
    start_message,
)
from mediaproxy.backends.connection import (
    BackendSocket,
    HeldAudio,
    QuietTimer,
    WriteBackpressure,
    open_until_ready,
    refused_dial_reason,
)
from mediaproxy.backends.openai_session_config import allowed_context
from mediaproxy.backends.reconnect import connection_lost_reason, dial_websocket
from mediaproxy.backends.redialing_session import RedialingSession
from mediaproxy.metrics import Metrics
from mediaproxy.transcripts import Transcript

if TYPE_CHECKING:
    from mediaproxy.backends.bot_websocket import BotWebSocketOptions

log = Logger()

MAX_PENDING_MARKS = 256
"""Marks waiting to be heard at once; a bot's mark beyond it is refused (``too_many_marks``)."""
_SPEECH_ONSET_FRAMES = 2  # 40 ms of energy before it is speech: a click is not a barge-in
_ACTIONS = {"end_call": "hangup", "transfer_call": "transfer"}


class BotClientProtocol(BackendSocket):
    """The WebSocket of one connection; forwards everything to its session."""

    session: BotWebSocketSession | None = None
    dialect: BotDialect | None = None
    ready: Deferred[BotClientProtocol] | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is not None:
            self.session.message_received(self, payload, isBinary)


class BotWebSocketSession(RedialingSession[BotClientProtocol, BotEvent]):
    """A :class:`~mediaproxy.backends.base.BackendSession` on a bot for one call, exchanging
    ``audio_format`` both ways. ``random`` spreads reconnect delays (tests pass a constant)."""

    def __init__(
        self,
        backend_name: str,
        options: BotWebSocketOptions,
        call: CallInfo,
        listener: BackendListener,
        audio_format: AudioFormat,
        reactor: Any,
        metrics: Metrics,
        *,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.audio_format = audio_format
        self._options = options
        self._call = call
        self._context = allowed_context(call.metadata, options.call_context_keys)
        self._early = HeldAudio(audio_format, options.early_audio_ms, metrics)
        self._stalled = False
        self._detector = (EnergyDetector(audio_format, options.speech_threshold_dbfs, _SPEECH_ONSET_FRAMES,
                                         options.speech_silence_ms) if options.detect_speech else None)
        self._stop_reason = "ended"
        self._pending_marks = 0
        self._actions: dict[str, str] = {}
        """The bot's hangup/transfer requests not answered yet, by call id."""
        self._requests = 0
        self._turn_end = QuietTimer(reactor, options.turn_end_ms / 1000.0, self._bot_went_quiet)
        self._set_up_redialing(backend_name, options, call, listener, reactor, metrics, logger=log,
                               secrets=(options.api_key,), is_fatal=refused_dial_reason, random=random)

    @property
    def _dialect(self) -> BotDialect | None:
        proto = self._proto
        return proto.dialect if proto is not None and proto.ready is not None and proto.ready.called else None

    # --- BackendSession ------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Caller audio in ``audio_format``, one binary frame per call; held (bounded) while no
        connection takes it. With ``detect_speech`` it is judged first."""
        if self._closed:
            return
        if self._detector is not None:
            for transition in self._detector.feed(data):
                self._caller_speech(transition.started)
                if self._closed:
                    return
        dialect = self._dialect
        if dialect is None or self._stalled:
            self._early.hold(data, "backend_stalled" if self._stalled else "backend_not_ready")
            return
        dialect.send_audio(data)
        self._send_output()

    def interrupt(self, response_id: str, played_ms: int) -> None:
        """Barge-in (or the bot's clear) on turn ``response_id`` after ``played_ms`` of it was
        heard: the bot's next audio is a new turn. The bot learns what was heard from its marks."""
        dialect = self._dialect
        if dialect is not None:
            dialect.interrupt(response_id)
        self._log("debug", "bot turn {turn} cut after {played} ms", turn=response_id, played=played_ms)

    def send_dtmf(self, digits: str) -> None:
        """The caller's keys, as ``dtmf`` (dropped while reconnecting)."""
        dialect = self._dialect
        if dialect is not None:
            dialect.send_dtmf(digits)
            self._send_output()

    def tool_result(self, call_id: str, output: str) -> None:
        """The answer to a ``hangup``/``transfer`` that did not end the call: refused or
        cancelled, told to the bot as ``action_result``."""
        action = self._actions.pop(call_id, None)
        dialect = self._dialect
        if action is None or dialect is None:
            return
        try:
            answer = json.loads(output)
        except ValueError:
            return
        for key, outcome in (("error", "refused"), ("cancelled", "cancelled")):
            if isinstance(answer, dict) and isinstance(answer.get(key), str):
                dialect.action_result(action, outcome, answer[key])
                self._send_output()
                return

    def set_language(self, language: str) -> None:
        """The bot does its own recognition: nothing to change."""

    def call_ending(self, outcome: str) -> None:
        """The call ends with ``outcome``: the ``stop`` that :meth:`close` sends says so."""
        self._stop_reason = outcome

    def close(self) -> None:
        """Send ``stop`` and close the connection; no listener calls follow. Idempotent."""
        dialect = self._dialect
        if dialect is not None and not self._closed:
            dialect.stop(self._stop_reason)
            self._send_output()
        self._shut_down(abort=False)

    def _let_go(self) -> Sequence[BotClientProtocol | None]:
        self._turn_end.stop()
        return super()._let_go()

    # --- connections ---------------------------------------------------------------------------

    def _dial(self) -> Deferred[BotClientProtocol]:
        self._connections += 1
        self._ready.dialling()
        start = start_message(self._call.call_id, self._call.platform, self.audio_format, self._context,
                              resumed=self._ready.ever_ready)
        dialect = BotDialect(start, self.audio_format, response_prefix=f"c{self._connections}t")
        key = self._options.api_key
        opened = dial_websocket(
            self._reactor,
            self._options.url,
            BotClientProtocol,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout_s=self._options.connect_timeout_seconds,
            keepalive_s=self._options.ping_seconds,
        )

        def adopt(proto: BotClientProtocol, ready: Deferred[BotClientProtocol]) -> None:
            proto.session, proto.dialect, proto.ready = self, dialect, ready
            self._proto = proto
            self._stalled = False
            WriteBackpressure.watch(proto, partial(self.writes_paused, proto))
            ready.callback(proto)  # open is ready: the bot needs nothing more than start

        return open_until_ready(opened, adopt, self._abandon)

    def _connection_up(self, proto: BotClientProtocol) -> None:
        first = self._ready.up()
        self._log("info", "bot connection {connection} open ({audio} both ways{resumed})",
                  connection=self._connections, audio=str(self.audio_format), resumed="" if first else ", resumed")
        self._send_output(proto)  # start
        self._release_held()

    def writes_paused(self, proto: BotClientProtocol, paused: bool) -> None:
        """``proto``'s write buffer went over (``True``) or back under its bound."""
        if proto is not self._proto or self._closed:
            return
        self._stalled = paused
        if not paused:
            self._release_held()

    def _release_held(self) -> None:
        dialect = self._dialect
        held = self._early.take()
        if held and dialect is not None:
            dialect.send_audio(held)
            self._send_output()

    def message_received(self, proto: BotClientProtocol, payload: bytes, is_binary: bool) -> None:
        """A frame from the bot on ``proto``."""
        if self._closed or proto is not self._proto or proto.dialect is None:
            return
        events = proto.dialect.receive(payload, is_binary)
        self._send_output(proto)
        self._handle_all(proto, events)

    def connection_closed(self, proto: BotClientProtocol, code: int | None, reason: str | None) -> None:
        """``proto``'s WebSocket ended."""
        if proto is not self._proto:
            return
        self._proto = None
        self._turn_end.stop()
        description = self._redact(connection_lost_reason(code, reason))
        if self._attempt_failed(proto, ConnectionLost(description)):
            return
        # Nothing more arrives for the turn in flight: let the bridge play what it has.
        finished = proto.dialect.finish_turn() if proto.dialect is not None else None
        if finished is not None:
            self._listener.backend_response_done(finished.response_id)
        if self._closed:
            return
        self._log("warn", "bot connection lost ({reason}); reconnecting", reason=description)
        self._redialer.lost(description)

    def _handle_event(self, proto: BotClientProtocol, event: BotEvent) -> None:
        listener = self._listener
        match event:
            case BotAudio(response_id=response_id, data=data):
                self._turn_end.activity()
                listener.backend_audio(response_id, data)
            case TurnFinished(response_id=response_id):
                listener.backend_response_done(response_id)
            case ClearRequested():
                listener.backend_clear()
            case MarkRequested(name=name):
                self._mark(proto, name)
            case HangupRequested(reason=reason):
                self._request("end_call", {"reason": reason or "the bot ended the call"})
            case TransferRequested(target=target, summary=summary):
                self._request("transfer_call", {"target": target, "summary": summary})
            case TranscriptReceived(role=role, text=text, final=final):
                if text:
                    listener.backend_transcript(Transcript(role, text, final))
            case UnknownMessage(message_type=message_type):
                self._metrics.backend_errors_total.labels(self._name, UNKNOWN_MESSAGE).inc()
                self._log("debug", "ignored unknown bot message {kind!r}", kind=message_type[:80])
            case MalformedMessage(detail=detail):
                self._metrics.backend_errors_total.labels(self._name, MALFORMED_MESSAGE).inc()
                self._log("info", "malformed bot message: {detail}", detail=detail)

    def _mark(self, proto: BotClientProtocol, name: str) -> None:
        """Answer the mark ``name`` once what came before it has been heard (on this connection
        only: a new connection did not send it)."""
        dialect = proto.dialect
        assert dialect is not None
        if self._pending_marks >= MAX_PENDING_MARKS:
            self._metrics.backend_errors_total.labels(self._name, TOO_MANY_MARKS).inc()
            dialect.refuse(TOO_MANY_MARKS, f"at most {MAX_PENDING_MARKS} marks may wait at once")
            self._send_output(proto)
            return
        self._pending_marks += 1

        def heard(played: bool) -> None:
            self._pending_marks -= 1
            if proto is self._proto and not self._closed:
                dialect.mark_played(name, played)
                self._send_output(proto)

        def call_ended(failure: Failure) -> None:
            self._pending_marks -= 1
            failure.trap(CancelledError)

        self._listener.when_heard().addCallbacks(heard, call_ended)

    def _request(self, tool: str, arguments: dict[str, str]) -> None:
        """A bot's hangup or transfer, as the call action ``tool``."""
        self._requests += 1
        call_id = f"bot-{self._requests}"
        self._actions[call_id] = _ACTIONS[tool]
        # The bridge answers at once or after the goodbye (or ends the call): few ever wait.
        for stale in list(self._actions)[:-8]:
            del self._actions[stale]
        self._log("info", "bot asks for {action}", action=_ACTIONS[tool])
        self._listener.backend_tool_call(call_id, tool, json.dumps(arguments))

    def _caller_speech(self, started: bool) -> None:
        """The detector's decision: the bot is told first, then the bridge (a start is a
        barge-in: the platform and the playout are flushed, pending marks answered unheard)."""
        dialect = self._dialect
        if dialect is not None:
            dialect.speech(started)
            self._send_output()
        if started:
            self._listener.backend_speech_started()
        else:
            self._listener.backend_speech_stopped()

    def _bot_went_quiet(self) -> None:
        """No bot audio for ``turn_end_ms``: its turn is complete (the bridge plays its tail)."""
        dialect = self._dialect
        finished = dialect.finish_turn() if dialect is not None else None
        if finished is not None:
            self._listener.backend_response_done(finished.response_id)
