"""Plots the sweep logs as artifacts. matplotlib's object API, not pyplot: no global state, so
plots can be drawn on the logging thread."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import ray
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from schedules.range_test import centred_curve
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


def plot_learning_curves(curves: list[tuple[dict, list[tuple[int, float]]]], metric: str, path: str) -> str:
    """The validation metric per epoch of the best trial of each schedule. curves: (row, points),
    a row as `SweepView.ranked` gives it (schedule, optimizer, lr: the peak LR, run_id), points
    (epoch, value)."""
    fig = figure((7, 4))
    ax = fig.add_subplot()
    for row, points in sorted(curves, key=lambda c: c[0]["schedule"]):
        if points:
            ax.plot([e for e, _ in points], [v for _, v in points], marker=".", label=curve_label(row))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("best trial of each schedule")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def curve_label(row: dict) -> str:
    """A trial as the legends name it: schedule, optimizer, peak LR and the MLflow run (its first 8
    characters, enough to find it in `lrtune report`'s table)."""
    return f"{row['schedule']}: {row['optimizer']}, peak LR {row['lr']:.1e}, run {(row.get('run_id') or '-')[:8]}"


LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_range_tests(tests: list[dict], path: str, chosen: dict[str, float] | None = None) -> str:
    """The range tests side by side, one panel per optimizer, one curve per weight decay: the
    centred loss the suggestion rule reads (schedules.range_test.centred_curve). Curves that
    coincide stay apart by line style and by markers at staggered points; each suggested max_lr is a
    vertical line in its curve's style with a ▼ at its own height; chosen: optimizer -> the decay
    the seeding chose (seeds.json), drawn thick and named so in the legend."""
    optimizers = sorted({t["optimizer"] for t in tests})
    chosen = chosen or {}
    fig = figure((5.2 * len(optimizers), 5))
    for i, opt in enumerate(optimizers):
        ax = fig.add_subplot(1, len(optimizers), i + 1)
        mine = [t for t in tests if t["optimizer"] == opt]
        tops, lows = [], []
        for j, t in enumerate(mine):
            lrs, loss = centred_curve(t["lrs"], [math.nan if v is None else v for v in t["raw_losses"]])
            style = dict(color=f"C{j}", ls=LINESTYLES[j % len(LINESTYLES)])
            is_chosen = t["weight_decay"] == chosen.get(opt)
            every = max(1, len(lrs) // 8)
            label = f"wd={t['weight_decay']:g}: " + (f"max_lr {t['max_lr']:.2g}" if t.get("max_lr") else t["status"])
            ax.plot(lrs, loss, lw=2.6 if is_chosen else 1.2, marker=MARKERS[j % len(MARKERS)], ms=4,
                    markevery=(j * every // len(mine), every), label=label + (" (chosen)" if is_chosen else ""),
                    zorder=3 if is_chosen else 2, **style)
            if t.get("max_lr"):
                ax.axvline(t["max_lr"], lw=1, alpha=0.8, **style)
                ax.plot([t["max_lr"]], [0.97 - 0.05 * j], marker="v", color=style["color"], ms=7,
                        transform=ax.get_xaxis_transform(), clip_on=False)
            if len(loss):
                tops.append(min(loss.max(), 1.6 * loss[0]))
                lows.append(loss.min())
        if lows:
            lo, hi = min(lows), max(tops)
            ax.set_ylim(lo - 0.05 * abs(lo), hi + 0.05 * abs(hi))
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (centred, as the rule reads it)")
        ax.set_title(f"{opt}: range tests (▼ suggested max_lr)", fontsize=9)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
