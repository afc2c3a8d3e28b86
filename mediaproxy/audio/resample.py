"""Streaming sample-rate conversion: a stateful polyphase FIR resampler in numpy.

Every conversion between 8, 16, 24 and 48 kHz is a rational ratio ``L/M`` (``L`` = up factor,
``M`` = down factor, coprime). Conceptually the input is zero-stuffed to ``L * src_rate_hz`` (the
"grid" rate), low-pass filtered there, and every ``M``-th grid sample kept; the polyphase form
computes only the kept samples, each as a dot product of ``ceil(taps / L)`` input samples with one
of ``L`` sub-filters.

The filter is one Kaiser-windowed sinc designed on the lower of the two rates ``r``:

- passband flat (±0.001 dB) to ``0.40 r`` (3.2 kHz at 8 kHz; 3.4 kHz is down 0.2 dB, the lower
  Nyquist 15 dB),
- stopband from ``0.55 r`` (4.4 kHz at 8 kHz) at about -80 dB. It both removes the images when
  upsampling and anti-aliases when downsampling; what lies between the lower Nyquist and
  ``0.55 r`` folds into ``0.45 r .. 0.5 r`` (3.6-4 kHz at 8 kHz), above the telephone band.
- linear phase: the group delay is exactly ``delay_ms`` for every frequency, 2.125 ms for pairs
  involving 8 kHz, 1.125 ms for 16 <-> 24 kHz, less for the others. The delay is chosen to be a
  whole number of samples at both rates, so an impulse comes out on a sample, not between two.

Determinism is what lets a call be cut into frames of any size: the taps are integers (scaled
by 2**24) and the samples are int16, so every product and every partial sum is an integer below
2**53 and float64 arithmetic on them is exact whatever order BLAS sums in. Output for a stream
is therefore byte-identical however the input is split into chunks.
"""

from __future__ import annotations

from math import gcd

import numpy as np

__all__ = ["StreamResampler", "SUPPORTED_RATES_HZ"]

SUPPORTED_RATES_HZ: tuple[int, ...] = (8000, 16000, 24000, 48000)

# Filter shape, as fractions of the lower rate (see the module docstring).
_PASSBAND_EDGE = 0.40
_STOPBAND_EDGE = 0.55
_STOPBAND_DB = 80.0

# Taps are fixed point with this many fractional bits; 2**24 keeps quantisation noise near
# -140 dB while 2**15 (samples) * 2**24 * 313 taps (the longest filter) stays below 2**53.
_TAP_FRACTION_BITS = 24

# Input is filtered in blocks of at most this many samples, so the work buffers are a fixed size
# chosen here rather than growing to the largest burst a backend ever sends (1000 calls hold
# 2000 resamplers).
_BLOCK_SAMPLES = 512


def _design_taps(src_rate_hz: int, dst_rate_hz: int, up: int, down: int) -> tuple[np.ndarray, int]:
    """The prototype low-pass filter at the grid rate ``up * src_rate_hz``.

    Returns ``(taps, delay)``: the float taps (gain ``up``, which makes up for zero-stuffing) and
    the group delay in grid samples.
    """
    grid_rate_hz = up * src_rate_hz
    low_rate_hz = min(src_rate_hz, dst_rate_hz)
    transition_hz = (_STOPBAND_EDGE - _PASSBAND_EDGE) * low_rate_hz
    # Kaiser's estimate of the filter span needed for this attenuation and transition width.
    span_s = (_STOPBAND_DB - 7.95) / (14.36 * transition_hz)
    # Round the half-span up to a whole number of samples of both rates: 1 / gcd(rates) seconds.
    common_rate_hz = gcd(src_rate_hz, dst_rate_hz)
    delay = int(np.ceil(span_s / 2 * common_rate_hz)) * up * down
    n = np.arange(-delay, delay + 1, dtype=np.float64)
    cutoff = (_PASSBAND_EDGE + _STOPBAND_EDGE) / 2 * low_rate_hz / grid_rate_hz  # cycles/sample
    beta = 0.1102 * (_STOPBAND_DB - 8.7)
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(len(n), beta) * up
    return taps, delay


class StreamResampler:
    """Converts a stream of int16 mono samples from ``src_rate_hz`` to ``dst_rate_hz``.

    ``process`` takes chunks of any length and carries the filter history and output phase
    across calls, so any split of a stream gives byte-identical output to one call on the whole
    stream. After ``n`` input samples in total, exactly ``ceil(n * dst / src)`` samples have come
    out (``n * dst / src`` when ``n`` is a whole number of ``src / gcd`` samples, e.g. any whole
    millisecond). Output is delayed by ``delay_ms``; the stream starts from silence.

    Equal rates are the identity: ``process`` returns its argument.
    """

    #: Group delay in milliseconds: a sample entering at time t comes out at t + delay_ms.
    delay_ms: float
    #: Input samples each output sample is computed from (0 for the identity).
    taps_per_phase: int

    def __init__(self, src_rate_hz: int, dst_rate_hz: int) -> None:
        for rate_hz in (src_rate_hz, dst_rate_hz):
            if rate_hz not in SUPPORTED_RATES_HZ:
                raise ValueError(f"unsupported sample rate {rate_hz} Hz (supported: {SUPPORTED_RATES_HZ})")
        self.src_rate_hz = src_rate_hz
        self.dst_rate_hz = dst_rate_hz
        common = gcd(src_rate_hz, dst_rate_hz)
        self._up = up = dst_rate_hz // common
        self._down = down = src_rate_hz // common
        self.identity = up == down
        if self.identity:
            self.delay_ms = 0.0
            self.taps_per_phase = 0
            return

        taps, delay = _design_taps(src_rate_hz, dst_rate_hz, up, down)
        self.delay_ms = delay * 1000.0 / (up * src_rate_hz)
        self.taps_per_phase = k = -(-len(taps) // up)
        scaled = np.zeros(k * up, dtype=np.float64)
        scaled[: len(taps)] = np.rint(taps * (1 << _TAP_FRACTION_BITS))
        # phase p uses taps p, p + up, p + 2 up, ... applied to x[i], x[i - 1], ...; reversed so
        # that a window of k consecutive input samples ending at x[i] dots with it directly.
        self._phase_taps = np.ascontiguousarray(scaled.reshape(k, up).T[:, ::-1])
        self._scale = 1.0 / (1 << _TAP_FRACTION_BITS)
        self._history = k - 1

        # The next output sits at grid position offset + block_start * up, offset in [0, down).
        # Output j = q * up + g of a block is the window of k inputs ending at new sample
        # (offset + g * down) // up + q * down, dotted with the taps of phase
        # (offset + g * down) % up. Within one period of `down` inputs the `up` outputs' windows
        # start at most down - 1 apart, so one wider window of k + down - 1 inputs, sliding by
        # `down`, serves all of them: each phase's taps sit at its window's shift in a column of
        # zeros, and a block is a single matrix product whose rows come out already interleaved.
        width = k + down - 1
        periods = -(-_BLOCK_SAMPLES // down) + 1
        # buf = [k - 1 samples of history | up to _BLOCK_SAMPLES new samples | slack]. The slack
        # lets the last, partly used period read past the new samples; what it computes from
        # there is never returned.
        self._buf = np.zeros(self._history + periods * down + width, dtype=np.float64)
        item = self._buf.itemsize
        self._plans: list[tuple[np.ndarray, np.ndarray]] = []
        for offset in range(down):
            first = offset // up
            wide_taps = np.zeros((width, up), dtype=np.float64)
            for g in range(up):
                t = offset + g * down
                shift = t // up - first
                wide_taps[shift : shift + k, g] = self._phase_taps[t % up]
            # Strided windows over buf, built once: building a view costs more than filtering
            # a frame.
            rows = np.lib.stride_tricks.as_strided(
                self._buf[first:], shape=(periods, width), strides=(down * item, item), writeable=False
            )
            # With one phase, a matrix-vector np.dot (a BLAS dot per window) is 1.5-3x faster
            # than np.matmul on these overlapping rows; with several, one matmul beats `up` dots.
            self._plans.append((rows, wide_taps[:, 0].copy() if up == 1 else wide_taps))
        self._acc = np.zeros(periods * up, dtype=np.float64)
        self._offset = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resamples one chunk of int16 samples; returns the int16 samples now due (may be empty)."""
        if self.identity:
            return samples
        x = np.asarray(samples)
        if x.dtype != np.int16:
            raise TypeError(f"expected int16 samples, got {x.dtype}")
        n_in = len(x)
        up, down = self._up, self._down
        n_out = max(0, -(-(n_in * up - self._offset) // down))
        out = np.empty(n_out, dtype=np.int16)
        written = 0
        for start in range(0, n_in, _BLOCK_SAMPLES):
            written += self._process_block(x[start : start + _BLOCK_SAMPLES], out[written:])
        return out

    def _process_block(self, block: np.ndarray, out: np.ndarray) -> int:
        """Filters ``block`` (at most _BLOCK_SAMPLES) into the front of ``out``; returns the count."""
        n_in = len(block)
        up, down, hist = self._up, self._down, self._history
        buf = self._buf
        buf[hist : hist + n_in] = block
        offset = self._offset
        n_out = max(0, -(-(n_in * up - offset) // down))
        if n_out:
            periods = -(-n_out // up)
            rows, taps = self._plans[offset]
            acc = self._acc[: periods * up]
            # Outputs past n_out (only in the last period) come from stale data and are dropped.
            if up == 1:
                np.dot(rows[:periods], taps, out=acc)
            else:
                np.matmul(rows[:periods], taps, out=acc.reshape(periods, up))
            np.multiply(acc, self._scale, out=acc)
            np.rint(acc, out=acc)
            # Two ufuncs: np.clip's Python wrapper alone costs more than the rest of this tail.
            np.maximum(acc, -32768.0, out=acc)
            np.minimum(acc, 32767.0, out=acc)
            out[:n_out] = acc[:n_out]
        self._offset = offset + n_out * down - n_in * up
        # Keep the last k - 1 inputs (zeros from the start if the stream is still that short).
        buf[:hist] = buf[n_in : n_in + hist]
        return n_out

    def reset(self) -> None:
        """Forgets all history: the next sample starts a new stream from silence."""
        if self.identity:
            return
        self._buf[:] = 0.0
        self._offset = 0

    def __repr__(self) -> str:
        return f"StreamResampler({self.src_rate_hz} -> {self.dst_rate_hz} Hz, delay {self.delay_ms:g} ms)"
