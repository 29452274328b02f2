"""The loop of one workflow, whatever form its task has, and the one way every loop reports:
`report(metrics, state=...)` once per epoch.

Three loops: lrtune's own (`Run`/`Replicas` over the task's data and step), a LightningModule's
Trainer (`trainables.lightning`), and the task's own `train_fn(workflow, report)`. What `report`
does with a row is its sink's: the Ray Tune trainable reports it to Tune and checkpoints `state`
when one is due; `train_workflow` (`lrtune train`) collects the rows. A loop of your own resumes from
`report.restored` the way a Ray Tune function trainable resumes from `tune.get_checkpoint()`:

    def train_fn(workflow, report):
        model = Net()
        optimizer, scheduler = optimizer_and_schedule(workflow, model, steps_per_epoch)
        start = 0
        if report.restored:                      # None on a fresh start
            model.load_state_dict(report.restored["model"]); ...; start = report.restored["epoch"]
        for epoch in range(start, workflow["epochs"]):
            ...                                  # train one epoch, step the scheduler per step
            report({"val_loss": v, "accuracy": a},
                   state=lambda: {"model": model.state_dict(), ..., "epoch": epoch + 1})
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .data import rng_state, seed_everything, set_rng_state
from .tasks import Task, _float, is_lightning
from .workflow import Replicas, epoch_ends_cycle

Sink = Callable[[dict, "Callable[[], dict] | None"], None]
FLOAT32_MAX = float(np.finfo(np.float32).max)


class StopTrial(Exception):
    """Raised by `report` after a row that ends the workflow (it diverged): the loop unwinds."""


class Report:
    """`report(metrics, state=None)`: one call per epoch from any loop.

    metrics: a dict with at least the task's metric (tensors become floats); `epoch` counts the
    calls unless given. state: what a resumed loop needs (a dict, or a zero-argument callable that
    returns one, called only when a checkpoint is due). A row whose numbers are not all finite
    is `diverged`: the sink sees it, then `StopTrial` ends the loop. `restored` is the state of
    the last checkpointed report (None on a fresh start); reading it also restores the global
    RNGs (Python, NumPy, torch) as they were at that report, so read it after building the model
    and data, as a run-through would have them. `device` is where the loop should train."""

    def __init__(self, sink: Sink, task: Task, workflow: dict, steps_per_epoch: int,
                 device: torch.device | str = "cpu", checkpoint: dict | None = None):
        self.sink, self.task, self.workflow = sink, task, workflow
        self.steps_per_epoch, self.device = steps_per_epoch, torch.device(device)
        self._checkpoint = checkpoint
        self.epoch = checkpoint["epoch"] if checkpoint else 0

    @property
    def restored(self) -> Any:
        if self._checkpoint is None:
            return None
        set_rng_state(self._checkpoint["rng"])
        return self._checkpoint["state"]

    def __call__(self, metrics: dict, state: Any = None) -> None:
        if not isinstance(metrics, dict):
            raise TypeError(f"report(metrics): expected a dict of metric name -> number, got {type(metrics).__name__}")
        row = {k: _plain(v) for k, v in metrics.items()}
        m = self.task.metric_name
        if m not in row:
            raise ValueError(f"report(metrics): the metrics must include the task's metric {m!r} "
                             f"(Task.metric_name); got {sorted(row)}")
        self.epoch = int(row.get("epoch", self.epoch + 1))
        row["epoch"] = self.epoch
        numbers = [v for k, v in row.items() if isinstance(v, float) and k not in ("diverged", "cycle_end")]
        row.setdefault("diverged", not all(math.isfinite(v) for v in numbers))
        row.setdefault("cycle_end", epoch_ends_cycle(self.workflow, self.epoch, self.steps_per_epoch))

        def checkpoint() -> dict:
            return dict(state=state() if callable(state) else state, epoch=self.epoch, rng=rng_state())

        self.sink(row, checkpoint if state is not None else None)
        if row["diverged"]:
            raise StopTrial(f"epoch {self.epoch} diverged")



def _plain(v: Any) -> Any:
    if torch.is_tensor(v):
        return as_computed(_float(v))
    if isinstance(v, (bool, str, list, dict)) or v is None:
        return v
    try:
        return as_computed(float(v))  # numpy scalars, ints
    except (TypeError, ValueError):
        return v


def as_computed(v: float) -> float:
    """A metric as the number it is: a float32 result (what torch computes: an accuracy of 0.98 is
    0.98000001907 once widened to float64) as the shortest decimal that reads back as the same
    float32, so that Tune, Optuna, MLflow and the tables all show 0.98."""
    if abs(v) <= FLOAT32_MAX and float(np.float32(v)) == v:  # False for NaN and inf too
        return float(np.format_float_positional(np.float32(v), unique=True))
    return v  # float64 (a diverged loss beyond float32's range among them: no overflow warning)


def form(task: Task, model_name: str | None) -> str:
    """Which loop trains this task: "train_fn", "lightning" or "lrtune"."""
    if task.train_fn is not None:
        return "train_fn"
    if task.loss is None and task.loss_fn is None and is_lightning(task.models[model_name]()):
        return "lightning"
    return "lrtune"


def micro_batches(task: Task, model_name: str | None, batch_size: int) -> tuple[int, int]:
    """(batches per epoch, training examples per epoch) of a task: a LightningModule that brings
    its own dataloaders is built once to ask them."""
    own_data = not (task.tensors or task.train_loader or task.datamodule or task.steps)
    probe = task.models[model_name]() if own_data and form(task, model_name) == "lightning" else None
    return task.micro_batches(batch_size, model=probe), task.examples(batch_size, model=probe)


def run_loop(task: Task, workflow: dict, report: Report) -> nn.Module | None:
    """Train one workflow with the task's loop, reporting each epoch through `report`; returns at
    the end (or when the loop stops itself: a diverged row, a stopped trial) the trained model: the
    first copy's with `replicas` > 1, a LightningModule for Lightning (None when it diverged: the
    Trainer unwinds), None for a `train_fn` (its model is its own)."""
    loop = form(task, workflow.get("model"))
    replicas = int(workflow.get("replicas", 1))
    if loop != "lrtune" and replicas > 1:
        raise ValueError(f"replicas: {replicas} copies in lockstep need lrtune's own loop; task {task.name!r} "
                         f"brings its own ({loop})")
    model = None
    try:
        if loop == "train_fn":
            seed_everything(int(workflow.get("seed", 0)))
            task.train_fn(dict(workflow, device=str(report.device)), report)
        elif loop == "lightning":
            from .lightning import fit

            model = fit(task, workflow, report)
        else:
            run = Replicas(task, workflow, report.device, replicas)
            model = run.runs[0].model
            if report.restored is not None:
                run.load_state_dict(report.restored)
            while not run.done:
                report(run.train_epoch(), state=run.state_dict)
    except StopTrial:
        pass
    return model


def model_from_checkpoint(task: Task, workflow: dict, checkpoint: dict) -> nn.Module | None:
    """The model a loop's checkpoint (what `Report` hands its sink: state, epoch, rng) holds, built
    from the task and loaded with the checkpoint's weights, on the CPU; None for a `train_fn`
    (its state is its own) or a checkpoint without state."""
    loop, state = form(task, workflow.get("model")), checkpoint.get("state")
    if loop == "train_fn" or state is None:
        return None
    model = task.models[workflow["model"]]()
    if loop == "lightning":
        weights = torch.load(io.BytesIO(state["lightning"]), map_location="cpu", weights_only=False)["state_dict"]
    else:
        weights = state["replicas"][0]["model"]  # Replicas.state_dict: the first copy's, as run_loop returns
    model.load_state_dict(weights)
    return model.cpu()


def run_workflow(task: Task, workflow: dict, device: torch.device | str = "cpu",
                 on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one workflow from scratch, outside Ray, with the task's loop; one metrics dict per
    epoch, until the last epoch or divergence."""
    return train_workflow(task, workflow, device, on_epoch)[0]


def train_workflow(task: Task, workflow: dict, device: torch.device | str = "cpu",
                   on_epoch: Callable[[dict], None] | None = None) -> tuple[list[dict], nn.Module | None]:
    """`run_workflow` and the trained model (`run_loop`'s: None for a `train_fn`): `lrtune train`."""
    history = []

    def collect(row: dict, checkpoint) -> None:
        history.append(row)
        if on_epoch:
            on_epoch(row)

    micro, _ = micro_batches(task, workflow.get("model"), int(workflow["batch_size"]))
    spe = micro // int(workflow.get("accumulate") or 1)
    model = run_loop(task, workflow, Report(collect, task, workflow, spe, device))
    return history, model
