"""Cyclical learning rates (Smith 2017): does triangular2 CLR reach a fixed LR's accuracy sooner?

The paper's claim (CIFAR-10, Caffe's CNN): a fixed LR reaches its final accuracy in 70k iterations,
CLR with the triangular2 policy reaches the same accuracy in 25k, a ratio of 0.36.

Here: MNIST-1D, the reference CNN, batch 100, for SGD with momentum 0.9 (L2 weight decay 5e-4) and
AdamW (decoupled decay 1e-2). Per optimizer and seed, one lrtune range test (same seed) gives both
arms their LRs: the fixed arm trains 40 epochs (`--epochs`) at `suggestion.lr`; the CLR arm cycles
triangular2 between base_lr = max_lr / 4 (= the fixed LR, as in the paper) and max_lr =
`suggestion.max_lr`, step_size_up = 4 epochs. Measured: the fixed arm's final accuracy (mean over
seeds, the target), the first epoch at which each CLR seed reaches it, and the ratio CLR epochs /
fixed budget (the paper's 25k / 70k); side by side, the first epoch at which each fixed seed
reaches the same target by the same rule, and CLR's epochs over those (a seed that never reaches
the target counts as the whole budget); and the CLR arm's final accuracy.

`python -m bench.clr [--quick]` (--quick: the MLP, 3 epochs, step_size_up = 1 epoch, 2 seeds).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bench.common import band, figure, finish, mean_std, pool, table
from trainables.tasks import load_task
from trainables.workflow import fit, task_range_test

OPTIMIZERS = {"sgd": 5e-4, "adamw": 1e-2}  # optimizer: weight decay
BATCH, BASE_DIV = 100, 4.0
PAPER_RATIO = 25_000 / 70_000


def suggest(model: str, opt: str, seed: int) -> dict:
    r = task_range_test(load_task("mnist1d"), model, opt, OPTIMIZERS[opt], batch_size=BATCH, seed=seed)
    if r.suggestion is None:
        return dict(status=r.diagnosis.status, message=r.diagnosis.message)
    return dict(status="ok", lr=r.suggestion.lr, max_lr=r.suggestion.max_lr)


def train(model: str, opt: str, arm: str, seed: int, epochs: int, step_epochs: int, sug: dict) -> list[float]:
    task = load_task("mnist1d")
    spe = task.steps_per_epoch(BATCH)
    common = dict(seed=seed, weight_decay=OPTIMIZERS[opt])
    if arm == "fixed":
        h = fit(task, model, opt, "constant", epochs, BATCH, lr=sug["lr"], **common)
    else:
        h = fit(task, model, opt, "cyclic", epochs, BATCH, base_lr=sug["max_lr"] / BASE_DIV,
                max_lr=sug["max_lr"], step_size_up=step_epochs * spe, mode="triangular2", **common)
    return [r["accuracy"] for r in h] + [math.nan] * (epochs - len(h))


def first_reaching(acc: list[float], target: float) -> int | None:
    return next((e + 1 for e, a in enumerate(acc) if a >= target), None)


def summarise(opt: str, runs: dict, epochs: int, spe: int) -> dict:
    fixed, clr = np.array(runs["fixed"]), np.array(runs["clr"])
    target = float(np.nanmean(fixed[:, -1]))
    clr_hits = [first_reaching(a, target) for a in clr]
    fixed_hits = [first_reaching(a, target) for a in fixed]
    clr_epochs, fixed_epochs = _censored_mean(clr_hits, epochs), _censored_mean(fixed_hits, epochs)
    reached = sum(h is not None for h in clr_hits)
    return dict(optimizer=opt, target=target, fixed_final=fixed[:, -1].tolist(), clr_final=clr[:, -1].tolist(),
                clr_epochs_to_target=clr_hits, fixed_epochs_to_target=fixed_hits,
                clr_epochs_mean=clr_epochs, clr_iterations_mean=clr_epochs * spe, fixed_epochs_mean=fixed_epochs,
                ratio=clr_epochs / epochs, ratio_first_hit=clr_epochs / fixed_epochs,
                reached=f"{reached}/{len(clr_hits)}", all_reached=reached == len(clr_hits))


def _censored_mean(hits: list[int | None], epochs: int) -> float:
    """Mean epochs to target; a seed that never reaches it counts as the whole budget."""
    return float(np.mean([h or epochs for h in hits]))


def verdict(m: dict) -> str:
    r, r_first = m["ratio"], m["ratio_first_hit"]
    if not m["all_reached"]:
        return "not reproduced: some CLR seeds never reached the fixed LR's final accuracy"
    if r >= 1:
        return "not reproduced: CLR did not reach the fixed LR's final accuracy before the fixed budget ended"
    if r_first >= 1:
        return (f"not reproduced side by side: CLR reaches the target after {r:.2f} of the fixed budget (paper "
                f"{PAPER_RATIO:.2f}), but the fixed LR's own runs first reach it sooner (CLR / fixed = {r_first:.2f})")
    if r <= 0.5:
        return (f"reproduced: CLR needs {r:.2f} of the fixed budget (paper {PAPER_RATIO:.2f}) and "
                f"{r_first:.2f}x the epochs the fixed LR's runs first need")
    return f"partly: CLR is faster, but needs {r:.2f} of the fixed budget (paper {PAPER_RATIO:.2f})"


def _hits(hits: list[int | None]) -> str:
    done = [h for h in hits if h is not None]
    text = mean_std(done) if done else "-"
    return text if len(done) == len(hits) else f"{text} ({len(hits) - len(done)} never)"


def plot(curves: dict, summaries: dict, epochs: int, model: str):
    fig = figure((6.0 * len(curves), 4.0))
    x = np.arange(1, epochs + 1)
    for i, (opt, runs) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), i + 1)
        for arm, color in (("fixed", "tab:blue"), ("clr", "tab:orange")):
            band(ax, x, runs[arm], color, "fixed LR" if arm == "fixed" else "CLR triangular2")
        ax.axhline(summaries[opt]["target"], color="k", ls="--", lw=1, label="fixed LR's final mean")
        ax.set(title=f"MNIST-1D {model}, {opt}", xlabel="epoch", ylabel="val accuracy",
               ylim=(max(0.5, float(np.nanmin(runs["fixed"])) - 0.02), 1.0))
        ax.legend(loc="lower right")
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the MLP, 3 epochs, 1-epoch steps, 2 seeds")
    ap.add_argument("--model", default="cnn", choices=("cnn", "mlp"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--step-epochs", type=int, default=4, help="step_size_up in epochs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    model, epochs, step_epochs, seeds = (("mlp", 3, 1, 2) if args.quick
                                         else (args.model, args.epochs, args.step_epochs, args.seeds))
    t0 = time.perf_counter()
    with pool(args.workers) as ex:
        sugs = {(o, s): ex.submit(suggest, model, o, s) for o in OPTIMIZERS for s in range(seeds)}
        sugs = {k: f.result() for k, f in sugs.items()}
        bad = {k: v for k, v in sugs.items() if v["status"] != "ok"}
        if bad:
            raise SystemExit(f"range test refused: {bad}")
        jobs = {(o, arm, s): ex.submit(train, model, o, arm, s, epochs, step_epochs, sugs[o, s])
                for o in OPTIMIZERS for arm in ("fixed", "clr") for s in range(seeds)}
        curves = {o: {arm: [jobs[o, arm, s].result() for s in range(seeds)] for arm in ("fixed", "clr")}
                  for o in OPTIMIZERS}
    wall = time.perf_counter() - t0
    spe = load_task("mnist1d").steps_per_epoch(BATCH)
    summaries = {o: summarise(o, curves[o], epochs, spe) for o in OPTIMIZERS}
    rows = [[o, mean_std([sugs[o, s]["lr"] for s in range(seeds)]),
             mean_std([sugs[o, s]["max_lr"] for s in range(seeds)]),
             mean_std(m["fixed_final"]), f"{epochs} ({epochs * spe} it)",
             _hits(m["fixed_epochs_to_target"]), _hits(m["clr_epochs_to_target"]), m["reached"],
             f"{m['ratio']:.2f}", f"{m['ratio_first_hit']:.2f}", mean_std(m["clr_final"])]
            for o, m in summaries.items()]
    print(table(["optimizer", "fixed lr", "CLR max_lr", "fixed final acc (target)", "fixed budget",
                 "fixed ep. to target", "CLR ep. to target", "CLR reached", "CLR ep. / fixed budget",
                 "CLR ep. / fixed ep. to target", "CLR final acc"], rows))
    for o, m in summaries.items():
        print(f"{o}: {verdict(m)}")
    print(f"\npaper: 25k / 70k = {PAPER_RATIO:.2f}; {seeds} seeds, {spe} iterations per epoch, "
          f"wall {wall:.0f} s")
    headline = {f"{o}_{k}": v for o, m in summaries.items()
                for k, v in (("target", m["target"]), ("clr_epochs_to_target", m["clr_epochs_mean"]),
                             ("ratio", m["ratio"]), ("ratio_first_hit", m["ratio_first_hit"]),
                             ("clr_reached", m["reached"]),
                             ("verdict", verdict(m)))}
    headline.update(paper_ratio=PAPER_RATIO, fixed_epochs=float(epochs), wall_s=wall)
    finish("clr", args.quick, dict(headline=headline, summaries=summaries, curves=curves,
                                   suggestions={f"{o}/{s}": v for (o, s), v in sugs.items()}),
           figures={"accuracy": plot(curves, summaries, epochs, model)},
           params=dict(model=model, batch_size=BATCH, epochs=epochs, seeds=seeds, step_size_up_epochs=step_epochs,
                       base_div=BASE_DIV, optimizers=OPTIMIZERS),
           metrics={k: v for k, v in headline.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
