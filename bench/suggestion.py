"""Range-test suggestion quality: how close lrtune's suggested 1-cycle max_lr, fastai's valley /
steep / minimum rules and torch-lr-finder's steepest-gradient point land to the max_lr that a grid
search finds best, per seed, on four task/model pairs (plus a held-out one) x AdamW / SGD.

Grid: 1-cycle training at every quarter-decade max_lr from 1e-4 to 10, several seeds; the grid best
is the max_lr with the highest mean final metric, the good band the contiguous grid points around
it whose mean metric is within 0.01 of the best (accuracy, and r2 on synthetic). Metrics are floored
at 0: a diverged run, or an r2 below that of predicting the mean, scores 0. mnist1d/cnn trains
10 epochs (the others 20) to keep the full run within 8 minutes on 2 cores.

Rules, each applied per seed to a range test of a fresh model with that seed (1e-7 .. 10,
100 exponential steps); each rule's LR is used as the 1-cycle max_lr:
- lrtune: `range_test(...).suggestion.max_lr` (repeats=1; schedules/range_test.py: the divergence
  edge of the centred-smoothed curve, 1.2 decades below it for AdamW, 0.4 for SGD). It gives none
  when the test's diagnosis is not "ok".
- valley, steep, minimum: fastai's `lr_find` suggestion functions (fastai/callback/schedule.py),
  on the curve lrtune's test measured, read as fastai reads it: its Recorder's loss (EMA with
  beta 0.98, bias-corrected; a NaN stays NaN), cut after the first point above 4x its running best
  (fastai's LRFinder stop), then only points num_it//10 .. -5 before the first NaN.
  valley: the longest strictly decreasing subsequence of the loss, ending at `end` (its first end
  of maximal length L) and taken to start at `start = end - L`; the LR at
  start + floor((end - start)/3) + floor((end - start)/6), about halfway down that valley.
  steep: the LR at the left end of the steepest descent, argmin of d loss / d ln lr.
  minimum: the LR at the lowest loss, divided by 10.
- lr_finder: torch-lr-finder's own test, `LRFinder(model, optimizer, criterion).range_test(...,
  start_lr=1e-7, end_lr=10, num_iter=100, step_mode="exp")` on the same seed's model and batches,
  and the steepest-gradient LR that `LRFinder.plot(suggest_lr=True)` returns (np.gradient of its
  own smoothed loss, skipping the first 10 and last 5 points).

Per case x optimizer x rule, over seeds: distance log10(rule LR / grid best) in decades (mean ± std),
in-band rate (the rule's LR within half a grid step of the band), regret (grid-best mean metric
minus the mean metric of the grid point nearest the rule's LR in log space: no extra training),
spread (std of log10 LR) and fails (seeds without an LR, counted out of band). Then the same over
all cases, and each rule's regret, |distance| and spread as multiples of lrtune's.
`python -m bench.suggestion [--quick] [--first-seed 3 (default)]`; `--rediagnose` re-reads the
stored curves with today's diagnosis instead (nothing re-run; see `rediagnose`).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import torch
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from bench.common import RESULTS, figure, finish, mean_std, pool, table
from schedules import range_test
from schedules.range_test import Curve, batch_baselines, diagnose, features
from trainables.tasks import load_task
from trainables.workflow import build_optimizer, fit

CASES = [  # task, model, epochs, batch size
    ("mnist1d", "cnn", 10, 100),
    ("mnist1d", "mlp", 20, 100),
    ("digits", "mlp", 20, 50),
    ("synthetic", "mlp", 20, 100),
    ("digits", "cnn", 20, 50),  # held out: not among the grids lrtune's margins were fitted on
]
WEIGHT_DECAY = {"adamw": 1e-2, "sgd": 5e-4}  # optimizer: weight decay (decoupled for adamw, L2 for sgd)
GRID = [10 ** (k / 4) for k in range(-16, 5)]  # 1e-4 .. 10 in quarter decades
RULES = ("lrtune", "valley", "steep", "minimum", "lr_finder")
BAND = 0.01  # the good band: grid points whose mean metric is within this of the grid best
START_LR, END_LR, NUM_ITER = 1e-7, 10.0, 100
MIN_DESCENT = 0.05  # range_test's default, for re-diagnosing stored curves
FASTAI_BETA, FASTAI_STOP_DIV = 0.98, 4.0


def train_one(task_name, model, opt, max_lr, seed, epochs, batch_size):
    task = load_task(task_name)
    h = fit(task, model, opt, "one_cycle", epochs, batch_size, seed=seed, max_lr=max_lr,
            weight_decay=WEIGHT_DECAY[opt])
    value = h[-1][task.metric_name]
    finite = len(h) == epochs and math.isfinite(h[-1]["train_loss"]) and math.isfinite(value)
    return value if finite else -math.inf


def suggest_one(task_name, model, opt, batch_size, seed):
    """Every rule's LR (None where a rule gives none) from range tests of a fresh model seeded `seed`."""
    task = load_task(task_name)
    torch.manual_seed(seed)
    m = task.models[model]()
    o = build_optimizer(opt, m.parameters(), START_LR, WEIGHT_DECAY[opt])
    t0 = time.perf_counter()
    r = range_test(m, o, task.loss_fn, task.loader(batch_size, seed=seed), start_lr=START_LR,
                   end_lr=END_LR, num_iter=NUM_ITER, seed=seed)
    seconds = time.perf_counter() - t0
    curve = r.curves[0]
    t0 = time.perf_counter()
    finder_lr, history = lr_finder_steepest(task, model, opt, batch_size, seed)
    finder_seconds = time.perf_counter() - t0
    lrs = dict(lrtune=r.suggestion.max_lr if r.suggestion else None,
               **fastai_rules(*fastai_curve(curve.lrs, curve.raw_losses)), lr_finder=finder_lr)
    return dict(seed=seed, lrs=lrs, status=r.diagnosis.status, seconds=seconds, lr_finder_seconds=finder_seconds,
                curve=dict(lrs=curve.lrs, raw_losses=curve.raw_losses, stop=curve.stop),
                lr_finder_history=history)


def fastai_curve(lrs, raw_losses, num_it=NUM_ITER):
    """The (lrs, losses) that fastai's `lr_find` hands its suggestion functions, from a raw sweep."""
    smooth, avg, best = [], 0.0, math.inf
    for n, loss in enumerate(raw_losses, 1):
        avg = FASTAI_BETA * avg + (1 - FASTAI_BETA) * loss
        smooth.append(avg / (1 - FASTAI_BETA**n))
        best = min(best, smooth[-1])
        if smooth[-1] > FASTAI_STOP_DIV * best:
            break
    x = np.asarray(lrs[:len(smooth)])[num_it // 10:-5]
    y = np.asarray(smooth)[num_it // 10:-5]
    nan = np.flatnonzero(np.isnan(y))
    return (x[:nan[0]], y[:nan[0]]) if len(nan) else (x, y)


def fastai_rules(lrs, losses):
    if len(losses) < 2:
        return dict(valley=None, steep=None, minimum=None)
    return dict(valley=valley(lrs, losses), steep=steep(lrs, losses), minimum=minimum(lrs, losses))


def valley(lrs, losses):
    longest = np.ones(len(losses), dtype=int)  # longest strictly decreasing subsequence ending at i
    for i in range(1, len(losses)):
        higher = losses[:i] > losses[i]
        if higher.any():
            longest[i] = longest[:i][higher].max() + 1
    end = int(np.argmax(longest))
    start = end - longest[end] if longest[end] > 1 else 0
    third = (end - start) / 3
    return float(lrs[start + int(third) + int(third / 2)])


def steep(lrs, losses):
    return float(lrs[np.argmin(np.diff(losses) / np.diff(np.log(lrs)))])


def minimum(lrs, losses):
    return float(lrs[np.argmin(losses)] / 10)


def lr_finder_steepest(task, model, opt, batch_size, seed):
    """torch-lr-finder's range test and its steepest-gradient LR (None when it stopped too early
    to suggest one), with its history."""
    torch.manual_seed(seed)
    m = task.models[model]()
    finder = LRFinder(m, build_optimizer(opt, m.parameters(), START_LR, WEIGHT_DECAY[opt]), task.loss_fn)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # its progress bar and prints
        finder.range_test(TrainDataLoaderIter(task.loader(batch_size, seed=seed)), start_lr=START_LR,
                          end_lr=END_LR, num_iter=NUM_ITER, step_mode="exp")
        try:
            lr = float(finder.plot(ax=figure().add_subplot(), suggest_lr=True)[1])
        except RuntimeError:
            lr = None
    return lr, finder.history


def rediagnose(payload: dict) -> list[dict]:
    """Every stored range-test curve of a suggestion run read again by today's diagnosis, with the
    constant-predictor baseline of exactly the batches it consumed (the task's loader replayed with
    the test's seed, cycled as range_test cycles it). The curves were measured with parameters
    moving, so params_changed is taken as True; the smoothed curve is not stored and not read."""
    out = []
    for case in payload["cases"]:
        task = load_task(case["task"])
        for test in case["range_tests"]:
            c = test["curve"]
            loader = task.loader(case["batch_size"], seed=test["seed"])
            batches = itertools.islice((b for _ in itertools.count() for b in loader), len(c["raw_losses"]))
            curve = Curve(c["lrs"], c["raw_losses"], [], c["stop"], params_changed=True,
                          baselines=batch_baselines(task.loss_fn, [y for _, y in batches]))
            f = features(curve)
            d = diagnose(curve, f, start_lr=START_LR, end_lr=END_LR, min_descent=MIN_DESCENT)
            out.append(dict(task=case["task"], model=case["model"], optimizer=case["optimizer"], seed=test["seed"],
                            stored_status=test["status"], status=d.status, min_loss=f.min_loss,
                            baseline=f.baseline, ratio=f.min_loss / f.baseline))
    return out


def case_result(case, opt, tests, runs):
    """Grid best, good band and every rule's metrics for one task/model x optimizer."""
    grid = sorted(runs)
    scores = np.maximum(np.array([runs[lr] for lr in grid]), 0.0)
    means = scores.mean(axis=1)
    best = int(np.argmax(means))
    lo, hi = best, best
    while lo > 0 and means[lo - 1] >= means[best] - BAND:
        lo -= 1
    while hi < len(grid) - 1 and means[hi + 1] >= means[best] - BAND:
        hi += 1
    rules = {rule: rule_metrics([t["lrs"][rule] for t in tests], np.log10(grid), means, best, (lo, hi))
             for rule in RULES}
    return dict(task=case[0], model=case[1], epochs=case[2], batch_size=case[3], optimizer=opt,
                grid=[dict(max_lr=lr, metric=runs[lr], mean=float(m)) for lr, m in zip(grid, means)],
                grid_best=grid[best], grid_best_metric=list(scores[best]), band=[grid[lo], grid[hi]],
                rules=rules, range_tests=tests)


def rule_metrics(lrs, log_grid, means, best, band):
    found = np.log10([lr for lr in lrs if lr is not None])
    metrics = dict(lrs=lrs, fails=len(lrs) - len(found), in_band=0.0, lr=math.nan, distance=math.nan,
                   distance_std=math.nan, distances=[], regret=math.nan, spread=math.nan)
    if not len(found):
        return metrics
    half = (log_grid[1] - log_grid[0]) / 2
    distance = found - log_grid[best]
    nearest = np.abs(found[:, None] - log_grid[None, :]).argmin(axis=1)
    inside = (found >= log_grid[band[0]] - half) & (found <= log_grid[band[1]] + half)
    return dict(metrics, lr=float(10 ** found.mean()), distance=float(distance.mean()),
                distance_std=float(distance.std()), distances=list(distance), in_band=inside.sum() / len(lrs),
                regret=float((means[best] - means[nearest]).mean()), spread=float(found.std()))


def aggregate(results):
    """Per rule over all cases: mean |distance| over every seed, and the cases' mean in-band rate,
    regret and spread; regret, |distance| and spread also as multiples of lrtune's."""
    out = {}
    for rule in RULES:
        ms = [r["rules"][rule] for r in results]
        distances = np.concatenate([m["distances"] for m in ms])
        out[rule] = dict(abs_distance=float(np.abs(distances).mean()) if len(distances) else math.nan,
                         in_band=float(np.mean([m["in_band"] for m in ms])),
                         regret=float(np.nanmean([m["regret"] for m in ms])),
                         spread=float(np.nanmean([m["spread"] for m in ms])),
                         fails=sum(m["fails"] for m in ms))
    for m in out.values():
        for key in ("regret", "abs_distance", "spread"):
            m[f"{key}_vs_lrtune"] = _ratio(m[key], out["lrtune"][key])
    return out


def _ratio(a, b):
    return a / b if b else (math.nan if a == 0 else math.inf)


def print_tables(results, agg, seeds, grid, wall):
    print(table(["task/model", "optimizer", "grid-best max_lr", "metric at grid-best", "good band",
                 "range test s", "lr_finder s"], [_grid_row(r) for r in results]))
    print()
    print(table(["task/model", "optimizer", "rule", "max_lr (geo. mean)", "distance (dec)", "in band", "regret",
                 "spread (dec)", "fails"],
                [[f"{r['task']}/{r['model']}", r["optimizer"], rule, f"{m['lr']:.3g}",
                  f"{m['distance']:+.2f} ± {m['distance_std']:.2f}", f"{m['in_band']:.2f}", f"{m['regret']:.3f}",
                  f"{m['spread']:.2f}", m["fails"]] for r in results for rule, m in r["rules"].items()]))
    print()
    print(table(["rule", "mean abs distance (dec)", "in band", "mean regret", "mean spread (dec)", "fails",
                 "regret / lrtune's", "abs distance / lrtune's", "spread / lrtune's"],
                [[rule, f"{m['abs_distance']:.2f}", f"{m['in_band']:.2f}", f"{m['regret']:.3f}", f"{m['spread']:.2f}",
                  m["fails"], f"{m['regret_vs_lrtune']:.2f}", f"{m['abs_distance_vs_lrtune']:.2f}",
                  f"{m['spread_vs_lrtune']:.2f}"] for rule, m in agg.items()]))
    print(f"\nwall time {wall:.0f} s, seeds {seeds}, grid {len(grid)} points")


def _grid_row(r):
    tests = r["range_tests"]
    return [f"{r['task']}/{r['model']}", r["optimizer"], f"{r['grid_best']:.3g}", mean_std(r["grid_best_metric"]),
            f"{r['band'][0]:.3g} .. {r['band'][1]:.3g}", f"{np.mean([t['seconds'] for t in tests]):.2f}",
            f"{np.mean([t['lr_finder_seconds'] for t in tests]):.2f}"]


def plot(results, metric_names):
    """Per case x optimizer: the grid's mean metric against max_lr, the good band shaded, and each
    rule's (geometric) mean LR as a vertical line."""
    cols = len(WEIGHT_DECAY)
    rows = math.ceil(len(results) / cols)
    fig = figure((5.0 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, r in zip(axes.flat, results):
        ax.axvspan(*r["band"], color="0.9", label="good band")
        ax.plot([g["max_lr"] for g in r["grid"]], [g["mean"] for g in r["grid"]], "o-", color="k", ms=3,
                label="grid mean")
        for i, (rule, m) in enumerate(r["rules"].items()):
            if math.isfinite(m["lr"]):
                ax.axvline(m["lr"], color=f"C{i}", ls="--", lw=1.2, label=rule)
        ax.set_xscale("log")
        ax.set_title(f"{r['task']}/{r['model']}, {r['optimizer']}", fontsize=9)
        ax.set_ylabel(metric_names[r["task"]], fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("1-cycle max_lr", fontsize=8)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one case, coarse grid, few epochs, 2 seeds")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=3,
                    help="seeds first-seed .. first-seed+seeds-1; default 3: lrtune's margins were fitted "
                         "on 0..2, which would flatter it")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--heldout", action="store_true",
                    help="the held-out tasks of bench/heldout.py instead (10 epochs, batch 64, as "
                         "bench.search_quality trains them); results in suggestion_heldout.json")
    ap.add_argument("--rediagnose", action="store_true",
                    help="only re-diagnose the curves stored in results/suggestion.json (nothing re-run)")
    args = ap.parse_args(argv)
    if args.rediagnose:
        rows = rediagnose(json.loads((RESULTS / "suggestion.json").read_text()))
        print(table(["task/model", "optimizer", "seed", "stored", "now", "min loss", "baseline", "min / baseline"],
                    [[f"{r['task']}/{r['model']}", r["optimizer"], r["seed"], r["stored_status"], r["status"],
                      f"{r['min_loss']:.4g}", f"{r['baseline']:.4g}", f"{r['ratio']:.3f}"] for r in rows]))
        return
    cases, grid, seeds = CASES, GRID, args.seeds
    if args.heldout:
        from bench.heldout import MODEL, TASKS

        cases = [(f"bench.heldout:{t}", MODEL, 10, 64) for t in TASKS]
    if args.quick:
        cases, grid, seeds = [("digits", "mlp", 3, 50)], GRID[4::4], 2
    seeds_used = list(range(args.first_seed, args.first_seed + seeds))
    t0 = time.perf_counter()
    with pool(args.workers) as ex:
        jobs = [(case, opt, [ex.submit(suggest_one, case[0], case[1], opt, case[3], s) for s in seeds_used],
                 {lr: [ex.submit(train_one, case[0], case[1], opt, lr, s, case[2], case[3]) for s in seeds_used]
                  for lr in grid})
                for case in cases for opt in WEIGHT_DECAY]
        results = [case_result(case, opt, [f.result() for f in tests], {lr: [f.result() for f in fs]
                                                                         for lr, fs in runs.items()})
                   for case, opt, tests, runs in jobs]
    wall = time.perf_counter() - t0
    agg = aggregate(results)
    print_tables(results, agg, seeds_used, grid, wall)
    metric_names = {task: load_task(task).metric_name for task, *_ in cases}
    headline = {f"{rule}: in band / mean regret / mean |distance| (dec) / spread (dec)":
                f"{m['in_band']:.2f} / {m['regret']:.3f} / {m['abs_distance']:.2f} / {m['spread']:.2f}"
                for rule, m in agg.items()}
    finish("suggestion_heldout" if args.heldout else "suggestion", args.quick, dict(seeds=seeds_used, grid=grid, wall_seconds=wall, cases=results,
                                          aggregate=agg, headline=headline),
           figures=dict(grid=plot(results, metric_names)),
           params=dict(seeds=seeds_used, grid_points=len(grid), cases=[f"{t}/{m} {e} epochs" for t, m, e, _ in cases]),
           metrics={f"{rule}_{key}": m[key] for rule, m in agg.items()
                    for key in ("in_band", "regret", "abs_distance", "spread")} | dict(wall_seconds=wall))


if __name__ == "__main__":
    main()
