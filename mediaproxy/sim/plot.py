"""``--plot``: lateness and playout depth over time, barge-ins marked, as a PNG (matplotlib).

matplotlib is the optional ``plot`` extra (``pip install "mediaproxy[plot]"``); without it
:func:`require_matplotlib` stops the command with a message saying so, before any call is made.

Top: each paced message's lateness against the proxy's grid (ms), every call (the first in
colour, the others grey). Bottom: the first call's playout depth (ms of bot audio the platform
held) with the configured lead as a dashed line. Clears are red lines, the script's barge-in
onsets orange ones. Time is seconds from each call's script start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediaproxy.sim.output import RunReport

__all__ = ["require_matplotlib", "write_plot", "MissingPlotSupport"]


class MissingPlotSupport(SystemExit):
    """matplotlib is not installed: the command exits with this message."""


def require_matplotlib() -> Any:
    """The ``matplotlib.pyplot`` module on the Agg backend, or :class:`MissingPlotSupport`."""
    try:
        import matplotlib
    except ImportError:
        raise MissingPlotSupport('mediaproxy-sim: --plot needs matplotlib: pip install "mediaproxy[plot]"') from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def write_plot(path: str, report: RunReport, title: str, lead_ms: int) -> None:
    """Write the figure for ``report`` to ``path`` (PNG)."""
    plt = require_matplotlib()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, constrained_layout=True)
    try:
        for i, result in reversed(list(enumerate(report.calls))):
            points = result.series.lateness
            if not points:
                continue
            xs, ys = zip(*((t, late * 1000.0) for t, late in points), strict=True)
            top.scatter(xs, ys, s=6, color="tab:blue" if i == 0 else "0.75",
                        label=f"call {result.record.index}" if i == 0 else None, zorder=3 if i == 0 else 2)
        top.set_ylabel("lateness vs grid (ms)")
        top.set_title(title)
        first = report.calls[0] if report.calls else None
        if first is not None and first.series.depth:
            xs, ys = zip(*first.series.depth, strict=True)
            bottom.plot(xs, ys, color="tab:green", linewidth=1, drawstyle="default", label="playout depth")
        bottom.axhline(lead_ms, color="tab:green", linestyle="--", linewidth=0.8, label=f"lead {lead_ms} ms")
        bottom.set_ylabel("playout depth (ms)")
        bottom.set_xlabel("seconds from the script's start")
        if first is not None:
            for n, t in enumerate(first.series.barge_ins):
                for ax in (top, bottom):
                    ax.axvline(t, color="tab:orange", linewidth=1,
                               label="barge-in" if n == 0 and ax is bottom else None)
            for n, t in enumerate(first.series.clears):
                for ax in (top, bottom):
                    ax.axvline(t, color="tab:red", linewidth=0.8, linestyle=":",
                               label="clear" if n == 0 and ax is bottom else None)
        bottom.set_xlim(left=0.0)  # the script's start, whether or not anything happened there
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper right", fontsize="small")
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
