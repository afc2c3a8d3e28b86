"""A bounded buffer for caller audio that arrives while a backend session is not ready (connecting,
reconnecting): any backend connector keeps at most ``early_audio_ms`` of it, oldest dropped first."""

from __future__ import annotations


class EarlyAudio:
    """Caller audio kept while no backend session is ready, bounded to ``max_bytes``: the oldest
    audio goes first (the freshest speech matters most once the backend is there)."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._data)

    def append(self, data: bytes) -> int:
        """Keep ``data``; return how many of the oldest bytes were dropped to stay in bound."""
        self._data += data
        overflow = len(self._data) - self._max_bytes
        if overflow <= 0:
            return 0
        del self._data[:overflow]
        return overflow

    def take(self) -> bytes:
        """Everything held, oldest first; the buffer is emptied."""
        data = bytes(self._data)
        self._data.clear()
        return data
