"""AdamW against Adam + L2 on an equal (LR x decay) grid: generalisation and separability.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019), claim that (1) decoupled
decay generalises better than L2 under Adam (~15 % relative test-error improvement on CIFAR-10
and ImageNet32), and (2) decoupling makes LR and decay separable: AdamW's good region in the
(LR, decay) plane is aligned with the axes, Adam + L2's lies along a diagonal (Fig. 2, under
cosine annealing).

Measured here, closer to that setting than MNIST-1D's full training set allows (its 4000 examples
and the 40-100-100-10 MLP left decay almost nothing to do: +0.4 ± 0.3 % at 40 epochs):
- data and model where decay matters: MNIST-1D's first 1000 training examples (its whole 1000
  validation set), a 40-128-128-10 MLP (`trainables.tasks.mlp`; no new model), which fits the
  1000 examples to a training loss ~0.01 without decay; in the pilot, decay is worth ~5 pt of val
  accuracy for both optimizers (AdamW 0.48 at λ_norm 0.01 -> 0.53 at 1, LR 1e-2 .. 3e-2);
- batch 100, 150 epochs (1500 steps), one cosine annealing to 0 over the whole run (`sgdr` with
  T_0 = all steps, no restart), 3 seeds (model init and batch order);
- AdamW decay: the paper's normalized λ_norm, λ = λ_norm·√(b/(B·T)) (`normalized_weight_decay`),
  applied in the paper's form θ ← θ − η_t·λ·θ (η_t the schedule's multiplier, *not* the LR), i.e.
  torch's `weight_decay` = λ / LR. That is the parametrization the separability claim is about:
  torch's AdamW multiplies the decay by the LR, which couples the two axes by construction. The
  same runs are also read in torch's coordinates (top-k correlation only: the grid is sheared there);
- Adam + L2: torch's Adam with `weight_decay` added to the gradient. Adam's L2 term is rescaled by
  1/√v per weight, so no L2 value is "equivalent" to a λ_norm: each optimizer gets its own grid;
- grids: a one-seed pilot (seed 100, not a grid seed) over peak LR 1e-4 .. 1e-1 in half decades x
  λ_norm 1e-2 .. 10 / L2 1e-5 .. 1e-1 in decades finds each optimizer's best cell; the grid is then
  7 x 7 in quarter decades (±0.75 decades) about it, so neither optimizer is handicapped by its
  grid (the pilot's best: AdamW LR 3e-2, λ_norm 1; Adam LR 1e-2, L2 1e-2); the report flags a best
  cell on the grid's edge.
Read off: each optimizer's best cell (highest mean final val accuracy), its accuracy and error;
the relative error improvement (err_adam − err_adamw) / err_adam per seed; separability as the
std (in decades) over decays of the per-decay best LR (0: axis-aligned; a diagonal ridge moves it
by one grid step per decay step) with the slope of that ridge (decades of LR per decade of decay)
and the correlation of log LR and log decay over the top-5 cells. The best cell is picked on the
validation accuracy it is reported on (the task has no third split), for both optimizers alike.
`python -m bench.adamw_vs_l2 [--quick] [--seeds 3] [--epochs 150]`: 63 pilot + 294 grid trainings,
~24 core-minutes (~12 minutes on 2 otherwise idle cores; the stored run's wall_s is from a loaded machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from torch import nn

from bench.common import figure, finish, mean_std, pool, table
from schedules.optim import normalized_weight_decay
from trainables.tasks import Task, accuracy, load_task, mlp
from trainables.workflow import fit

TRAIN_SIZE, HIDDEN, BATCH, EPOCHS = 1000, 128, 100, 150
PILOT_LRS = [10 ** (k / 2) for k in range(-8, -1)]
PILOT_DECAYS = {"adamw": [10.0 ** k for k in range(-2, 2)], "adam": [10.0 ** k for k in range(-5, 0)]}
PILOT_SEED = 100  # not one of the grid's seeds, so the grid's centre is not picked on its own runs
STEPS = [10 ** (k / 4) for k in range(-3, 4)]  # the grid: 7 quarter decades about the pilot's best
LABELS = {"adamw": "AdamW (λ_norm)", "adam": "Adam + L2 (L2 coefficient)"}
TOP_K = 5


def subset_task() -> Task:
    """MNIST-1D's first TRAIN_SIZE training examples, its whole validation set, a 40-128-128-10 MLP."""
    full = load_task("mnist1d")
    x, y = full.train
    return Task("mnist1d_subset", (x[:TRAIN_SIZE], y[:TRAIN_SIZE]), full.val,
                models={"mlp": lambda: mlp(40, HIDDEN, 10)}, loss_fn=nn.functional.cross_entropy, metric=accuracy)


def torch_decay(optimizer: str, lr: float, decay: float, train_size: int, epochs: int) -> float:
    """torch's `weight_decay` for a grid cell: AdamW's λ_norm as the paper's per-step λ divided by
    the LR (torch multiplies it back), Adam's L2 coefficient as it is."""
    if optimizer == "adam":
        return decay
    return normalized_weight_decay(decay, BATCH, train_size, epochs) / lr


def train(optimizer: str, lr: float, decay: float, seed: int, epochs: int) -> dict:
    task = subset_task()
    wd = torch_decay(optimizer, lr, decay, task.train_size, epochs)
    h = fit(task, "mlp", optimizer, "sgdr", epochs, BATCH, seed=seed, lr=lr, weight_decay=wd,
            T_0=epochs * task.steps_per_epoch(BATCH))
    return dict(optimizer=optimizer, lr=lr, decay=decay, seed=seed, weight_decay=wd,
                accuracy=h[-1]["accuracy"], train_loss=h[-1]["train_loss"], diverged=h[-1]["diverged"])


def trainings(ex, cells: dict, seeds: list[int], epochs: int) -> list[dict]:
    """Every (optimizer, decay, lr, seed) of `cells` = {optimizer: (lrs, decays)}, on the pool."""
    jobs = [ex.submit(train, o, lr, d, s, epochs) for s in seeds for o, (lrs, ds) in cells.items()
            for d in ds for lr in lrs]
    return [j.result() for j in jobs]


def grid(runs: list[dict], optimizer: str, lrs: list[float], decays: list[float], seeds: list[int]) -> np.ndarray:
    """Final val accuracy as an array (seed, decay, lr)."""
    acc = {(r["seed"], r["decay"], r["lr"]): r["accuracy"] for r in runs if r["optimizer"] == optimizer}
    return np.array([[[acc[s, d, lr] for lr in lrs] for d in decays] for s in seeds])


def best_cell(acc: np.ndarray) -> tuple[int, int]:
    """(decay index, lr index) of the highest accuracy of a (decay, lr) array."""
    i, j = np.unravel_index(int(np.argmax(acc)), acc.shape)
    return int(i), int(j)


def ridge(acc: np.ndarray, lrs: list[float], decays: list[float]) -> tuple[float, float]:
    """Std (decades) over decays of the per-decay best log10 LR, and its slope against log10 decay."""
    best = np.log10(np.asarray(lrs))[np.argmax(acc, axis=1)]
    return float(best.std()), float(np.polyfit(np.log10(decays), best, 1)[0])


def top_k_corr(acc: np.ndarray, log_lr: np.ndarray, log_decay: np.ndarray, k: int = TOP_K) -> float:
    """Pearson correlation of log LR and log decay over the k best cells (0 when either is constant)."""
    top = np.argsort(acc, axis=None)[::-1][:k]
    x, y = log_lr.ravel()[top], log_decay.ravel()[top]
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def log_coords(optimizer: str, lrs: list[float], decays: list[float], train_size: int, epochs: int,
               torch_coords: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """log10 LR and log10 decay of every (decay, lr) cell, the decay as gridded or as torch's weight_decay."""
    log_lr = np.log10(np.array([lrs for _ in decays]))
    value = (lambda d, lr: torch_decay(optimizer, lr, d, train_size, epochs)) if torch_coords else (lambda d, lr: d)
    return log_lr, np.log10(np.array([[value(d, lr) for lr in lrs] for d in decays]))


def analyse(acc: np.ndarray, optimizer: str, lrs: list[float], decays: list[float], train_size: int,
            epochs: int) -> dict:
    """The best cell of the seed-mean grid, its per-seed accuracies, and the per-seed separability measures."""
    i, j = best_cell(acc.mean(0))
    ridges = [ridge(a, lrs, decays) for a in acc]
    coords = log_coords(optimizer, lrs, decays, train_size, epochs)
    torch_coords = log_coords(optimizer, lrs, decays, train_size, epochs, torch_coords=True)
    return dict(best_lr=lrs[j], best_decay=decays[i], best_index=[i, j],
                on_edge=i in (0, len(decays) - 1) or j in (0, len(lrs) - 1),
                best_accuracy=acc[:, i, j].tolist(),
                ridge_std=[r[0] for r in ridges], ridge_slope=[r[1] for r in ridges],
                top_k_corr=[top_k_corr(a, *coords) for a in acc],
                top_k_corr_torch=[top_k_corr(a, *torch_coords) for a in acc],
                ridge_of_mean_grid=ridge(acc.mean(0), lrs, decays),
                mean_grid=acc.mean(0).tolist())


def ratio(a: float, b: float) -> float | str:
    return a / b if b else ("inf" if a else "nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 x 2 pilot, 3 x 3 grid, 4 epochs, 2 seeds")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    pilot_lrs, pilot_decays, steps = PILOT_LRS, PILOT_DECAYS, STEPS
    epochs, seeds = args.epochs, list(range(args.seeds))
    if args.quick:
        pilot_lrs, pilot_decays, steps = PILOT_LRS[2::3][:2], {o: d[:2] for o, d in PILOT_DECAYS.items()}, STEPS[::3]
        epochs, seeds = 4, [0, 1]
    train_size = subset_task().train_size
    t0 = time.perf_counter()
    with pool(args.workers) as ex:
        pilot_runs = trainings(ex, {o: (pilot_lrs, ds) for o, ds in pilot_decays.items()}, [PILOT_SEED], epochs)
        pilot = {o: grid(pilot_runs, o, pilot_lrs, pilot_decays[o], [PILOT_SEED])[0] for o in pilot_decays}
        centre = {o: best_cell(pilot[o]) for o in pilot}
        cells = {o: ([pilot_lrs[j] * f for f in steps], [pilot_decays[o][i] * f for f in steps])
                 for o, (i, j) in centre.items()}
        pilot_wall = time.perf_counter() - t0
        runs = trainings(ex, cells, seeds, epochs)
    wall = time.perf_counter() - t0
    lrs, decays = {o: c[0] for o, c in cells.items()}, {o: c[1] for o, c in cells.items()}
    grids = {o: grid(runs, o, lrs[o], decays[o], seeds) for o in cells}
    res = {o: analyse(grids[o], o, lrs[o], decays[o], train_size, epochs) for o in cells}
    headline = summarise(res)
    print(report(res, headline))
    print(f"\n{len(pilot_runs)} pilot + {len(runs)} grid trainings of {epochs} epochs, wall {wall:.0f} s "
          f"(pilot {pilot_wall:.0f} s)")
    setting = dict(task=f"mnist1d, first {train_size} training examples", model=f"mlp 40-{HIDDEN}-{HIDDEN}-10",
                   batch_size=BATCH, epochs=epochs, seeds=seeds, schedule="cosine (sgdr, T_0 = all steps)")
    finish("adamw_vs_l2", args.quick,
           dict(setting, lrs=lrs, decays=decays, wall_s=wall, pilot_wall_s=pilot_wall,
                pilot=dict(seed=PILOT_SEED, lrs=pilot_lrs, decays=pilot_decays,
                           accuracy={o: g.tolist() for o, g in pilot.items()}),
                headline=headline, results=res, runs=runs, pilot_runs=pilot_runs),
           figures=dict(grid=plot(grids, lrs, decays, res, epochs)),
           params=dict(setting, seeds=len(seeds), lrs=lrs, decays=decays),
           metrics={k: v for k, v in headline.items() if isinstance(v, float)})


def summarise(res: dict) -> dict:
    """Headline numbers: per-seed values averaged; the relative improvement compares seed with seed."""
    w, a = res["adamw"], res["adam"]
    err_w, err_a = 1 - np.array(w["best_accuracy"]), 1 - np.array(a["best_accuracy"])
    rel = (err_a - err_w) / err_a
    std_w, std_a = float(np.mean(w["ridge_std"])), float(np.mean(a["ridge_std"]))
    h = {"adamw_best_accuracy": float(1 - err_w.mean()), "adam_l2_best_accuracy": float(1 - err_a.mean()),
         "adamw_best_error": float(err_w.mean()), "adam_l2_best_error": float(err_a.mean()),
         "relative_error_improvement": float(rel.mean()), "relative_error_improvement_std": float(rel.std()),
         "paper_relative_error_improvement": 0.15,
         "adamw_ridge_std_decades": std_w, "adam_l2_ridge_std_decades": std_a,
         "ridge_std_ratio_adam_l2_over_adamw": ratio(std_a, std_w),
         "adamw_top5_abs_corr": float(np.mean(np.abs(w["top_k_corr"]))),
         "adam_l2_top5_abs_corr": float(np.mean(np.abs(a["top_k_corr"]))),
         "adamw_top5_abs_corr_torch_coords": float(np.mean(np.abs(w["top_k_corr_torch"])))}
    h["generalisation_claim"] = verdict_generalisation(rel)
    h["separability_claim"] = verdict_separability(std_w, std_a, h["adamw_top5_abs_corr"], h["adam_l2_top5_abs_corr"])
    return h


def verdict_generalisation(rel: np.ndarray) -> str:
    m, s = rel.mean(), rel.std()
    if m - s > 0.05:
        return f"reproduced: AdamW's best error is {100 * m:.1f} ± {100 * s:.1f} % lower (paper ~15 %)"
    if m + s < 0:
        return f"reversed: AdamW's best error is {100 * -m:.1f} ± {100 * s:.1f} % higher (paper: ~15 % lower)"
    return f"not reproduced: relative error improvement {100 * m:+.1f} ± {100 * s:.1f} % (paper ~15 %)"


def verdict_separability(std_w: float, std_a: float, corr_w: float, corr_a: float) -> str:
    if std_w < std_a and corr_w < corr_a:
        return (f"reproduced: AdamW's best LR moves {std_w:.2f} decades across decays, Adam + L2's "
                f"{std_a:.2f}; top-5 |corr| {corr_w:.2f} vs {corr_a:.2f}")
    return (f"not reproduced: AdamW's best LR moves {std_w:.2f} decades across decays, Adam + L2's "
            f"{std_a:.2f}; top-5 |corr| {corr_w:.2f} vs {corr_a:.2f}")


def report(res: dict, h: dict) -> str:
    rows = []
    for o, r in res.items():
        acc = np.array(r["best_accuracy"])
        edge = " (grid edge)" if r["on_edge"] else ""
        rows.append([LABELS[o], f"lr {r['best_lr']:.2g}, decay {r['best_decay']:.2g}{edge}", mean_std(acc),
                     mean_std(1 - acc), mean_std(r["ridge_std"]), mean_std(r["ridge_slope"]),
                     mean_std(np.abs(r["top_k_corr"]))])
    lines = [table(["optimizer", "best cell (seed-mean grid)", "best val acc", "best val error",
                    "best-LR std over decays (dec)", "ridge slope (dec/dec)", f"top-{TOP_K} |corr(log lr, log decay)|"],
                   rows)]
    ratio_std = h["ridge_std_ratio_adam_l2_over_adamw"]
    lines.append(f"relative error improvement (err_L2 - err_AdamW) / err_L2: {h['relative_error_improvement']:+.3f} "
                 f"± {h['relative_error_improvement_std']:.3f} (paper 0.15); best-LR std over decays, ratio "
                 f"Adam + L2 / AdamW: {ratio_std if isinstance(ratio_std, str) else f'{ratio_std:.2f}'}")
    lines.append(f"AdamW top-{TOP_K} |corr| with decay read as torch's weight_decay (= λ / lr): "
                 f"{mean_std(np.abs(res['adamw']['top_k_corr_torch']))}")
    lines += [f"generalisation: {h['generalisation_claim']}", f"separability: {h['separability_claim']}"]
    return "\n".join(lines)


def plot(grids: dict, lrs: dict, decays: dict, res: dict, epochs: int):
    fig = figure((12, 5))
    means = {o: g.mean(0) for o, g in grids.items()}
    lo, hi = min(m.min() for m in means.values()), max(m.max() for m in means.values())
    for k, (o, m) in enumerate(means.items()):
        ax = fig.add_subplot(1, 2, k + 1)
        im = ax.imshow(m, origin="lower", cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w" if v < (lo + hi) / 2 else "k")
        ax.plot(np.argmax(m, axis=1), np.arange(len(decays[o])), marker="s", ms=15, mfc="none", mec="w",
                mew=1, ls=":", color="w")
        i, j = res[o]["best_index"]
        ax.plot(j, i, marker="s", ms=18, mfc="none", mec="red", mew=2, ls="none")
        ax.set_xticks(range(len(lrs[o])), [f"{x:.2g}" for x in lrs[o]], fontsize=7)
        ax.set_yticks(range(len(decays[o])), [f"{x:.2g}" for x in decays[o]], fontsize=7)
        ax.set_xlabel("peak LR (cosine annealing)")
        ax.set_ylabel(LABELS[o])
        ax.set_title(f"{o}: mean val accuracy, {grids[o].shape[0]} seeds\n"
                     "red: best cell; white path: best LR per decay", fontsize=9)
        fig.colorbar(im, ax=ax, label="val accuracy")
    fig.suptitle(f"MNIST-1D, {TRAIN_SIZE} training examples, MLP 40-{HIDDEN}-{HIDDEN}-10, {epochs} epochs cosine: "
                 "AdamW (decoupled) vs Adam + L2", fontsize=11)
    return fig


if __name__ == "__main__":
    main()
