"""Seeded vs blind search on MNIST-1D (reference CNN, fixed epoch budget), measured side by side.

Each (mode, search seed) is one real `lrtune sweep` (run_sweep): the same trial budget, epochs,
Optuna TPE and 2 trials at a time; only `search.seeded` differs. Early stopping is off in both, so
every trial trains its whole budget and trial counts compare like for like. Prints
1. trials the seeded search needs to reach the blind search's final best (same search seed),
   target <= 1/3 of blind's budget;
2. best accuracy of each at equal budget, target seeded >= blind + 1 pt, or both at the ceiling
   (within 0.5 pt of the best accuracy any trial of this benchmark reached), saying which;
3. the range tests' share of the seeded sweeps' total compute (their Ray tasks' seconds / the
   machine's busy CPU-seconds during the sweep, so run it on an otherwise idle machine), target
   <= 3 %; also against the trials' own seconds only.
`python -m bench.seeded_vs_blind [--trials 32] [--epochs 20] [--seeds 3] [--quick]`
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import figure, finish, table
from trainables.tasks import load_task
from tuning.config import parse
from tuning.sweep import init_ray, run_sweep

CEILING_MARGIN = 0.005  # "at the ceiling": within 0.5 pt of the best any trial reached


def busy_cpu_seconds() -> float:
    """CPU-seconds this machine has spent busy (all cores, /proc/stat: everything but idle and
    iowait): over a sweep on an otherwise idle machine, the sweep's total compute — trials, range
    tests, worker start-up, Tune's driver loop, MLflow logging and plots, Ray's own processes."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def sweep(tmp: Path, mode: str, seed: int, trials: int, epochs: int) -> dict:
    cfg = parse(dict(
        name=f"{mode}-{seed}", task="mnist1d", model="cnn", epochs=epochs, batch_size=100,
        optimizers=["adamw", "sgdw"], schedules=["one_cycle", "cyclic", "sgdr", "constant"],
        range_test=dict(num_iter=100, weight_decays=[0, 1e-4, 1e-3]),
        search=dict(algorithm="optuna", num_samples=trials, max_concurrent=2, seeded=mode == "seeded", seed=seed),
        stopping=dict(scheduler="none"),
        tracking=dict(mlflow_uri=f"sqlite:///{tmp}/mlflow.db", experiment=f"{mode}-{seed}",
                      optuna_storage=f"sqlite:///{tmp}/optuna.db"),
        storage_path=str(tmp / "ray_results")))
    cpu0 = busy_cpu_seconds()
    r = run_sweep(cfg, verbose=0)
    cpu = busy_cpu_seconds() - cpu0
    done = sorted(r.trials, key=lambda t: t["result"]["timestamp"] - t["result"]["time_total_s"])  # start order
    accs = [t["result"].get("accuracy", 0.0) if t["result"].get("status") == "finished" else 0.0 for t in done]
    return dict(mode=mode, seed=seed, accuracies=accs, running_best=list(np.maximum.accumulate(accs)),
                trial_seconds=sum(t["result"]["time_total_s"] for t in done),
                range_test_seconds=r.range_test_seconds, wall_s=r.wall_time, busy_cpu_s=cpu,
                first=[(t["config"]["optimizer"], t["config"]["schedule"]) for t in done[:8]])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="4 trials of 2 epochs, one search seed")
    args = ap.parse_args(argv)
    trials, epochs, seeds = (4, 2, 1) if args.quick else (args.trials, args.epochs, args.seeds)
    load_task("mnist1d")  # generate and cache the data once, outside every timing
    init_ray()
    t0 = time.perf_counter()
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        for s in range(seeds):
            for mode in ("blind", "seeded"):  # interleaved: machine drift hits both
                tmp = Path(d) / f"{mode}-{s}"
                tmp.mkdir()
                runs[mode, s] = sweep(tmp, mode, s, trials, epochs)
    ceiling = max(max(r["accuracies"]) for r in runs.values())
    rows, needed = [], []
    for s in range(seeds):
        blind, seeded = runs["blind", s], runs["seeded", s]
        target = blind["running_best"][-1]
        k = next((i + 1 for i, b in enumerate(seeded["running_best"]) if b >= target), None)
        needed.append(k)
        rows.append([s, f"{target:.4f}", f"{seeded['running_best'][-1]:.4f}",
                     f"{k}" if k else f"not in {trials}", f"{seeded['running_best'][trials // 3 - 1]:.4f}",
                     f"{blind['running_best'][trials // 3 - 1]:.4f}",
                     f"{100 * seeded['range_test_seconds'] / seeded['busy_cpu_s']:.1f} %"])
    print(table(["search seed", f"blind best of {trials}", f"seeded best of {trials}",
                 "trials seeded needs to reach blind's best", f"seeded best of {trials // 3}",
                 f"blind best of {trials // 3}", "range tests' share"], rows))
    sb = np.array([runs["seeded", s]["running_best"][-1] for s in range(seeds)])
    bb = np.array([runs["blind", s]["running_best"][-1] for s in range(seeds)])
    shares = [runs["seeded", s]["range_test_seconds"] / (runs["seeded", s]["range_test_seconds"]
                                                         + runs["seeded", s]["trial_seconds"]) for s in range(seeds)]
    worst = max((k or trials + 1) for k in needed)
    gain = sb.mean() - bb.mean()
    at_ceiling = ceiling - sb.mean() <= CEILING_MARGIN and ceiling - bb.mean() <= CEILING_MARGIN
    verdict2 = ("seeded >= blind + 1 pt" if gain >= 0.01 else
                f"both at the ceiling ({ceiling:.4f}, within {100 * CEILING_MARGIN:.1f} pt)" if at_ceiling
                else "neither: target missed")
    print(f"\n1. trials seeded needs to reach blind's final best: {needed} "
          f"(worst {worst if worst <= trials else 'never'}; target <= {trials // 3} = 1/3 of {trials}): "
          f"{'met' if worst <= trials // 3 else 'missed'}")
    print(f"2. best at equal budget ({trials} trials): seeded {sb.mean():.4f} ± {sb.std():.4f}, blind "
          f"{bb.mean():.4f} ± {bb.std():.4f}, difference {100 * gain:+.2f} pt: {verdict2}")
    total = [runs["seeded", s]["range_test_seconds"] / runs["seeded", s]["busy_cpu_s"] for s in range(seeds)]
    print(f"3. range tests' share of the seeded sweeps' total compute (their tasks' seconds / the machine's busy "
          f"CPU-seconds during the sweep): {', '.join(f'{100 * x:.1f} %' for x in total)} (target <= 3 %): "
          f"{'met' if max(total) <= 0.03 else 'missed'}")
    print(f"   against the trials' own seconds only (a lower bound on the sweep's compute): "
          f"{', '.join(f'{100 * x:.1f} %' for x in shares)}")
    print(f"wall time {time.perf_counter() - t0:.0f} s; seeded sweeps' first trials (the warm start): "
          f"{runs['seeded', 0]['first']}")
    headline = {"trials seeded needs to reach blind's best (per search seed)": str(needed),
                f"seeded best of {trials}": f"{sb.mean():.4f} ± {sb.std():.4f}",
                f"blind best of {trials}": f"{bb.mean():.4f} ± {bb.std():.4f}",
                "seeded - blind (pt)": 100 * gain, "verdict at equal budget": verdict2,
                "range tests' share of compute (%)": ", ".join(f"{100 * x:.1f}" for x in total)}
    finish("seeded_vs_blind", args.quick,
           dict(trials=trials, epochs=epochs, seeds=seeds, ceiling=ceiling, needed=needed, shares=shares,
                total_shares=total, headline=headline,
                seeded_best=sb.tolist(), blind_best=bb.tolist(), runs={f"{m}-{s}": r for (m, s), r in runs.items()}),
           figures=dict(running_best=_plot(runs, seeds, trials)), params=dict(trials=trials, epochs=epochs),
           metrics=dict(seeded_best=float(sb.mean()), blind_best=float(bb.mean()), worst_needed=float(worst),
                        range_test_share=float(max(total))))


def _plot(runs: dict, seeds: int, trials: int):
    fig = figure()
    ax = fig.add_subplot()
    x = np.arange(1, trials + 1)
    for s in range(seeds):
        for mode, color in (("seeded", "C0"), ("blind", "C1")):
            ax.plot(x, runs[mode, s]["running_best"], color=color, alpha=0.8,
                    label=mode if s == 0 else None)
    ax.set_xlabel("trials (in start order)")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_ylim(0.9, 1.0)
    ax.legend()
    ax.set_title(f"seeded vs blind search, {seeds} search seeds")
    return fig


if __name__ == "__main__":
    main()
