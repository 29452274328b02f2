"""The Ray Tune function trainable: one trial is one workflow trained by its task's loop
(`trainables.loops`), reported once per epoch, with a checkpoint after its last epoch and after any
epoch that ends `checkpoint_every_s` seconds or more after its previous checkpoint (0: every
epoch); a restarted trial continues from its last checkpoint (or its start, if it had none) and
re-reports the epochs since. An exception raised by the task's code ends the trial with a last
result `status: failed` that carries the error and where it was raised: Tune retries only trials
whose worker or node was lost, never a deterministic failure. A full disk (ENOSPC, EDQUOT, e.g.
when a checkpoint is copied to storage_path) is not the task's failure: it is raised, as an error
of the trial, and the driver stops the sweep to be resumed once there is room. `trained_model` reads a trial's
model back from its checkpoint. The only module of trainables/ that touches Ray.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import tempfile
import time
import traceback

import torch
from ray import tune

from .loops import Report, model_from_checkpoint, run_loop
from .tasks import load_task, where

CHECKPOINT_FILE = "run.pt"
# A tensor task goes to the GPU whole when its data take at most this share of the free GPU memory
# (left for the model, activations and the other trials sharing the GPU); else batches move per step.
GPU_DATA_SHARE = 0.25


def device_for(config: dict) -> torch.device:
    """CUDA when the trial was given (a share of) a GPU and one is visible, else CPU."""
    if config.get("gpu", 0) > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def fits_on_device(nbytes: int, free_bytes: int, share: float = GPU_DATA_SHARE) -> bool:
    return 0 < nbytes <= share * free_bytes


def place(task, device: torch.device):
    """A tensor task's data on the GPU when it fits (`fits_on_device`), else where it is."""
    if device.type == "cuda" and fits_on_device(task.nbytes(), torch.cuda.mem_get_info(device)[0]):
        task.to(device)
    return task


# a file system with no room: written so by OSError (errno) and by pyarrow, which copies checkpoints
STORAGE_FULL = (errno.ENOSPC, errno.EDQUOT)
STORAGE_FULL_TEXT = re.compile("|".join([*(re.escape(os.strerror(n)) for n in STORAGE_FULL),
                                         *(rf"\[errno {n}\]" for n in STORAGE_FULL)]), re.IGNORECASE)


def storage_full(e: BaseException | str | None) -> bool:
    """Whether an error (or its text, e.g. Tune's error file), or one it was raised from, says a
    disk has no room (ENOSPC, EDQUOT)."""
    seen = set()
    while isinstance(e, BaseException) and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in STORAGE_FULL or STORAGE_FULL_TEXT.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return isinstance(e, str) and bool(STORAGE_FULL_TEXT.search(e))


def train(config: dict) -> None:
    # Ray logs every persisted checkpoint at INFO, once per epoch per trial: it buries the trial table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    torch.set_num_threads(int(config.get("threads", 1)))
    device = device_for(config)
    task = place(load_task(config["task"], config.get("data_dir")), device)
    metric, better = task.metric_name, (lambda a, b: a >= b) if task.mode == "max" else (lambda a, b: a <= b)
    target = config.get("target")  # epochs_to_target, for a multi-objective search
    every_s = float(config.get("checkpoint_every_s", 0.0))
    epochs = int(config["epochs"])
    loaded, reached = None, None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device, weights_only=False)
        loaded, reached = state["loop"], state["epochs_to_target"]
    saved_at = time.monotonic()

    def sink(row: dict, make_checkpoint) -> None:
        nonlocal reached, saved_at
        done = row["epoch"] >= epochs
        row["status"] = "diverged" if row["diverged"] else "finished" if done else "running"
        if target is not None:
            if reached is None and row.get(metric) is not None and better(row[metric], target):
                reached = row["epoch"]
            row["epochs_to_target"] = reached if reached is not None else epochs + 1
        # NaN weights are not worth a checkpoint; a loop that gives no state has none to save. The
        # last epoch's stays even for short trials (a few ms here, and Tune's bookkeeping of it in the
        # driver): it is the trial's trained model, the sweep's result for each trial.
        if row["diverged"] or make_checkpoint is None or (not done and time.monotonic() - saved_at < every_s):
            tune.report(row)
            return
        saved_at = time.monotonic()
        with tempfile.TemporaryDirectory() as d:
            torch.save(dict(loop=make_checkpoint(), epochs_to_target=reached), os.path.join(d, CHECKPOINT_FILE))
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))

    report = Report(sink, task, config, int(config["steps_per_epoch"]), device, checkpoint=loaded)
    try:
        run_loop(task, config, report)
    except Exception as e:  # noqa: BLE001 - the task's code failed: record it, do not retry it
        if storage_full(e):
            raise  # the storage, not the task's code: an error for the driver, which stops the sweep
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        # NaN objectives: Tune checks that every result has the searcher's metrics; the searcher
        # tells Optuna this trial FAILED (tuning.search), and a NaN never ranks or is logged
        row = {metric: math.nan, **({"epochs_to_target": math.nan} if target is not None else {})}
        tune.report(dict(row, epoch=report.epoch, status="failed", diverged=False, cycle_end=False,
                         error=f"{last[:2000]}{where(e)}"))


def trained_model(checkpoint: tune.Checkpoint, config: dict):
    """The model in a trial's checkpoint, rebuilt from its task (on the CPU), and the epoch it was
    saved after; the model is None for a task's own loop (`train_fn`), whose state is its own."""
    with checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location="cpu", weights_only=False)
    task = load_task(config["task"], config.get("data_dir"))
    return model_from_checkpoint(task, config, state["loop"]), state["loop"]["epoch"]
