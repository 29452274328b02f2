"""Plots the sweep logs as artifacts. matplotlib's object API, not pyplot: no global state, so
plots can be drawn on the logging thread."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainables.workflow import schedule_trace


def plot_schedule(workflow: dict, path: str, steps_per_epoch: int) -> str:
    """LR and momentum/β1 per step of one trial's workflow, x in epochs."""
    lrs, moms = schedule_trace(workflow, steps_per_epoch)
    epochs = [i / steps_per_epoch for i in range(len(lrs))]
    fig = Figure(figsize=(6, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(epochs, lrs, color="C0")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate", color="C0")
    ax2 = ax.twinx()
    ax2.plot(epochs, moms, color="C1", alpha=0.6)
    ax2.set_ylabel("momentum / β1", color="C1")
    ax.set_title(f"{workflow['optimizer']} + {workflow['schedule']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
