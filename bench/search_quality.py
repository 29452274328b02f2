"""Search quality against the peers: does the seeded search find a better workflow, sooner and
cheaper, than the sweep an engineer writes by hand?

Six held-out tasks (bench/heldout.py: 1-D signals, tabular, images, token sequences; cross-entropy
and MSE; with and without normalisation layers), each trial 10 epochs at batch 64, 2 trials at a
time, 3 search seeds (the seed of the sampler and of the trainings). Methods, each run for real,
side by side (interleaved per task and seed, so machine drift hits all):

- lrtune: `lrtune sweep` with its defaults (range tests seed the search, schedule-fair stopping);
- lrtune_blind: the same with `search.seeded: false` (wide spaces, no warm start);
- handwritten: bench/handwritten.py, Ray Tune + OptunaSearch (TPE) + ASHA over optimizer
  {adamw, sgd}, lr 1e-5..1, weight decay 1e-6..1e-1, schedule {constant, cosine, one-cycle};
- random_asha: the same script with Ray Tune's random search;
- fastai: fastai's recipe, one training: a range test (AdamW, weight decay 0.01), its `valley`
  suggestion as max_lr of one 1-cycle training (fastai's fit_one_cycle defaults);
- adam: Adam at 3e-4, constant, no decay, one training.

Per task, method and budget (the first 4, 8, 16 trials in start order; 32 on tanh_deep): the
best validation metric (each trial's last reported value; a trial stopped early counts with the
value it was stopped at), mean ± std over search seeds; epochs trained; wall time. The single
trainings (fastai, adam) have one value for every budget. Targets (issue 15) are checked and
printed; results to bench/results/search_quality.json and a quality-vs-budget plot per task.
`python -m bench.search_quality [--tasks a,b] [--seeds 3] [--quick]`; finished (task, seed)
pairs are kept in bench/results/search_quality_parts/ and reused with `--reuse`; `--reuse --rerun
lrtune` runs only lrtune again (after a change to its seeding) beside the stored runs of the others,
each re-run marked with its date (`rerun`), so that RESULTS.md can say which wall times are not
side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import handwritten
from bench.common import RESULTS, band, figure, finish, table
from bench.heldout import MODEL, TASKS
from bench.suggestion import fastai_curve, valley
from schedules import range_test
from trainables.tasks import load_task
from trainables.workflow import build_optimizer, fit
from tuning import search
from tuning.config import parse
from tuning.seeding import RULE_ERROR
from tuning.sweep import init_ray, run_sweep

EPOCHS, BATCH = 10, 64
BUDGETS = (4, 8, 16)
LONG_TASK, LONG_BUDGET = "tanh_deep", 32
SWEEPS = ("lrtune", "lrtune_blind", "handwritten", "random_asha")
SINGLE = ("fastai", "adam")
METHODS = SWEEPS + SINGLE
PT = 0.01  # one point of accuracy or R²
PARTS = RESULTS / "search_quality_parts"


def spec(task: str) -> str:
    return f"bench.heldout:{task}"


def lrtune(tmp: Path, task: str, seed: int, trials: int, seeded: bool) -> dict:
    name = f"{task}-{'seeded' if seeded else 'blind'}-{seed}"
    cfg = parse(dict(
        name=name, task=spec(task), model=MODEL, epochs=EPOCHS, batch_size=BATCH, seed=seed,
        search=dict(num_samples=trials, max_concurrent=2, seeded=seeded, seed=seed),
        tracking=dict(mlflow_uri=f"sqlite:///{tmp}/mlflow.db", experiment=name,
                      optuna_storage=f"sqlite:///{tmp}/optuna.db"),
        storage_path=str(tmp / "ray_results")))
    t0 = time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        r = run_sweep(cfg, verbose=0)
    wall = time.perf_counter() - t0
    done = sorted(r.trials, key=lambda t: t["result"]["timestamp"] - t["result"]["time_total_s"])
    values = []
    for t in done:
        v = t["result"].get(r.metric)
        ok = t["result"].get("status") != "failed" and isinstance(v, (int, float)) and math.isfinite(v)
        values.append(float(v) if ok else None)
    extensions = search.band_extensions(cfg.tracking.optuna_storage, r.name) if seeded else []
    return dict(values=values, epochs=[int(t["result"].get("epoch", 0)) for t in done], wall_s=wall,
                range_test_s=r.range_test_seconds, extensions=extensions,
                priors={k: dict(max_lr=v.max_lr, band=v.lr_band) for k, v in (r.priors or {}).items()},
                configs=[{k: t["config"].get(k) for k in ("optimizer", "schedule", "lr", "max_lr", "weight_decay")}
                         for t in done])


def peer(tmp: Path, task: str, seed: int, trials: int, searcher: str) -> dict:
    os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)  # a user's script has Tune's defaults
    with contextlib.redirect_stdout(io.StringIO()):
        r = handwritten.run(spec(task), MODEL, EPOCHS, BATCH, trials, seed, search=searcher,
                            storage=str(tmp / f"peer-{searcher}"), mlflow_uri=f"sqlite:///{tmp}/mlflow.db",
                            experiment=f"{task}-{searcher}-{seed}")
    return dict(values=r["values"], epochs=r["epochs"], wall_s=r["wall_s"], configs=r["configs"])


def fastai_recipe(task: str, seed: int) -> dict:
    """fastai's lr_find (AdamW, wd 0.01, 1e-7..10 in 100 steps) -> valley -> fit_one_cycle."""
    t0 = time.perf_counter()
    t = load_task(spec(task))
    torch.manual_seed(seed)
    m = t.models[MODEL]()
    r = range_test(m, build_optimizer("adamw", m.parameters(), 1e-7, 0.01), t.loss_fn, t.loader(BATCH, seed=seed),
                   start_lr=1e-7, end_lr=10.0, num_iter=100, seed=seed)
    lrs, losses = fastai_curve(r.curves[0].lrs, r.curves[0].raw_losses)
    lr = valley(lrs, losses) if len(losses) >= 2 else 1e-3
    h = fit(t, MODEL, "adamw", "one_cycle", EPOCHS, BATCH, seed=seed, max_lr=lr, weight_decay=0.01,
            pct_start=0.25, div_factor=25.0, final_div_factor=1e5, max_momentum=0.95, base_momentum=0.85)
    return _single(t, h, time.perf_counter() - t0, lr=lr)


def adam(task: str, seed: int) -> dict:
    t0 = time.perf_counter()
    t = load_task(spec(task))
    h = fit(t, MODEL, "adam", "constant", EPOCHS, BATCH, seed=seed, lr=3e-4, weight_decay=0.0)
    return _single(t, h, time.perf_counter() - t0, lr=3e-4)


def _single(t, history, wall, lr) -> dict:
    v = history[-1][t.metric_name] if history else None
    return dict(values=[float(v) if v is not None and math.isfinite(v) else None], epochs=[len(history)],
                wall_s=wall, lr=lr)


def run_pair(task: str, seed: int, trials: int, methods=METHODS) -> dict:
    """The methods (every one by default) on one task with one search seed, one after another."""
    torch.set_num_threads(1)
    runs = dict(lrtune=lambda tmp: lrtune(tmp, task, seed, trials, seeded=True),
                handwritten=lambda tmp: peer(tmp, task, seed, trials, "tpe"),
                lrtune_blind=lambda tmp: lrtune(tmp, task, seed, trials, seeded=False),
                random_asha=lambda tmp: peer(tmp, task, seed, trials, "random"),
                fastai=lambda tmp: fastai_recipe(task, seed), adam=lambda tmp: adam(task, seed))
    with tempfile.TemporaryDirectory() as d:
        return {m: runs[m](Path(d)) for m in runs if m in methods}


def best_at(run: dict, n: int) -> float:
    """The best of a run's first n trials (None: failed or non-finite), or -inf when none; a single
    training has its one value at every budget."""
    done = [v for v in run["values"][:n] if v is not None]
    return max(done) if done else -math.inf


def summarise(parts: dict, seeds: list[int]) -> dict:
    """Per task: best after each budget per method and seed, epochs and wall time; the targets."""
    tasks = {}
    for task, by_seed in parts.items():
        budgets = BUDGETS + ((LONG_BUDGET,) if task == LONG_TASK else ())
        rows = {}
        for m in METHODS:
            runs = [by_seed[s][m] for s in seeds]
            rows[m] = dict(best={n: [best_at(r, n) for r in runs] for n in budgets},
                           epochs={n: [sum(r["epochs"][:n]) for r in runs] for n in budgets},
                           wall_s=[r["wall_s"] for r in runs])
        ceiling = max(max(v for n in budgets for v in rows[m]["best"][n]) for m in METHODS)
        tasks[task] = dict(budgets=list(budgets), rows=rows, ceiling=ceiling)
    return tasks


def rule_distances(parts: dict, seeds: list[int]) -> dict:
    """Per task and optimizer, per seed: log10(best 1-cycle max_lr any search found / lrtune's
    suggestion), the rule's error on held-out tasks as the searches measured it (their best
    1-cycle trial of that optimizer, over all four searches; SGD with L2 counts as sgdw)."""
    out = {}
    for task, by_seed in parts.items():
        out[task] = {}
        for opt in ("adamw", "sgdw"):
            d = []
            for s in seeds:
                lrtune = by_seed[s]["lrtune"]
                prior = lrtune.get("priors", lrtune.get("seeds", {})).get(opt)  # "seeds": parts stored before the rename
                found = [(v, c.get("max_lr") or c.get("lr")) for m in SWEEPS for c, v in
                         zip(by_seed[s][m]["configs"], by_seed[s][m]["values"])
                         if v is not None and c["schedule"] == "one_cycle"
                         and {"sgd": "sgdw"}.get(c["optimizer"], c["optimizer"]) == opt]
                if prior and found:
                    d.append(math.log10(max(found)[1] / prior["max_lr"]))
            out[task][opt] = d
    return out


def targets(tasks: dict) -> list[tuple[str, bool, str]]:
    """(target, met, measured) per issue 15's targets on search quality and epochs."""
    out = []
    for n in (8, 16):
        worse = []
        for task, t in tasks.items():
            lr, hw = np.array(t["rows"]["lrtune"]["best"][n]), np.array(t["rows"]["handwritten"]["best"][n])
            ok = lr.mean() >= hw.mean() and (lr >= hw).sum() >= math.ceil(2 * len(lr) / 3)
            if not ok:
                worse.append(f"{task} ({lr.mean():.4f} vs {hw.mean():.4f}, ahead in {(lr >= hw).sum()}/{len(lr)})")
        out.append((f"lrtune >= handwritten after {n} trials on every task (mean and 2 of 3 seeds)", not worse,
                    "missed on " + "; ".join(worse) if worse else "met on every task"))
    far = []
    for task, t in tasks.items():
        lr = np.array(t["rows"]["lrtune"]["best"][16])
        if t["ceiling"] - lr.mean() > 0.5 * PT:
            far.append(f"{task} ({lr.mean():.4f}, best any method {t['ceiling']:.4f})")
    out.append(("after 16 trials within 0.5 pt of the best any method reached", not far,
                "missed on " + "; ".join(far) if far else "met on every task"))
    gains = [np.mean(t["rows"]["lrtune"]["best"][4]) - np.mean(t["rows"]["handwritten"]["best"][4])
             for t in tasks.values()]
    out.append(("lrtune >= handwritten + 1 pt on average after 4 trials", np.mean(gains) >= PT,
                f"{100 * np.mean(gains):+.2f} pt on average (per task: "
                + ", ".join(f"{100 * g:+.1f}" for g in gains) + ")"))
    more = []
    for task, t in tasks.items():
        le, he = np.mean(t["rows"]["lrtune"]["epochs"][16]), np.mean(t["rows"]["handwritten"]["epochs"][16])
        if le > he:
            more.append(f"{task} ({le:.0f} vs {he:.0f})")
    tot = [sum(np.mean(t["rows"][m]["epochs"][16]) for t in tasks.values()) for m in ("lrtune", "handwritten")]
    out.append(("lrtune's epochs trained <= handwritten's (16 trials)", not more,
                f"{tot[0]:.0f} vs {tot[1]:.0f} epochs over all tasks; "
                + ("more on " + "; ".join(more) if more else "fewer or equal on every task")))
    return out


def _fmt(values) -> str:
    v = np.asarray(values, dtype=float)
    v = np.where(np.isfinite(v), v, np.nan)
    return f"{np.nanmean(v):.4f} ± {np.nanstd(v):.4f}"


def _plot(task: str, parts: dict, seeds: list[int], budget: int):
    fig = figure((6.4, 4.0))
    ax = fig.add_subplot()
    x = np.arange(1, budget + 1)
    for i, m in enumerate(METHODS):
        curves = [[best_at(parts[s][m], n) for n in x] for s in seeds]
        curves = np.where(np.isfinite(curves), curves, np.nan)
        band(ax, x, curves, f"C{i}", m, alpha=0.15)
    lo = np.nanmin([best_at(parts[s][m], budget) for s in seeds for m in METHODS])
    hi = np.nanmax([best_at(parts[s][m], budget) for s in seeds for m in METHODS])
    if np.isfinite(lo) and np.isfinite(hi):
        ax.set_ylim(lo - 0.25 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    ax.set_xlabel("trials (in start order)")
    ax.set_ylabel("best validation metric so far (mean ± std over seeds)")
    ax.set_title(f"{task}: quality vs budget")
    ax.legend(fontsize=7)
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="reuse finished (task, seed) pairs from an earlier run")
    ap.add_argument("--quick", action="store_true", help="one task, one seed, 4 trials")
    ap.add_argument("--rerun", default="", help="with --reuse: run these methods again (comma-separated, "
                    "e.g. lrtune after a change to the seeding) and keep the others' stored runs")
    args = ap.parse_args(argv)
    rerun = [m for m in args.rerun.split(",") if m]
    if [m for m in rerun if m not in METHODS] or (rerun and not args.reuse):
        ap.error(f"--rerun: methods among {', '.join(METHODS)}, with --reuse (got {args.rerun!r})")
    tasks = args.tasks.split(",") if not args.quick else ["tanh_deep"]
    seeds = list(range(1 if args.quick else args.seeds))
    global BUDGETS
    if args.quick:
        BUDGETS = (2, 4)
    init_ray()
    t0 = time.perf_counter()
    parts: dict = {}
    PARTS.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        load_task(spec(task))  # data made once, outside the timings
        parts[task] = {}
        for s in seeds:
            path = PARTS / f"{task}-{s}{'-quick' if args.quick else ''}.json"
            trials = 4 if args.quick else (LONG_BUDGET if task == LONG_TASK else max(BUDGETS))
            if args.reuse and path.is_file():
                parts[task][s] = json.loads(path.read_text())
                if not rerun:
                    continue
                for m, run in run_pair(task, s, trials, rerun).items():
                    parts[task][s][m] = dict(run, rerun=time.strftime("%Y-%m-%d"))
            else:
                parts[task][s] = run_pair(task, s, trials)
            path.write_text(json.dumps(parts[task][s], default=float))
            print(f"{task} seed {s}: " + ", ".join(
                f"{m} {best_at(parts[task][s][m], 16):.4f}" for m in METHODS), flush=True)
    summary = summarise(parts, seeds)
    for task, t in summary.items():
        rows = [[m] + [_fmt(t["rows"][m]["best"][n]) for n in t["budgets"]]
                + [f"{np.mean(t['rows'][m]['epochs'][t['budgets'][-1]]):.0f}", f"{np.mean(t['rows'][m]['wall_s']):.0f}"]
                for m in METHODS]
        print(f"\n{task} (best any method, any seed: {t['ceiling']:.4f})")
        print(table(["method"] + [f"best of {n}" for n in t["budgets"]]
                    + [f"epochs ({t['budgets'][-1]} trials)", "wall s"], rows))
    checks = [] if args.quick else targets(summary)
    print()
    for name, met, measured in checks:
        print(f"{'met   ' if met else 'MISSED'}  {name}: {measured}")
    distances = rule_distances(parts, seeds)
    print("\nthe rule on held-out tasks: log10(best 1-cycle max_lr found / suggested max_lr), per seed")
    print(table(["task", "adamw", "sgdw"], [[task] + [", ".join(f"{x:+.2f}" for x in d[o]) or "-" for o in ("adamw", "sgdw")]
                                           for task, d in distances.items()]))
    ext = {task: sum(len(parts[task][s]["lrtune"]["extensions"]) for s in seeds) for task in tasks}
    print(f"\nband extensions (over {len(seeds)} seeds): {ext}; wall time {time.perf_counter() - t0:.0f} s")
    headline = {name: ("met — " if met else "MISSED — ") + measured for name, met, measured in checks}
    for task, t in summary.items():
        n = t["budgets"][-1] if args.quick else 16
        headline[f"{task}: best of {n}, lrtune / handwritten / blind"] = " / ".join(
            _fmt(t["rows"][m]["best"][n]) for m in ("lrtune", "handwritten", "lrtune_blind"))
    figures = {task: _plot(task, parts[task], seeds, summary[task]["budgets"][-1]) for task in tasks}
    finish("search_quality", args.quick,
           dict(epochs=EPOCHS, batch_size=BATCH, seeds=seeds, tasks=summary, headline=headline,
                targets=[dict(target=a, met=b, measured=c) for a, b, c in checks], band_extensions=ext,
                rule_distances=distances, rule_error=RULE_ERROR,
                wall_s=time.perf_counter() - t0, parts=parts),
           figures=figures, params=dict(tasks=",".join(tasks), seeds=len(seeds)),
           metrics={f"{task}_lrtune_best16": float(np.mean(summary[task]["rows"]["lrtune"]["best"][
               summary[task]["budgets"][-1] if args.quick else 16])) for task in tasks})


if __name__ == "__main__":
    main()
