"""One training workflow as a recipe: task -> model -> optimizer -> schedule -> epochs.

`Run` is lrtune's own loop over any task's data (tensors or loaders, batches of any structure);
`Step` is one optimizer step of a task (its loss over `accumulate` micro-batches, gradient
clipping, AMP), the same in the trials and in the range tests. `optimizer_and_schedule` is the
public helper for loops of your own and Lightning. The hot loop has no logging in it: metrics are
computed once per epoch.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch
from torch import nn

from schedules import OPTIMIZERS, SCHEDULES  # noqa: F401 - the names' public home since before the registry
from schedules import MOMENTUM, PARAMS, SCHEDULE_SPECS, at_cycle_end, optimizer_spec, schedule_spec
from schedules._checks import non_negative, positive, positive_int, require

from .data import grouped, rng_state, seed_everything, set_rng_state, to_device
from .tasks import Task


def build_optimizer(name: str, params, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, beta2: float = 0.999) -> torch.optim.Optimizer:
    """The optimizer `name` describes (schedules.OPTIMIZER_SPECS): adamw / sgdw decay decoupled;
    adam / sgd add weight_decay to the gradient as L2."""
    spec = optimizer_spec(name)
    positive("lr", lr)
    non_negative("weight_decay", weight_decay)
    MOMENTUM.check(momentum)
    return spec.build(params, lr, weight_decay, momentum, beta2)


def build_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int, **p):
    """The schedule `name` describes (schedules.SCHEDULE_SPECS), from its own parameters in `p`
    (the others are ignored: a workflow holds every schedule's keys)."""
    spec = schedule_spec(name)
    for param in spec.required:
        require(p.get(param.name) is not None, param.name, f"(schedule {name} needs it)", None)
    return spec.build(optimizer, total_steps, **{q.name: p[q.name] for q in spec.params if p.get(q.name) is not None})


def build_optimizer_and_schedule(workflow: dict, params, total_steps: int):
    """The optimizer and schedule a workflow dict describes (an optimizer's own lr only matters
    for constant and SGDR; 1-cycle and CLR set it from max_lr / base_lr)."""
    w = workflow
    optimizer = build_optimizer(w["optimizer"], params, w.get("lr") or w.get("max_lr") or 1e-3,
                                w.get("weight_decay", 0.0), w.get("momentum", 0.9))
    schedule = build_schedule(w["schedule"], optimizer, total_steps,
                              **{k: w[k] for k in SCHEDULE_PARAMS if w.get(k) is not None})
    return optimizer, schedule


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """The model's trainable parameters in a decayed and a not-decayed group: biases and
    normalisation weights (every parameter with fewer than 2 dimensions) are not decayed unless
    `decay_norm_and_bias`, the rule of nanoGPT, timm and Hugging Face's Trainer."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if decay_norm_and_bias or p.dim() >= 2 else no_decay).append(p)
    groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
    return [g for g in groups if g["params"]] or [dict(params=list(model.parameters()), weight_decay=weight_decay)]


def optimizer_and_schedule(workflow: dict, model: nn.Module, steps_per_epoch: int):
    """The optimizer (with the decay groups of `param_groups`) and the LR schedule a workflow
    describes, for `workflow["epochs"] * steps_per_epoch` optimizer steps: what a trial's loop,
    your own loop (`train_fn`) or a LightningModule trains with. The schedule steps once per
    optimizer step."""
    positive_int("steps_per_epoch", steps_per_epoch)
    groups = param_groups(model, float(workflow.get("weight_decay") or 0.0),
                          bool(workflow.get("decay_norm_and_bias", False)))
    return build_optimizer_and_schedule(workflow, groups, int(workflow["epochs"]) * steps_per_epoch)


class Step:
    """One optimizer step of a task on a list of `accumulate` micro-batches: each moved to the
    device, its loss (the task's) scaled by 1/accumulate and backpropagated (through a GradScaler
    under fp16 AMP), gradients clipped to `grad_clip` (max norm, after unscaling), one optimizer
    step. Returns the mean loss, detached (no device sync). With `skip_nonfinite` (range tests), a
    non-finite loss is recorded but not stepped on, as GradScaler does."""

    def __init__(self, task: Task, model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device | str = "cpu", *, grad_clip: float | None = None,
                 amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                 skip_nonfinite: bool = False):
        self.task, self.model, self.optimizer = task, model, optimizer
        self.device, self.grad_clip, self.amp = torch.device(device), grad_clip, amp
        self.scaler = scaler or torch.amp.GradScaler(enabled=amp == torch.float16)
        self.skip_nonfinite = skip_nonfinite
        self.non_blocking = self.device.type == "cuda"

    def __call__(self, micro_batches: list) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        k, backward = len(micro_batches), False
        for batch in micro_batches:
            batch = to_device(batch, self.device, self.non_blocking)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                loss = self.task.batch_loss(self.model, batch) / k
            if self.skip_nonfinite and not torch.isfinite(loss.detach()):
                self.optimizer.zero_grad(set_to_none=True)
                return loss.detach() * k
            if loss.requires_grad:
                self.scaler.scale(loss).backward()
                backward = True
            total += loss.detach().float()
        if not backward:  # nothing to train (frozen parameters): no step, as torch's default would
            return total
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total

    def range_test_step(self, model, optimizer, loss_fn, micro_batches) -> float:
        """The `step_fn` of `schedules.range_test` (its loss_fn argument is the task's own)."""
        return float(self(micro_batches))


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA: bf16 where the GPU has it (no loss scaling needed), else fp16
    with a GradScaler; full precision on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def val_batch_size(task: Task, batch_size: int) -> int:
    """Tensor tasks evaluate in slices of 1000 (no gradients: memory is not the limit); loaders at
    the training batch size they were written for."""
    return 1000 if task.tensors else batch_size


# A trial whose epoch train loss passes this multiple of its first batch's loss (the untrained,
# chance-level loss) has exploded: it is ended as diverged, like a NaN/inf loss.
EXPLODE_FACTOR = 3.0

# Every schedule's parameters (schedules.lr.PARAMS order): the workflow keys a schedule may read.
SCHEDULE_PARAMS = tuple(n for n, p in PARAMS.items() if any(p in s.params for s in SCHEDULE_SPECS))

# What defines a workflow (the rest of a trial's config is search bookkeeping): an exported
# workflow.yaml holds these, and `lrtune train` re-runs it.
WORKFLOW_KEYS = ("task", "data_dir", "model", "optimizer", "lr", "weight_decay", "decay_norm_and_bias",
                 "momentum", "schedule", *SCHEDULE_PARAMS, "epochs", "batch_size", "accumulate", "grad_clip",
                 "seed", "replicas", "threads", "amp")


def epoch_ends_cycle(workflow: dict, epoch: int, steps_per_epoch: int) -> bool:
    """Whether the workflow's schedule has just finished a cycle after `epoch` epochs (see
    `schedules.at_cycle_end`): where the stopper compares trials."""
    w = workflow
    return at_cycle_end(w["schedule"], epoch * steps_per_epoch, int(w["epochs"]) * steps_per_epoch,
                        **{k: w[k] for k in SCHEDULE_PARAMS if w.get(k) is not None})


def workflow_of(config: dict) -> dict:
    """The workflow part of a trial's config, in WORKFLOW_KEYS order, without unset values."""
    return {k: config[k] for k in WORKFLOW_KEYS if config.get(k) is not None}


def peak_lr(workflow: dict) -> float:
    """A workflow's highest LR whatever its schedule: its description's `peak`, max_lr (1-cycle,
    CLR) or lr (constant, SGDR)."""
    return workflow[schedule_spec(workflow["schedule"]).peak]


class Run:
    """One workflow in progress in lrtune's own loop: everything a checkpoint must hold to continue
    bit for bit (model, optimizer, schedule, GradScaler, the data-order generator, the global RNGs
    that augmentation and DataLoader workers draw from, the epoch)."""

    def __init__(self, task: Task, workflow: dict, device: torch.device | str = "cpu"):
        w = self.workflow = dict(workflow)
        self.task, self.device = task, torch.device(device)
        self.epochs, self.batch_size = int(w["epochs"]), int(w["batch_size"])
        self.seed, self.accumulate = int(w.get("seed", 0)), int(w.get("accumulate") or 1)
        seed_everything(self.seed)
        self.model = task.models[w["model"]]().to(self.device)
        self.steps_per_epoch = task.steps_per_epoch(self.batch_size, self.accumulate)
        self.optimizer, self.scheduler = optimizer_and_schedule(w, self.model, self.steps_per_epoch)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.amp = amp_dtype(self.device) if w.get("amp", True) else None
        self.step = Step(task, self.model, self.optimizer, self.device, grad_clip=w.get("grad_clip"), amp=self.amp)
        self.epoch = 0
        self.initial_loss: float | None = None

    def train_epoch(self) -> dict:
        """One epoch; returns its metrics. `diverged` is True when a loss or metric was not finite
        or the epoch's train loss passed EXPLODE_FACTOR x the first step's."""
        t0, total, n = time.perf_counter(), torch.zeros((), device=self.device), 0
        group = self.optimizer.param_groups[0]
        lr, momentum = group["lr"], _momentum(group)
        batches = self.task.train_batches(self.batch_size, self.seed, self.epoch, self.generator)
        for micro_batches in grouped(batches, self.accumulate, limit=self.steps_per_epoch):
            lr, momentum = group["lr"], _momentum(group)  # what this step uses
            loss = self.step(micro_batches)
            if self.initial_loss is None:
                self.initial_loss = loss.item()
            self.scheduler.step()
            total += loss
            n += 1
        self.epoch += 1
        train_loss = float(total) / max(n, 1)
        val = self.task.evaluate_model(self.model, val_batch_size(self.task, self.batch_size), self.device)
        return dict(epoch=self.epoch, train_loss=train_loss, **val, lr=lr, momentum=momentum,
                    epoch_time=time.perf_counter() - t0, diverged=self._diverged(train_loss, val),
                    cycle_end=self.at_cycle_end)

    def _diverged(self, train_loss: float, val: dict) -> bool:
        if not all(math.isfinite(v) for v in (train_loss, *val.values())):
            return True
        return train_loss > EXPLODE_FACTOR * abs(self.initial_loss)

    @property
    def at_cycle_end(self) -> bool:
        return epoch_ends_cycle(self.workflow, self.epoch, self.steps_per_epoch)

    @property
    def done(self) -> bool:
        return self.epoch >= self.epochs

    def state_dict(self) -> dict:
        return dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), scaler=self.step.scaler.state_dict(),
                    generator=self.generator.get_state(), rng=rng_state(), epoch=self.epoch,
                    initial_loss=self.initial_loss, workflow=self.workflow)

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.epoch = state["epoch"]
        self.initial_loss = state["initial_loss"]


class Replicas:
    """`replicas` copies of one workflow (RNG seeds seed, seed+1, ...) trained in lockstep, so that a trial
    reports a mean and its spread: each epoch row holds the means of the losses and the metric,
    `<metric>_std` (sample std over the copies) and `<metric>_replicas` (each copy's); diverged if any
    copy diverged."""

    def __init__(self, task: Task, workflow: dict, device: torch.device | str = "cpu", replicas: int = 1):
        positive("replicas", replicas)
        first = int(workflow.get("seed", 0))
        self.runs = [Run(task, dict(workflow, seed=first + i), device) for i in range(int(replicas))]
        self.metric_name = task.metric_name

    def train_epoch(self) -> dict:
        rows = [run.train_epoch() for run in self.runs]
        if len(rows) == 1:
            return rows[0]
        m, out = self.metric_name, dict(rows[0])
        for k in ("train_loss", "val_loss", m):
            out[k] = statistics.fmean(r[k] for r in rows)
        out[f"{m}_std"] = statistics.stdev(r[m] for r in rows)
        out[f"{m}_replicas"] = [r[m] for r in rows]
        out["epoch_time"] = sum(r["epoch_time"] for r in rows)
        out["diverged"] = any(r["diverged"] for r in rows)
        return out

    @property
    def epoch(self) -> int:
        return self.runs[0].epoch

    @property
    def done(self) -> bool:
        return self.runs[0].done

    def state_dict(self) -> dict:
        return dict(replicas=[run.state_dict() for run in self.runs])

    def load_state_dict(self, state: dict) -> None:
        for run, s in zip(self.runs, state["replicas"], strict=True):
            run.load_state_dict(s)


def schedule_trace(workflow: dict, steps_per_epoch: int) -> tuple[list[float], list[float]]:
    """The LR and momentum/β1 a workflow's schedule gives at every step (for plots), from the same
    builders the training uses, on a throwaway parameter."""
    total = int(workflow["epochs"]) * steps_per_epoch
    opt, sched = build_optimizer_and_schedule(workflow, [nn.Parameter(torch.zeros(1))], total)
    lrs, moms = [], []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(_momentum(opt.param_groups[0]))
        opt.step()
        sched.step()
    return lrs, moms


def _momentum(group: dict) -> float:
    return group["betas"][0] if "betas" in group else group.get("momentum", 0.0)


def task_range_test(task: Task, model_name: str, optimizer: str, weight_decay: float = 0.0, *,
                    batch_size: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0,
                    num_iter: int = 100, repeats: int = 1, seed: int = 0,
                    device: torch.device | str = "cpu", workflow: dict | None = None):
    """The LR range test of one (model, optimizer, weight decay) on a task, from a fresh model
    seeded with `seed`, on the task's training batches, through the task's own step: its loss,
    `accumulate` micro-batches per step, `grad_clip`, AMP on CUDA, the decay groups (from
    `workflow`, the sweep's fixed workflow keys), and the task's declared `baseline` for the
    no_signal check. The CLI's and the sweep's seeding test."""
    from schedules import range_test

    w = dict(workflow or {})
    accumulate = int(w.get("accumulate") or 1)
    device = torch.device(device)
    seed_everything(seed)
    model = task.models[model_name]().to(device)
    groups = param_groups(model, weight_decay, bool(w.get("decay_norm_and_bias", False)))
    opt = build_optimizer(optimizer, groups, start_lr, weight_decay)
    amp = amp_dtype(device) if w.get("amp", True) else None
    step = Step(task, model, opt, device, grad_clip=w.get("grad_clip"), amp=amp, skip_nonfinite=True)
    # One micro-batch per step: the range test sees the task's own batches, so that it can compare
    # the loss with the best constant predictor's on their targets (the no_signal check) for a loss
    # it knows; with accumulation a step is a list of micro-batches and only a declared baseline counts.
    batches = task.loader(batch_size, seed, model)
    if accumulate == 1:
        batches, step_fn = batches, lambda m, o, f, batch: step.range_test_step(m, o, f, [batch])
    else:
        batches, step_fn = _Groups(batches, accumulate), step.range_test_step
    loss_fn = task.loss_fn if task.loss is None and task.loss_fn is not None else task.batch_loss
    return range_test(model, opt, loss_fn, batches, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
                      repeats=repeats, seed=seed, step_fn=step_fn, baseline=task.baseline)


class _Groups:
    """A re-iterable of `size`-long lists of micro-batches (one per optimizer step) over a re-iterable."""

    def __init__(self, batches, size: int):
        self.batches, self.size = batches, size

    def __iter__(self):
        return grouped(self.batches, self.size)


def run_workflow(task: Task, workflow: dict, device: torch.device | str = "cpu",
                 on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train one workflow from scratch outside Ray, with the task's loop (see trainables.loops)."""
    from .loops import run_workflow as run

    return run(task, workflow, device, on_epoch)


def fit(task: Task, model_name: str, optimizer: str, schedule: str, epochs: int, batch_size: int,
        seed: int = 0, lr: float | None = None, weight_decay: float = 0.0, momentum: float = 0.9,
        on_epoch: Callable[[dict], None] | None = None, **schedule_params) -> list[dict]:
    """`run_workflow` with the workflow given as arguments."""
    return run_workflow(task, dict(model=model_name, optimizer=optimizer, schedule=schedule, epochs=epochs,
                                   batch_size=batch_size, seed=seed, lr=lr, weight_decay=weight_decay,
                                   momentum=momentum, **schedule_params), on_epoch=on_epoch)
