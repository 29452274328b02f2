"""Plots the sweep logs as artifacts: each trial's schedule, learning curves, range tests, and
Optuna's importances and parallel coordinates of a study. matplotlib's object API, not pyplot, for
the plots drawn while a sweep runs (no pyplot state, so they can be drawn off the main thread);
Optuna's plots go through pyplot and are drawn by `lrtune report` only. The one module-level value,
`_plotters`, holds the actor that draws the schedule plots, per Ray cluster joined."""

from __future__ import annotations

import io
import math
from pathlib import Path

import ray
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

from schedules.range_test import centred_curve
from trainables.workflow import schedule_trace


class SchedulePlot:
    """LR and momentum/β1 per step of a trial's workflow, x in epochs: one figure, redrawn for each
    trial with the new lines. Drawn once per trial, so kept cheap: building a figure's axes, ticks
    and labels is most of a fresh figure's cost (~160 ms on 2 cores), and a reused one costs ~95 ms;
    fixed margins instead of `tight_layout` (which draws the figure twice), LR ticks at 1-2-5 per
    decade in plain text instead of mathtext."""

    def __init__(self):
        self.fig = Figure(figsize=(6, 3.2))
        FigureCanvasAgg(self.fig)
        self.fig.subplots_adjust(left=0.13, right=0.87, bottom=0.15, top=0.9)
        self.ax = self.fig.add_subplot()
        self.ax.set_yscale("log")
        (self.lr_line,) = self.ax.plot([1.0], [1.0], color="C0")
        self.ax.yaxis.set_minor_locator(NullLocator())
        self.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
        self.ax.set_xlabel("epoch")
        self.ax.set_ylabel("learning rate", color="C0")
        self.ax2 = self.ax.twinx()
        (self.momentum_line,) = self.ax2.plot([0.0], [0.0], color="C1", alpha=0.6)
        self.ax2.set_ylabel("momentum / β1", color="C1")

    def png(self, workflow: dict, steps_per_epoch: int) -> bytes:
        lrs, moms = schedule_trace(workflow, steps_per_epoch)
        epochs = [i / steps_per_epoch for i in range(len(lrs))]
        self.lr_line.set_data(epochs, lrs)
        self.momentum_line.set_data(epochs, moms)
        self.ax.yaxis.set_major_locator(LogLocator())  # its limits for a constant LR: a decade around it
        for ax in (self.ax, self.ax2):
            ax.relim()
            ax.autoscale_view()
        self.ax.yaxis.set_major_locator(FixedLocator(_log_ticks(*self.ax.get_ylim())))
        self.ax.set_title(f"{workflow['optimizer']} + {workflow['schedule']}")
        out = io.BytesIO()
        self.fig.savefig(out, format="png", dpi=100)
        return out.getvalue()


def plot_schedule(workflow: dict, path: str, steps_per_epoch: int) -> str:
    """`SchedulePlot`'s figure of one workflow, written to path."""
    Path(path).write_bytes(SchedulePlot().png(workflow, steps_per_epoch))
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
    imports once per driver, and keeps one figure to redraw."""
    cluster = ray.get_runtime_context().gcs_address
    if cluster not in _plotters:  # one per Ray cluster this process has joined (tests join several)
        _plotters[cluster] = _Plotter.options(max_restarts=-1, max_task_retries=-1).remote()
    return _plotters[cluster].schedule_png.remote(workflow, steps_per_epoch)


@ray.remote(num_cpus=0)
class _Plotter:
    def __init__(self):
        self.plot = SchedulePlot()

    def schedule_png(self, workflow: dict, steps_per_epoch: int) -> bytes:
        return self.plot.png(workflow, steps_per_epoch)


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
    the seeding chose (priors.json), drawn thick and named so in the legend."""
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


def plot_study(storage: str, study_name: str, metric: str, folder, out=None) -> list[str]:
    """Optuna's parameter importances and parallel coordinates of a sweep's study, as PNGs (for a
    multi-objective study, of the first objective, the metric): one pair over the parameters every
    completed trial shares (`shared_params`), and when the study holds more than one schedule, one
    pair per schedule over its own (`optuna_importances_<schedule>.png`, ...). A plot Optuna
    refuses (too few trials or values) is skipped with a line on `out`; the others are drawn."""
    import functools
    import sys
    import warnings

    import matplotlib
    import optuna

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = out or sys.stdout
    study = optuna.load_study(study_name=study_name, storage=storage)
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if math.isfinite(t.values[0])]
    groups = [("", "all trials", done)]
    schedules = sorted({t.params["schedule"] for t in done if "schedule" in t.params})
    if len(schedules) > 1:  # with one, its pair is the shared pair
        groups += [(f"_{s}", s, [t for t in done if t.params.get("schedule") == s]) for s in schedules]
    importances = functools.partial(ovm.plot_param_importances,
                                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for suffix, what, trials in groups:
            params = shared_params(trials)
            if len(trials) < 2 or not params:
                print(f"(Optuna plots of {what} skipped: {len(trials)} completed trials, "
                      f"{len(params)} parameters with more than one value)", file=out)
                continue
            sub = _study_of(trials, params, study.directions)
            for name, plot, style in (("optuna_importances", importances, _style_importances),
                                      ("optuna_parallel_coordinates", ovm.plot_parallel_coordinate,
                                       _style_parallel_coordinates)):
                try:
                    ax = plot(sub, params=params, target=target, target_name=metric)
                except Exception as e:  # noqa: BLE001 - Optuna refuses small or odd studies in many ways
                    print(f"(Optuna plot {name}{suffix} skipped: {type(e).__name__}: {e})", file=out)
                    plt.close("all")
                    continue
                style(ax, params, f"{metric}, {what} ({len(trials)} trials)")
                path = str(Path(folder) / f"{name}{suffix}.png")
                ax.figure.savefig(path, dpi=100)
                plt.close(ax.figure)
                paths.append(path)
    return paths


def shared_params(trials: list) -> list[str]:
    """The parameters every trial has, with more than one value among them: a parameter some
    trials lack is plotted as `None` and ranked on the few trials that have it; a constant one
    says nothing (and Optuna's plots refuse it)."""
    if not trials:
        return []
    common = set.intersection(*(set(t.params) for t in trials))
    return sorted(p for p in common if len({repr(t.params[p]) for t in trials}) > 1
                  and _union([t.distributions[p] for t in trials]) is not None)


def _union(dists: list):
    """One distribution covering these (Optuna's importances refuse a parameter whose distribution
    differs between trials, and a seeded LR band differs per optimizer and moves as the search
    extends it); None when they are of different kinds."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    first = dists[0]
    if all(d == first for d in dists):
        return first
    if all(isinstance(d, CategoricalDistribution) for d in dists):
        return CategoricalDistribution(list(dict.fromkeys(c for d in dists for c in d.choices)))
    for kind in (FloatDistribution, IntDistribution):
        if all(type(d) is kind and (d.log, d.step) == (first.log, first.step) for d in dists):
            return kind(min(d.low for d in dists), max(d.high for d in dists), log=first.log, step=first.step)
    return None


def _study_of(trials: list, params: list[str], directions):
    """An in-memory study of these trials with only these parameters, each over the union of its
    distributions."""
    import optuna

    dists = {p: _union([t.distributions[p] for t in trials]) for p in params}
    study = optuna.create_study(directions=directions)
    study.add_trials([optuna.trial.create_trial(params={p: t.params[p] for p in params}, distributions=dists,
                                                values=t.values) for t in trials])
    return study


def _style_importances(ax, params: list[str], title: str) -> None:
    fig = ax.figure
    fig.set_size_inches(8, max(2.8, 0.45 * len(params) + 1.6))
    ax.set_title(f"parameter importances: {title}", loc="left", fontsize=10)  # where Optuna puts its own
    fig.tight_layout()


def _style_parallel_coordinates(ax, params: list[str], title: str) -> None:
    """Room for every axis's ticks: an inch and a half per parameter, at most five ticks on a
    linear axis and 1-2-5 per decade on a log one, long category names wrapped, tick labels on a white
    ground over the lines, one grid (the metric's), the parameter names slanted."""
    from matplotlib.ticker import FixedLocator, LogLocator, MaxNLocator, NullFormatter

    fig = ax.figure
    fig.set_size_inches(max(8.0, 1.5 * (len(params) + 1) + 2.5), 5.5)
    ax.set_title(f"parallel coordinates: {title}", fontsize=10, y=1.03)
    for label in ax.get_xticklabels():
        label.set(rotation=25, ha="right", rotation_mode="anchor", fontsize=9)
    for twin in ax.get_shared_x_axes().get_siblings(ax):
        if twin is ax:
            continue
        twin.grid(False)
        twin.tick_params(axis="y", which="both", labelsize=8)
        twin.yaxis.set_minor_formatter(NullFormatter())
        if isinstance(twin.yaxis.get_major_locator(), FixedLocator):  # a categorical axis
            twin.set_yticklabels([_wrap(t.get_text()) for t in twin.get_yticklabels()])
        elif twin.get_yscale() == "linear":
            twin.yaxis.set_major_locator(MaxNLocator(5))
        else:
            twin.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        for label in twin.get_yticklabels():
            label.set_bbox(dict(facecolor="white", alpha=0.75, edgecolor="none", pad=1))
    fig.subplots_adjust(left=0.08, right=0.9, bottom=0.2, top=0.86)


def _wrap(text: str, width: int = 12) -> str:
    """A category name in lines of about `width` characters, broken at commas."""
    lines, line = [], ""
    for part in text.split(","):
        if line and len(line) + len(part) + 1 > width:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line},{part}" if line else part
    return "\n".join(lines + [line])
