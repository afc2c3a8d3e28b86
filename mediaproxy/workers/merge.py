"""One Prometheus scrape for several workers: each worker's exposition text, every sample given
a ``worker`` label (the worker's index, bounded by ``[proxy] workers``), merged family by family.

Text in, text out (the Prometheus text format 0.0.4 that ``prometheus_client`` writes): a sample
line is ``name{labels} value`` or ``name value``, and ``# HELP`` / ``# TYPE`` lines open a
family. Each family is printed once, its HELP and TYPE from the first worker that has it, then the
samples of worker 0, 1, ... in order, so the result is valid exposition text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class _Family:
    header: list[bytes] = field(default_factory=list)
    samples: list[bytes] = field(default_factory=list)


def with_worker_label(sample: bytes, worker: int) -> bytes:
    """``sample`` (one sample line) with ``worker="N"`` as its first label."""
    label = b'worker="%d"' % worker
    for i, byte in enumerate(sample):
        if byte == 0x7B:  # "{": the sample has labels; ours goes first
            rest = sample[i + 1:]
            return sample[:i + 1] + label + (b"" if rest.startswith(b"}") else b",") + rest
        if byte in (0x20, 0x09):  # a space ends an unlabelled name
            return sample[:i] + b"{" + label + b"}" + sample[i:]
    return sample  # not a sample line (no value): left as it is


def _families(text: bytes) -> dict[bytes, _Family]:
    families: dict[bytes, _Family] = {}
    current = _Family()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith(b"# "):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in (b"HELP", b"TYPE"):
                current = families.setdefault(parts[2], _Family())
                current.header.append(line)
            continue  # other comments carry nothing a scrape needs
        current.samples.append(line)
    return families


def merge_worker_metrics(scrapes: Sequence[bytes | None]) -> bytes:
    """The scrapes of workers 0..N-1 (None: that worker did not answer) as one exposition."""
    merged: dict[bytes, _Family] = {}
    for worker, text in enumerate(scrapes):
        if text is None:
            continue
        for name, family in _families(text).items():
            into = merged.get(name)
            if into is None:
                into = merged[name] = _Family(header=list(family.header))
            into.samples.extend(with_worker_label(sample, worker) for sample in family.samples)
    out: list[bytes] = []
    for family in merged.values():
        out.extend(family.header)
        out.extend(family.samples)
    return b"".join(line + b"\n" for line in out)
