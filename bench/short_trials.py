"""Per-trial cost with many short trials: 64 trials of 2 epochs (digits, MLP, batch 64, blind search,
no stopping, 2 at a time) through `lrtune sweep` / the same trainings through the hand-written Ray
Tune + OptunaSearch (TPE) + MLflowLoggerCallback sweep (bench/handwritten.py, `--no-asha
--mlflow-uri`) (target <= 1.0). Each run is a fresh process (`python -m tuning.cli sweep`, `python -m
bench.handwritten`) in a fresh temp dir with fresh sqlite stores, timed from its start to its exit:
imports, Ray's start, the stores' creation and everything the sweep records are in the clock, as a
user waits for them. The two alternate, so that drift on a noisy machine hits both. Per trial beyond
the training: (process seconds - the trials' own seconds / trials at a time) / trials, where a
trial's own seconds are Tune's `time_total_s` (its function running: task load, epochs, reports).
`python -m bench.short_trials [--trials 64] [--epochs 2] [--repetitions 2] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bench.common import finish, table

ROOT = Path(__file__).resolve().parents[1]
CONCURRENT = 2


def lrtune_command(d: Path, trials: int, epochs: int) -> list[str]:
    cfg = dict(name="short", task="digits", model="mlp", epochs=epochs, batch_size=64,
               search=dict(num_samples=trials, seeded=False, max_concurrent=CONCURRENT),
               stopping=dict(scheduler="none"),
               tracking=dict(mlflow_uri=f"sqlite:///{d}/mlflow.db", experiment="short",
                             optuna_storage=f"sqlite:///{d}/optuna.db"),
               storage_path=str(d / "ray_results"))
    (d / "short.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return [sys.executable, "-m", "tuning.cli", "sweep", str(d / "short.yaml"), "--verbose", "0"]


def handwritten_command(d: Path, trials: int, epochs: int) -> list[str]:
    return [sys.executable, "-m", "bench.handwritten", "--task", "digits", "--model", "mlp", "--epochs",
            str(epochs), "--batch-size", "64", "--trials", str(trials), "--no-asha",
            "--mlflow-uri", f"sqlite:///{d}/mlflow.db", "--storage", str(d / "ray_results")]


def timed(command: list[str], d: Path) -> dict:
    """One sweep as its own process in `d`: its seconds start to exit, its trials' own seconds (the
    last `time_total_s` of each trial's result.json), and the seconds it says its sweep took."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=d, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}: exit {done.returncode}\n{done.stderr[-3000:]}")
    trial_s = [json.loads(f.read_text().splitlines()[-1])["time_total_s"]
               for f in (d / "ray_results").rglob("result.json") if f.read_text().strip()]
    said = re.search(r"trials(?:, \d+ epochs,| in) ([\d.]+) s", done.stdout)
    return dict(wall_s=wall, trials=len(trial_s), trial_s=float(sum(trial_s)),
                sweep_s=float(said.group(1)) if said else float("nan"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="8 trials of 2 epochs, one repetition")
    args = ap.parse_args(argv)
    trials, epochs, reps = (8, 2, 1) if args.quick else (args.trials, args.epochs, args.repetitions)
    runs = dict(lrtune=[], handwritten=[])
    for r in range(reps):
        for name, command in (("lrtune", lrtune_command), ("handwritten", handwritten_command)):
            with tempfile.TemporaryDirectory(prefix=f"short-{name}-") as d:
                runs[name].append(timed(command(Path(d), trials, epochs), Path(d)))
            x = runs[name][-1]
            print(f"repetition {r}: {name}: {x['wall_s']:.1f} s, {x['trials']} trials, "
                  f"trials' own {x['trial_s']:.1f} s", flush=True)
    for name, rs in runs.items():
        for x in rs:
            x["beyond_ms"] = 1000 * (x["wall_s"] - x["trial_s"] / CONCURRENT) / trials
            if x["trials"] != trials:
                raise RuntimeError(f"{name}: {x['trials']} trials' results, expected {trials}")
    med = {f"{name}_{k}": float(np.median([x[k] for x in rs]))
           for name, rs in runs.items() for k in ("wall_s", "trial_s", "sweep_s", "beyond_ms")}
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["lrtune"], runs["handwritten"])]
    med["ratio"] = float(np.median(ratios))
    each = lambda name, k, f: ", ".join(f.format(x[k]) for x in runs[name])  # noqa: E731
    print(table(["measure (median of repetitions)", "lrtune sweep", "hand-written", "each (lrtune; hand-written)"], [
        [f"{trials} trials x {epochs} epochs, process start to exit (s)", f"{med['lrtune_wall_s']:.1f}",
         f"{med['handwritten_wall_s']:.1f}", f"{each('lrtune', 'wall_s', '{:.1f}')}; "
                                             f"{each('handwritten', 'wall_s', '{:.1f}')}"],
        ["  of which the sweep, as it reports (s)", f"{med['lrtune_sweep_s']:.1f}",
         f"{med['handwritten_sweep_s']:.1f}", ""],
        ["trials' own seconds, summed (Tune's time_total_s)", f"{med['lrtune_trial_s']:.1f}",
         f"{med['handwritten_trial_s']:.1f}", ""],
        [f"per trial beyond the training (ms: process - trials' own / {CONCURRENT}, / trials)",
         f"{med['lrtune_beyond_ms']:.0f}", f"{med['handwritten_beyond_ms']:.0f}",
         f"{each('lrtune', 'beyond_ms', '{:.0f}')}; {each('handwritten', 'beyond_ms', '{:.0f}')}"],
        ["lrtune / hand-written, process seconds (target <= 1.0)", f"{med['ratio']:.3f}", "",
         ", ".join(f"{x:.3f}" for x in ratios)],
    ]))
    headline = {f"{trials} trials x {epochs} epochs, lrtune sweep / hand-written, process seconds (target <= 1.0)":
                med["ratio"],
                "lrtune sweep, process seconds": med["lrtune_wall_s"],
                "hand-written (Ray Tune + OptunaSearch + MLflowLoggerCallback), process seconds":
                med["handwritten_wall_s"],
                "lrtune ms per trial beyond the training": med["lrtune_beyond_ms"],
                "hand-written ms per trial beyond the training": med["handwritten_beyond_ms"]}
    finish("short_trials", args.quick, dict(trials=trials, epochs=epochs, concurrent=CONCURRENT, headline=headline,
                                            median=med, runs=runs, ratios=ratios),
           params=dict(trials=trials, epochs=epochs, repetitions=reps),
           metrics=dict(ratio=med["ratio"], lrtune_s=med["lrtune_wall_s"], handwritten_s=med["handwritten_wall_s"]))


if __name__ == "__main__":
    main()
