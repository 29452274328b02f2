"""Range-test suggestion quality: lrtune's suggested 1-cycle max_lr against a grid search.

For each task x optimizer: 1-cycle training at every quarter-decade max_lr (several seeds), the
grid-best max_lr (highest mean final metric), lrtune's suggestion (range test repeated over seeds),
the distance in decades and the metric at each. `python -m bench.suggestion [--quick]`.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from bench.common import mean_std, pool, save, table
from schedules import range_test
from trainables.tasks import load_task
from trainables.workflow import build_optimizer, fit

CASES = [  # task, model, epochs, batch size
    ("mnist1d", "cnn", 20, 100),
    ("mnist1d", "mlp", 20, 100),
    ("digits", "mlp", 20, 50),
    ("synthetic", "mlp", 20, 100),
    ("digits", "cnn", 20, 50),  # held out: not among the grids the rule's margins were fitted on
]
WEIGHT_DECAY = {"adamw": 1e-2, "sgd": 5e-4}  # optimizer: weight decay (decoupled for adamw, L2 for sgd)
GRID = [10 ** (k / 4) for k in range(-16, 5)]  # 1e-4 .. 10 in quarter decades


def train_one(task_name, model, opt, max_lr, seed, epochs, batch_size):
    task = load_task(task_name)
    h = fit(task, model, opt, "one_cycle", epochs, batch_size, seed=seed, max_lr=max_lr,
            weight_decay=WEIGHT_DECAY[opt])
    value = h[-1][task.metric_name]
    finite = len(h) == epochs and math.isfinite(h[-1]["train_loss"]) and math.isfinite(value)
    return value if finite else -math.inf


def suggest_one(task_name, model, opt, batch_size, seeds):
    task = load_task(task_name)
    torch.manual_seed(seeds[0])
    m = task.models[model]()
    o = build_optimizer(opt, m.parameters(), 1e-3, WEIGHT_DECAY[opt])
    t0 = time.perf_counter()
    r = range_test(m, o, task.loss_fn, task.loader(batch_size, seed=seeds[0]),
                   repeats=len(seeds), seed=seeds[0])
    seconds = (time.perf_counter() - t0) / len(seeds)
    return dict(status=r.diagnosis.status, message=r.diagnosis.message,
                max_lr=r.suggestion.max_lr if r.suggestion else None,
                lr=r.suggestion.lr if r.suggestion else None,
                spread=r.suggestion.spread if r.suggestion else None,
                max_lrs=r.suggestion.max_lrs if r.suggestion else [],
                seconds_per_test=seconds,
                curves=[dict(lrs=c.lrs, raw_losses=c.raw_losses, stop=c.stop) for c in r.curves])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="one case, coarse grid, few epochs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds are first-seed .. first-seed+seeds-1 (the rule was fitted on 0..2)")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    cases, grid, seeds = CASES, GRID, args.seeds
    if args.quick:
        cases, grid, seeds = [("digits", "mlp", 3, 50)], GRID[8::4], 2
    seeds_used = range(args.first_seed, args.first_seed + seeds)
    t0 = time.perf_counter()
    jobs, results = {}, []
    with pool(args.workers) as ex:
        for task, model, epochs, bs in cases:
            for opt in WEIGHT_DECAY:
                key = (task, model, opt)
                jobs[key] = dict(
                    suggestion=ex.submit(suggest_one, task, model, opt, bs, seeds_used),
                    grid={lr: [ex.submit(train_one, task, model, opt, lr, s, epochs, bs)
                               for s in seeds_used] for lr in grid})
        for (task, model, opt), j in jobs.items():  # train at each suggestion, in the pool too
            sug = j["suggestion"] = j["suggestion"].result()
            if sug["max_lr"]:
                j["at"] = [ex.submit(train_one, task, model, opt, sug["max_lr"], s,
                                     *_case(cases, task, model)) for s in seeds_used]
        for (task, model, opt), j in jobs.items():
            sug = j["suggestion"]
            scores = {lr: [f.result() for f in fs] for lr, fs in j["grid"].items()}
            means = {lr: float(np.mean(v)) for lr, v in scores.items()}
            best = max(means, key=means.get)
            row = dict(task=task, model=model, optimizer=opt, grid=scores, grid_best=best,
                       grid_best_metric=scores[best], suggestion=sug)
            if "at" in j:
                row["suggestion_metric"] = [f.result() for f in j["at"]]
                row["distance_decades"] = math.log10(sug["max_lr"] / best)
            results.append(row)
    rows = []
    for r in results:
        s = r["suggestion"]
        rows.append([f"{r['task']}/{r['model']}", r["optimizer"], f"{r['grid_best']:.3g}",
                     mean_std(r["grid_best_metric"]),
                     f"{s['max_lr']:.3g}" if s["max_lr"] else s["status"],
                     f"{s['spread']:.2f}" if s["max_lr"] else "-",
                     f"{r.get('distance_decades', math.nan):+.2f}",
                     mean_std(r["suggestion_metric"]) if "suggestion_metric" in r else "-",
                     f"{s['seconds_per_test']:.2f}"])
    print(table(["task/model", "optimizer", "grid-best max_lr", "metric at grid-best",
                 "suggested max_lr", "spread (dec)", "distance (dec)", "metric at suggestion",
                 "range test s"], rows))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s, seeds {list(seeds_used)}, grid {len(grid)} points")
    save("suggestion" + ("_quick" if args.quick else ""),
         dict(seeds=list(seeds_used), grid=grid, results=results))


def _case(cases, task, model):
    return next((e, b) for t, m, e, b in cases if t == task and m == model)


if __name__ == "__main__":
    main()
