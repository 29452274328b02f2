"""Plots the sweep logs as artifacts. matplotlib's object API, not pyplot: no global state, so
plots can be drawn on the logging thread."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import ray
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from trainables.workflow import schedule_trace


def plot_schedule(workflow: dict, path: str, steps_per_epoch: int) -> str:
    """LR and momentum/β1 per step of one trial's workflow, x in epochs. Drawn once per trial, so
    kept cheap (~70 ms, a third of a default figure's): fixed margins instead of `tight_layout`
    (which draws the figure twice), LR ticks at 1-2-5 per decade in plain text instead of
    mathtext."""
    lrs, moms = schedule_trace(workflow, steps_per_epoch)
    epochs = [i / steps_per_epoch for i in range(len(lrs))]
    fig = Figure(figsize=(6, 3.2))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.13, right=0.87, bottom=0.15, top=0.9)
    ax = fig.add_subplot()
    ax.plot(epochs, lrs, color="C0")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator(_log_ticks(*ax.get_ylim())))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate", color="C0")
    ax2 = ax.twinx()
    ax2.plot(epochs, moms, color="C1", alpha=0.6)
    ax2.set_ylabel("momentum / β1", color="C1")
    ax.set_title(f"{workflow['optimizer']} + {workflow['schedule']}")
    fig.savefig(path, dpi=100)
    return path


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis from lo to hi: 1, 2, 5 per decade over two decades or less, else one
    decade in every n, at most 7."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    subs = (1, 2, 5) if last - first <= 2 else (1,)
    return [s * 10.0 ** e for e in range(first, last + 1, max(1, math.ceil((last - first) / 6))) for s in subs]


def schedule_png_in_ray(workflow: dict, steps_per_epoch: int) -> ray.ObjectRef:
    """`plot_schedule`'s PNG (bytes, from `ray.get`), drawn by a Ray actor in its own process; returns
    at once, so that the caller (the sweep's logging thread) goes on while it draws. Not in the
    driver: drawing holds the GIL, and in the driver that stalls Tune's loop, which every running
    trial's report waits on. An actor, not a task: with every CPU taken by trials, Ray kills an idle
    task worker at once, so each plot paid a fresh worker's imports (~3 s of CPU); the actor
    imports once per driver."""
    cluster = ray.get_runtime_context().gcs_address
    if cluster not in _plotters:  # one per Ray cluster this process has joined (tests join several)
        _plotters[cluster] = _Plotter.options(max_restarts=-1, max_task_retries=-1).remote()
    return _plotters[cluster].schedule_png.remote(workflow, steps_per_epoch)


@ray.remote(num_cpus=0)
class _Plotter:
    def schedule_png(self, workflow: dict, steps_per_epoch: int) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            return Path(plot_schedule(workflow, str(Path(d) / "lr_schedule.png"), steps_per_epoch)).read_bytes()


_plotters: dict = {}


def figure(size=(6, 3.6)) -> Figure:
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_learning_curves(curves: dict[str, list[tuple[int, float]]], metric: str, path: str) -> str:
    """The validation metric per epoch of the best trial of each schedule."""
    fig = figure()
    ax = fig.add_subplot()
    for schedule, points in sorted(curves.items()):
        if points:
            ax.plot([e for e, _ in points], [v for _, v in points], marker=".", label=schedule)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("best trial of each schedule")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_range_tests(tests: list[dict], path: str) -> str:
    """The range tests side by side, one panel per optimizer, one curve per weight decay (raw loss,
    gaps where it was not finite), the suggested max_lr dashed."""
    optimizers = sorted({t["optimizer"] for t in tests})
    fig = figure((4.2 * len(optimizers), 3.6))
    for i, opt in enumerate(optimizers):
        ax = fig.add_subplot(1, len(optimizers), i + 1)
        for j, t in enumerate(x for x in tests if x["optimizer"] == opt):
            losses = [float("nan") if v is None else v for v in t["raw_losses"]]
            ax.plot(t["lrs"][:len(losses)], losses, color=f"C{j}", lw=1,
                    label=f"wd={t['weight_decay']:g} ({t['status']})")
            if t.get("max_lr"):
                ax.axvline(t["max_lr"], color=f"C{j}", ls="--", lw=1)
        finite = [v for t in tests if t["optimizer"] == opt for v in t["raw_losses"] if v is not None]
        if finite:
            ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * finite[0]) * 1.1)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title(f"{opt}: range tests (dashed: suggested max_lr)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
