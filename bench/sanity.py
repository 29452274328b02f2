"""The LR range test as a sanity check: does lrtune accept a healthy model and refuse broken ones?

The claim (Smith 2015, 2018; lrtune's "insurance check"): a healthy range-test curve has three
regions, a plateau at too-small LRs, a fast descent and a divergence; a curve without them means a
bug in model or data, so the test should refuse to suggest an LR instead of seeding a sweep.

Four cases on MNIST-1D, the MLP (40-100-100-10), SGD with momentum 0.9 and L2 decay 5e-4, each
range test seeded (model init and batch order) with every seed:

healthy   the model and data as shipped;
nan       a 40-100-16-10 variant whose 16-unit ReLU bottleneck is standardised over the batch by
          hand, `(h - h.mean(0)) / h.std(0)`, BatchNorm without its eps: a unit that is dead for a
          whole batch gives 0/0 = NaN, which starts partway through the sweep as larger LRs kill
          units (at some LR for some batches, then for all once a unit is dead for good);
shuffled  the training labels permuted once (seed 0): inputs carry no information about targets;
frozen    every parameter has requires_grad=False: the optimizer gets them but nothing moves.

Per case and seed: lrtune's diagnosis status and message and its suggestion (or the refusal).
The headline counts, per case, how many seeds got the expected verdict (`ok` for healthy, a
refusal for the rest). `python -m bench.sanity [--quick]`.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from bench.common import figure, finish, pool, table
from trainables.tasks import Task, load_task, mlp
from trainables.workflow import task_range_test

OPTIMIZER, WEIGHT_DECAY, BATCH, NUM_ITER = "sgd", 5e-4, 100, 100
CASES = ("healthy", "nan", "shuffled", "frozen")
EXPECTED = {"healthy": "ok", "nan": "non_finite", "shuffled": "no_descent", "frozen": "flat"}


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


def case_task(case: str) -> Task:
    task = load_task("mnist1d")
    if case == "nan":
        return replace(task, models={"mlp": bottleneck_mlp})
    if case == "frozen":
        return replace(task, models={"mlp": frozen_mlp})
    return shuffled(task) if case == "shuffled" else task


def run(case: str, seed: int) -> dict:
    t0 = time.perf_counter()
    r = task_range_test(case_task(case), "mlp", OPTIMIZER, WEIGHT_DECAY, batch_size=BATCH, num_iter=NUM_ITER,
                        seed=seed)
    c = r.curves[0]
    bad = [i for i, v in enumerate(c.raw_losses) if not math.isfinite(v)]
    onset = bad[0] if bad else None
    return dict(case=case, seed=seed, status=r.diagnosis.status, message=r.diagnosis.message,
                max_lr=r.suggestion.max_lr if r.suggestion else None, lr=r.suggestion.lr if r.suggestion else None,
                stop=c.stop, nonfinite=len(bad), first_nonfinite_lr=c.lrs[onset] if bad else None,
                loss_before_nonfinite=c.raw_losses[onset - 1] if onset else None, start_loss=c.raw_losses[0],
                lrs=c.lrs, raw_losses=c.raw_losses, smoothed=c.smoothed, seconds=time.perf_counter() - t0)


def verdict(case: str, runs: list[dict]) -> dict:
    statuses = Counter(r["status"] for r in runs)
    good = sum((r["status"] == "ok") == (case == "healthy") for r in runs)
    top = ", ".join(f"{s} {n}/{len(runs)}" for s, n in statuses.most_common())
    what = "accepted" if case == "healthy" else "flagged"
    return dict(statuses=top, correct=good, of=len(runs), summary=f"{case}: {top} ({what} {good}/{len(runs)})")


def _outcome(r: dict) -> str:
    if r["max_lr"] is not None:
        return f"max_lr {r['max_lr']:.3g}, lr {r['lr']:.3g}"
    return "refused"


def _nan_at(r: dict) -> str:
    if not r["nonfinite"]:
        return "-"
    before = r["loss_before_nonfinite"]
    loss = f" (loss {before:.2f} just before, {r['start_loss']:.2f} at start)" if before is not None else ""
    return f"{r['nonfinite']} from lr {r['first_nonfinite_lr']:.2g}{loss}"


def plot(runs: list[dict]):
    fig = figure((11.0, 7.5))
    for i, case in enumerate(CASES):
        ax = fig.add_subplot(2, 2, i + 1)
        for r in (r for r in runs if r["case"] == case):
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
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    seeds = 2 if args.quick else args.seeds
    t0 = time.perf_counter()
    with pool(args.workers) as ex:
        runs = list(ex.map(run, *zip(*[(c, s) for c in CASES for s in range(seeds)])))
    wall = time.perf_counter() - t0
    rows = [[r["case"], r["seed"], r["status"], _outcome(r), r["stop"], _nan_at(r)] for r in runs]
    print(table(["case", "seed", "diagnosis", "suggestion", "sweep stopped by", "NaN/inf losses"], rows))
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
    finish("sanity", args.quick, dict(headline=headline, verdicts=verdicts, expected=EXPECTED, runs=runs),
           figures={"curves": plot(runs)},
           params=dict(task="mnist1d", model="mlp", optimizer=OPTIMIZER, weight_decay=WEIGHT_DECAY,
                       batch_size=BATCH, num_iter=NUM_ITER, seeds=seeds),
           metrics={f"{c}_correct": float(v["correct"]) for c, v in verdicts.items()}
           | {"all_correct": headline["all_correct"], "wall_s": wall})


if __name__ == "__main__":
    main()
