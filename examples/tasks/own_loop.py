"""Your own training loop: `train(workflow, report)` builds its model and data, takes lrtune's
optimizer and schedule from `optimizer_and_schedule`, trains, and calls `report(metrics, state=...)`
once per epoch; it resumes from `report.restored`, as a Ray Tune function trainable resumes from its
checkpoint. The Task also gives the model, data and loss for the sweep's range tests.

    lrtune sweep examples/tasks/own_loop.yaml        # task: "examples.tasks.own_loop:own_loop"
"""

from __future__ import annotations

import torch
from torch import nn

from trainables import optimizer_and_schedule
from trainables.tasks import Task, accuracy, digits


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def train(workflow: dict, report) -> None:
    data = digits()
    (x, y), (xv, yv) = data.train, data.val
    model = mlp().to(report.device)
    optimizer, scheduler = optimizer_and_schedule(workflow, model, report.steps_per_epoch)
    start = 0
    if report.restored:
        model.load_state_dict(report.restored["model"])
        optimizer.load_state_dict(report.restored["optimizer"])
        scheduler.load_state_dict(report.restored["scheduler"])
        start = report.restored["epoch"]
    bs = workflow["batch_size"]
    for epoch in range(start, workflow["epochs"]):
        order = torch.randperm(len(x))
        for i in range(report.steps_per_epoch):
            idx = order[i * bs:(i + 1) * bs]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            logits = model(xv)
        report({"val_loss": nn.functional.cross_entropy(logits, yv), "accuracy": accuracy(logits, yv)},
               state=lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "epoch": epoch + 1})


def own_loop() -> Task:
    d = digits()
    return Task("own_loop", d.train, d.val, models={"mlp": mlp}, loss_fn=nn.functional.cross_entropy,
                metric=accuracy, train_fn=train)
