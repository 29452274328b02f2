"""Plots the sweep logs as artifacts. matplotlib's object API, not pyplot: no global state, so
plots can be drawn on the logging thread."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray
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


def plot_schedule_in_ray(workflow: dict, path: str, steps_per_epoch: int) -> str:
    """`plot_schedule` drawn by a Ray actor, in its own process: drawing holds the GIL for ~0.4 s,
    and in the driver that stalls Tune's loop, which every running trial's report waits on. An
    actor, not a task: with every CPU taken by trials, Ray kills an idle task worker at once, so
    each plot paid a fresh worker's imports (~3 s of CPU); the actor imports once per driver."""
    cluster = ray.get_runtime_context().gcs_address
    if cluster not in _plotters:  # one per Ray cluster this process has joined (tests join several)
        _plotters[cluster] = _Plotter.options(max_restarts=-1, max_task_retries=-1).remote()
    Path(path).write_bytes(ray.get(_plotters[cluster].schedule_png.remote(workflow, steps_per_epoch)))
    return path


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
