"""`lrtune sweep`: the Ray Tune run of one sweep — Tuner, Optuna searcher, resources, MLflow runs.

Validation happens before Ray starts (config, task, model); MLflow's parent run is ended with the
sweep's real status whatever happens, so no run is left open.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from trainables.tasks import load_task
from trainables.trainable import train

from . import preflight, search, seeding, tracking
from .config import ConfigError, SweepConfig
from .plots import plot_schedule_in_ray
from .report import table
from .stopping import ScheduleFairStopping


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    metric: str
    trials: list[dict]  # one per trial: trial_id, config, result (the last), checkpoint, error
    wall_time: float
    started_at: float  # time.time() when the sweep began (trial timestamps are on that clock)
    seeds: dict | None = None  # optimizer -> OptimizerSeed, when the search was seeded
    range_test_seconds: float = 0.0  # the range tests' own time, summed over their Ray tasks

    def best(self, n: int = 5) -> list[dict]:
        done = [t for t in self.trials if t["result"].get(self.metric) is not None]
        return sorted(done, key=lambda t: -t["result"][self.metric])[:n]


def prepare(cfg: SweepConfig):
    """Everything that can fail on bad input, before Ray starts: the task loads, the model exists."""
    try:
        task = load_task(cfg.task, _abs(cfg.data_dir))
    except ValueError as e:
        raise ConfigError(f"task: {e}") from None
    try:
        model = task.model_name(cfg.model)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
    total = cfg.epochs * task.steps_per_epoch(cfg.batch_size)
    if "one_cycle" in cfg.schedules and 0.25 * total <= 1:
        raise ConfigError(f"epochs: one_cycle needs more than 4 steps in all (its warm-up is a quarter "
                          f"of them); epochs={cfg.epochs} x {total // cfg.epochs} steps gives {total}")
    return task, model


def _last_epoch(trial_id: str, result: dict) -> bool:
    """Stop a trial on its final report (last epoch, or diverged) instead of waiting for the
    trainable to return: Tune would otherwise idle on the finished trial for up to a second."""
    return result.get("status") in ("finished", "diverged")


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def init_ray(address: str | None = None) -> None:
    # Keeping few checkpoints per trial makes Tune snapshot its experiment state every few reports
    # (see SweepConfig.keep_checkpoints) and warn about it each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    # Tune runs trials in their own directories; user task modules must stay importable there.
    path = os.pathsep.join([os.getcwd(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    ray.init(address=address, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"PYTHONPATH": path}})


def find_sweep(cfg: SweepConfig) -> str:
    """The newest sweep directory of this config's name under its storage path (for --resume)."""
    root = Path(_abs(cfg.storage_path or "ray_results"))
    pattern = re.compile(rf"{re.escape(cfg.name)}-\d{{8}}-\d{{6}}")
    found = sorted(p for p in root.glob(f"{cfg.name}-*") if pattern.fullmatch(p.name))
    if not found:
        raise ConfigError(f"--resume: no sweep named {cfg.name!r} under {root} to resume "
                          f"(directories {cfg.name}-YYYYmmdd-HHMMSS); run it without --resume first")
    return str(found[-1])


def seed_search(cfg: SweepConfig, task, model: str, sweep: tracking.Sweep, later) -> tuple[dict, float]:
    """The range tests (as Ray tasks), each logged as a nested MLflow run (by `later`, the logging
    thread, while the trials start), read into seeds by the seeding rules; a resumed sweep reuses
    the seeds it logged. Returns the seeds and the tests' summed seconds. Raises SeedingRefused."""
    logged = sweep.load_seeds()
    if logged is not None:
        return {k: seeding.OptimizerSeed.from_dict(v) for k, v in logged.items()}, 0.0
    t0 = time.perf_counter()
    outcomes = seeding.run_range_tests(cfg, model)
    settings = seeding.settings(cfg, model)
    for o in outcomes:
        later(sweep.log_range_test, o, settings)
    try:
        seeds = seeding.seeds(outcomes, cfg, task.train_size)
    except seeding.SeedingRefused:
        later(sweep.client.set_tag, sweep.run_id, "lrtune.stopped_by", "range_test")
        raise
    seconds = sum(o.seconds for o in outcomes)
    later(sweep.log_seeds, seeds)
    later(sweep.client.log_metric, sweep.run_id, "range_test_seconds", seconds)
    later(sweep.client.log_metric, sweep.run_id, "range_test_wall_s", time.perf_counter() - t0)
    print(seeding.describe(outcomes, seeds), flush=True)  # before the trials, whatever Tune's verbosity
    return seeds, seconds


def run_sweep(cfg: SweepConfig, *, verbose: int = 1, resume: bool = False) -> SweepResult:
    task, model = prepare(cfg)
    steps = task.steps_per_epoch(cfg.batch_size)
    path = find_sweep(cfg) if resume else None
    name = Path(path).name if path else f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    constants = dict(task=cfg.task, model=model, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     data_dir=_abs(cfg.data_dir), threads=cfg.threads_per_trial,
                     checkpoint_every_s=cfg.checkpoint_every_s,
                     gpu=cfg.resources.gpu, seed=cfg.seed, seeds=cfg.seeds, target=cfg.search.target)
    init_ray()
    # Tune's own result files (progress.csv, result.json) stay; its TensorBoard logger goes: MLflow is
    # the tracking UI, and the event writer costs ~6 ms of the driver's loop per epoch of every trial.
    # TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 in the environment brings it back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    preflight.check(cfg, _abs(cfg.storage_path or "ray_results"), ray.nodes())  # before any run is written
    sweep = tracking.Sweep(cfg.tracking.mlflow_uri, cfg.tracking.experiment, name, cfg.model_dump(),
                           resume=resume)
    trial_runs = tracking.TrialRuns(sweep, functools.partial(plot_schedule_in_ray, steps_per_epoch=steps))
    status = "FAILED"
    t0, started_at = time.perf_counter(), time.time()
    try:
        seeds, range_s = (seed_search(cfg, task, model, sweep, trial_runs.later) if cfg.search.seeded
                          else (None, 0.0))
        trainable = tune.with_resources(train, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})
        callbacks = [trial_runs, CSVLoggerCallback(), JsonLoggerCallback()]
        if path and tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
            # Tune restores the callbacks it pickled; use this run's (no public API: ray#41364).
            tuner._local_tuner.get_run_config().callbacks = callbacks
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search.searcher(cfg, task.metric_name, name, steps, constants, seeds),
                    scheduler=_scheduler(cfg, task.metric_name),
                    num_samples=cfg.search.num_samples, max_concurrent_trials=cfg.search.max_concurrent,
                    reuse_actors=True, trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
                run_config=tune.RunConfig(
                    name=name, storage_path=_abs(cfg.storage_path or "ray_results"), verbose=verbose,
                    stop=_last_epoch, callbacks=callbacks,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                    failure_config=tune.FailureConfig(max_failures=2)))
        grid = tuner.fit()
        trial_runs.reconcile([dict(trial_id=r.metrics.get("trial_id"), config=r.config,
                                   error=str(r.error) if r.error else None,
                                   history=functools.partial(_history, r)) for r in grid], every_run=resume)
        trials = [dict(trial_id=r.metrics.get("trial_id"), config=r.config, result=r.metrics,
                       checkpoint=r.checkpoint, error=str(r.error) if r.error else None,
                       run_id=trial_runs.runs.get(r.metrics.get("trial_id"))) for r in grid]
        status = "FINISHED"
        result = SweepResult(name, sweep.run_id, task.metric_name, trials, time.perf_counter() - t0,
                             started_at, seeds, range_s)
        best = result.best(1)
        sweep.end(status, best_metric=best[0]["result"][task.metric_name] if best else None,
                  trials=len(trials), wall_time=result.wall_time)
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "FINISHED":
            try:
                trial_runs.close(abandoned=status)
            finally:
                sweep.end(status)


def _history(result) -> list[dict]:
    """One trial's per-epoch results from Tune's own files (progress.csv)."""
    df = result.metrics_dataframe
    return [] if df is None else df.to_dict("records")


def _scheduler(cfg: SweepConfig, metric: str):
    if cfg.stopping.scheduler == "none":
        return None
    return ScheduleFairStopping(metric, "max", grace_period=cfg.stopping.grace_period or max(1, cfg.epochs // 4),
                                reduction_factor=cfg.stopping.reduction_factor, max_epochs=cfg.epochs)


def print_summary(result: SweepResult, cfg: SweepConfig, out=None) -> None:
    out = out or sys.stdout
    m = result.metric
    print(f"\nsweep {result.name}: {len(result.trials)} trials in {result.wall_time:.0f} s "
          f"(MLflow parent run {result.parent_run_id})", file=out)
    rows = [dict(metric=t["result"][m], std=t["result"].get(f"{m}_std"), epochs=t["result"].get("epoch", 0),
                 status=t["result"].get("status", "?"), optimizer=t["config"]["optimizer"],
                 schedule=t["config"]["schedule"], lr=t["config"].get("max_lr") or t["config"].get("lr"),
                 weight_decay=t["config"]["weight_decay"], run_id=t.get("run_id")) for t in result.best(10)]
    table(rows, m, out)
    print(f"\nOpen the MLflow UI: {tracking.ui_command(cfg.tracking.mlflow_uri)}", file=out)
    print(f"Optuna dashboard:   optuna-dashboard --host 127.0.0.1 {cfg.tracking.optuna_storage}", file=out)
    print(f"Report and plots:   lrtune report --experiment {cfg.tracking.experiment} --tracking-uri "
          f"{cfg.tracking.mlflow_uri}", file=out)
    if rows and rows[0]["run_id"]:
        print(f"Export the best:    lrtune export {rows[0]['run_id']} -o workflow.yaml --tracking-uri "
              f"{cfg.tracking.mlflow_uri}", file=out)
