"""The Ray Tune function trainable: one trial is one `Run`, reported once per epoch, with a
checkpoint after its last epoch and after any epoch that ends `checkpoint_every_s` seconds or more
after its previous checkpoint (0: every epoch); a restarted trial continues from its last checkpoint
(or its start, if it had none) and re-reports the epochs since. The only module of trainables/ that
touches Ray.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import torch
from ray import tune

from .tasks import load_task
from .workflow import Replicas

CHECKPOINT_FILE = "run.pt"


def device_for(config: dict) -> torch.device:
    """CUDA when the trial was given (a share of) a GPU and one is visible, else CPU."""
    if config.get("gpu", 0) > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def train(config: dict) -> None:
    # Ray logs every persisted checkpoint at INFO, once per epoch per trial: it buries the trial table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    torch.set_num_threads(int(config.get("threads", 1)))
    device = device_for(config)
    task = load_task(config["task"], config.get("data_dir")).to(device)  # small data lives on the GPU
    run = Replicas(task, config, device, int(config.get("seeds", 1)))
    target, reached = config.get("target"), None  # epochs_to_target, for a multi-objective search
    every_s = float(config.get("checkpoint_every_s", 0.0))
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device, weights_only=False)
        run.load_state_dict(state["run"])
        reached = state["epochs_to_target"]
    saved_at = time.monotonic()
    while not run.done:
        row = run.train_epoch()
        row["status"] = "diverged" if row["diverged"] else "finished" if run.done else "running"
        if target is not None:
            if reached is None and row[task.metric_name] >= target:
                reached = row["epoch"]
            row["epochs_to_target"] = reached if reached is not None else run.runs[0].epochs + 1
        if row["diverged"]:  # NaN weights are not worth a checkpoint; the trial ends here
            tune.report(row)
            return
        if not run.done and time.monotonic() - saved_at < every_s:
            tune.report(row)
            continue
        saved_at = time.monotonic()
        with tempfile.TemporaryDirectory() as d:
            torch.save(dict(run=run.state_dict(), epochs_to_target=reached), os.path.join(d, CHECKPOINT_FILE))
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
