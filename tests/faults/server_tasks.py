"""Tasks for the fault tests: a user loop slow enough for a fault to land mid-sweep."""

import time

from torch import nn

from trainables.tasks import Task


def one_epoch_a_second() -> Task:
    """A user loop that takes a second per epoch and reports a score that rises with the epoch."""
    import torch

    x, y = torch.randn(64, 4), torch.randn(64, 1)

    def train(workflow: dict, report) -> None:
        for epoch in range(1, workflow["epochs"] + 1):
            time.sleep(1.0)
            report({"score": epoch + workflow["lr"]})

    return Task("one_epoch_a_second", (x, y), (x, y), loss_fn=nn.functional.mse_loss, metric_name="score",
                train_fn=train)
