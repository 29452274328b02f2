"""A LightningModule tuned as it is: its own training_step, validation_step (which logs the metric)
and dataloaders; lrtune replaces its configure_optimizers with the trial's optimizer and schedule and
sets the Trainer's clipping, accumulation and precision from the workflow. Needs `lrtune[lightning]`.

    lrtune sweep examples/tasks/lightning_module.yaml   # task: "examples.tasks.lightning_module:lit_digits"
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainables.tasks import Task, digits


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


class LitDigits(pl.LightningModule):
    def __init__(self, batch_size: int = 50):
        super().__init__()
        self.net = mlp()
        self.batch_size = batch_size
        d = digits()
        self.train_set, self.val_set = TensorDataset(*d.train), TensorDataset(*d.val)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("accuracy", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):  # used when the module trains on its own; lrtune replaces it
        return torch.optim.Adam(self.parameters(), lr=3e-4)

    def train_dataloader(self):
        return DataLoader(self.train_set, self.batch_size, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(0))

    def val_dataloader(self):
        return DataLoader(self.val_set, 500)


def lit_digits() -> Task:
    return Task("lit_digits", models={"lit": LitDigits})
