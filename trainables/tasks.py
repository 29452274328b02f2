"""Built-in tasks: data held as tensors, the models each task offers, its loss and its metric.

Every dataset here is generated or read locally (nothing downloads): MNIST-1D from
`mnist1d.data.make_dataset`, scikit-learn's bundled digits, and a synthetic teacher-student
regression. A task is small enough to live in memory (on the GPU too), so batches are slices of
shuffled tensors, not a DataLoader.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn


@dataclass
class Task:
    """What a trial needs from a task. User tasks (`"package.module:function"`) return one."""

    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    models: dict[str, Callable[[], nn.Module]]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[torch.Tensor, torch.Tensor], float]
    metric_name: str = "accuracy"
    meta: dict = field(default_factory=dict)

    @property
    def train_size(self) -> int:
        return len(self.train[0])

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                split: str = "train") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled batches (train) or of ordered batches (val); the last partial
        training batch is dropped so every step sees batch_size examples."""
        x, y = self.train if split == "train" else self.val
        if split == "train":
            order = torch.randperm(len(x), generator=generator, device="cpu").to(x.device)
            stop = len(x) - len(x) % batch_size if len(x) >= batch_size else len(x)
        else:
            order, stop = None, len(x)
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size] if order is not None else slice(i, i + batch_size)
            yield x[idx], y[idx]

    def model_name(self, name: str | None) -> str:
        """`name`, or the task's first model when None; a ValueError lists what the task offers."""
        name = name or next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"task {self.name!r} offers {', '.join(self.models)}, not {name!r}")
        return name

    def loader(self, batch_size: int, seed: int = 0) -> "Epochs":
        """A re-iterable of training batches: each pass is a new shuffle (for range tests)."""
        return Epochs(self, batch_size, torch.Generator().manual_seed(seed))

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.train_size // batch_size)

    def to(self, device: torch.device | str) -> "Task":
        self.train = tuple(t.to(device) for t in self.train)
        self.val = tuple(t.to(device) for t in self.val)
        return self


@dataclass
class Epochs:
    task: Task
    batch_size: int
    generator: torch.Generator

    def __iter__(self):
        return self.task.batches(self.batch_size, self.generator)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return (outputs.argmax(dim=1) == targets).float().mean().item()


def r2(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    residual = (outputs - targets).pow(2).sum()
    total = (targets - targets.mean(dim=0)).pow(2).sum()
    return (1.0 - residual / total).item()


# ---------------------------------------------------------------- MNIST-1D

class MNIST1DCNN(nn.Module):
    """The reference CNN: three strided conv blocks with BatchNorm, a linear head (~94 %)."""

    def __init__(self, channels: int = 32, classes: int = 10, length: int = 40):
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv1d(1, c, 5, padding=2), nn.BatchNorm1d(c), nn.ReLU(),
            nn.Conv1d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm1d(2 * c), nn.ReLU(),
            nn.Conv1d(2 * c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm1d(2 * c), nn.ReLU(),
        )
        self.head = nn.Linear(2 * c * (length // 4), classes)

    def forward(self, x):
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


def mlp(inputs: int, hidden: int, outputs: int, depth: int = 2) -> nn.Sequential:
    layers, width = [], inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def cache_dir() -> Path:
    return Path(os.environ.get("LRTUNE_CACHE", Path.home() / ".cache" / "lrtune"))


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, ...]:
    """Generated once per seed (2 s), then read from the cache folder by every trial process."""
    path = cache_dir() / f"mnist1d-seed{seed}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["x"], z["y"], z["x_test"], z["y_test"]
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    # make_dataset reseeds Python's and NumPy's global RNGs; give the caller theirs back.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = data["x"], data["y"], data["x_test"], data["y_test"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, x=arrays[0], y=arrays[1], x_test=arrays[2], y_test=arrays[3])
    os.replace(tmp, path)  # atomic: parallel trials never read a half-written file
    return arrays


def mnist1d(seed: int = 42) -> Task:
    x, y, xv, yv = _mnist1d_arrays(seed)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    i = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return Task("mnist1d", (f(x), i(y)), (f(xv), i(yv)),
                models={"cnn": MNIST1DCNN, "mlp": lambda: mlp(40, 100, 10)},
                loss_fn=nn.functional.cross_entropy, metric=accuracy)


# ---------------------------------------------------------------- scikit-learn digits

class DigitsCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, classes))

    def forward(self, x):
        return self.net(x.view(-1, 1, 8, 8))


def digits(seed: int = 0) -> Task:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    tr, va = order[:cut], order[cut:]
    return Task("digits", (x[tr], y[tr]), (x[va], y[va]),
                models={"mlp": lambda: mlp(64, 128, 10), "cnn": DigitsCNN},
                loss_fn=nn.functional.cross_entropy, metric=accuracy)


# ---------------------------------------------------------------- synthetic regression

def synthetic(seed: int = 0, n_train: int = 4000, n_val: int = 1000, dim: int = 20,
              noise: float = 0.1) -> Task:
    """Teacher-student regression: targets from a fixed random tanh network plus noise (MSE)."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(dim, 32, generator=g) / dim**0.5
    w2 = torch.randn(32, 1, generator=g) / 32**0.5
    x = torch.randn(n_train + n_val, dim, generator=g)
    y = torch.tanh(x @ w1) @ w2 * 3.0
    y = y + noise * torch.randn(y.shape, generator=g)
    return Task("synthetic", (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]),
                models={"mlp": lambda: mlp(dim, 64, 1)},
                loss_fn=nn.functional.mse_loss, metric=r2, metric_name="r2")


# ---------------------------------------------------------------- CIFAR-10 (local files only)

class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.body(x))


def resnet_small(classes: int = 10, width: int = 32) -> nn.Sequential:
    def down(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(down(3, width), ResidualBlock(width), down(width, 2 * width),
                         down(2 * width, 4 * width), ResidualBlock(4 * width),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes))


def cifar10(data_dir: str | None = None) -> Task:
    """CIFAR-10 from a local `cifar-10-batches-py` folder (the python pickle format); `data_dir`
    is that folder or its parent. Never downloads."""
    import pickle

    if data_dir is None:
        raise ValueError("Expected data_dir for task cifar10 (a local cifar-10-batches-py folder), but got None")
    root = Path(data_dir)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    train_files = sorted(root.glob("data_batch_*"))
    if not train_files or not (root / "test_batch").is_file():
        raise ValueError(f"Expected data_batch_* and test_batch files in {str(root)!r}, but found "
                         f"{sorted(p.name for p in root.iterdir()) if root.is_dir() else 'no such folder'}")

    def read(files):
        xs, ys = [], []
        for f in files:
            with open(f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    x, y = read(train_files)
    xv, yv = read([root / "test_batch"])
    mean = x.reshape(-1, 3, 32 * 32).mean(axis=(0, 2)).reshape(1, 3, 1, 1) / 255
    std = x.reshape(-1, 3, 32 * 32).std(axis=(0, 2)).reshape(1, 3, 1, 1) / 255
    norm = lambda a: torch.tensor((a / 255 - mean) / std, dtype=torch.float32)  # noqa: E731
    return Task("cifar10", (norm(x), torch.tensor(y)), (norm(xv), torch.tensor(yv)),
                models={"resnet": resnet_small}, loss_fn=nn.functional.cross_entropy, metric=accuracy)


BUILTIN = {"mnist1d": mnist1d, "digits": digits, "synthetic": synthetic, "cifar10": cifar10}


def load_task(spec: str, data_dir: str | None = None) -> Task:
    """A built-in task by name, or a user task `"package.module:function"` (imports and runs user
    code: a sweep config is trusted input). Built-ins that read files get `data_dir`."""
    import importlib
    import inspect

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"Expected task {spec!r} to name an importable function "
                             f"'package.module:function', but {e}") from None
    elif spec in BUILTIN:
        factory = BUILTIN[spec]
    else:
        raise ValueError(f"Expected task to be one of {', '.join(map(repr, BUILTIN))} or "
                         f"'package.module:function', but got {spec!r}")
    kwargs = {"data_dir": data_dir} if "data_dir" in inspect.signature(factory).parameters else {}
    task = factory(**kwargs)
    if not isinstance(task, Task):
        raise ValueError(f"Expected task {spec!r} to return a trainables.tasks.Task, but got "
                         f"{type(task).__name__}")
    return task
