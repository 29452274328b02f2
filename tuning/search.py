"""The search: define-by-run spaces and the Optuna searcher for Ray Tune. The only module that
imports Optuna.

`space` reads like an optuna-examples objective: each value is suggested where it is used,
conditional parameters are plain `if`s. The names are the workflow's (torch's and the papers').
"""

from __future__ import annotations

import functools

import optuna
from ray.tune.search.optuna import OptunaSearch

from schedules import sgdr_plans

from .config import SweepConfig

# The wide, blind ranges (no range test): LR 1e-5..1, weight decay 1e-6..1e-1.
LR_RANGE = (1e-5, 1.0)
DECAY_RANGE = (1e-6, 1e-1)
# Where a blind sweep starts for each optimizer family, one point per optimizer x schedule.
BLIND_START = {"adaptive": dict(lr=1e-3, max_lr=1e-2), "sgd": dict(lr=0.05, max_lr=0.3)}


def _family(optimizer: str) -> str:
    return "adaptive" if optimizer.startswith("adam") else "sgd"


def _sgdr_plans(total_steps: int, steps_per_epoch: int) -> dict[str, tuple[int, int]]:
    """Optuna-friendly labels for the (T_0, T_mult) whose restarts end exactly at the budget,
    shortest first cycle last."""
    return {f"T_0={t0},T_mult={tm}": (t0, tm)
            for t0, tm, _ in sgdr_plans(total_steps, T_mults=(1, 2), min_T_0=steps_per_epoch)}


def space(trial: optuna.Trial, cfg: SweepConfig, steps_per_epoch: int, constants: dict) -> dict:
    trial.suggest_categorical("optimizer", cfg.optimizers)
    schedule = trial.suggest_categorical("schedule", cfg.schedules)
    trial.suggest_float("weight_decay", *DECAY_RANGE, log=True)
    total = cfg.epochs * steps_per_epoch
    if schedule in ("one_cycle", "cyclic"):
        max_lr = trial.suggest_float("max_lr", *LR_RANGE, log=True)
    else:
        trial.suggest_float("lr", *LR_RANGE, log=True)
    if schedule == "cyclic":
        base_div = trial.suggest_float("base_div", 3.0, 10.0)  # Smith: base_lr = max_lr/3 .. max_lr/10
        epochs_up = trial.suggest_int("epochs_up", 1, max(1, min(10, cfg.epochs // 2)))
        trial.suggest_categorical("mode", ["triangular", "triangular2"])
        constants = dict(constants, base_lr=max_lr / base_div, step_size_up=epochs_up * steps_per_epoch)
    if schedule == "sgdr":
        plans = _sgdr_plans(total, steps_per_epoch)
        plan = trial.suggest_categorical("sgdr_plan", sorted(plans))
        T_0, T_mult = plans[plan]
        constants = dict(constants, T_0=T_0, T_mult=T_mult)
    return constants


def start_points(cfg: SweepConfig, steps_per_epoch: int) -> list[dict]:
    """One point per optimizer x schedule, so that a short sweep covers every combination."""
    points = []
    total = cfg.epochs * steps_per_epoch
    for optimizer in cfg.optimizers:
        for schedule in cfg.schedules:
            p = dict(optimizer=optimizer, schedule=schedule, weight_decay=1e-4)
            start = BLIND_START[_family(optimizer)]
            if schedule in ("one_cycle", "cyclic"):
                p["max_lr"] = start["max_lr"]
            else:
                p["lr"] = start["lr"]
            if schedule == "cyclic":
                p.update(base_div=4.0, epochs_up=max(1, min(10, cfg.epochs // 4)), mode="triangular2")
            if schedule == "sgdr":
                p["sgdr_plan"] = list(_sgdr_plans(total, steps_per_epoch))[-1]
            points.append(p)
    return points


def searcher(cfg: SweepConfig, metric: str, study_name: str, steps_per_epoch: int,
             constants: dict) -> OptunaSearch:
    sampler = (optuna.samplers.TPESampler(seed=cfg.search.seed) if cfg.search.algorithm == "optuna"
               else optuna.samplers.RandomSampler(seed=cfg.search.seed))
    storage = optuna.storages.RDBStorage(cfg.tracking.optuna_storage)
    return OptunaSearch(space=functools.partial(space, cfg=cfg, steps_per_epoch=steps_per_epoch,
                                                constants=constants),
                        metric=metric, mode="max", sampler=sampler, storage=storage,
                        study_name=study_name,
                        points_to_evaluate=start_points(cfg, steps_per_epoch)[:cfg.search.num_samples])
