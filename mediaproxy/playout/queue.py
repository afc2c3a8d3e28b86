"""The playout's packet queue: bot audio waiting to be sent, per response, cut into packets.

The backend delivers a response's audio in pieces of any size. The queue keeps one byte buffer
per response, in the order the responses arrived, and cuts exact packets of ``packet_ms`` from
the head response; a platform that plays messages of any length may take several packets in one
message (``message_ms``): as many whole packets as the head response has queued, up to that.
Only the tail of a *finished* response may be shorter than a packet; it is
padded with the format's silence to a whole frame (never to a whole packet: the platform needs
whole frames, and padding further would only delay the next response). An unfinished response
with less than a packet queued keeps the queue waiting until more audio (or its end) arrives.

The queue also keeps each response's bookkeeping (:mod:`mediaproxy.playout.responses`): where in
the call's stream its first packet went out and how many milliseconds of it were sent, so a
barge-in can say what the caller heard; and which responses a barge-in cut, so their late audio
is dropped. It has no clock and counts no metrics: callers get the counts back and decide.

Sizes are in bytes of the platform format, positions and durations in milliseconds of audio.
"""

from __future__ import annotations

from collections import deque

from mediaproxy.audio.format import AudioFormat
from mediaproxy.playout.responses import PlayedAudio, ResponseLedger, ResponseProgress


class PacketQueue:
    """Queued bot audio of one call, cut into ``packet_ms`` packets of ``audio_format``, up to
    ``message_ms`` (a multiple of ``packet_ms``; default: one packet) per cut.

    ``queued_bytes`` is read directly on the hot path; only the queue changes it.
    """

    def __init__(self, audio_format: AudioFormat, frame_ms: int, packet_ms: int, message_ms: int = 0) -> None:
        self._format = audio_format
        self._bytes_per_ms = audio_format.bytes_per_ms
        self._frame_bytes = audio_format.bytes_for_ms(frame_ms)
        self._packet_bytes = audio_format.bytes_for_ms(packet_ms)
        self._message_bytes = max(self._packet_bytes, audio_format.bytes_for_ms(message_ms))
        self._buffers: deque[tuple[ResponseProgress, bytearray]] = deque()
        self._responses = ResponseLedger()
        self.queued_bytes = 0
        """Bytes waiting in all responses' buffers."""

    @property
    def queued_ms(self) -> float:
        """Audio waiting to be sent, in milliseconds."""
        return self.queued_bytes / self._bytes_per_ms

    def write(self, response_id: str, data: bytes) -> bool:
        """Queue ``data`` at the end of ``response_id``. A new response id finishes the previous
        response (the backend has moved on from it). Returns False, queueing nothing, when a
        barge-in cut ``response_id``: its late audio must not be heard."""
        if self._responses.is_cancelled(response_id):
            return False
        buffers = self._buffers
        response = self._responses.get(response_id)
        if response is None:
            if buffers and not buffers[-1][0].done:
                buffers[-1][0].done = True
            response = self._responses.open(response_id, self._is_queued)
        if buffers and buffers[-1][0] is response:
            buffers[-1][1].extend(data)
        else:
            buffers.append((response, bytearray(data)))
        self.queued_bytes += len(data)
        return True

    def open_tail_ms(self) -> float:
        """Audio at the end of the last response, if it is not finished, short of a whole packet
        (ms): it waits for more audio, or the response's end, before it can be sent."""
        if not self._buffers:
            return 0.0
        response, buf = self._buffers[-1]
        return 0.0 if response.done else (len(buf) % self._packet_bytes) / self._bytes_per_ms

    def is_cut(self, response_id: str) -> bool:
        """A barge-in cut ``response_id``: its late audio is refused."""
        return self._responses.is_cancelled(response_id)

    def has_open_response(self) -> bool:
        """Some response written (and not cut) has not been finished yet."""
        return self._responses.has_open()

    def finish(self, response_id: str) -> bool:
        """``response_id`` delivered all its audio: its tail may now be padded and sent.
        Returns False when nothing changed (unknown, cut, or already finished)."""
        response = self._responses.get(response_id)
        if response is None or response.done:
            return False
        response.done = True
        return True

    def has_finished_response(self) -> bool:
        """Some queued response is complete (so waiting for more audio would not help)."""
        return any(response.done for response, _ in self._buffers)

    def next_packet(self, position_ms: float) -> tuple[bytes, bool] | None:
        """Cut the next packet (or whole packets up to ``message_ms``), to be sent at the call's
        stream position ``position_ms``, and say whether it ends its response. None while the
        head response is unfinished with less than a packet queued (or nothing is queued).
        ``(b"", True)`` when the head response was finished with nothing left to send: it ends
        without another packet."""
        buffers = self._buffers
        if not buffers:
            return None
        response, buf = buffers[0]
        size = len(buf)
        message_bytes = self._message_bytes
        if response.done and size <= message_bytes:
            # The rest of a finished response, in one message: padded to a whole frame.
            buffers.popleft()
            if not size:
                return b"", True
            short = size % self._frame_bytes
            packet = bytes(buf) + (self._format.silence(self._frame_bytes - short) if short else b"")
            self.queued_bytes -= size
            finished = True
        else:
            packet_bytes = self._packet_bytes
            if size < packet_bytes:
                return None  # unfinished: wait for a whole packet
            if size >= message_bytes:
                packet_bytes = message_bytes
            elif packet_bytes != message_bytes:
                packet_bytes = size - size % packet_bytes  # every whole packet there is, at once
            packet = bytes(buf[:packet_bytes])
            del buf[:packet_bytes]
            self.queued_bytes -= packet_bytes
            finished = False
        if response.start_pos_ms is None:
            response.start_pos_ms = position_ms
        response.sent_ms += len(packet) / self._bytes_per_ms
        return packet, finished

    def settle_finished(self) -> bool:
        """Forget finished responses at the head whose audio has all gone out. Returns whether
        any did (each has ended without another packet)."""
        buffers = self._buffers
        settled = False
        while buffers and not buffers[0][1] and buffers[0][0].done:
            buffers.popleft()
            settled = True
        return settled

    def cut(self, played_position_ms: float) -> PlayedAudio | None:
        """Barge-in: drop everything queued and cut every unfinished response (its later audio
        will be refused). Returns what the caller heard of the response playing at
        ``played_position_ms`` (None when no response had started playing)."""
        heard = self._responses.heard(played_position_ms)
        self._responses.cut_unfinished()
        self._buffers.clear()
        self.queued_bytes = 0
        return heard

    def reset(self) -> None:
        """End of call: drop everything and forget every response (none counts as cut)."""
        self._buffers.clear()
        self.queued_bytes = 0
        self._responses.clear()

    def _is_queued(self, response: ResponseProgress) -> bool:
        return any(r is response for r, _ in self._buffers)
