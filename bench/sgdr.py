"""SGDR (Loshchilov & Hutter 2017): warm restarts against step decay at an equal budget.

The paper's claims: SGDR has good anytime performance (at the end of each cycle, where its LR is
at its minimum, the model is about as good as a step-decay run trained for that whole budget) and,
at the same budget, warm restarts match or beat the classic step decay.

Here: MNIST-1D, the reference CNN, batch 100, SGD with momentum 0.9 (L2 weight decay 5e-4) and
AdamW (decoupled decay 1e-2). Per optimizer and seed one lrtune range test (same seed) sets the
common peak LR, max_lr / 2 (the sweep's SGDR seed). SGDR (schedules.sgdr, eta_min 0) uses the
`sgdr_plans` plan with T_mult = 2 and the most restarts (<= 4) whose periods are whole epochs and
end exactly at the budget: 30 epochs give T_0 = 2 epochs, cycles ending at epochs 2, 6, 14, 30.
Step decay is torch's MultiStepLR (x0.1 at 50 % and 75 % of the budget, stepped per iteration)
swapped into the workflow's own `Run`, so both arms share the model init, the batch order and the
evaluation. Measured: validation accuracy at each SGDR cycle end for both arms (anytime
performance), the paired difference SGDR - step decay and the error ratio, and the final accuracy.

`python -m bench.sgdr [--quick]` (--quick: the MLP, 3 epochs, cycles ending at epochs 1 and 3, 2 seeds).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from torch.optim.lr_scheduler import MultiStepLR

from bench.common import band, figure, finish, mean_std, pool, table
from schedules import sgdr_plans
from trainables.tasks import load_task
from trainables.workflow import Run, fit, task_range_test

OPTIMIZERS = {"sgd": 5e-4, "adamw": 1e-2}  # optimizer: weight decay
BATCH, PEAK_DIV = 100, 2.0
ARMS = ("sgdr", "step")


def plan(epochs: int, spe: int) -> tuple[int, int]:
    """(T_0, restarts) in steps: T_mult = 2, whole-epoch periods ending at the budget, most restarts."""
    plans = [p for p in sgdr_plans(epochs * spe, T_mults=(2,), max_restarts=4) if p[0] % spe == 0 and p[3] == 0]
    if not plans:
        raise SystemExit(f"no T_mult=2 SGDR plan with whole-epoch periods fits {epochs} epochs")
    T_0, _, restarts, _ = max(plans, key=lambda p: p[2])
    return T_0, restarts


def peak_lr(model: str, opt: str, seed: int) -> float:
    r = task_range_test(load_task("mnist1d"), model, opt, OPTIMIZERS[opt], batch_size=BATCH, seed=seed)
    if r.suggestion is None:
        raise SystemExit(f"range test refused {opt} seed {seed}: {r.diagnosis.status}: {r.diagnosis.message}")
    return r.suggestion.max_lr / PEAK_DIV


def step_decay(task, model: str, opt: str, lr: float, epochs: int, seed: int) -> list[dict]:
    run = Run(task, dict(model=model, optimizer=opt, schedule="constant", lr=lr, weight_decay=OPTIMIZERS[opt],
                         epochs=epochs, batch_size=BATCH, seed=seed))
    total = epochs * run.steps_per_epoch
    run.scheduler = MultiStepLR(run.optimizer, milestones=[total // 2, 3 * total // 4], gamma=0.1)
    history = []
    while not run.done and not (history and history[-1]["diverged"]):
        history.append(run.train_epoch())
    return history


def train(model: str, opt: str, arm: str, seed: int, epochs: int, lr: float) -> dict:
    task = load_task("mnist1d")
    spe = task.steps_per_epoch(BATCH)
    if arm == "sgdr":
        T_0, _ = plan(epochs, spe)
        h = fit(task, model, opt, "sgdr", epochs, BATCH, seed=seed, lr=lr, weight_decay=OPTIMIZERS[opt],
                T_0=T_0, T_mult=2, eta_min=0.0)
    else:
        h = step_decay(task, model, opt, lr, epochs, seed)
    acc = [r["accuracy"] for r in h] + [float("nan")] * (epochs - len(h))
    return dict(accuracy=acc, lr=[r["lr"] for r in h], cycle_ends=[r["epoch"] for r in h if r["cycle_end"]])


def summarise(runs: dict, ends: list[int]) -> list[dict]:
    sgdr, step = (np.array([r["accuracy"] for r in runs[arm]]) for arm in ARMS)
    rows = []
    for e in ends:
        a, b = sgdr[:, e - 1], step[:, e - 1]
        rows.append(dict(epoch=e, sgdr=a.tolist(), step=b.tolist(), diff=(a - b).tolist(),
                         error_ratio=((1 - a) / (1 - b)).tolist()))
    return rows


def _side(d: np.ndarray) -> str:
    """ahead / level / behind: the mean paired difference SGDR - step decay above, within or below one std."""
    return "ahead" if d.mean() > d.std() else "level" if d.mean() >= -d.std() else "behind"


def verdict(points: list[dict]) -> str:
    sides = [_side(np.asarray(p["diff"])) for p in points]
    earlier = Counter(sides[:-1])
    anytime = (f"anytime {'not reproduced' if earlier['behind'] else 'reproduced'}: SGDR ahead at "
               f"{earlier['ahead']}, level at {earlier['level']}, behind at {earlier['behind']} of "
               f"{len(sides) - 1} earlier cycle ends")
    d = np.asarray(points[-1]["diff"])
    final = {"ahead": "final reproduced: SGDR beats step decay", "level": "final reproduced: SGDR matches step decay",
             "behind": "final not reproduced: step decay is ahead"}[sides[-1]]
    return f"{anytime}; {final} ({d.mean():+.3f} ± {d.std():.3f})"


def plot(curves: dict, ends: list[int], epochs: int, model: str):
    fig = figure((6.0 * len(curves), 4.0))
    x = np.arange(1, epochs + 1)
    for i, (opt, runs) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), i + 1)
        low = 1.0
        for arm, color, label in (("sgdr", "tab:orange", "SGDR (T_mult=2)"), ("step", "tab:blue", "step decay")):
            m = band(ax, x, [r["accuracy"] for r in runs[arm]], color, label)
            low = min(low, float(np.nanmin(m[ends[0] - 1:])))
        for e in ends:
            ax.axvline(e, color="gray", ls=":", lw=1)
        ax.set(title=f"MNIST-1D {model}, {opt} (dotted: SGDR cycle ends)", xlabel="epoch",
               ylabel="val accuracy", ylim=(max(0.0, low - 0.05), 1.0))
        ax.legend(loc="lower right")
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the MLP, 3 epochs, 2 seeds")
    ap.add_argument("--model", default="cnn", choices=("cnn", "mlp"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    model, epochs, seeds = ("mlp", 3, 2) if args.quick else (args.model, args.epochs, args.seeds)
    spe = load_task("mnist1d").steps_per_epoch(BATCH)
    T_0, restarts = plan(epochs, spe)
    t0 = time.perf_counter()
    with pool(args.workers) as ex:
        lrs = {(o, s): ex.submit(peak_lr, model, o, s) for o in OPTIMIZERS for s in range(seeds)}
        lrs = {k: f.result() for k, f in lrs.items()}
        jobs = {(o, arm, s): ex.submit(train, model, o, arm, s, epochs, lrs[o, s])
                for o in OPTIMIZERS for arm in ARMS for s in range(seeds)}
        curves = {o: {arm: [jobs[o, arm, s].result() for s in range(seeds)] for arm in ARMS} for o in OPTIMIZERS}
    wall = time.perf_counter() - t0
    ends = [int(e) // spe for e in np.cumsum([T_0 * 2**i for i in range(restarts)])]
    points = {o: summarise(curves[o], ends) for o in OPTIMIZERS}
    rows = [[o, p["epoch"], mean_std(p["sgdr"]), mean_std(p["step"]), mean_std(p["diff"]),
             mean_std(p["error_ratio"]), f"{sum(d > 0 for d in p['diff'])}/{seeds}"]
            for o in OPTIMIZERS for p in points[o]]
    print(table(["optimizer", "epoch (SGDR cycle end)", "SGDR acc", "step decay acc", "SGDR - step",
                 "error ratio SGDR/step", "SGDR ahead"], rows))
    print(f"\nT_0 = {T_0 // spe} epochs ({T_0} it), T_mult = 2, {restarts} cycles, budget {epochs} epochs; "
          f"peak LR per seed: " + ", ".join(f"{o} {mean_std([lrs[o, s] for s in range(seeds)])}" for o in OPTIMIZERS)
          + f"; {seeds} seeds, wall {wall:.0f} s")
    for o in OPTIMIZERS:
        print(f"{o}: {verdict(points[o])}")
    headline = dict(cycle_ends=", ".join(map(str, ends)), wall_s=wall)
    for o in OPTIMIZERS:
        headline[f"{o}_verdict"] = verdict(points[o])
        for p in points[o]:
            headline[f"{o}_diff_at_{p['epoch']}"] = float(np.mean(p["diff"]))
        headline[f"{o}_final_sgdr"] = float(np.mean(points[o][-1]["sgdr"]))
        headline[f"{o}_final_step"] = float(np.mean(points[o][-1]["step"]))
    finish("sgdr", args.quick, dict(headline=headline, points=points, curves=curves,
                                    peak_lr={f"{o}/{s}": v for (o, s), v in lrs.items()}),
           figures={"accuracy": plot(curves, ends, epochs, model)},
           params=dict(model=model, batch_size=BATCH, epochs=epochs, seeds=seeds, T_0=T_0, T_mult=2,
                       peak_div=PEAK_DIV, optimizers=OPTIMIZERS),
           metrics={k: v for k, v in headline.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
