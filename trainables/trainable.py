"""The Ray Tune function trainable: one trial is one `Run`, reported once per epoch with a
checkpoint; a restarted trial continues from its last checkpoint. The only module of trainables/
that touches Ray.
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch
from ray import tune

from .tasks import load_task
from .workflow import Run

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
    run = Run(task, config, device)
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            run.load_state_dict(torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device,
                                           weights_only=False))
    while not run.done:
        row = run.train_epoch()
        row["status"] = "diverged" if row["diverged"] else "finished" if run.done else "running"
        if row["diverged"]:  # NaN weights are not worth a checkpoint; the trial ends here
            tune.report(row)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(run.state_dict(), os.path.join(d, CHECKPOINT_FILE))
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
