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
