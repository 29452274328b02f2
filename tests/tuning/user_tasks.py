"""User tasks for the tests, loaded as "tests.tuning.user_tasks:NAME" like any user's module."""

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
    """An MLP that raises once, in the third epoch of the first process that trains it (a marker
    file in data_dir remembers), like a node lost mid-trial."""

    def __init__(self, marker, crash_at_call):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
        self.marker, self.crash_at_call, self.calls = marker, crash_at_call, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.crash_at_call and not self.marker.exists():
                self.marker.touch()
                raise RuntimeError("simulated crash")
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
