"""Asking OpenAI Realtime for a failed response again: a bounded number of times in a row, with
exponential backoff on an injected clock.

A response that fails for a transient cause (``response.done`` ``failed``: rate limit, server
error) must not leave the caller in silence: the session asks again after
``response_retry_backoff_ms`` (doubling each time), ``response_retries`` times in a row, then
ends the call. A completed response resets the count; caller speech cancels a pending retry (the
turn to retry is over).
"""

from __future__ import annotations

from collections.abc import Callable

from mediaproxy.backends.reconnect import Timer, Timers


class ResponseRetries:
    """Retries of failed responses for one session; ``retry`` asks for the response again."""

    def __init__(self, clock: Timers, retries: int, backoff_ms: int, retry: Callable[[], None]) -> None:
        self._clock = clock
        self._retries = retries
        self._backoff_ms = backoff_ms
        self._retry = retry
        self._failures = 0
        self._timer: Timer | None = None

    @property
    def retries(self) -> int:
        """How many retries in a row are allowed before the call ends."""
        return self._retries

    def failed(self) -> float | None:
        """A response failed (transiently): the delay before the retry now scheduled, in
        seconds, or None when the retries are used up."""
        self._failures += 1
        if self._failures > self._retries:
            return None
        delay_s = self._backoff_ms / 1000.0 * 2.0 ** (self._failures - 1)
        self.cancel()
        self._timer = self._clock.callLater(delay_s, self._fire)
        return delay_s

    def succeeded(self) -> None:
        """A response completed: the next failure starts the count again."""
        self._failures = 0

    def cancel(self) -> None:
        """Drop the pending retry, if any (caller speech, a lost connection, the end)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._retry()
