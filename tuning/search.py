"""The search: define-by-run spaces and the Optuna searcher for Ray Tune. The only module that
imports Optuna.

`space` reads like an optuna-examples objective: each value is suggested where it is used,
conditional parameters are plain `if`s, one function per schedule. An optimizer with a range-test
seed (tuning/seeding.py) gets the seeded space: its LR and weight decay are searched as shifts of
at most ±half a decade (`lr_shift`, `decay_shift`, the same Optuna parameters for every optimizer,
so TPE learns how far from the range test the best runs lie) and the absolute values (`lr`,
`max_lr`, `weight_decay`, `lambda_norm`) go into the trial's config. Without a seed (blind mode,
`search.seeded: false`) LR and decay are searched directly over the wide ranges.
"""

from __future__ import annotations

import functools

import optuna
from ray.tune.search.optuna import OptunaSearch

from schedules import sgdr_plans

from .config import SweepConfig
from .seeding import OptimizerSeed

# The wide, blind ranges (no range test): LR 1e-5..1, weight decay 1e-6..1e-1.
LR_RANGE = (1e-5, 1.0)
DECAY_RANGE = (1e-6, 1e-1)
SHIFT = (-0.5, 0.5)  # decades around a seed's centre: a one-decade band
# Momentum (SGD) or beta1 (Adam family): Smith's 1-cycle range 0.95 -> 0.85, else about 0.9.
MOMENTUM = (0.85, 0.95)
MAX_MOMENTUM, BASE_MOMENTUM = (0.9, 0.99), (0.8, 0.9)
START = dict(lr_shift=0.0, decay_shift=0.0, momentum=0.9, max_momentum=0.95, base_momentum=0.85,
             base_div=4.0, mode="triangular2", eta_min_ratio=0.01)


def _sgdr_plans(epochs: int, steps_per_epoch: int) -> dict[str, dict]:
    """Labels for the SGDR plans whose restarts fall on epoch boundaries (where the stopper compares
    trials) and end exactly at the budget, with at most 10 % of it as warm-up; shortest first
    cycle last."""
    plans = sgdr_plans(epochs, T_mults=(1, 2), min_T_0=1, max_warmup=epochs // 10)
    return {f"T_0={t0}ep,T_mult={tm}" + (f",warmup={w}ep" if w else ""):
            dict(T_0=t0 * steps_per_epoch, T_mult=tm, warmup_steps=w * steps_per_epoch)
            for t0, tm, _, w in plans}


def _epochs_up(cfg: SweepConfig) -> tuple[int, int]:
    """CLR half-cycles of 2..10 epochs (Smith), at least one whole cycle within the budget."""
    hi = max(1, min(10, cfg.epochs // 2))
    return min(2, hi), hi


def _lr(trial, seed: OptimizerSeed | None, name: str, centre) -> float:
    """`name` ("lr" or "max_lr"): blind, log-uniform over LR_RANGE; seeded, the centre shifted."""
    if seed is None:
        return trial.suggest_float(name, *LR_RANGE, log=True)
    return centre(seed) * 10 ** trial.suggest_float("lr_shift", *SHIFT)


def _decay(trial, seed: OptimizerSeed | None) -> dict:
    if seed is None:
        return dict(weight_decay=trial.suggest_float("weight_decay", *DECAY_RANGE, log=True))
    if seed.lambda_band is None:
        return dict(weight_decay=0.0, lambda_norm=0.0)
    lo, hi = seed.lambda_band
    lam = (lo * hi) ** 0.5 * 10 ** trial.suggest_float("decay_shift", *SHIFT)
    return dict(weight_decay=lam * seed.decay_scale, lambda_norm=lam)


def _one_cycle(trial, cfg, seed, steps_per_epoch) -> dict:
    return dict(max_lr=_lr(trial, seed, "max_lr", lambda s: s.max_lr),
                max_momentum=trial.suggest_float("max_momentum", *MAX_MOMENTUM),
                base_momentum=trial.suggest_float("base_momentum", *BASE_MOMENTUM))


def _cyclic(trial, cfg, seed, steps_per_epoch) -> dict:
    max_lr = _lr(trial, seed, "max_lr", lambda s: s.max_lr)
    base_div = trial.suggest_float("base_div", 3.0, 10.0)  # Smith: base_lr = max_lr/10 .. max_lr/3
    epochs_up = trial.suggest_int("epochs_up", *_epochs_up(cfg))
    trial.suggest_categorical("mode", ["triangular", "triangular2"])
    return dict(max_lr=max_lr, base_lr=max_lr / base_div, step_size_up=epochs_up * steps_per_epoch,
                momentum=trial.suggest_float("momentum", *MOMENTUM))


def _sgdr(trial, cfg, seed, steps_per_epoch) -> dict:
    lr = _lr(trial, seed, "lr", lambda s: s.sgdr_peak)
    plans = _sgdr_plans(cfg.epochs, steps_per_epoch)
    plan = plans[trial.suggest_categorical("sgdr_plan", sorted(plans))]
    ratio = trial.suggest_float("eta_min_ratio", 1e-3, 1e-1, log=True)
    return dict(lr=lr, eta_min=lr * ratio, **plan, momentum=trial.suggest_float("momentum", *MOMENTUM))


def _constant(trial, cfg, seed, steps_per_epoch) -> dict:
    return dict(lr=_lr(trial, seed, "lr", lambda s: s.lr),
                momentum=trial.suggest_float("momentum", *MOMENTUM))


SPACES = dict(one_cycle=_one_cycle, cyclic=_cyclic, sgdr=_sgdr, constant=_constant)


def _fixed_or_searched(trial, name: str, value):
    """A step feature: a list is searched (categorical), anything else is fixed."""
    return trial.suggest_categorical(name, value) if isinstance(value, list) else value


def space(trial: optuna.Trial, cfg: SweepConfig, micro_batches: int, constants: dict,
          seeds: dict[str, OptimizerSeed] | None = None) -> dict:
    """One trial's config. micro_batches: batches per epoch; an optimizer step takes `accumulate`."""
    optimizer = trial.suggest_categorical("optimizer", cfg.optimizers)
    schedule = trial.suggest_categorical("schedule", cfg.schedules)
    accumulate = _fixed_or_searched(trial, "accumulate", cfg.accumulate)
    grad_clip = _fixed_or_searched(trial, "grad_clip", cfg.grad_clip)
    steps_per_epoch = micro_batches // accumulate
    seed = (seeds or {}).get(optimizer)
    decay = _decay(trial, seed)
    return dict(constants, accumulate=accumulate, grad_clip=grad_clip, steps_per_epoch=steps_per_epoch,
                **decay, **SPACES[schedule](trial, cfg, seed, steps_per_epoch))


def start_points(cfg: SweepConfig, micro_batches: int,
                 seeds: dict[str, OptimizerSeed] | None = None) -> list[dict]:
    """The warm start: the range tests' suggestions themselves (no shift), one per seeded
    optimizer x schedule, so that a short sweep covers every combination at its seed. An optimizer
    without a seed (blind mode) gets none: the blind search starts where its sampler does."""
    points = []
    epochs_up = max(_epochs_up(cfg)[0], min(_epochs_up(cfg)[1], cfg.epochs // 4))
    plans = list(_sgdr_plans(cfg.epochs, micro_batches))  # labels in epochs: the same for any accumulate
    for optimizer in cfg.optimizers:
        seed = (seeds or {}).get(optimizer)
        if seed is None:
            continue
        for schedule in cfg.schedules:
            p = dict(optimizer=optimizer, schedule=schedule, **_relevant(schedule))
            if seed.lambda_band is None:
                p.pop("decay_shift")
            if schedule == "cyclic":
                p["epochs_up"] = epochs_up
            if schedule == "sgdr":
                p["sgdr_plan"] = plans[-1]
            points.append(p)
    return points


def _relevant(schedule: str) -> dict:
    keys = {"one_cycle": ("max_momentum", "base_momentum"), "cyclic": ("base_div", "mode", "momentum"),
            "sgdr": ("eta_min_ratio", "momentum"), "constant": ("momentum",)}[schedule]
    return {k: START[k] for k in keys + ("lr_shift", "decay_shift")}


class _FinalValueSearch(OptunaSearch):
    """OptunaSearch that tells the study each trial's final value but skips Ray's per-epoch
    `trial.report`: that is one sqlite commit (~6 ms) in the driver's loop per epoch of every trial,
    while the trial waits, and nothing reads it — stopping is Tune's scheduler, not an Optuna pruner,
    and the per-epoch curves are in MLflow."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and result.get("status") == "failed":  # the task's code raised: FAIL, not PRUNED
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)


def objectives(cfg: SweepConfig, metric: str, mode: str = "max") -> tuple[list[str], list[str]]:
    """Optuna's objectives and directions: the task's metric, then the optional second one."""
    second = {"epochs_to_target": "epochs_to_target", "wall_time": "time_total_s"}
    if cfg.search.also_minimize is None:
        return [metric], [mode]
    return [metric, second[cfg.search.also_minimize]], [mode, "min"]


def searcher(cfg: SweepConfig, metric: str, mode: str, study_name: str, micro_batches: int,
             constants: dict, seeds: dict[str, OptimizerSeed] | None = None) -> OptunaSearch:
    sampler = (optuna.samplers.TPESampler(seed=cfg.search.seed) if cfg.search.algorithm == "optuna"
               else optuna.samplers.RandomSampler(seed=cfg.search.seed))
    storage = optuna.storages.RDBStorage(cfg.tracking.optuna_storage)
    metrics, modes = objectives(cfg, metric, mode)
    return _FinalValueSearch(
        space=functools.partial(space, cfg=cfg, micro_batches=micro_batches, constants=constants,
                                seeds=seeds),
        metric=metrics if len(metrics) > 1 else metrics[0], mode=modes if len(modes) > 1 else modes[0],
        sampler=sampler, storage=storage, study_name=study_name,
        points_to_evaluate=(start_points(cfg, micro_batches, seeds)
                            + [dict(p) for p in cfg.search.points_to_evaluate])[:cfg.search.num_samples])


def plot_study(storage: str, study_name: str, metric: str, folder) -> list[str]:
    """Optuna's parameter importances and parallel coordinates of a sweep's study, as PNGs (for a
    multi-objective study, of the first objective, the metric)."""
    import warnings
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from optuna.visualization import matplotlib as ovm

    study = optuna.load_study(study_name=study_name, storage=storage)
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in (("optuna_importances", ovm.plot_param_importances),
                           ("optuna_parallel_coordinates", ovm.plot_parallel_coordinate)):
            ax = plot(study, target=target, target_name=metric)
            fig = (ax if not hasattr(ax, "figure") else ax.figure) if not hasattr(ax, "flat") else ax.flat[0].figure
            path = str(Path(folder) / f"{name}.png")
            fig.set_size_inches(8, 4.5)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths
