"""What a trial needs from a task, and the built-in tasks.

A `Task` is what a user brings (`task: "package.module:function"` returns one), in the form they
already have: data as tensors (the fast path: slices of shuffled tensors, on the GPU when they fit)
or as loader factories over their own Dataset/DataLoader (workers, augmentation, pinned memory,
batches of any structure); the model's loss as `loss_fn(outputs, targets)` or the model's own
`loss(model, batch)`; the metric as `metric(outputs, targets)` or the task's own
`evaluate(model, val_batches) -> dict`; a LightningModule; or a whole loop of its own (`train_fn`).
`Task.check` names what is wrong with one and what is allowed.

Built-ins: every dataset is generated or read locally (nothing downloads): MNIST-1D from
`mnist1d.data.make_dataset`, scikit-learn's bundled digits, a synthetic teacher-student regression,
and CIFAR-10 from a local folder.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import random
import warnings
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .data import seeded_workers, to_device

MODES = ("max", "min")


@dataclass
class Task:
    """What a trial needs from a task. User tasks (`"package.module:function"`) return one.

    Data, one of:
      train, val                 (inputs, targets) tensor pairs (kept on the GPU when they fit);
      train_loader, val_loader   factories: train_loader(batch_size, seed, epoch) and
                                 val_loader(batch_size) return any iterable of batches (a
                                 DataLoader with workers, augmentation, pin_memory); steps per
                                 epoch from its len(), or `steps` when it has none;
      datamodule                 (Lightning) datamodule(batch_size) -> a LightningDataModule;
      nothing                    a LightningModule's own dataloaders, or `train_fn`'s own data.
    Loss: `loss_fn(model(inputs), targets)` on (inputs, targets) batches, or `loss(model, batch)`
    for any batch (e.g. `model(**batch).loss`); a LightningModule's `training_step` by default.
    Metrics: `metric(outputs, targets)`, accumulated per batch (an object with `accumulator()`
    accumulates exactly, as `accuracy` and `r2` do), or `evaluate(model, val_batches) -> dict`;
    `metric_name` is the key the sweep optimises, in direction `mode` ("max" or "min").
    `train_fn(workflow, report)`: your own loop (see trainables.loops); `models`, data and loss,
    when given, are what the sweep's range tests run. `baseline`: the loss of the best constant
    predictor for a loss lrtune does not know (the range test's no_signal check).
    """

    name: str
    train: tuple[torch.Tensor, torch.Tensor] | None = None
    val: tuple[torch.Tensor, torch.Tensor] | None = None
    models: dict[str, Callable[[], nn.Module]] = field(default_factory=dict)
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    metric: Callable[[Any, Any], float] | None = None
    metric_name: str = "accuracy"
    meta: dict = field(default_factory=dict)
    _: KW_ONLY
    train_loader: Callable[..., Iterable] | None = None
    val_loader: Callable[..., Iterable] | None = None
    steps: int | None = None  # micro-batches per epoch, for a train_loader without len()
    train_examples: int | None = None  # B of the normalized decay, for a loader whose dataset has no len()
    loss: Callable[[nn.Module, Any], torch.Tensor] | None = None
    evaluate: Callable[[nn.Module, Iterable], dict] | None = None
    mode: str = "max"
    train_fn: Callable[[dict, Any], None] | None = None
    datamodule: Callable[[int], Any] | None = None
    # the range test's no_signal check: None compares with the best constant predictor for a loss
    # lrtune knows (cross-entropy, MSE, BCE with logits); a number declares that loss for your loss;
    # False or "off" skips the check (see schedules.range_test)
    baseline: float | bool | str | None = None

    # ------------------------------------------------------------ data

    @property
    def tensors(self) -> bool:
        return self.train is not None

    @property
    def train_size(self) -> int:
        """Training examples (B in the normalized decay) of a tensor task."""
        if not self.tensors:
            raise ValueError(f"task {self.name!r} has no training tensors; use examples(batch_size)")
        return len(self.train[0])

    def examples(self, batch_size: int, model: nn.Module | None = None) -> int:
        """Training examples per epoch: the tensors' length, `train_examples`, the loader's
        dataset's len(), or steps x batch_size, in that order."""
        if self.tensors:
            return len(self.train[0])
        if self.train_examples:
            return int(self.train_examples)
        if self.steps and self.train_loader is None:
            return self.steps * batch_size
        loader = self.train_batches(batch_size, seed=0, epoch=0, model=model)
        try:
            return len(loader.dataset)
        except (AttributeError, TypeError):
            return self.micro_batches(batch_size, loader) * batch_size

    def micro_batches(self, batch_size: int, loader: Iterable | None = None, model: nn.Module | None = None) -> int:
        """Batches per epoch as the data yields them (before accumulation)."""
        if self.tensors:
            return max(1, len(self.train[0]) // batch_size)
        if self.steps:
            return int(self.steps)
        loader = loader if loader is not None else self.train_batches(batch_size, seed=0, epoch=0, model=model)
        try:
            return len(loader)
        except TypeError:
            raise ValueError(f"task {self.name!r}: its train_loader returns a {type(loader).__name__} "
                             f"without len(); declare Task(steps=...) (batches per epoch)") from None

    def steps_per_epoch(self, batch_size: int, accumulate: int = 1, model: nn.Module | None = None) -> int:
        """Optimizer steps per epoch: batches // accumulate (a last incomplete group is dropped)."""
        return self.micro_batches(batch_size, model=model) // accumulate

    def train_batches(self, batch_size: int, seed: int = 0, epoch: int = 0,
                      generator: torch.Generator | None = None, model: nn.Module | None = None) -> Iterable:
        """One epoch of training batches: shuffled tensor slices drawn with `generator`, the
        train_loader's iterable for (batch_size, seed, epoch), or (Lightning) the datamodule's or
        the module's own train_dataloader()."""
        if self.tensors:
            return self.batches(batch_size, generator)
        if self.train_loader is not None:
            return seeded_workers(_call(self.train_loader, batch_size, seed, epoch))
        return seeded_workers(self._lightning_loader("train", batch_size, model))

    def val_batches(self, batch_size: int, model: nn.Module | None = None) -> Iterable:
        if self.tensors:
            return self.batches(batch_size, split="val")
        if self.val_loader is not None:
            return seeded_workers(_call(self.val_loader, batch_size))
        return seeded_workers(self._lightning_loader("val", batch_size, model))

    def _lightning_loader(self, split: str, batch_size: int, model: nn.Module | None) -> Iterable:
        if self.datamodule is not None:
            dm = self.datamodule(batch_size)
            dm.prepare_data()
            dm.setup("fit")
            return dm.train_dataloader() if split == "train" else dm.val_dataloader()
        if model is None or not callable(getattr(model, f"{split}_dataloader", None)):
            raise ValueError(f"task {self.name!r} has no data: give train/val tensors, train_loader/val_loader, "
                             f"a datamodule, or a LightningModule with {split}_dataloader(); a train_fn "
                             f"task without data declares Task(steps=...), its batches per epoch")
        return getattr(model, f"{split}_dataloader")()

    def batches(self, batch_size: int, generator: torch.Generator | None = None,
                split: str = "train") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled batches (train) or of ordered batches (val) of a tensor task; the
        last partial training batch is dropped so every step sees batch_size examples."""
        x, y = self.train if split == "train" else self.val
        if split == "train":
            order = torch.randperm(len(x), generator=generator, device="cpu").to(x.device)
            stop = len(x) - len(x) % batch_size if len(x) >= batch_size else len(x)
        else:
            order, stop = None, len(x)
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size] if order is not None else slice(i, i + batch_size)
            yield x[idx], y[idx]

    def loader(self, batch_size: int, seed: int = 0, model: nn.Module | None = None) -> "Epochs":
        """A re-iterable of training batches: each pass is a new epoch (for range tests)."""
        return Epochs(self, batch_size, seed, torch.Generator().manual_seed(seed), model=model)

    def nbytes(self) -> int:
        """Bytes of a tensor task's data (0 for loader tasks)."""
        if not self.tensors:
            return 0
        return sum(t.numel() * t.element_size() for pair in (self.train, self.val) for t in pair)

    def to(self, device: torch.device | str) -> "Task":
        """A tensor task's data on `device` (loader tasks move each batch as it comes)."""
        if self.tensors:
            self.train = tuple(t.to(device) for t in self.train)
            self.val = tuple(t.to(device) for t in self.val)
        return self

    # ------------------------------------------------------------ model, loss, metrics

    def model_name(self, name: str | None) -> str:
        """`name`, or the task's first model when None; a ValueError lists what the task offers."""
        if not self.models:
            raise ValueError(f"task {self.name!r} offers no models (its train_fn builds its own)")
        name = name or next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"task {self.name!r} offers {', '.join(self.models)}, not {name!r}")
        return name

    def batch_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The training loss of one batch: the task's `loss(model, batch)`, a LightningModule's
        `training_step`, or `loss_fn(model(inputs), targets)`."""
        if self.loss is not None:
            return self.loss(model, batch)
        if self.loss_fn is None and is_lightning(model):
            with warnings.catch_warnings():  # self.log() outside a Trainer (a range test) warns and does nothing
                warnings.simplefilter("ignore")
                out = model.training_step(batch, 0)
            return out["loss"] if isinstance(out, dict) else out
        inputs, targets = _pair(batch, self.name)
        return self.loss_fn(model(inputs), targets)

    @torch.no_grad()
    def evaluate_model(self, model: nn.Module, batch_size: int, device: torch.device | str = "cpu") -> dict:
        """Validation metrics as floats: the task's `evaluate`, else `val_loss` and the metric
        accumulated batch by batch (outputs are never concatenated)."""
        device = torch.device(device)
        was_training = model.training
        model.eval()
        try:
            batches = (to_device(b, device) for b in self.val_batches(batch_size))
            if self.evaluate is not None:
                out = self.evaluate(model, batches)
                if not isinstance(out, dict) or self.metric_name not in out:
                    raise ValueError(f"task {self.name!r}: evaluate(model, val_batches) must return a dict "
                                     f"with the metric {self.metric_name!r}, got "
                                     f"{sorted(out) if isinstance(out, dict) else type(out).__name__}")
                return {k: _float(v) for k, v in out.items()}
            acc = _accumulator(self.metric)
            loss_sum, n = 0.0, 0
            for batch in batches:
                inputs, targets = _pair(batch, self.name)
                outputs = model(inputs)
                k = len(targets)
                loss_sum += _float(self.loss_fn(outputs, targets)) * k
                n += k
                acc.update(outputs, targets)
            return {"val_loss": loss_sum / max(n, 1), self.metric_name: acc.compute()}
        finally:
            model.train(was_training)

    def better(self, a: float, b: float) -> bool:
        """Whether metric value a is better than b in this task's mode."""
        return a > b if self.mode == "max" else a < b

    # ------------------------------------------------------------ checks

    def check(self, spec: str | None = None) -> "Task":
        """Raises ValueError naming the field that is wrong, the rule and what was given."""
        who = f"task {spec or self.name!r}"

        def bad(key: str, rule: str, got: Any, described: str | None = None) -> None:
            raise ValueError(f"{who}: {key} {rule}; got {described or _describe(got)}")

        if not isinstance(self.name, str) or not self.name:
            bad("name", "must be a non-empty string", self.name)
        if not isinstance(self.models, dict) or not all(callable(f) for f in self.models.values()):
            bad("models", "must be a dict of name -> zero-argument model factory", self.models)
        if not self.models and self.train_fn is None:
            bad("models", "must offer at least one model (or give train_fn, your own loop)", self.models)
        for key in ("train_loader", "val_loader", "loss_fn", "loss", "metric", "evaluate", "train_fn", "datamodule"):
            if getattr(self, key) is not None and not callable(getattr(self, key)):
                bad(key, "must be callable", getattr(self, key))
        loader_hint = ("; a Dataset or DataLoader goes in train_loader=lambda batch_size, seed, epoch: "
                       "DataLoader(dataset, batch_size, shuffle=True, generator=torch.Generator()"
                       ".manual_seed(seed + epoch)) and val_loader=lambda batch_size: DataLoader(...)")
        for split in ("train", "val"):
            pair = getattr(self, split)
            if pair is None:
                continue
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(torch.is_tensor(t) for t in pair)):
                bad(split, "must be an (inputs, targets) pair of tensors" + loader_hint, pair)
            if len(pair[0]) != len(pair[1]) or len(pair[0]) == 0:
                bad(split, "inputs and targets must have the same, non-zero length", None,
                    f"{len(pair[0])} inputs and {len(pair[1])} targets")
        if (self.train is None) != (self.val is None):
            bad("train/val", "must both be given (or neither)", None, "only one")
        if (self.train_loader is None) != (self.val_loader is None):
            bad("train_loader/val_loader", "must both be given (or neither)", None, "only one")
        forms = [f for f, given in (("train/val tensors", self.train is not None),
                                    ("train_loader/val_loader", self.train_loader is not None),
                                    ("datamodule", self.datamodule is not None)) if given]
        if len(forms) > 1:
            bad("data", "must be given one way", None, " and ".join(forms))
        for key in ("steps", "train_examples"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, int) and v > 0):
                bad(key, "must be a positive integer", v)
        if not (self.baseline is None or self.baseline is False or self.baseline == "off" or (
                isinstance(self.baseline, (int, float)) and not isinstance(self.baseline, bool)
                and math.isfinite(self.baseline) and self.baseline >= 0)):
            bad("baseline", "must be None (automatic), a non-negative finite loss, or False/'off'", self.baseline)
        if self.mode not in MODES:
            bad("mode", f"must be one of {', '.join(map(repr, MODES))}", self.mode)
        if not isinstance(self.metric_name, str) or not self.metric_name:
            bad("metric_name", "must be a non-empty string", self.metric_name)
        if self.train_fn is not None:
            return self
        lightning = self.loss is None and self.loss_fn is None and is_lightning(self.models[next(iter(self.models))]())
        if not forms and not lightning:
            bad("data", "must be train/val tensors, train_loader/val_loader factories or (Lightning) a "
                "datamodule", None, "none")
        if self.loss is None and self.loss_fn is None and not lightning:
            bad("loss", "or loss_fn must be given (loss(model, batch) -> tensor, or loss_fn(outputs, "
                "targets)); a LightningModule brings its training_step", None)
        if self.evaluate is None and self.metric is None and not lightning:
            bad("metric", "or evaluate must be given (metric(outputs, targets) -> float, or "
                "evaluate(model, val_batches) -> dict)", None)
        if self.evaluate is None and self.loss_fn is None and not lightning:
            bad("evaluate", "must be given with loss(model, batch): the default evaluation computes "
                "loss_fn(model(inputs), targets)", None)
        return self


@dataclass
class Epochs:
    """Training epochs of a task as one re-iterable: each pass is the next epoch."""

    task: Task
    batch_size: int
    seed: int
    generator: torch.Generator
    epoch: int = 0
    model: nn.Module | None = None

    def __iter__(self):
        batches = self.task.train_batches(self.batch_size, self.seed, self.epoch, self.generator, self.model)
        self.epoch += 1
        return iter(batches)


def is_lightning(model: Any) -> bool:
    """Whether `model` is a LightningModule (lightning or pytorch_lightning), without importing
    Lightning for the many users who do not have it."""
    return any(c.__name__ == "LightningModule" and c.__module__.split(".")[0] in ("lightning", "pytorch_lightning")
               for c in type(model).__mro__)


def _call(factory: Callable, *args):
    """factory(*args), passing only as many leading arguments as it takes (a train_loader may take
    just batch_size, or batch_size and seed)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return factory(*args)
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return factory(*args)
    n = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    return factory(*args[:n])


def _pair(batch: Any, task: str) -> tuple:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(f"task {task!r}: its batches are {_describe(batch)}, not (inputs, targets) pairs; give "
                     f"Task(loss=lambda model, batch: ...) and Task(evaluate=lambda model, val_batches: "
                     f"{{...}}) for batches of another structure")


def _float(v: Any) -> float:
    return float(v.detach().float().mean()) if torch.is_tensor(v) else float(v)


def _describe(v: Any) -> str:
    text = repr(v) if isinstance(v, (int, float, str, type(None))) else type(v).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class _Mean:
    """A per-batch metric function averaged over batches, weighted by their sizes."""

    def __init__(self, fn):
        self.fn, self.total, self.n = fn, 0.0, 0

    def update(self, outputs, targets) -> None:
        k = len(targets)
        self.total += _float(self.fn(outputs, targets)) * k
        self.n += k

    def compute(self) -> float:
        return self.total / max(self.n, 1)


def _accumulator(metric):
    return metric.accumulator() if hasattr(metric, "accumulator") else _Mean(metric)


class _Accuracy:
    """argmax accuracy; exact when accumulated over batches."""

    __name__ = "accuracy"

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return (outputs.argmax(dim=1) == targets).float().mean().item()

    def accumulator(self) -> _Mean:
        return _Mean(self)


class _R2:
    """Coefficient of determination, 1 - SS_res / SS_tot with SS_tot about each output's mean;
    accumulated exactly from per-batch sums (SS_tot = Σ y² - (Σ y)² / n per output)."""

    __name__ = "r2"

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        acc = self.accumulator()
        acc.update(outputs, targets)
        return acc.compute()

    def accumulator(self) -> "_R2Sums":
        return _R2Sums()


class _R2Sums:
    def __init__(self):
        self.res, self.sum, self.sq, self.n = 0.0, 0.0, 0.0, 0

    def update(self, outputs, targets) -> None:
        o, t = outputs.detach().double(), targets.detach().double()
        self.res += float((o - t).pow(2).sum())
        self.sum = self.sum + t.sum(dim=0)
        self.sq = self.sq + t.pow(2).sum(dim=0)
        self.n += len(t)

    def compute(self) -> float:
        total = float((self.sq - self.sum**2 / max(self.n, 1)).sum())
        return 1.0 - self.res / total if total > 0 else -math.inf


accuracy = _Accuracy()
r2 = _R2()


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
    code: a sweep config is trusted input), checked (`Task.check`). The current directory is
    importable, as for `python -m`. Built-ins and user factories that take `data_dir` get it.
    Raises ValueError naming what is wrong: a module that cannot be imported or raises at import,
    a missing function, a factory that raises, or something returned that is not a valid Task."""
    import importlib
    import sys

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a user module may raise anything at import
            raise ValueError(f"Expected task {spec!r} to name an importable module 'package.module:function' "
                             f"(searched the current directory {os.getcwd()} and sys.path), but importing "
                             f"{module_name!r} raised {type(e).__name__}: {e}{where(e)}") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ValueError(f"Expected task {spec!r} to name a function of module {module_name!r} "
                             f"({getattr(module, '__file__', '?')}), but it has "
                             f"{'no attribute ' + repr(attr) if factory is None else 'a ' + type(factory).__name__}")
    elif spec in BUILTIN:
        factory = BUILTIN[spec]
    else:
        raise ValueError(f"Expected task to be one of {', '.join(map(repr, BUILTIN))} or "
                         f"'package.module:function', but got {spec!r}")
    try:
        takes_dir = "data_dir" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_dir = False
    try:
        task = factory(**({"data_dir": data_dir} if takes_dir else {}))
    except Exception as e:  # noqa: BLE001 - the user's factory
        if ":" not in spec and isinstance(e, ValueError):
            raise
        raise ValueError(f"task {spec!r}: the factory raised {type(e).__name__}: {e}{where(e)}") from None
    if not isinstance(task, Task):
        raise ValueError(f"Expected task {spec!r} to return a trainables.tasks.Task, but got "
                         f"{type(task).__name__}")
    return task.check(spec)


def where(e: BaseException) -> str:
    """' (file:line)' of the innermost frame of an exception's traceback that is not in lrtune,
    torch, Lightning or Python's own library: where the user's code raised (or '')."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    if isinstance(e, SyntaxError) and e.filename:
        return f" ({e.filename}:{e.lineno})"
    ours = str(Path(__file__).resolve().parents[1])
    skip = (os.sep + "site-packages" + os.sep, os.sep + "lib" + os.sep + "python", "<frozen")
    user = [f for f in frames if not any(s in f.filename for s in skip)
            and not f.filename.startswith(os.path.join(ours, "trainables"))
            and not f.filename.startswith(os.path.join(ours, "tuning"))
            and not f.filename.startswith(os.path.join(ours, "schedules"))]
    frame = (user or frames or [None])[-1]
    return f" ({frame.filename}:{frame.lineno})" if frame else ""
