"""The range-test plot: loss against LR (log x) as the rule reads it — the centred-smoothed curve
(`centred_curve`) over the raw losses — with its regions shaded (too small, descent, divergence),
the divergence edge, the suggestion and the constant-predictor baseline marked.
matplotlib's object API (no pyplot state), so it may be drawn on a logging thread."""

from __future__ import annotations

import math


def plot_range_test(result, path: str, title: str | None = None) -> str:
    range_test_figure(result, title).savefig(path, dpi=110)
    return path


def range_test_figure(result, title: str | None = None):
    """The first repeat's curve, regions and edge (what `result.features` describes); the other
    repeats' curves faint; the suggestion, the median over the repeats."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .range_test import centred_curve

    fig = Figure(figsize=(9.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    raw = [(lr, v) for lr, v in zip(result.raw_lrs, result.raw_losses) if math.isfinite(v)]
    gaps = [lr for lr, v in zip(result.raw_lrs, result.raw_losses) if not math.isfinite(v)]
    if raw:
        ax.plot(*zip(*raw), color="0.6", lw=0.7, alpha=0.7, label="loss (raw)")
    for i, c in enumerate(result.curves[1:]):
        ax.plot(*centred_curve(c.lrs, c.raw_losses), color="C0", lw=0.8, alpha=0.35,
                label="other repeats (centred)" if i == 0 else None)
    lrs, centred = centred_curve(result.raw_lrs, result.raw_losses)
    ax.plot(lrs, centred, color="C0", lw=2, label="loss, centred (what the rule reads)")
    for lr in gaps:
        ax.axvline(lr, color="red", alpha=0.3, lw=1)
    if gaps:
        ax.plot([], [], color="red", alpha=0.3, label="NaN/inf loss")
    f = result.features
    first, median = ((" (this repeat)", f" (median of {len(result.curves)})") if len(result.curves) > 1
                     else ("", ""))
    lo, hi = result.raw_lrs[0], result.raw_lrs[-1]
    if f is not None and f.log_lr_descent is not None:
        ax.axvspan(lo, 10**f.log_lr_descent, color="0.92", label="LR too small")
        ax.axvspan(10**f.log_lr_descent, 10**f.log_lr_min, color="C2", alpha=0.15, label="descent (to the minimum)")
    if f is not None and f.log_lr_edge is not None:
        edge = 10**f.log_lr_edge
        ax.axvspan(edge, hi, color="C3", alpha=0.12, label="divergence")
        ax.axvline(edge, color="C3", lw=1.5, label=f"divergence edge {edge:.2g}{first}")
    if f is not None:
        ax.axhline(f.start_loss, color="0.4", lw=0.8, ls=(0, (1, 3)), label=f"starting loss {f.start_loss:.3g}")
    s = result.suggestion
    if s is not None:
        ax.axvline(s.max_lr, color="C4", ls="--", lw=1.5, label=f"suggested max_lr {s.max_lr:.2g}{median}")
        ax.axvline(s.lr, color="k", ls="-.", lw=1.2, label=f"suggested lr {s.lr:.2g}{median}")
    if result.baseline is not None:
        ax.axhline(result.baseline, color="C1", ls=":", label=f"constant predictor {result.baseline:.3g}")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if raw:
        shown = list(centred) + [v for _, v in raw] + ([result.baseline] if result.baseline is not None else [])
        low, start = min(shown), f.start_loss if f is not None else raw[0][1]
        # up to a little past the starting loss: the edge is where the curve crosses it, and the
        # blow-up beyond would squeeze the descent flat
        top = min(max(shown), 1.6 * max(start, result.baseline or start))
        ax.set_ylim(low - 0.05 * abs(low), top + 0.05 * abs(top))
    d = result.diagnosis
    ax.set_title(title or f"LR range test: {d.status}", fontsize=10)
    ax.grid(alpha=0.25, which="major")
    # outside the axes: inside, the legend covers the plateau or the divergence
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig
