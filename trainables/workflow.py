"""One training workflow as a recipe: task -> model -> optimizer -> schedule -> epochs.

`fit` is the plain loop (no Ray); the Ray Tune trainable wraps the same pieces. The hot loop has no
logging in it: metrics are computed once per epoch.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from schedules import SGDW, constant, cyclic, one_cycle, sgdr
from schedules._checks import in_range, non_negative, one_of, positive

from .tasks import BUILTIN, Task

OPTIMIZERS = ("adamw", "sgdw", "adam", "sgd")
SCHEDULES = ("one_cycle", "cyclic", "sgdr", "constant")


def build_optimizer(name: str, params, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9, beta2: float = 0.999) -> torch.optim.Optimizer:
    """adamw / sgdw decay decoupled; adam / sgd add weight_decay to the gradient as L2 (kept so
    that the decoupled-vs-L2 claim can be measured)."""
    one_of("optimizer", name, OPTIMIZERS)
    positive("lr", lr)
    non_negative("weight_decay", weight_decay)
    in_range("momentum", momentum, 0.0, 1.0, closed="[)")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, beta2), weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(momentum, beta2), weight_decay=weight_decay)
    if name == "sgdw":
        return SGDW(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int, **p):
    one_of("schedule", name, SCHEDULES)
    if name == "one_cycle":
        return one_cycle(optimizer, p["max_lr"], total_steps, **_pick(p, "pct_start", "div_factor",
                         "final_div_factor", "base_momentum", "max_momentum"))
    if name == "cyclic":
        return cyclic(optimizer, p["base_lr"], p["max_lr"], p["step_size_up"],
                      **_pick(p, "mode", "gamma"))
    if name == "sgdr":
        return sgdr(optimizer, p["T_0"], **_pick(p, "T_mult", "eta_min", "warmup_steps"))
    return constant(optimizer)


def _pick(p: dict, *keys: str) -> dict:
    return {k: p[k] for k in keys if k in p}


def get_task(name: str, **kwargs) -> Task:
    one_of("task", name, tuple(BUILTIN))
    return BUILTIN[name](**kwargs)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, batch_size: int = 1000) -> tuple[float, float]:
    model.eval()
    outs, ys = [], []
    for x, y in task.batches(batch_size, split="val"):
        outs.append(model(x))
        ys.append(y)
    out, y = torch.cat(outs), torch.cat(ys)
    model.train()
    return task.loss_fn(out, y).item(), task.metric(out, y)


def fit(task: Task, model_name: str, optimizer: str, schedule: str, epochs: int, batch_size: int,
        seed: int = 0, lr: float | None = None, weight_decay: float = 0.0, momentum: float = 0.9,
        on_epoch: Callable[[dict], None] | None = None, **schedule_params) -> list[dict]:
    """Train one workflow from scratch; returns one metrics dict per epoch."""
    torch.manual_seed(seed)
    model = task.models[model_name]()
    start_lr = lr if lr is not None else schedule_params.get("max_lr", 1e-3)
    opt = build_optimizer(optimizer, model.parameters(), start_lr, weight_decay, momentum)
    steps = task.steps_per_epoch(batch_size)
    sched = build_schedule(schedule, opt, epochs * steps, **schedule_params)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        t0, total, n = time.perf_counter(), 0.0, 0
        for x, y in task.batches(batch_size, gen):
            loss = task.loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            lr = opt.param_groups[0]["lr"]  # the LR this step used, before the schedule moves it
            opt.step()
            sched.step()
            total += loss.detach()
            n += 1
        train_loss = float(total) / n
        val_loss, metric = evaluate(model, task)
        row = dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                   **{task.metric_name: metric}, lr=lr,
                   epoch_time=time.perf_counter() - t0)
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if not (torch.isfinite(torch.tensor(train_loss)) and torch.isfinite(torch.tensor(val_loss))):
            break
    return history
