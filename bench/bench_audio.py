"""Per-20 ms-frame cost of the audio path, and each resampler's measured delay.

Run: python bench/bench_audio.py [--frames N]

Each figure is the best of several runs of the mean cost per frame over N consecutive frames
(the same frame fed repeatedly, state carried as in a call). Delay is measured, not read back:
an impulse goes in at 10 ms and the output's peak position gives the delay.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mediaproxy.audio.format import L16_24K, MULAW_8K  # noqa: E402
from mediaproxy.audio.g711 import ulaw_decode, ulaw_encode  # noqa: E402
from mediaproxy.audio.resample import SUPPORTED_RATES_HZ, StreamResampler  # noqa: E402
from mediaproxy.audio.transcode import Transcoder  # noqa: E402

FRAME_MS = 20


def per_frame_us(step: Callable[[], object], frames: int, repeats: int = 7) -> float:
    """Best-of-`repeats` mean wall time of one call to `step`, in microseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(frames):
            step()
        best = min(best, (time.perf_counter() - start) / frames)
    return best * 1e6


def speech_like(rate_hz: int, ms: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(rate_hz * ms // 1000) / rate_hz
    partials = zip(rng.uniform(200, 3000, 12), rng.uniform(0, 6.3, 12), strict=True)
    x = sum(np.sin(2 * np.pi * f * t + p) for f, p in partials)
    return np.rint(x / 12 * 20000).astype(np.int16)


def measured_delay_ms(src: int, dst: int) -> float:
    x = np.zeros(src // 20, dtype=np.int16)  # 50 ms, impulse at 10 ms
    x[src // 100] = 20000
    y = StreamResampler(src, dst).process(x)
    return float(np.argmax(np.abs(y)) * 1000 / dst - 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per timed run")
    frames = parser.parse_args().frames

    rows: list[tuple[str, float, str]] = []
    mulaw = ulaw_encode(speech_like(8000, FRAME_MS))
    pcm8 = speech_like(8000, FRAME_MS)
    rows.append(("µ-law decode 8k (160 B)", per_frame_us(lambda: ulaw_decode(mulaw), frames), ""))
    rows.append(("µ-law encode 8k (160 samples)", per_frame_us(lambda: ulaw_encode(pcm8), frames), ""))

    for src, dst in itertools.permutations(SUPPORTED_RATES_HZ, 2):
        r = StreamResampler(src, dst)
        frame = speech_like(src, FRAME_MS)
        cost = per_frame_us(lambda r=r, frame=frame: r.process(frame), frames)
        delay = measured_delay_ms(src, dst)
        rows.append((f"resample {src // 1000}k -> {dst // 1000}k", cost, f"{delay:.3f} (reported {r.delay_ms:.3f})"))

    up = Transcoder(MULAW_8K, L16_24K)
    rows.append(("Transcoder pcmu/8000 -> l16/24000", per_frame_us(lambda: up.convert(mulaw), frames),
                 f"{up.delay_ms:.3f}"))
    down = Transcoder(L16_24K, MULAW_8K)
    l16_frame = speech_like(24000, FRAME_MS).astype("<i2").tobytes()
    rows.append(
        ("Transcoder l16/24000 -> pcmu/8000", per_frame_us(lambda: down.convert(l16_frame), frames),
         f"{down.delay_ms:.3f}")
    )
    same = Transcoder(MULAW_8K, MULAW_8K)
    rows.append(("Transcoder pcmu/8000 -> pcmu/8000", per_frame_us(lambda: same.convert(mulaw), frames), "0"))

    print(f"audio path, per {FRAME_MS} ms frame, best of 7 x {frames} frames (numpy {np.__version__})")
    print(f"{'operation':<36}{'µs/frame':>10}  delay ms")
    for name, cost, delay in rows:
        print(f"{name:<36}{cost:>10.1f}  {delay}")


if __name__ == "__main__":
    main()
