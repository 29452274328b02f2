"""The LR range test as a sanity check: does lrtune accept a healthy model and refuse broken ones?

The claim (Smith 2015, 2018; lrtune's "insurance check"): a healthy range-test curve has three
regions, a plateau at too-small LRs, a fast descent and a divergence; a curve without them means a
bug in model or data, so the test should refuse to suggest an LR instead of seeding a sweep.

Ten cases, each range test with SGD (momentum 0.9, L2 decay 5e-4) and seeded (model init and
batch order) with every seed. On MNIST-1D with the MLP (40-100-100-10), batch 100:

healthy   the model and data as shipped;
nan       a 40-100-16-10 variant whose 16-unit ReLU bottleneck is standardised over the batch by
          hand, `(h - h.mean(0)) / h.std(0)`, BatchNorm without its eps: a unit that is dead for a
          whole batch gives 0/0 = NaN, which starts partway through the sweep as larger LRs kill
          units (at some LR for some batches, then for all once a unit is dead for good);
shuffled  the training labels permuted once (seed 0): inputs carry no information about targets;
frozen    every parameter has requires_grad=False: the optimizer gets them but nothing moves.

Where the loss does fall but only to what a constant predicts (the target mean, the label
frequencies), which the diagnosis calls `no_signal`, on a regression and an imbalanced binary task:

regression           the synthetic teacher-student regression (MSE, MLP 20-64-64-1, batch 100) with
                     its targets shifted by +3, uncentred as most real targets (prices, counts) are;
regression_shuffled  its targets permuted once (seed 0);
regression_zeroed    its inputs all zero, as a data-loading bug leaves them;
imbalanced           scikit-learn's bundled breast-cancer data (569 x 30, standardised; 63 % / 37 %),
                     cross-entropy, MLP 30-64-64-2, batch 32, the first 80 % (fixed order) to train;
imbalanced_shuffled, imbalanced_zeroed  as for the regression.

Per case and seed: lrtune's diagnosis status and message, its suggestion (or the refusal), the
curve's lowest loss over the constant predictor's on the same batches, and the status the same
curve gets without that baseline (the check before it). The headline counts, per case, how many
seeds got the expected verdict (`ok` for the healthy ones, a refusal for the rest), and re-reads
the healthy curves stored by bench.suggestion with today's diagnosis (`rediagnose`).
`python -m bench.sanity [--quick]`.
"""

from __future__ import annotations

import argparse
import math
import time
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from bench.common import RESULTS, figure, finish, pool, table
from bench.suggestion import MIN_DESCENT, rediagnose
from schedules.range_test import SIGNAL_MARGIN, diagnose, features
from trainables.tasks import Task, accuracy, load_task, mlp
from trainables.workflow import task_range_test

OPTIMIZER, WEIGHT_DECAY, NUM_ITER = "sgd", 5e-4, 100
OFFSET = 3.0  # the regression's target shift
EXPECTED = {"healthy": "ok", "nan": "non_finite", "shuffled": "no_descent", "frozen": "flat",
            "regression": "ok", "regression_shuffled": "no_signal", "regression_zeroed": "no_signal",
            "imbalanced": "ok", "imbalanced_shuffled": "no_signal", "imbalanced_zeroed": "no_signal"}
CASES = tuple(EXPECTED)
BATCH = {"regression": 100, "imbalanced": 32}  # by task; MNIST-1D's cases 100


class BatchStandardize(nn.Module):
    """(h - mean) / std over the batch, BatchNorm written by hand without its eps: a unit that is
    zero for the whole batch (a dead ReLU) gives 0/0."""

    def forward(self, h):
        return (h - h.mean(0)) / h.std(0)


def bottleneck_mlp(width: int = 16) -> nn.Sequential:
    return nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, width), nn.ReLU(), BatchStandardize(),
                         nn.Linear(width, 10))


def frozen_mlp() -> nn.Sequential:
    model = mlp(40, 100, 10)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def shuffled(task: Task, seed: int = 0) -> Task:
    x, y = task.train
    return replace(task, train=(x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]))


def zeroed(task: Task) -> Task:
    x, y = task.train
    return replace(task, train=(torch.zeros_like(x), y))


def uncentred_regression() -> Task:
    task = load_task("synthetic")
    (x, y), (xv, yv) = task.train, task.val
    return replace(task, name="synthetic+3", train=(x, y + OFFSET), val=(xv, yv + OFFSET))


def breast_cancer() -> Task:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    n = int(0.8 * len(x))
    x = (x - x[:n].mean(0)) / x[:n].std(0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return Task("breast_cancer", (x[:n], y[:n]), (x[n:], y[n:]), models={"mlp": lambda: mlp(30, 64, 2)},
                loss_fn=nn.functional.cross_entropy, metric=accuracy)


def case_task(case: str) -> Task:
    """MNIST-1D's cases by their name, the others as <task>[_<what is broken>]."""
    base, _, broken = case.partition("_")
    if base == "regression":
        task = uncentred_regression()
    elif base == "imbalanced":
        task = breast_cancer()
    else:
        task, broken = load_task("mnist1d"), case
    if broken == "nan":
        return replace(task, models={"mlp": bottleneck_mlp})
    if broken == "frozen":
        return replace(task, models={"mlp": frozen_mlp})
    if broken == "shuffled":
        return shuffled(task)
    return zeroed(task) if broken == "zeroed" else task


def run(case: str, seed: int) -> dict:
    t0 = time.perf_counter()
    r = task_range_test(case_task(case), "mlp", OPTIMIZER, WEIGHT_DECAY, batch_size=BATCH.get(case.partition("_")[0], 100),
                        num_iter=NUM_ITER, seed=seed)
    c = r.curves[0]
    unchecked = replace(c, baselines=[])  # the same curve read as before the baseline existed
    before = diagnose(unchecked, features(unchecked), start_lr=r.settings["start_lr"], end_lr=r.settings["end_lr"],
                      min_descent=MIN_DESCENT).status
    f = r.features
    bad = [i for i, v in enumerate(c.raw_losses) if not math.isfinite(v)]
    onset = bad[0] if bad else None
    return dict(case=case, seed=seed, status=r.diagnosis.status, message=r.diagnosis.message, without_baseline=before,
                baseline=r.baseline, ratio=f.min_loss / f.baseline if f and f.baseline else None,
                max_lr=r.suggestion.max_lr if r.suggestion else None, lr=r.suggestion.lr if r.suggestion else None,
                stop=c.stop, nonfinite=len(bad), first_nonfinite_lr=c.lrs[onset] if bad else None,
                loss_before_nonfinite=c.raw_losses[onset - 1] if onset else None, start_loss=c.raw_losses[0],
                lrs=c.lrs, raw_losses=c.raw_losses, smoothed=c.smoothed, seconds=time.perf_counter() - t0)


def verdict(case: str, runs: list[dict]) -> dict:
    statuses = Counter(r["status"] for r in runs)
    healthy = EXPECTED[case] == "ok"
    good = sum((r["status"] == "ok") == healthy for r in runs)
    top = ", ".join(f"{s} {n}/{len(runs)}" for s, n in statuses.most_common())
    what = "accepted" if healthy else "flagged"
    summary = f"{case}: {top} ({what} {good}/{len(runs)})"
    before = Counter(r["without_baseline"] for r in runs)
    if before != statuses:
        summary += "; without the baseline: " + ", ".join(f"{s} {n}/{len(runs)}" for s, n in before.most_common())
    return dict(statuses=top, correct=good, of=len(runs), summary=summary)


def margins(runs: list[dict], stored: list[dict]) -> dict:
    """The lowest loss over the baseline: the largest on curves that must stay ok (the healthy cases
    here and bench.suggestion's stored curves), the smallest on those that must be no_signal."""
    healthy = [r["ratio"] for r in runs + stored if EXPECTED.get(r.get("case"), "ok") == "ok"]
    broken = [r["ratio"] for r in runs if EXPECTED[r["case"]] == "no_signal"]
    return dict(healthy_max=max(healthy), broken_min=min(broken))


def _outcome(r: dict) -> str:
    if r["max_lr"] is not None:
        return f"max_lr {r['max_lr']:.3g}, lr {r['lr']:.3g}"
    return "refused"


def _ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3f}"


def _nan_at(r: dict) -> str:
    if not r["nonfinite"]:
        return "-"
    before = r["loss_before_nonfinite"]
    loss = f" (loss {before:.2f} just before, {r['start_loss']:.2f} at start)" if before is not None else ""
    return f"{r['nonfinite']} from lr {r['first_nonfinite_lr']:.2g}{loss}"


def plot(runs: list[dict]):
    """One row per task: MNIST-1D's four cases, then the regression's and the breast-cancer task's
    three, each with the constant predictor's loss (mean over seeds) as a dotted line."""
    fig = figure((14.0, 9.5))
    row = {"regression": 1, "imbalanced": 2}
    for i, case in enumerate(CASES):
        base = case.partition("_")[0]
        ax = fig.add_subplot(3, 4, 4 * row[base] + CASES.index(case) - CASES.index(base) + 1 if base in row else i + 1)
        here = [r for r in runs if r["case"] == case]
        if all(r["baseline"] is not None for r in here):
            ax.axhline(np.mean([r["baseline"] for r in here]), color="k", ls=":", lw=1, label="constant predictor")
        for r in here:
            line, = ax.plot(r["lrs"], r["raw_losses"], lw=1, label=f"seed {r['seed']}: {r['status']}")
            bad = [lr for lr, v in zip(r["lrs"], r["raw_losses"]) if not math.isfinite(v)]
            ax.plot(bad, [0.98] * len(bad), "x", color=line.get_color(), transform=ax.get_xaxis_transform())
        finite = [v for r in runs if r["case"] == case for v in r["raw_losses"] if math.isfinite(v)]
        ax.set(xscale="log", title=f"{case} (x: NaN/inf loss)" if case == "nan" else case, xlabel="lr",
               ylabel="training loss", ylim=(0.0, min(max(finite, default=1.0), 3 * float(np.median(finite))) * 1.05))
        ax.legend(fontsize=8)
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2 seeds")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    seeds = 2 if args.quick else args.seeds
    t0 = time.perf_counter()
    with pool(args.workers) as ex:
        runs = list(ex.map(run, *zip(*[(c, s) for c in CASES for s in range(seeds)])))
    wall = time.perf_counter() - t0
    rows = [[r["case"], r["seed"], r["status"], r["without_baseline"], _ratio(r["ratio"]), _outcome(r), r["stop"],
             _nan_at(r)] for r in runs]
    print(table(["case", "seed", "diagnosis", "without baseline", "min / baseline", "suggestion", "sweep stopped by",
                 "NaN/inf losses"], rows))
    print()
    for status, message in dict((r["status"], r["message"]) for r in runs).items():
        print(f"{status}: {message}")
    verdicts = {c: verdict(c, [r for r in runs if r["case"] == c]) for c in CASES}
    print()
    for v in verdicts.values():
        print(v["summary"])
    print(f"\n{seeds} seeds, {NUM_ITER} iterations per test, wall {wall:.1f} s")
    headline = {c: v["summary"] for c, v in verdicts.items()}
    headline.update(all_correct=float(sum(v["correct"] for v in verdicts.values())),
                    tests=float(len(runs)), wall_s=wall)
    stored = []
    if (RESULTS / "suggestion.json").exists() and not args.quick:
        stored = rediagnose(json.loads((RESULTS / "suggestion.json").read_text()))
        ok = sum(r["status"] == "ok" for r in stored)
        headline["bench.suggestion's stored curves, re-diagnosed"] = (
            f"ok {ok}/{len(stored)}, min / baseline {min(r['ratio'] for r in stored):.3f} .. "
            f"{max(r['ratio'] for r in stored):.3f}")
    m = margins(runs, stored)
    headline["no_signal below min / baseline"] = f"{1 - SIGNAL_MARGIN:.2f}"
    headline["min / baseline: highest that must be ok, lowest that must be no_signal"] = (
        f"{m['healthy_max']:.3f}, {m['broken_min']:.3f}")
    print("\n".join(f"{k}: {v}" for k, v in list(headline.items())[-3:]))
    finish("sanity", args.quick, dict(headline=headline, verdicts=verdicts, expected=EXPECTED, runs=runs,
                                      suggestion_curves=stored, margins=m),
           figures={"curves": plot(runs)},
           params=dict(tasks="mnist1d, synthetic+3, breast_cancer", model="mlp", optimizer=OPTIMIZER,
                       weight_decay=WEIGHT_DECAY,
                       batch_size=BATCH, num_iter=NUM_ITER, seeds=seeds),
           metrics={f"{c}_correct": float(v["correct"]) for c, v in verdicts.items()}
           | {"all_correct": headline["all_correct"], "wall_s": wall})


if __name__ == "__main__":
    main()
