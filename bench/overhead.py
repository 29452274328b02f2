"""Framework overhead and parallel throughput of `lrtune sweep`, measured side by side in one run.

1. N trials through the sweep one at a time (Ray Tune + Optuna + MLflow + checkpoints, default cadence)
   / the same N workflows trained as plain loops in this process  (target <= 1.10 at 20 epochs);
2. the same N trials two at a time / one at a time, as throughput    (target >= 1.7 on 2 cores);
3. the same N trials, 1 at a time, on the loader path (MNIST-1D as a Dataset batched by a
   DataLoader, `mnist1d_loader` below) / the tensor path of 1. (shuffled tensor slices);
4. the driver's resident memory added while each sweep runs (peak - start, sampled every 0.2 s),
   beside the data's size: the driver holds no copy of the data during the trials;
5. for comparison: the plain loops in two processes at once (the machine's own ceiling for 2.),
   and 1. with a checkpoint after every epoch (`checkpoint_every_s: 0`) instead of the
   default (after an epoch 10 s or more after the last checkpoint, and at the end); it runs after the
   default sweep, so only the latter pays the session's first-sweep costs (the plot actor, fresh workers).
Random search with a fixed seed makes the N workflows identical across the runs. The sweep is
timed around the whole `run_sweep` call (preflight, MLflow parent run, Optuna study, Tune, the
end-of-sweep reconciliation). One-time costs of a machine or a project are paid before the clocks
start, for the sweep and for the plain loops alike, and printed: `ray.init`, creating the MLflow and
Optuna sqlite stores, loading MNIST-1D. N defaults to 32, the README main job's trial count.
`python -m bench.overhead [--trials 32] [--epochs 20] [--rounds 1] [--quick]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import optuna
import torch

from bench.common import finish, table
from trainables.tasks import Task, load_task
from trainables.workflow import SCHEDULE_PARAMS, fit
from tuning.config import parse
from tuning.sweep import init_ray, run_sweep


def config(tmp: Path, trials: int, epochs: int, concurrent: int, tag: str, **extra):
    return parse(dict(dict(task="mnist1d"), **extra,
        name=f"overhead-{tag}", model="cnn", epochs=epochs, batch_size=100,
        optimizers=["adamw", "sgdw"], schedules=["one_cycle", "sgdr", "constant"],
        search=dict(algorithm="random", num_samples=trials, max_concurrent=concurrent, seed=0, seeded=False),
        stopping=dict(scheduler="none"),  # every trial trains all its epochs, as the plain loops do
        tracking=dict(mlflow_uri=f"sqlite:///{tmp}/mlflow.db", experiment="overhead",
                      optuna_storage=f"sqlite:///{tmp}/optuna.db"),
        storage_path=str(tmp / "ray_results")))


def mnist1d_loader() -> Task:
    """MNIST-1D on the loader path: the same tensors as a TensorDataset, batched by DataLoaders."""
    from torch.utils.data import DataLoader, TensorDataset

    t = load_task("mnist1d")
    train, val = TensorDataset(*t.train), TensorDataset(*t.val)
    return Task("mnist1d_loader", models=t.models, loss_fn=t.loss_fn, metric=t.metric,
                train_loader=lambda batch_size, seed, epoch: DataLoader(
                    train, batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed + epoch)),
                val_loader=lambda batch_size: DataLoader(val, 1000))


class PeakRSS:
    """The driver's resident memory (VmRSS), sampled every 0.2 s while the block runs: MB at the
    start and at the peak (what the sweep added: peak - start; the process keeps what earlier
    work in it allocated)."""

    def __enter__(self):
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stores(cfg) -> None:
    """Create the MLflow and Optuna sqlite stores (schema migrations: once per project)."""
    mlflow.MlflowClient(cfg.tracking.mlflow_uri).search_experiments()
    optuna.storages.RDBStorage(cfg.tracking.optuna_storage)


def timed_sweep(cfg):
    """The sweep's result, the seconds of the whole call, its start on the trials' clock, and the
    driver's peak resident memory (MB) during it."""
    with PeakRSS() as mem:
        called, t0 = time.time(), time.perf_counter()
        result = run_sweep(cfg, verbose=0)
        wall = time.perf_counter() - t0
    return result, wall, called, mem.peak - mem.start


def plain(trial_configs: list[dict]) -> float:
    torch.set_num_threads(1)
    task = load_task("mnist1d")
    t0 = time.perf_counter()
    for c in trial_configs:
        fit(task, c["model"], c["optimizer"], c["schedule"], c["epochs"], c["batch_size"],
            seed=c["seed"], lr=c.get("lr"), weight_decay=c["weight_decay"],
            **{k: c[k] for k in SCHEDULE_PARAMS if c.get(k) is not None and k != "lr"})
    return time.perf_counter() - t0


def _warm(_) -> None:
    torch.set_num_threads(1)
    load_task("mnist1d")
    time.sleep(1.0)  # so that each of the two workers takes one


def plain_two(trial_configs: list[dict]) -> float:
    """The same trainings as plain loops in two processes at once (every other trial each): what
    the two cores give without any framework. Process start and imports are paid before the clock."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_warm, range(2)))
        t0 = time.perf_counter()
        list(pool.map(plain, [trial_configs[0::2], trial_configs[1::2]]))
        return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 trials of 2 epochs, one round")
    args = ap.parse_args(argv)
    trials, epochs = (2, 2) if args.quick else (args.trials, args.epochs)
    if args.quick:
        args.rounds = 1
    data_mb = load_task("mnist1d").nbytes() / 2**20  # generate and cache the data once, outside every timing
    t0 = time.perf_counter()
    init_ray()
    ray_init = time.perf_counter() - t0
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        stores(config(Path(d), trials, epochs, 1, "serial"))
        store_s = time.perf_counter() - t0
        for r in range(args.rounds):  # interleaved, so that drift on a noisy machine hits all three
            before_mb = rss_mb()
            one, serial_s, called, serial_mb = timed_sweep(config(Path(d), trials, epochs, 1, f"serial{r}"))
            loops = plain([t["config"] for t in one.trials])
            _, loader_s, _, loader_mb = timed_sweep(config(Path(d), trials, epochs, 1, f"loader{r}",
                                                           task="bench.overhead:mnist1d_loader"))
            _, every_s, _, _ = timed_sweep(config(Path(d), trials, epochs, 1, f"every{r}", checkpoint_every_s=0))
            two, parallel_s, _, _ = timed_sweep(config(Path(d), trials, epochs, 2, f"parallel{r}"))
            loops_two = plain_two([t["config"] for t in one.trials])
            start, end = _fixed(one, called, serial_s)
            rounds.append(dict(plain_s=loops, sweep_serial_s=serial_s, sweep_parallel_s=parallel_s,
                               sweep_start_s=start, sweep_end_s=end,
                               sweep_every_epoch_s=every_s, overhead_ratio=serial_s / loops,
                               every_epoch_ratio=every_s / loops,
                               steady_state_ratio=(serial_s - start - end) / loops,
                               throughput_ratio=serial_s / parallel_s, plain_two_s=loops_two,
                               sweep_loader_s=loader_s, loader_ratio=loader_s / serial_s,
                               driver_before_mb=before_mb, driver_peak_tensor_mb=serial_mb,
                               driver_peak_loader_mb=loader_mb,
                               plain_throughput_ratio=loops / loops_two,
                               identical_workflows=sorted(map(_key, one.trials)) == sorted(map(_key, two.trials))))
    med = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0] if k != "identical_workflows"}
    each = lambda k, f: ", ".join(f.format(r[k]) for r in rounds)  # noqa: E731
    print(table(["measure (median of rounds)", "seconds", "ratio", "each round", "target"], [
        [f"{trials} trials x {epochs} epochs, plain loops", f"{med['plain_s']:.1f}", "", each("plain_s", "{:.1f}"), ""],
        ["same trials through lrtune sweep, 1 at a time", f"{med['sweep_serial_s']:.1f}",
         f"{med['overhead_ratio']:.3f}", each("overhead_ratio", "{:.3f}"), "<= 1.10"],
        ["  of which: sweep start to first trial running", f"{med['sweep_start_s']:.1f}", "",
         each("sweep_start_s", "{:.1f}"), ""],
        ["  of which: last trial done to sweep end", f"{med['sweep_end_s']:.1f}", "",
         each("sweep_end_s", "{:.1f}"), ""],
        ["  without those two (trials and the gaps between)", "", f"{med['steady_state_ratio']:.3f}",
         each("steady_state_ratio", "{:.3f}"), ""],
        ["  the same with a checkpoint after every epoch", f"{med['sweep_every_epoch_s']:.1f}",
         f"{med['every_epoch_ratio']:.3f}", each("every_epoch_ratio", "{:.3f}"), ""],
        ["same trials on the loader path (DataLoader), 1 at a time / tensor path", f"{med['sweep_loader_s']:.1f}",
         f"{med['loader_ratio']:.3f}", each("loader_ratio", "{:.3f}"), ""],
        ["driver resident memory before the sweeps (MB)", f"{med['driver_before_mb']:.0f}", "", "", ""],
        ["driver resident memory added during the tensor-path sweep (MB, peak - start)",
         f"{med['driver_peak_tensor_mb']:.0f}", "", each("driver_peak_tensor_mb", "{:.0f}"), ""],
        ["driver resident memory added during the loader-path sweep (MB, peak - start)",
         f"{med['driver_peak_loader_mb']:.0f}", "", each("driver_peak_loader_mb", "{:.0f}"), f"data: {data_mb:.1f} MB"],
        ["same trials through lrtune sweep, 2 at a time", f"{med['sweep_parallel_s']:.1f}",
         f"{med['throughput_ratio']:.2f}x throughput", each("throughput_ratio", "{:.2f}"), ">= 1.7"],
        ["plain loops, 2 processes at once (the machine's own 2-core ceiling)", f"{med['plain_two_s']:.1f}",
         f"{med['plain_throughput_ratio']:.2f}x throughput", each("plain_throughput_ratio", "{:.2f}"), ""],
        ["ray.init (once per session, not in the ratios)", f"{ray_init:.1f}", "", "", ""],
        ["MLflow + Optuna sqlite stores created (once per project, not in the ratios)", f"{store_s:.1f}", "", "",
         ""],
    ]))
    print(f"identical workflows in the two sweeps of every round: {all(r['identical_workflows'] for r in rounds)}")
    headline = {f"{trials} trials x {epochs} epochs through lrtune sweep / plain loops (target <= 1.10)":
                med["overhead_ratio"],
                "the same without sweep start and end": med["steady_state_ratio"],
                "the same with a checkpoint after every epoch": med["every_epoch_ratio"],
                "extra seconds per trial": (med["sweep_serial_s"] - med["plain_s"]) / trials,
                "plain loop seconds per trial": med["plain_s"] / trials,
                "loader path / tensor path, the same trials through lrtune sweep": med["loader_ratio"],
                "driver resident MB added during the sweep (tensor path)": med["driver_peak_tensor_mb"],
                "driver resident MB added during the sweep (loader path)": med["driver_peak_loader_mb"],
                "throughput, 2 trials at a time / 1 (target >= 1.7)": med["throughput_ratio"],
                "plain loops, 2 processes / 1 (the machine's ceiling)": med["plain_throughput_ratio"]}
    finish("overhead", args.quick, dict(trials=trials, epochs=epochs, ray_init_s=ray_init, stores_s=store_s,
                                        data_mb=data_mb,
                                        headline=headline, median=med, rounds=rounds),
           params=dict(trials=trials, epochs=epochs, rounds=args.rounds),
           metrics=dict(overhead_ratio=med["overhead_ratio"], every_epoch_ratio=med["every_epoch_ratio"],
                        throughput_ratio=med["throughput_ratio"]))


def _fixed(result, called: float, wall: float) -> tuple[float, float]:
    """Seconds from the `run_sweep` call to its first trial's first epoch starting, and from its
    last trial's last report to the call's return (trial start = last report - its total time;
    Tune's `timestamp` is whole seconds, so these two are good to about a second)."""
    starts = [t["result"]["timestamp"] - t["result"]["time_total_s"] for t in result.trials]
    ends = [t["result"]["timestamp"] for t in result.trials]
    return min(starts) - called, called + wall - max(ends)


def _key(trial: dict) -> tuple:
    c = trial["config"]
    return (c["optimizer"], c["schedule"], round(c.get("lr") or c.get("max_lr"), 12))


if __name__ == "__main__":
    main()
