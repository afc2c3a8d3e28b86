"""The embedded echo backend: no network, no key; exercises pacing, barge-in and flow control.

``mode = parrot`` (default) behaves like a speech backend: an energy detector finds each caller
utterance; when the caller has been quiet for ``silence_ms`` the utterance comes back as one
response, delivered at once in irregular chunks (far faster than real time, as real backends do),
so the playout must pace it. Caller speech while a response plays is reported as
``speech_started``: a barge-in. ``mode = stream`` returns the caller's audio continuously after
``delay_ms``; after ``silence_ms`` of caller quiet the stream's response is finished (so a platform
closes its play stream, AudioCodes ``playStream.stop``) and the next loud audio starts a new one.

The session speaks the platform's own format (no transcoding) and is a push producer: while
paused it holds the rest of a response (at most one utterance, ``max_utterance_ms``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

from mediaproxy.audio.chunks import FrameCarry
from mediaproxy.audio.format import AudioFormat, FormatPreference
from mediaproxy.audio.vad import EnergyDetector
from mediaproxy.backends.base import BackendListener, BackendType, CallInfo
from mediaproxy.metrics import Metrics
from mediaproxy.options import choice, integer, number, option


@dataclass(frozen=True, kw_only=True)
class EchoOptions:
    """The keys of a ``[backend:NAME] type = echo`` section."""

    mode: str = option(choice("parrot", "stream"), "parrot",
                       "parrot: each caller utterance comes back in one burst once the caller pauses; "
                       "stream: caller audio comes back continuously after delay_ms")
    delay_ms: int = option(integer(0, 10000), 0, "stream mode: how long caller audio is held before it comes back, ms")
    speech_threshold_dbfs: float = option(number(-90.0, 0.0), -40.0,
                                          "parrot mode: frame energy above which the caller is speaking, dBFS")
    silence_ms: int = option(integer(100, 5000), 600, "quiet that ends an utterance (parrot mode) or the "
                             "play stream (stream mode), ms")
    max_utterance_ms: int = option(integer(1000, 120000), 30000,
                                   "parrot mode: longest utterance kept; longer ones are answered at once, ms")

_ANALYSIS_MS = 20
_SPEECH_ONSET_FRAMES = 2  # 40 ms of energy before we call it speech: clicks are not barge-ins
_CHUNK_PATTERN = (700, 1300, 260, 2400, 900)  # irregular delivery sizes, in bytes of 8 kHz-ish


class EchoBackend:
    """A configured echo backend; see the module docstring."""

    format_preference: FormatPreference = ()
    """Any format costs the same: the platform's first choice is taken."""

    def __init__(self, name: str, options: EchoOptions, reactor: IReactorTime,
                 metrics: Metrics | None = None) -> None:
        self.name = name
        self.options = options
        self.reactor = reactor
        self.metrics = metrics

    def open_session(self, call: CallInfo, listener: BackendListener, platform_format: AudioFormat) -> EchoSession:
        session = EchoSession(self.reactor, listener, platform_format, self.options)
        if self.metrics is not None:
            connect = self.metrics.backend_connect_seconds.labels(self.name)
            opened = self.reactor.seconds()
            session.on_ready = lambda: connect.observe(self.reactor.seconds() - opened)
        return session


@implementer(IPushProducer)
class EchoSession:
    """One call's echo leg."""

    def __init__(self, reactor: IReactorTime, listener: BackendListener, audio_format: AudioFormat,
                 options: EchoOptions) -> None:
        self.audio_format = audio_format
        self._reactor = reactor
        self._listener = listener
        self._mode: str = options.mode
        self._delay_s = options.delay_ms / 1000.0
        self._detector = EnergyDetector(audio_format, options.speech_threshold_dbfs, _SPEECH_ONSET_FRAMES,
                                        options.silence_ms, _ANALYSIS_MS, options.max_utterance_ms)
        self._frames = FrameCarry(self._detector.frame_bytes)  # the partial analysis frame
        self._utterance = bytearray()
        self._responses = 0
        self._outgoing: deque[tuple[str, bytes | None]] = deque()  # (response id, chunk or None=done)
        self._paused = False
        self._closed = False
        # Stream mode: the open response (None between them), its number, and the caller quiet
        # since the last loud frame (ms). The first audio opens a response whatever its level.
        self._stream_id: str | None = None
        self._streams = 0
        self._quiet_ms = 0
        self._silence_ms = options.silence_ms
        self._stream_due: deque[tuple[float, str, bytes | None]] = deque()
        self._timer: IDelayedCall | None = None
        self._deliver_call: IDelayedCall | None = None
        self.on_ready: Callable[[], None] | None = None
        self._ready_call: IDelayedCall | None = reactor.callLater(0, self._ready)

    def _ready(self) -> None:
        self._ready_call = None
        if self.on_ready is not None:
            self.on_ready()
        self._listener.backend_ready()

    # --- audio in --------------------------------------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        if self._closed:
            return
        if self._mode == "stream":
            self._stream(data)
            return
        for frame in self._frames.frames(data):
            self._analyse(frame)

    def _analyse(self, frame: bytes) -> None:
        transition = self._detector.analyse(frame)
        if transition is None:
            # The utterance is the turn's frames, its onset included; a broken onset is dropped.
            if self._detector.in_turn:
                self._utterance.extend(frame)
            else:
                self._utterance.clear()
            return
        self._utterance.extend(frame)
        if transition.started:
            self._listener.backend_speech_started()
            return
        # The turn ended: silence_ms of quiet (kept in the reply) or max_utterance_ms.
        self._listener.backend_speech_stopped()
        utterance = bytes(self._utterance)
        self._utterance.clear()
        self._respond(utterance)

    def _respond(self, utterance: bytes) -> None:
        self._responses += 1
        response_id = f"echo-{self._responses}"
        # Irregular chunk sizes, whole samples: the playout must cut its own frames.
        sample = self.audio_format.frame_bytes
        offset, i = 0, 0
        while offset < len(utterance):
            size = _CHUNK_PATTERN[i % len(_CHUNK_PATTERN)] // sample * sample
            self._outgoing.append((response_id, utterance[offset : offset + size]))
            offset += size
            i += 1
        self._outgoing.append((response_id, None))
        if self._deliver_call is None:
            # Delivered from the reactor, not from inside the caller-audio call stack.
            self._deliver_call = self._reactor.callLater(0, self._deliver)

    def _deliver(self) -> None:
        self._deliver_call = None
        while self._outgoing and not self._paused and not self._closed:
            response_id, chunk = self._outgoing.popleft()
            if chunk is None:
                self._listener.backend_response_done(response_id)
            else:
                self._listener.backend_audio(response_id, chunk)

    # --- stream mode -------------------------------------------------------------------------------

    def _stream(self, data: bytes) -> None:
        """Echo caller audio (in analysis frames) on the open stream response; close it after
        ``silence_ms`` of quiet, open the next on loud audio."""
        frame_ms = _ANALYSIS_MS
        for frame in self._frames.frames(data):
            loud = self._detector.is_loud(frame)
            if self._stream_id is None:
                if not loud and self._streams:
                    continue  # between responses: quiet is not echoed (the play stream is closed)
                self._streams += 1
                # The first keeps the historical id: "stream", then "stream-2", "stream-3", ...
                self._stream_id = "stream" if self._streams == 1 else f"stream-{self._streams}"
                self._quiet_ms = 0
            response_id = self._stream_id
            self._emit(response_id, frame)
            self._quiet_ms = 0 if loud else self._quiet_ms + frame_ms
            if self._quiet_ms >= self._silence_ms:
                self._stream_id = None
                self._emit(response_id, None)

    def _emit(self, response_id: str, data: bytes | None) -> None:
        """Deliver ``data`` (None: the response is done) now or after ``delay_ms``."""
        if not self._delay_s:
            self._deliver_stream(response_id, data)
            return
        self._stream_due.append((self._reactor.seconds() + self._delay_s, response_id, data))
        if self._timer is None:
            self._timer = self._reactor.callLater(self._delay_s, self._release)

    def _deliver_stream(self, response_id: str, data: bytes | None) -> None:
        if data is None:
            self._listener.backend_response_done(response_id)
        else:
            self._listener.backend_audio(response_id, data)

    def _release(self) -> None:
        self._timer = None
        now = self._reactor.seconds()
        while self._stream_due and self._stream_due[0][0] <= now + 1e-9 and not self._closed:
            _, response_id, data = self._stream_due.popleft()
            self._deliver_stream(response_id, data)
        if self._stream_due and not self._closed:
            self._timer = self._reactor.callLater(max(0.0, self._stream_due[0][0] - now), self._release)

    # --- control -----------------------------------------------------------------------------------

    def interrupt(self, response_id: str, played_ms: int) -> None:
        """Forget the rest of ``response_id`` (a real backend would truncate its memory here).

        What is still queued of it is dropped now, rather than its id remembered to skip it
        later: a set of cancelled ids grew by one per barge-in for the whole call (a 30-minute
        soak found it). A parrot response is queued whole, so nothing of it can come later; a
        stream response ends here (its done marker, if already due, still goes out)."""
        self._outgoing = deque(entry for entry in self._outgoing if entry[0] != response_id)
        self._stream_due = deque(entry for entry in self._stream_due
                                 if entry[1] != response_id or entry[2] is None)
        if response_id == self._stream_id:
            self._stream_id = None  # the next loud audio opens a new stream response

    def send_dtmf(self, digits: str) -> None:
        """The echo has nothing to do with digits."""

    def tool_result(self, call_id: str, output: str) -> None:
        """The echo calls no tools."""

    def set_language(self, language: str) -> None:
        """The echo does not transcribe."""

    def close(self) -> None:
        self._closed = True
        self._outgoing.clear()
        self._stream_due.clear()
        for call in (self._timer, self._ready_call, self._deliver_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._ready_call = self._deliver_call = None

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._deliver()

    def stopProducing(self) -> None:
        self.close()


ECHO = BackendType(
    name="echo",
    options=EchoOptions,
    new_backend=EchoBackend,
    summary="the built-in echo: no network, no key; replays the caller (parrot) or streams it back",
)
