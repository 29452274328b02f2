"""User tasks for the tests, loaded as "tests.tuning.user_tasks:NAME" like any user's module."""

import os
import signal
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.tasks import Task, r2


def _regression(n=512, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = x @ torch.randn(dim, 1, generator=g)
    return x, y


class Scaled(nn.Module):
    """A linear model whose output is multiplied by 100: SGD at lr 0.05 blows up (its stable
    range ends near lr 1e-4), Adam's ~lr-sized steps stay stable."""

    def __init__(self, dim=4):
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, x):
        return 100 * self.linear(x)


def fragile() -> Task:
    x, y = _regression()
    return Task("fragile", (x[:400], y[:400]), (x[400:], y[400:]), models={"scaled": Scaled},
                loss_fn=nn.functional.mse_loss, metric=r2, metric_name="r2")


def not_a_task():
    return {"x": 1}


class CrashOnce(nn.Module):
    """An MLP whose process is killed once (SIGKILL), in the third epoch of the first process that
    trains it (a marker file in data_dir remembers), like a worker or node lost mid-trial."""

    def __init__(self, marker, crash_at_call):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
        self.marker, self.crash_at_call, self.calls = marker, crash_at_call, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.crash_at_call and not self.marker.exists():
                self.marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def flaky(data_dir) -> Task:
    from pathlib import Path

    x, y = _regression()
    steps_per_epoch = 400 // 50
    marker = Path(data_dir) / "crashed-once"
    return Task("flaky", (x[:400], y[:400]), (x[400:], y[400:]),
                models={"mlp": lambda: CrashOnce(marker, crash_at_call=2 * steps_per_epoch + 3)},
                loss_fn=nn.functional.mse_loss, metric=r2, metric_name="r2")


def shuffled_labels() -> Task:
    """Targets that are noise, unrelated to the inputs: a data bug. Nothing can be learned, so the
    range test's loss never falls and it refuses (no_descent/flat) instead of suggesting."""
    x, _ = _regression(n=600)
    y = torch.randn(600, 1, generator=torch.Generator().manual_seed(1))
    return Task("shuffled_labels", (x[:500], y[:500]), (x[500:], y[500:]),
                models={"linear": lambda: nn.Linear(4, 1)}, loss_fn=nn.functional.mse_loss, metric=r2,
                metric_name="r2")


def dataset_as_train() -> Task:
    """A Dataset where tensors are expected: refused by name, with the loader form to use instead."""
    x, y = _regression()
    ds = torch.utils.data.TensorDataset(x, y)
    return Task("dataset_as_train", ds, ds, models={"linear": lambda: nn.Linear(4, 1)},
                loss_fn=nn.functional.mse_loss, metric=r2, metric_name="r2")


def no_loss() -> Task:
    x, y = _regression()
    return Task("no_loss", (x, y), (x, y), models={"linear": lambda: nn.Linear(4, 1)}, metric=r2)


def own_loop_only() -> Task:
    """Only a loop of its own: nothing for a range test."""
    return Task("own_loop_only", train_fn=lambda workflow, report: None, steps=10, metric_name="r2")


class RaisesInTraining(nn.Module):
    """A linear model whose training forward raises, as a user's step with a bug does; each model
    built appends a line to data_dir/built (one per trial attempt)."""

    def __init__(self, log: Path):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        with open(log, "a") as f:
            f.write("built\n")

    def forward(self, x):
        if self.training:
            raise ValueError("bad batch shape (a bug in the user's step)")
        return self.linear(x)


def raises_in_step(data_dir) -> Task:
    x, y = _regression()
    return Task("raises_in_step", (x[:400], y[:400]), (x[400:], y[400:]),
                models={"linear": lambda: RaisesInTraining(Path(data_dir) / "built")},
                loss_fn=nn.functional.mse_loss, metric=r2, metric_name="r2")


# ---------------------------------------------------------------- data larger than memory

FEATURES, CLASSES = 4096, 4  # 16 kB of float32 per example


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class FileRows(torch.utils.data.Dataset):
    """Examples read one at a time from one binary file (np.fromfile at an offset: no mapping, so
    nothing of the file stays in the process's memory)."""

    def __init__(self, path: Path, n: int):
        self.path, self.n = path, n
        self.labels = np.load(path.with_suffix(".labels.npy"))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = np.fromfile(self.path, dtype=np.float32, count=FEATURES, offset=4 * FEATURES * i)
        return torch.from_numpy(x), int(self.labels[i])


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    """n examples whose class is the sign pattern of two features, written in chunks."""
    rng = np.random.default_rng(seed)
    labels = []
    with open(path, "wb") as f:
        for start in range(0, n, 1024):
            x = rng.standard_normal((min(1024, n - start), FEATURES), dtype=np.float32)
            labels.append((x[:, 0] > 0).astype(np.int64) * 2 + (x[:, 1] > 0))
            x.tofile(f)
    np.save(path.with_suffix(".labels.npy"), np.concatenate(labels))


def lazy_files(data_dir) -> Task:
    """A task whose training file is larger than the memory budget of its trial: it streams. Its
    evaluate() also reports the trial process's peak resident memory growth since the task was
    built (Linux: /proc/self/clear_refs resets the peak), as the metric peak_growth_mb."""
    root = Path(data_dir)
    train, val = FileRows(root / "train.f32", int((root / "train.n").read_text())), FileRows(root / "val.f32", 512)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
    base_kb = _status_kb("VmRSS")

    def evaluate(model, batches):
        correct = total = 0
        for x, y in batches:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
        return {"accuracy": correct / total, "peak_growth_mb": (_status_kb("VmHWM") - base_kb) / 1024}

    loader = torch.utils.data.DataLoader
    return Task("lazy_files", models={"linear": lambda: nn.Linear(FEATURES, CLASSES)},
                train_loader=lambda batch_size, seed, epoch: loader(
                    train, batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed + epoch)),
                val_loader=lambda batch_size: loader(val, batch_size),
                loss_fn=nn.functional.cross_entropy, evaluate=evaluate)


def mae(outputs, targets) -> float:
    return (outputs - targets).abs().mean().item()


def mae_task() -> Task:
    """A regression scored by mean absolute error, lower is better."""
    x, y = _regression(n=600)
    return Task("mae_task", (x[:500], y[:500]), (x[500:], y[500:]),
                models={"mlp": lambda: nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))},
                loss_fn=nn.functional.mse_loss, metric=mae, metric_name="mae", mode="min")


def lower_lr_wins() -> Task:
    """A task whose score is -log10 of the trial's peak LR: the best trial always sits at the bottom
    of the band (a range test runs on the linear regression; the loop only reports)."""
    import math

    x, y = _regression()

    def train(workflow: dict, report) -> None:
        report({"score": -math.log10(workflow["max_lr"])})

    return Task("lower_lr_wins", (x[:400], y[:400]), (x[400:], y[400:]), models={"linear": lambda: nn.Linear(4, 1)},
                loss_fn=nn.functional.mse_loss, metric_name="score", train_fn=train)


def fails_for_sgdw() -> Task:
    """A user loop scored by `f1` that raises for SGDW before its first epoch and reports two
    epochs for AdamW: a sweep with failed trials beside finished ones."""
    x, y = _regression()

    def train(workflow: dict, report) -> None:
        if workflow["optimizer"] == "sgdw":
            raise RuntimeError("sgdw is not supported by this loop")
        for epoch in (1, 2):
            report({"f1": 0.5 + 0.1 * epoch + workflow["lr"], "train_loss": 1.0 / epoch})

    return Task("fails_for_sgdw", (x[:400], y[:400]), (x[400:], y[400:]), loss_fn=nn.functional.mse_loss,
                metric_name="f1", train_fn=train)


def lr_scored() -> Task:
    """A user loop whose score per epoch is highest at lr = 0.01 and rises a little each epoch: a
    trial far from it is clearly worse at every epoch (for early stopping)."""
    import math

    x, y = _regression()

    def train(workflow: dict, report) -> None:
        for epoch in range(1, workflow["epochs"] + 1):
            report({"score": 1.0 - abs(math.log10(workflow["lr"]) + 2) + 0.01 * epoch})

    return Task("lr_scored", (x[:400], y[:400]), (x[400:], y[400:]), loss_fn=nn.functional.mse_loss,
                metric_name="score", train_fn=train)
