"""`lrtune sweep`: the Ray Tune run of one sweep — Tuner, Optuna searcher, resources, MLflow runs.

Validation happens before Ray starts (config, task, model); MLflow's parent run is ended with the
sweep's real status whatever happens, so no run is left open.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

from trainables.tasks import load_task
from trainables.trainable import train

from . import search, tracking
from .config import ConfigError, SweepConfig
from .plots import plot_schedule


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    metric: str
    trials: list[dict]  # one per trial: trial_id, config, result (the last), checkpoint, error
    wall_time: float
    started_at: float  # time.time() when the sweep began (trial timestamps are on that clock)

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
    # Keeping one checkpoint per trial makes Tune snapshot its (small, local) experiment state
    # after every report and warn about it each time; the snapshot costs milliseconds here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    # Tune runs trials in their own directories; user task modules must stay importable there.
    path = os.pathsep.join([os.getcwd(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    ray.init(address=address, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"PYTHONPATH": path}})


def run_sweep(cfg: SweepConfig, *, verbose: int = 1) -> SweepResult:
    task, model = prepare(cfg)
    steps = task.steps_per_epoch(cfg.batch_size)
    name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    constants = dict(task=cfg.task, model=model, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     data_dir=_abs(cfg.data_dir), threads=cfg.threads_per_trial,
                     gpu=cfg.resources.gpu, seed=cfg.seed)
    init_ray()
    sweep = tracking.Sweep(cfg.tracking.mlflow_uri, cfg.tracking.experiment, name, cfg.model_dump())
    trial_runs = tracking.TrialRuns(sweep, functools.partial(plot_schedule, steps_per_epoch=steps))
    status = "FAILED"
    t0, started_at = time.perf_counter(), time.time()
    try:
        tuner = tune.Tuner(
            tune.with_resources(train, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu}),
            tune_config=tune.TuneConfig(
                search_alg=search.searcher(cfg, task.metric_name, name, steps, constants),
                num_samples=cfg.search.num_samples, max_concurrent_trials=cfg.search.max_concurrent,
                reuse_actors=True, trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
            run_config=tune.RunConfig(
                name=name, storage_path=_abs(cfg.storage_path or "ray_results"), verbose=verbose,
                stop=_last_epoch,
                callbacks=[trial_runs],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=2)))
        grid = tuner.fit()
        trial_runs.close()
        trials = [dict(trial_id=r.metrics.get("trial_id"), config=r.config, result=r.metrics,
                       checkpoint=r.checkpoint, error=str(r.error) if r.error else None) for r in grid]
        status = "FINISHED"
        result = SweepResult(name, sweep.run_id, task.metric_name, trials, time.perf_counter() - t0,
                             started_at)
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


def print_summary(result: SweepResult, cfg: SweepConfig, out=None) -> None:
    out = out or sys.stdout
    m = result.metric
    print(f"\nsweep {result.name}: {len(result.trials)} trials in {result.wall_time:.0f} s "
          f"(MLflow parent run {result.parent_run_id})", file=out)
    print(f"{'rank':>4}  {m:>8}  {'epochs':>6}  {'status':9}  optimizer  schedule    lr / max_lr  weight_decay", file=out)
    for i, t in enumerate(result.best(10), 1):
        c, r = t["config"], t["result"]
        lr = c.get("max_lr") or c.get("lr")
        print(f"{i:>4}  {r[m]:>8.4f}  {r.get('epoch', 0):>6}  {r.get('status', '?'):9}  "
              f"{c['optimizer']:9}  {c['schedule']:10}  {lr:>11.3g}  {c['weight_decay']:.3g}", file=out)
    print(f"\nOpen the MLflow UI: {tracking.ui_command(cfg.tracking.mlflow_uri)}", file=out)
    print(f"Optuna dashboard:   optuna-dashboard --host 127.0.0.1 {cfg.tracking.optuna_storage}", file=out)
