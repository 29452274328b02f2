"""1-cycle super-convergence: epochs to reach Adam-at-3e-4's 150-epoch accuracy.

Smith & Topin, "Super-Convergence" (2017/2019), claim that one LR cycle at a large max_lr reaches
in ~10k iterations what a piecewise-constant schedule reaches in ~80k (CIFAR-10, ResNet-56): an
order of magnitude fewer steps.

Measured here on MNIST-1D, reference CNN, batch 100, 3 seeds:
- baseline: Adam, constant LR 3e-4, no decay, 150 epochs (the habit); target = its final val
  accuracy, mean over seeds (its best epoch is recorded too);
- 1-cycle (`one_cycle`, default pct_start 0.25, div_factor 25, momentum 0.95 -> 0.85 -> 0.95)
  with AdamW (decoupled decay 1e-2) and with SGD + momentum (L2 5e-4), the decays the range-test
  rule was calibrated with (bench/suggestion.py); max_lr = lrtune's range-test suggestion
  (`task_range_test(...).suggestion.max_lr`, one test per optimizer and seed, on that seed's model);
- a ladder of budgets 3, 5, 8, 10, 15 epochs, each a separate run, since 1-cycle's schedule
  depends on its budget.
Read off, per seed: epochs-to-target = the smallest budget whose final accuracy reaches the target
(mean ± std over the seeds that reach it; the gap when a seed never does), its ratio to 150 (the
claim: <= 1/10), the epoch at which the baseline itself first reaches the target, and the epoch at
which the baseline first reaches 1-cycle's 15-epoch accuracy. A constant LR's last epoch is noisy
(one dip lowers the target), so the same is read for a stricter target too: the baseline's plateau,
the mean accuracy of its last 10 epochs.
`python -m bench.one_cycle [--quick] [--seeds 3]`
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import band, figure, finish, mean_std, pool, table
from trainables.tasks import load_task
from trainables.workflow import fit, task_range_test

TASK, MODEL, BATCH = "mnist1d", "cnn", 100
BASELINE_LR, BASELINE_EPOCHS = 3e-4, 150
BUDGETS = (3, 5, 8, 10, 15)
DECAY = {"adamw": 1e-2, "sgd": 5e-4}
PLATEAU_EPOCHS = 10


def baseline(seed: int, epochs: int) -> dict:
    h = fit(load_task(TASK), MODEL, "adam", "constant", epochs, BATCH, seed=seed, lr=BASELINE_LR)
    return dict(seed=seed, accuracy=[r["accuracy"] for r in h])


def suggested_max_lr(optimizer: str, seed: int, num_iter: int) -> dict:
    test = task_range_test(load_task(TASK), MODEL, optimizer, DECAY[optimizer], batch_size=BATCH, seed=seed,
                           num_iter=num_iter)
    if test.suggestion is None:
        raise RuntimeError(f"range test refused ({optimizer}, seed {seed}): {test.diagnosis.message}")
    return dict(optimizer=optimizer, seed=seed, max_lr=test.suggestion.max_lr)


def one_cycle(optimizer: str, seed: int, budget: int, max_lr: float) -> dict:
    h = fit(load_task(TASK), MODEL, optimizer, "one_cycle", budget, BATCH, seed=seed, max_lr=max_lr,
            weight_decay=DECAY[optimizer])
    return dict(optimizer=optimizer, seed=seed, budget=budget, max_lr=max_lr, accuracy=h[-1]["accuracy"],
                diverged=h[-1]["diverged"])


def first_epoch(curve: list[float], level: float) -> int | None:
    """The first epoch (1-based) at which a curve reaches `level`, None if it never does."""
    return next((e for e, a in enumerate(curve, 1) if a >= level), None)


def epochs_to_target(runs: list[dict], optimizer: str, seed: int, budgets: tuple, target: float) -> int | None:
    acc = {r["budget"]: r["accuracy"] for r in runs if r["optimizer"] == optimizer and r["seed"] == seed}
    return next((b for b in budgets if acc[b] >= target), None)


def summarise(base: list[dict], runs: list[dict], seeds: list[int], budgets: tuple) -> dict:
    curves = np.array([b["accuracy"] for b in base])
    target = float(curves[:, -1].mean())
    plateau = float(curves[:, -PLATEAU_EPOCHS:].mean())
    out = dict(target=target, baseline_final=curves[:, -1].tolist(), baseline_best=curves.max(1).tolist(),
               baseline_first_hit=[first_epoch(c, target) for c in curves.tolist()], plateau=plateau,
               baseline_first_plateau=[first_epoch(c, plateau) for c in curves.tolist()], one_cycle={})
    for o in DECAY:
        final = {b: [r["accuracy"] for r in runs if r["optimizer"] == o and r["budget"] == b] for b in budgets}
        top = float(np.mean(final[budgets[-1]]))
        out["one_cycle"][o] = dict(
            max_lr=[next(r["max_lr"] for r in runs if r["optimizer"] == o and r["seed"] == s) for s in seeds],
            final={str(b): v for b, v in final.items()},
            epochs_to_target=[epochs_to_target(runs, o, s, budgets, target) for s in seeds],
            epochs_to_plateau=[epochs_to_target(runs, o, s, budgets, plateau) for s in seeds],
            longest_budget_accuracy=top, gap_at_longest_budget=target - top,
            baseline_epochs_to_match_longest=[first_epoch(c, top) for c in curves.tolist()])
    return out


def describe(hits: list[int | None], scale: int | None = None) -> str:
    """mean ± std over the seeds that reached, n/N, and the ratio to `scale` when given."""
    got = [h for h in hits if h is not None]
    if not got:
        return f"never (0/{len(hits)})"
    text = f"{mean_std(got)} ({len(got)}/{len(hits)})"
    return text + (f", ratio {np.mean(got) / scale:.3f}" if scale else "")


def report(s: dict, budgets: tuple, base_epochs: int) -> str:
    header = ["workflow", "max_lr per seed", *[f"acc @{b} ep" for b in budgets], "epochs to target (/ baseline)",
              f"Adam-const epochs to reach this {budgets[-1]}-ep acc"]
    rows = []
    for o, r in s["one_cycle"].items():
        rows.append([f"1-cycle {o}", ", ".join(f"{x:.3g}" for x in r["max_lr"]),
                     *[mean_std(r["final"][str(b)]) for b in budgets],
                     describe(r["epochs_to_target"], base_epochs), describe(r["baseline_epochs_to_match_longest"])])
    base = [f"Adam {BASELINE_LR:.0e} constant", "-", *["" for _ in budgets],
            f"first hit {describe(s['baseline_first_hit'])}", ""]
    lines = [table(header, [base, *rows]),
             f"target = Adam-constant final accuracy at {base_epochs} epochs: {mean_std(s['baseline_final'])} "
             f"(its best epoch: {mean_std(s['baseline_best'])})",
             f"stricter target = its plateau (mean of its last {PLATEAU_EPOCHS} epochs) {s['plateau']:.3f}, "
             f"first reached by Adam-constant at epoch {describe(s['baseline_first_plateau'])}; 1-cycle epochs "
             "to it: " + ", ".join(f"{o} {describe(r['epochs_to_plateau'])}" for o, r in s["one_cycle"].items())]
    for o, r in s["one_cycle"].items():
        lines.append(f"{o}: {verdict(r, base_epochs, budgets)}; {speedups(s, r)}")
    return "\n".join(lines)


def speedups(s: dict, r: dict) -> str:
    """Speed-up against the epoch at which the baseline first reaches the target (it may get there
    long before its last epoch), over the seeds that reach it."""
    first = [e for e in s["baseline_first_hit"] if e is not None]
    hits = [e for e in r["epochs_to_target"] if e is not None]
    if not first or not hits:
        return "speed-up vs the baseline's first hit: n/a"
    return f"speed-up vs the baseline's first hit of the target: {np.mean(first) / np.mean(hits):.1f}x"


def verdict(r: dict, base_epochs: int, budgets: tuple) -> str:
    hits = r["epochs_to_target"]
    if None in hits:
        return (f"super-convergence not reproduced: {hits.count(None)}/{len(hits)} seeds miss the target within "
                f"{budgets[-1]} epochs (mean gap at {budgets[-1]} epochs {100 * r['gap_at_longest_budget']:+.2f} pt)")
    ratio = max(hits) / base_epochs
    if ratio <= 0.1:
        return (f"super-convergence reproduced: target within {max(hits)} epochs on every seed "
                f"(ratio {ratio:.3f} <= 0.1)")
    return f"not reproduced: target needs up to {max(hits)} epochs (ratio {ratio:.3f} > 0.1)"


def headline(s: dict, base_epochs: int, budgets: tuple) -> dict:
    h = {"target_accuracy": s["target"], "baseline_epochs": float(base_epochs),
         "baseline_best_accuracy": float(np.mean(s["baseline_best"]))}
    first = [e for e in s["baseline_first_hit"] if e is not None]
    h["baseline_first_hit_epoch"] = float(np.mean(first)) if first else "never"
    h["plateau_accuracy"] = s["plateau"]
    for o, r in s["one_cycle"].items():
        hits = [e for e in r["epochs_to_target"] if e is not None]
        h[f"{o}_epochs_to_target"] = float(np.mean(hits)) if hits else "never"
        h[f"{o}_epochs_to_target_std"] = float(np.std(hits)) if hits else "never"
        h[f"{o}_seeds_reaching_target"] = f"{len(hits)}/{len(r['epochs_to_target'])}"
        h[f"{o}_ratio_to_baseline"] = float(np.mean(hits)) / base_epochs if hits else "never"
        h[f"{o}_accuracy_at_{budgets[-1]}_epochs"] = r["longest_budget_accuracy"]
        match = [e for e in r["baseline_epochs_to_match_longest"] if e is not None]
        h[f"baseline_epochs_to_match_{o}_{budgets[-1]}ep"] = float(np.mean(match)) if match else "never"
        h[f"{o}_speedup_vs_baseline_first_hit"] = h["baseline_first_hit_epoch"] / h[f"{o}_epochs_to_target"] \
            if first and hits else "n/a"
        plateau = [e for e in r["epochs_to_plateau"] if e is not None]
        h[f"{o}_epochs_to_plateau"] = float(np.mean(plateau)) if plateau else "never"
        h[f"{o}_claim"] = verdict(r, base_epochs, budgets)
    return h


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="baseline 4 epochs, budgets 2 and 3, 2 seeds, 50-step range tests")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    seeds, base_epochs, budgets, num_iter = list(range(args.seeds)), BASELINE_EPOCHS, BUDGETS, 100
    if args.quick:
        seeds, base_epochs, budgets, num_iter = [0, 1], 4, (2, 3), 50
    t0 = time.perf_counter()
    with pool(args.workers) as ex:
        tests = [ex.submit(suggested_max_lr, o, s, num_iter) for o in DECAY for s in seeds]
        base_jobs = [ex.submit(baseline, s, base_epochs) for s in seeds]
        jobs = [ex.submit(one_cycle, t["optimizer"], t["seed"], b, t["max_lr"])
                for t in (f.result() for f in tests) for b in sorted(budgets, reverse=True)]
        base, runs = [j.result() for j in base_jobs], [j.result() for j in jobs]
    wall = time.perf_counter() - t0
    s = summarise(base, runs, seeds, budgets)
    h = headline(s, base_epochs, budgets)
    print(report(s, budgets, base_epochs))
    print(f"\n{len(seeds)} seeds, {len(base)} baselines of {base_epochs} epochs and {len(runs)} 1-cycle runs, "
          f"wall {wall:.0f} s")
    finish("one_cycle", args.quick,
           dict(task=TASK, model=MODEL, batch_size=BATCH, seeds=seeds, budgets=list(budgets), decay=DECAY,
                range_test_num_iter=num_iter, baseline=dict(optimizer="adam", lr=BASELINE_LR, epochs=base_epochs),
                wall_s=wall, headline=h,
                summary=s, baseline_runs=base, one_cycle_runs=runs),
           figures=dict(curves=plot(s, base, budgets, base_epochs)),
           params=dict(task=TASK, model=MODEL, seeds=len(seeds), budgets=list(budgets), baseline_epochs=base_epochs,
                       decay=DECAY),
           metrics={k: v for k, v in h.items() if isinstance(v, float)})


def plot(s: dict, base: list[dict], budgets: tuple, base_epochs: int):
    fig = figure((11, 4.2))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    curves = np.array([b["accuracy"] for b in base])
    m = band(left, np.arange(1, curves.shape[1] + 1), curves, "C0", f"Adam {BASELINE_LR:.0e} constant")
    for i, (o, r) in enumerate(s["one_cycle"].items(), 1):
        acc = np.array([r["final"][str(b)] for b in budgets])
        right.errorbar(budgets, acc.mean(1), yerr=acc.std(1), color=f"C{i}", marker="o", capsize=3,
                       label=f"1-cycle {o} (final acc at budget)")
    for ax in (left, right):
        ax.axhline(s["target"], color="k", ls="--", lw=1, label=f"target (final) {s['target']:.3f}")
        ax.axhline(s["plateau"], color="grey", ls=":", lw=1, label=f"plateau {s['plateau']:.3f}")
        ax.set_xlabel("epoch" if ax is left else "budget (epochs)")
        ax.set_ylabel("val accuracy")
        ax.legend(loc="lower right", fontsize=8)
    left.set_ylim(max(float(m.min()) - 0.02, s["target"] - 0.15), None)
    left.set_title(f"Adam baseline, {base_epochs} epochs, mean ± std", fontsize=10)
    right.set_xticks(list(budgets))
    right.set_title("1-cycle at the range test's max_lr, mean ± std", fontsize=10)
    fig.suptitle(f"MNIST-1D CNN, batch {BATCH}: super-convergence", fontsize=11)
    return fig


if __name__ == "__main__":
    main()
