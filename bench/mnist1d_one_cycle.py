"""MNIST-1D acceptance: range-test time on one core, and 1-cycle at the suggested max_lr.

Reference CNN, batch 100, 20 epochs, AdamW and SGD with momentum, each over several seeds (the
range test and the training share the seed). `python -m bench.mnist1d_one_cycle [--seeds 3]`.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import mean_std, pool, save, table
from bench.suggestion import WEIGHT_DECAY
from schedules import range_test
from trainables.tasks import load_task
from trainables.workflow import build_optimizer, fit

EPOCHS, BATCH = 20, 100


def run(opt: str, seed: int, epochs: int) -> dict:
    task = load_task("mnist1d")
    torch.manual_seed(seed)
    model = task.models["cnn"]()
    o = build_optimizer(opt, model.parameters(), 1e-3, WEIGHT_DECAY[opt])
    t0 = time.perf_counter()
    r = range_test(model, o, task.loss_fn, task.loader(BATCH, seed))
    seconds = time.perf_counter() - t0
    if r.suggestion is None:
        return dict(opt=opt, seed=seed, seconds=seconds, status=r.diagnosis.status)
    h = fit(task, "cnn", opt, "one_cycle", epochs, BATCH, seed=seed, max_lr=r.suggestion.max_lr,
            weight_decay=WEIGHT_DECAY[opt])
    return dict(opt=opt, seed=seed, seconds=seconds, status="ok", max_lr=r.suggestion.max_lr,
                accuracy=h[-1]["accuracy"], best_accuracy=max(x["accuracy"] for x in h),
                history=h)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    with pool(args.workers) as ex:
        futures = [ex.submit(run, opt, s, args.epochs) for opt in ("adamw", "sgd") for s in range(args.seeds)]
        runs = [f.result() for f in futures]
    rows = []
    for opt in ("adamw", "sgd"):
        rs = [r for r in runs if r["opt"] == opt]
        ok = [r for r in rs if r["status"] == "ok"]
        rows.append([opt, f"{len(ok)}/{len(rs)}", mean_std([r["seconds"] for r in rs]),
                     ", ".join(f"{r['max_lr']:.3g}" for r in ok),
                     ", ".join(f"{r['accuracy']:.3f}" for r in ok),
                     mean_std([r["accuracy"] for r in ok]) if ok else "-"])
    print(table(["optimizer", "ok", "range test s (1 thread)", "max_lr per seed",
                 f"final val acc per seed ({args.epochs} ep)", "mean ± std"], rows))
    save("mnist1d_one_cycle", dict(epochs=args.epochs, batch_size=BATCH, runs=runs))


if __name__ == "__main__":
    main()
