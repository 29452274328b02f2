"""The range-test plot: loss against LR (log x), the three regions shaded, the suggestion and the
constant-predictor baseline marked.
matplotlib's object API (no pyplot state), so it may be drawn on a logging thread."""

from __future__ import annotations

import math


def plot_range_test(result, path: str, title: str | None = None) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    raw = [(lr, v) for lr, v in zip(result.raw_lrs, result.raw_losses) if math.isfinite(v)]
    gaps = [lr for lr, v in zip(result.raw_lrs, result.raw_losses) if not math.isfinite(v)]
    if raw:
        ax.scatter(*zip(*raw), s=6, color="0.6", label="loss (raw)")
    ax.plot(result.lrs, result.losses, color="C0", label="loss (smoothed)")
    for lr in gaps:
        ax.axvline(lr, color="red", alpha=0.3, lw=1)
    if gaps:
        ax.plot([], [], color="red", alpha=0.3, label="NaN/inf loss")
    f = result.features
    lo, hi = result.raw_lrs[0], result.raw_lrs[-1]
    if f is not None and f.log_lr_descent is not None:
        ax.axvspan(lo, 10**f.log_lr_descent, color="0.9", label="LR too small")
        ax.axvspan(10**f.log_lr_descent, 10**f.log_lr_min, color="C2", alpha=0.12, label="descent")
    if f is not None and f.log_lr_edge is not None:
        ax.axvspan(10**f.log_lr_edge, hi, color="C3", alpha=0.12, label="divergence")
    s = result.suggestion
    if s is not None:
        ax.axvline(s.max_lr, color="C3", ls="--", label=f"max_lr {s.max_lr:.2g}")
        ax.axvline(s.lr, color="C2", ls="--", label=f"lr {s.lr:.2g}")
    if result.baseline is not None:
        ax.axhline(result.baseline, color="C1", ls=":", label=f"constant predictor {result.baseline:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if raw:
        finite = [v for _, v in raw] + ([result.baseline] if result.baseline is not None else [])
        ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), min(max(finite), 4 * finite[0]) * 1.05)
    d = result.diagnosis
    ax.set_title(title or f"LR range test: {d.status}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
