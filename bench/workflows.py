"""Workflow comparison at equal training compute: the recipes users reach for, side by side.

MNIST-1D, reference CNN, batch 100, the same epoch budget for every workflow, each trained on the
same fresh seeds (not the seeds any search saw):
1. "Adam 3e-4 constant": Adam, no decay, a constant 3e-4 (the habit);
2. "range test + CLR": SGD with momentum and decoupled decay (SGDW 5e-4), Smith's triangular CLR
   from lrtune's range test (base_lr = suggestion.lr, max_lr = suggestion.max_lr), half-cycles of
   budget/4 epochs, so training ends at the end of the second cycle;
3. "SGDR + AdamW": AdamW (decay 1e-2), peak LR = the range test's suggestion.lr, cosine periods
   of budget/4 epochs (T_mult = 1: four restarts, the last ending at the budget);
4. "1-cycle + AdamW": AdamW (decay 1e-2), max_lr = the range test's suggestion.max_lr;
5. "lrtune's pick": the best trial's workflow of a seeded `lrtune sweep` of examples/mnist1d.yaml
   (run here), retrained on the fresh seeds.
Each recipe's range test is one per seed, on that seed's model (its seconds are printed). The
sweep's own compute (its trials' epochs) is printed beside, not added: the point is what each
recipe's final training reaches at the same budget, and what the search cost to find lrtune's.
`python -m bench.workflows [--epochs 20] [--seeds 3] [--quick]`
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import band, figure, finish, mean_std, pool, table
from trainables.tasks import load_task
from trainables.workflow import run_workflow, task_range_test, workflow_of
from tuning.config import load
from tuning.sweep import init_ray, run_sweep

TASK, MODEL, BATCH = "mnist1d", "cnn", 100
FRESH_SEEDS = 100  # seeds 100, 101, ...: none of them is a search or range-test seed of the sweep
DECAY = {"adamw": 1e-2, "sgdw": 5e-4}
RECIPES = ("Adam 3e-4 constant", "range test + CLR", "SGDR + AdamW", "1-cycle + AdamW", "lrtune's pick")


def recipe(name: str, epochs: int, seed: int, steps: int) -> tuple[dict, float]:
    """The workflow of a hand recipe for one seed, and the seconds its range test took."""
    base = dict(task=TASK, model=MODEL, epochs=epochs, batch_size=BATCH, seed=seed)
    if name == "Adam 3e-4 constant":
        return dict(base, optimizer="adam", schedule="constant", lr=3e-4, weight_decay=0.0), 0.0
    optimizer = "sgdw" if name == "range test + CLR" else "adamw"
    t0 = time.perf_counter()
    test = task_range_test(load_task(TASK), MODEL, optimizer, DECAY[optimizer], batch_size=BATCH, seed=seed)
    seconds = time.perf_counter() - t0
    if test.suggestion is None:
        raise RuntimeError(f"{name}: the range test refused (seed {seed}): {test.diagnosis.message}")
    s, quarter = test.suggestion, max(1, epochs // 4) * steps
    w = dict(base, optimizer=optimizer, weight_decay=DECAY[optimizer], momentum=0.9)
    if name == "range test + CLR":
        return dict(w, schedule="cyclic", base_lr=s.lr, max_lr=s.max_lr, step_size_up=quarter), seconds
    if name == "SGDR + AdamW":
        return dict(w, schedule="sgdr", lr=s.lr, T_0=quarter, T_mult=1), seconds
    return dict(w, schedule="one_cycle", max_lr=s.max_lr), seconds


def train(workflow: dict) -> list[float]:
    """Validation accuracy per epoch; a run that diverged keeps its last value to the budget."""
    acc = [row["accuracy"] for row in run_workflow(load_task(TASK), workflow)]
    return acc + acc[-1:] * (int(workflow["epochs"]) - len(acc))


def train_recipe(name: str, epochs: int, seed: int, steps: int) -> dict:
    workflow, seconds = recipe(name, epochs, seed, steps)
    return dict(recipe=name, seed=seed, workflow=workflow, range_test_s=seconds, accuracy=train(workflow))


def lrtune_pick(tmp: Path, quick: bool) -> tuple[dict, dict]:
    """The seeded sweep of examples/mnist1d.yaml (its trial count and epochs cut in --quick)."""
    cfg = load(Path(__file__).parents[1] / "examples" / "mnist1d.yaml")
    update = dict(storage_path=str(tmp / "ray_results"), tracking=cfg.tracking.model_copy(update=dict(
        mlflow_uri=f"sqlite:///{tmp}/mlflow.db", optuna_storage=f"sqlite:///{tmp}/optuna.db")))
    if quick:
        update.update(epochs=2, search=cfg.search.model_copy(update=dict(num_samples=2)),
                      range_test=cfg.range_test.model_copy(update=dict(num_iter=30, weight_decays=[0.0])))
    cfg = cfg.model_copy(update=update)
    init_ray()
    result = run_sweep(cfg, verbose=0)
    best = result.best(1)[0]
    epochs = sum(int(t["result"].get("epoch", 0)) for t in result.trials)
    return workflow_of(best["config"]), dict(trials=len(result.trials), trial_epochs=epochs,
                                             wall_s=result.wall_time, range_test_s=result.range_test_seconds,
                                             best_accuracy=best["result"]["accuracy"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2 epochs, 2 seeds, a 2-trial sweep")
    args = ap.parse_args(argv)
    epochs, n_seeds = (2, 2) if args.quick else (args.epochs, args.seeds)
    seeds = range(FRESH_SEEDS, FRESH_SEEDS + n_seeds)
    steps = load_task(TASK).steps_per_epoch(BATCH)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        pick, search = lrtune_pick(Path(d), args.quick)
    pick = dict(pick, epochs=epochs)
    with pool() as ex:
        jobs = [ex.submit(train_recipe, name, epochs, s, steps) for name in RECIPES[:-1] for s in seeds]
        jobs += [ex.submit(_pick_run, pick, s) for s in seeds]
        runs = [j.result() for j in jobs]
    summary = {name: _summary([r for r in runs if r["recipe"] == name]) for name in RECIPES}
    habit = summary[RECIPES[0]]["final_mean"]
    rows = [[name, mean_std(s["final"]), f"{(1 - s['final_mean']) / (1 - habit):.2f}",
             f"{s['range_test_s']:.1f}", _describe(runs, name)] for name, s in summary.items()]
    print(table(["workflow", f"val accuracy at {epochs} epochs", "error / Adam-3e-4 error",
                 "range test s (per seed)", "settings (first seed)"], rows))
    print(f"\nlrtune's search: {search['trials']} trials, {search['trial_epochs']} trial-epochs "
          f"(= {search['trial_epochs'] / epochs:.0f} trainings of {epochs} epochs), {search['wall_s']:.0f} s; "
          f"its best trial reached {search['best_accuracy']:.4f}")
    best_hand = max(RECIPES[:-1], key=lambda n: summary[n]["final_mean"])
    headline = {f"{name} accuracy": mean_std(s["final"]) for name, s in summary.items()}
    headline.update({"best hand recipe": best_hand,
                     "lrtune pick - best hand recipe (pt)": 100 * (summary[RECIPES[-1]]["final_mean"]
                                                                  - summary[best_hand]["final_mean"]),
                     "lrtune pick error / Adam-3e-4 error": (1 - summary[RECIPES[-1]]["final_mean"]) / (1 - habit),
                     "search trainings (equivalent)": search["trial_epochs"] / epochs})
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    finish("workflows", args.quick, dict(epochs=epochs, seeds=list(seeds), headline=headline, search=search,
                                         summary=summary, runs=runs),
           figures=dict(curves=_plot(runs, epochs)), params=dict(epochs=epochs, seeds=n_seeds),
           metrics={f"acc_{i}": s["final_mean"] for i, s in enumerate(summary.values())})


def _pick_run(workflow: dict, seed: int) -> dict:
    w = dict(workflow, seed=seed, replicas=1)
    return dict(recipe=RECIPES[-1], seed=seed, workflow=w, range_test_s=0.0, accuracy=train(w))


def _summary(runs: list[dict]) -> dict:
    final = [r["accuracy"][-1] for r in runs]
    return dict(final=final, final_mean=float(np.mean(final)),
                range_test_s=float(np.mean([r["range_test_s"] for r in runs])))


def _describe(runs: list[dict], name: str) -> str:
    w = next(r["workflow"] for r in runs if r["recipe"] == name)
    lr = w.get("max_lr") or w.get("lr")
    return f"{w['optimizer']} {w['schedule']} lr {lr:.3g} wd {w.get('weight_decay', 0):.3g}"


def _plot(runs: list[dict], epochs: int):
    fig = figure((7, 4.2))
    ax = fig.add_subplot()
    x = np.arange(1, epochs + 1)
    for i, name in enumerate(RECIPES):
        band(ax, x, [r["accuracy"] for r in runs if r["recipe"] == name], f"C{i}", name, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(bottom=max(0.0, float(min(min(r["accuracy"]) for r in runs)) - 0.02))
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"MNIST-1D CNN, {epochs} epochs, mean ± std over seeds")
    return fig


if __name__ == "__main__":
    main()
