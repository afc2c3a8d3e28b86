"""The extra audio channels of a listen-only call: one backend session per channel.

AudioHook Monitor streams the caller and the agent separately, and nothing is played back. The
call's own backend session (opened by :class:`~mediaproxy.calls.bridge.CallBridge` at the start)
hears the ``external`` channel, the caller; every other channel gets a session of its own,
opened lazily on its first audio, whose caller-side transcripts are the agent's. Only
transcripts and failures of those sessions matter (:class:`ChannelListener`); input never opens
sessions without bound (:data:`MAX_LISTEN_CHANNELS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed

from mediaproxy.audio.format import AudioFormat
from mediaproxy.audio.transcode import Transcoder
from mediaproxy.backends.base import Backend, BackendSession, CallInfo
from mediaproxy.transcripts import Transcript

if TYPE_CHECKING:
    from mediaproxy.calls.bridge import CallBridge

MAX_LISTEN_CHANNELS = 3
"""Listen-only calls open one backend session per audio channel; AudioHook has two, and input
never opens sessions without bound."""


class ChannelListener:
    """Backend listener of one extra channel of a listen-only call: transcripts (as ``role``),
    failures and hang-ups go to the bridge; a listen-only call plays nothing back."""

    def __init__(self, bridge: CallBridge, role: str) -> None:
        self._bridge = bridge
        self._role = role

    def backend_transcript(self, transcript: Transcript) -> None:
        if transcript.role == "caller":  # what this channel's party said
            self._bridge.backend_transcript(replace(transcript, role=self._role))

    def backend_tool_call(self, call_id: str, name: str, arguments: str) -> None: ...

    def backend_failed(self, reason: str) -> None:
        self._bridge.backend_failed(reason)

    def backend_hangup(self, reason: str, variables: Mapping[str, str] | None = None) -> None:
        self._bridge.backend_hangup(reason, variables)

    def backend_ready(self) -> None: ...

    def backend_clear(self) -> None: ...

    def when_heard(self) -> Deferred[bool]:
        return succeed(True)  # nothing is played on a listen-only call

    def backend_audio(self, response_id: str, data: bytes) -> None: ...

    def backend_response_done(self, response_id: str) -> None: ...

    def backend_speech_started(self) -> None: ...

    def backend_speech_stopped(self) -> None: ...


class ListenChannels:
    """The extra channels' sessions of one listen-only call, opened on ``backend`` for
    ``bridge``."""

    def __init__(self, bridge: CallBridge, backend: Backend) -> None:
        self._bridge = bridge
        self._backend = backend
        self._channels: dict[str, tuple[BackendSession, Transcoder]] = {}

    def audio(self, data: bytes, channel: str, call: CallInfo | None, fmt: AudioFormat | None) -> None:
        """Audio of ``channel`` in the platform format ``fmt``; the channel's session is opened
        on its first audio (once the call has started: ``call`` and ``fmt`` known)."""
        leg = self._channels.get(channel)
        if leg is None:
            if len(self._channels) >= MAX_LISTEN_CHANNELS or call is None or fmt is None:
                return
            session = self._backend.open_session(call, ChannelListener(self._bridge, "agent"), fmt)
            leg = (session, Transcoder(fmt, session.audio_format))
            self._channels[channel] = leg
        session, up = leg
        session.send_audio(up.convert(data))

    def sessions(self) -> list[BackendSession]:
        """The sessions opened so far, in the order their channels first spoke."""
        return [session for session, _ in self._channels.values()]
