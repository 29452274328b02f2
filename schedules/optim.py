"""Decoupled weight decay for SGD (SGDW), the paper's normalized weight decay, and the description
of each optimizer a workflow may name (`OPTIMIZER_SPECS`, see schedules/registry.py)."""

from __future__ import annotations

import math

import torch

from ._checks import non_negative, positive, positive_int
from .registry import MOMENTUM, OptimizerSpec, lookup


class SGDW(torch.optim.SGD):
    """SGD with decoupled weight decay (Loshchilov & Hutter), applied as torch.optim.AdamW does:
    each step first shrinks the weights by (1 - lr * weight_decay), then takes torch's SGD step on
    the bare gradient, so the decay neither enters the gradient nor passes through momentum."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, dampening: float = 0.0):
        positive("lr", lr)
        MOMENTUM.check(momentum)
        non_negative("weight_decay", weight_decay)
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         nesterov=nesterov, dampening=dampening)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decays = [group["weight_decay"] for group in self.param_groups]
        for group, decay in zip(self.param_groups, decays):
            if decay:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1.0 - group["lr"] * decay)
            group["weight_decay"] = 0.0  # torch's SGD must not add it to the gradient as well
        try:
            super().step()
        finally:
            for group, decay in zip(self.param_groups, decays):
                group["weight_decay"] = decay
        return loss


def normalized_weight_decay(lambda_norm: float, batch_size: int, train_size: int, epochs: int) -> float:
    """λ = λ_norm · √(b / (B·T)) (Loshchilov & Hutter, 'Decoupled Weight Decay Regularization', §4):
    the decay to use for batch size b, training-set size B and T epochs, so that one λ_norm
    transfers across budgets."""
    non_negative("lambda_norm", lambda_norm)
    positive_int("batch_size", batch_size)
    positive_int("train_size", train_size)
    positive_int("epochs", epochs)
    return lambda_norm * math.sqrt(batch_size / (train_size * epochs))


def _adamw(params, lr, weight_decay, momentum, beta2):
    return torch.optim.AdamW(params, lr=lr, betas=(momentum, beta2), weight_decay=weight_decay)


def _adam(params, lr, weight_decay, momentum, beta2):
    return torch.optim.Adam(params, lr=lr, betas=(momentum, beta2), weight_decay=weight_decay)


def _sgdw(params, lr, weight_decay, momentum, beta2):
    return SGDW(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _sgd(params, lr, weight_decay, momentum, beta2):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


# adam and sgd add weight_decay to the gradient as L2: kept so that the decoupled-vs-L2 claim can be measured.
OPTIMIZER_SPECS = (
    OptimizerSpec("adamw", "Adam with decoupled weight decay", _adamw, decoupled=True, family="adaptive",
                  takes=("lr", "weight_decay", "momentum", "beta2")),
    OptimizerSpec("sgdw", "SGD with momentum and decoupled weight decay", _sgdw, decoupled=True, family="sgd",
                  takes=("lr", "weight_decay", "momentum")),
    OptimizerSpec("adam", "Adam, weight decay as L2", _adam, decoupled=False, family="adaptive",
                  takes=("lr", "weight_decay", "momentum", "beta2")),
    OptimizerSpec("sgd", "SGD with momentum, weight decay as L2", _sgd, decoupled=False, family="sgd",
                  takes=("lr", "weight_decay", "momentum")),
)
OPTIMIZERS = tuple(o.name for o in OPTIMIZER_SPECS)


def optimizer_spec(name: str) -> OptimizerSpec:
    """The description of the optimizer `name`; ValueError naming the allowed ones if there is none."""
    return lookup("optimizer", name, OPTIMIZER_SPECS)
