"""User tasks for the fault tests: loops slow enough (a sleep per epoch) that a signal lands
mid-trial, loaded as "tests.faults.slow_tasks:NAME" like any user's module."""

import math
import time

import torch
from torch import nn

from trainables.tasks import Task

EPOCH_S = 0.4  # one epoch's sleep


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    return x, x @ torch.randn(4, 1, generator=g)


def _score(workflow: dict, epoch: int) -> float:
    return 1.0 - abs(math.log10(workflow["lr"]) + 2) + 0.01 * epoch


def slow() -> Task:
    """A user loop that sleeps EPOCH_S per epoch; its score is highest at lr = 0.01."""
    x, y = _data()

    def train(workflow: dict, report) -> None:
        for epoch in range(1, workflow["epochs"] + 1):
            time.sleep(EPOCH_S)
            report({"score": _score(workflow, epoch), "train_loss": 1.0 / epoch})

    return Task("slow", (x, y), (x, y), loss_fn=nn.functional.mse_loss, metric_name="score", train_fn=train)


def raises_for_sgdw() -> Task:
    """As `slow`, but an SGDW trial's step raises in its second epoch, every time (a bug in the
    user's step): its first epoch is reported, then it fails."""
    x, y = _data()

    def train(workflow: dict, report) -> None:
        for epoch in range(1, workflow["epochs"] + 1):
            time.sleep(EPOCH_S / 4)
            if workflow["optimizer"] == "sgdw" and epoch == 2:
                raise RuntimeError("step failed (a bug in the user's step)")
            # an SGDW trial would otherwise score best: a failed trial must still never rank
            report({"score": _score(workflow, epoch) + (10.0 if workflow["optimizer"] == "sgdw" else 0.0)})

    return Task("raises_for_sgdw", (x, y), (x, y), loss_fn=nn.functional.mse_loss, metric_name="score",
                train_fn=train)
