"""The sweep an engineer writes today without lrtune: Ray Tune + OptunaSearch (TPE) + ASHA over a
wide log-uniform LR, with MLflow's Tune callback. Kept as plain as a user would write it — a
function trainable with its own loop, torch's own optimizers and schedulers, Tune's own
scheduler, searcher and logger — so that bench/search_quality.py compares lrtune with it.

The space: optimizer {adamw, sgd (momentum 0.9)}, lr log-uniform 1e-5..1 (the peak LR of cosine
and one-cycle), weight decay log-uniform 1e-6..1e-1, schedule {constant, cosine, one-cycle}.
`--search random` is Ray Tune's own random search (BasicVariantGenerator) instead of TPE.

Only the task's data, model, loss and metric come from lrtune (`trainables.tasks.load_task`): they
stand for the user's own.

`python -m bench.handwritten --task digits --model mlp --epochs 2 --trials 64 [--no-asha]`
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from trainables.tasks import load_task


def train_fn(config):
    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    task = load_task(config["task"])
    model = task.models[config["model"]]()
    x, y = task.train
    xv, yv = task.val
    if config["optimizer"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9,
                              weight_decay=config["weight_decay"])
    bs, epochs = config["batch_size"], config["epochs"]
    steps_per_epoch = len(x) // bs
    total = epochs * steps_per_epoch
    if config["schedule"] == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    elif config["schedule"] == "one_cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(steps_per_epoch):
            idx = order[i * bs:(i + 1) * bs]
            loss = task.loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            value = float(task.metric(model(xv), yv))
        tune.report({task.metric_name: value, "train_loss": loss.item()})


def run(task: str, model: str, epochs: int, batch_size: int, trials: int, seed: int, *,
        search: str = "tpe", asha: bool = True, max_concurrent: int = 2, storage: str | None = None,
        mlflow_uri: str | None = None, experiment: str = "handwritten", verbose: int = 0) -> dict:
    """One sweep; its trials in start order (their last value and epochs), its wall time."""
    t = load_task(task)
    metric, mode = t.metric_name, t.mode
    param_space = {
        "optimizer": tune.choice(["adamw", "sgd"]),
        "lr": tune.loguniform(1e-5, 1.0),
        "weight_decay": tune.loguniform(1e-6, 1e-1),
        "schedule": tune.choice(["constant", "cosine", "one_cycle"]),
        "task": task, "model": model, "epochs": epochs, "batch_size": batch_size, "seed": seed,
    }
    search_alg = OptunaSearch(seed=seed) if search == "tpe" else tune.search.BasicVariantGenerator(random_state=seed)
    callbacks = [MLflowLoggerCallback(tracking_uri=mlflow_uri, experiment_name=experiment)] if mlflow_uri else []
    storage = storage or tempfile.mkdtemp(prefix="handwritten-")
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(train_fn, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, search_alg=search_alg, num_samples=trials,
            max_concurrent_trials=max_concurrent, reuse_actors=True,  # many short trials: no new process each
            scheduler=ASHAScheduler(max_t=epochs, grace_period=1) if asha else None),
        run_config=tune.RunConfig(name=f"{experiment}-{seed}", storage_path=storage, callbacks=callbacks,
                                  verbose=verbose))
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    results = sorted((r for r in grid if r.metrics), key=lambda r: r.metrics["timestamp"] - r.metrics["time_total_s"])
    values = [r.metrics.get(metric) for r in results]
    return dict(values=[v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values],
                epochs=[int(r.metrics.get("training_iteration", 0)) for r in results],
                configs=[{k: r.config[k] for k in ("optimizer", "lr", "weight_decay", "schedule")} for r in results],
                errors=sum(1 for r in grid if r.error), wall_s=wall, metric=metric, mode=mode)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--search", choices=("tpe", "random"), default="tpe")
    ap.add_argument("--no-asha", action="store_true")
    ap.add_argument("--mlflow-uri", default=None, help="log with Ray's MLflowLoggerCallback")
    ap.add_argument("--storage", default=None)
    args = ap.parse_args(argv)
    import ray

    ray.init(address="local", include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}})
    r = run(args.task, args.model, args.epochs, args.batch_size, args.trials, args.seed, search=args.search,
            asha=not args.no_asha, storage=args.storage, mlflow_uri=args.mlflow_uri)
    done = [v for v in r["values"] if v is not None]
    best = (max if r["mode"] == "max" else min)(done) if done else None
    print(f"{len(r['values'])} trials, {sum(r['epochs'])} epochs, {r['wall_s']:.1f} s, best {r['metric']} {best}")


if __name__ == "__main__":
    main()
