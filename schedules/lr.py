"""Learning-rate (and momentum / β1) schedules that step once per optimizer step.

Each builder checks its arguments and returns one of torch's own schedulers, so values and
`state_dict()` round trips are torch's: lrtune adds the papers' defaults, argument checks and the
pieces torch lacks (linear warm-up in front of SGDR restarts), nothing else. Each schedule's
description (`SCHEDULE_SPECS`, at the bottom, see schedules/registry.py) sits beside its builder.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    SequentialLR,
)

from ._checks import one_of, positive_int, require
from .registry import MOMENTUM, Param, ScheduleSpec, lookup

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
PCT_START = 0.25  # 1-cycle's warm-up, as a fraction of the steps

# Every schedule parameter a workflow may set, one rule per name whichever schedules take it.
PARAMS = {p.name: p for p in (
    Param("max_lr", float, "the peak LR", 0.0, None, "(]"),
    Param("base_lr", float, "the LR at each cycle's start and end", 0.0, None, "(]"),
    Param("step_size_up", int, "optimizer steps from base_lr up to max_lr (half a cycle)", 1),
    Param("mode", str, "CLR's amplitude policy", choices=CYCLIC_MODES),
    Param("gamma", float, "exp_range's amplitude factor per step", 0.0, 1.0, "(]"),
    Param("T_0", int, "optimizer steps of the first period", 1),
    Param("T_mult", int, "each period is T_mult times as long as the one before", 1),
    Param("eta_min", float, "the LR at the end of each period", 0.0, None, "[]"),
    Param("warmup_steps", int, "optimizer steps of linear warm-up before the first period", 0),
    Param("pct_start", float, "the fraction of the steps spent warming up", 0.0, 1.0, "()"),
    Param("div_factor", float, "the first LR is max_lr / div_factor", 0.0, None, "(]"),
    Param("final_div_factor", float, "the last LR is the first / final_div_factor", 0.0, None, "(]"),
    MOMENTUM.named("base_momentum", "the momentum (beta1) at the peak LR"),
    MOMENTUM.named("max_momentum", "the momentum (beta1) at the lowest LR"),
)}


def _check(**values) -> None:
    for name, value in values.items():
        PARAMS[name].check(value)


def _momentum_capable(optimizer: Optimizer, cycle_momentum: bool) -> None:
    require(not cycle_momentum or "momentum" in optimizer.defaults or "betas" in optimizer.defaults,
            "optimizer", "to have 'momentum' or 'betas' when cycle_momentum=True",
            type(optimizer).__name__)


def _momenta(base_momentum: float, max_momentum: float) -> None:
    _check(base_momentum=base_momentum, max_momentum=max_momentum)
    require(base_momentum <= max_momentum, "base_momentum", f"<= max_momentum={max_momentum}",
            base_momentum)


def one_cycle(optimizer: Optimizer, max_lr: float, total_steps: int, pct_start: float = PCT_START,
              div_factor: float = 25.0, final_div_factor: float = 1e4,
              anneal_strategy: str = "cos", cycle_momentum: bool = True,
              base_momentum: float = 0.85, max_momentum: float = 0.95) -> LRScheduler:
    """Smith & Topin's 1-cycle: LR max_lr/div_factor -> max_lr -> max_lr/(div_factor*final_div_factor),
    momentum (SGD) or β1 (Adam family) max_momentum -> base_momentum -> max_momentum."""
    _check(max_lr=max_lr)
    positive_int("total_steps", total_steps)
    _check(pct_start=pct_start)
    # torch divides by the warm-up length pct_start*total_steps - 1
    require(pct_start * total_steps > 1, "total_steps", f"> 1/pct_start = {1 / pct_start:g} "
            "(the warm-up needs at least two steps)", total_steps)
    _check(div_factor=div_factor, final_div_factor=final_div_factor)
    one_of("anneal_strategy", anneal_strategy, ("cos", "linear"))
    _momentum_capable(optimizer, cycle_momentum)
    _momenta(base_momentum, max_momentum)
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start,
                      div_factor=div_factor, final_div_factor=final_div_factor,
                      anneal_strategy=anneal_strategy, cycle_momentum=cycle_momentum,
                      base_momentum=base_momentum, max_momentum=max_momentum)


def cyclic(optimizer: Optimizer, base_lr: float, max_lr: float, step_size_up: int,
           mode: str = "triangular", gamma: float = 1.0, cycle_momentum: bool = False,
           base_momentum: float = 0.85, max_momentum: float = 0.95) -> LRScheduler:
    """Smith's cyclical LR. Momentum stays fixed by default, as in the CLR paper; with
    cycle_momentum=True it moves opposite to the LR as in the 2018 'disciplined approach'."""
    _check(base_lr=base_lr, max_lr=max_lr)
    require(base_lr < max_lr, "base_lr", f"< max_lr={max_lr}", base_lr)
    _check(step_size_up=step_size_up, mode=mode, gamma=gamma)
    _momentum_capable(optimizer, cycle_momentum)
    _momenta(base_momentum, max_momentum)
    return CyclicLR(optimizer, base_lr=base_lr, max_lr=max_lr, step_size_up=step_size_up,
                    mode=mode, gamma=gamma, cycle_momentum=cycle_momentum,
                    base_momentum=base_momentum, max_momentum=max_momentum)


def sgdr(optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
         warmup_steps: int = 0) -> LRScheduler:
    """Loshchilov & Hutter's cosine annealing with warm restarts, peak = the optimizer's lr.

    T_0 and the periods are counted in optimizer steps. With warmup_steps > 0 the LR first rises
    linearly from peak/warmup_steps to the peak, then the restarts begin (torch has no such option).
    """
    _check(T_0=T_0, T_mult=T_mult, eta_min=eta_min, warmup_steps=warmup_steps)
    for group in optimizer.param_groups:
        require(eta_min < group["lr"], "eta_min", f"< the optimizer's lr={group['lr']}", eta_min)
    restarts = CosineAnnealingWarmRestarts(optimizer, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    if warmup_steps == 0:
        return restarts
    warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0,
                      total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, restarts], milestones=[warmup_steps])


def constant(optimizer: Optimizer) -> LRScheduler:
    """The optimizer's lr, unchanged: the baseline every schedule is compared with."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def at_cycle_end(schedule: str, step: int, total_steps: int, **params) -> bool:
    """Whether, after `step` optimizer steps, a schedule has just finished a cycle (its LR is at the
    cycle's minimum): the points where trials on different schedules can be compared fairly. Each
    schedule's own rule is its description's `cycle_ends`."""
    spec = schedule_spec(schedule)
    if step <= 0 or step > total_steps:
        return False
    return spec.cycle_ends(step, total_steps, params)


def sgdr_total_steps(T_0: int, T_mult: int, restarts: int) -> int:
    """Steps covered by `restarts` complete SGDR periods: T_0 * (1 + T_mult + ... + T_mult**(restarts-1))."""
    positive_int("T_0", T_0)
    positive_int("T_mult", T_mult)
    positive_int("restarts", restarts)
    return sum(T_0 * T_mult**i for i in range(restarts))


def sgdr_plans(total_steps: int, T_mults: tuple[int, ...] = (1, 2), max_restarts: int = 5,
               min_T_0: int = 1, max_warmup: int = 0) -> list[tuple[int, int, int, int]]:
    """Every (T_0, T_mult, restarts, warmup_steps) whose periods end exactly at total_steps, so that
    the last cycle finishes at the LR minimum when training stops. With max_warmup > 0, a plan may
    begin with a linear warm-up of up to that many steps (at most T_0) that takes up the remainder:
    T_mult=2 with 3 periods fits 20 epochs as 2 epochs of warm-up + 6 + 12."""
    positive_int("total_steps", total_steps)
    require(isinstance(max_warmup, int) and max_warmup >= 0, "max_warmup", "to be a non-negative integer",
            max_warmup)
    plans = []
    for T_mult in T_mults:
        for n in range(1 if T_mult == min(T_mults) else 2, max_restarts + 1):  # one cycle: T_mult moot
            periods = sum(T_mult**i for i in range(n))  # total = warmup + T_0 * periods
            T_0, warmup = divmod(total_steps, periods)
            if T_0 >= min_T_0 and warmup <= min(max_warmup, T_0):
                plans.append((T_0, T_mult, n, warmup))
    return sorted(set(plans), key=lambda p: (p[2], p[1], p[3]))


def _cyclic_ends(step: int, total_steps: int, p: dict) -> bool:
    """Every 2 * step_size_up steps (torch's CyclicLR with step_size_down = step_size_up)."""
    return step % (2 * p["step_size_up"]) == 0


def _sgdr_ends(step: int, total_steps: int, p: dict) -> bool:
    """After the warm-up, at each restart."""
    end, period = p.get("warmup_steps", 0), p["T_0"]
    if step <= end:  # still warming up: the LR is rising
        return False
    while end < step:
        end += period
        period *= p.get("T_mult", 1)
    return end == step


def _one_cycle(optimizer, total_steps, max_lr, **p):
    return one_cycle(optimizer, max_lr, total_steps, **p)


def _cyclic(optimizer, total_steps, base_lr, max_lr, step_size_up, **p):
    return cyclic(optimizer, base_lr, max_lr, step_size_up, **p)


def _sgdr(optimizer, total_steps, T_0, **p):
    return sgdr(optimizer, T_0, **p)


def _constant(optimizer, total_steps):
    return constant(optimizer)


def _params(*names: str) -> tuple[Param, ...]:
    return tuple(PARAMS[n] for n in names)


SCHEDULE_SPECS = (
    ScheduleSpec("one_cycle", "Smith & Topin's 1-cycle: warm-up to max_lr, then annealing far below the start",
                 _one_cycle, peak="max_lr", required=_params("max_lr"),
                 optional=_params("pct_start", "div_factor", "final_div_factor", "base_momentum", "max_momentum"),
                 cycle_ends=lambda step, total_steps, p: step == total_steps, compare="budget_fractions",
                 # one_cycle's own check: pct_start * total_steps > 1
                 min_steps=lambda p: math.floor(1 / p.get("pct_start", PCT_START)) + 1,
                 min_steps_reason="its warm-up is a quarter of them"),
    ScheduleSpec("cyclic", "Smith's cyclical LR between base_lr and max_lr", _cyclic, peak="max_lr",
                 required=_params("base_lr", "max_lr", "step_size_up"), optional=_params("mode", "gamma"),
                 cycle_ends=_cyclic_ends, compare="cycle_ends"),
    ScheduleSpec("sgdr", "Loshchilov & Hutter's cosine annealing with warm restarts from the optimizer's lr",
                 _sgdr, peak="lr", required=_params("T_0"), optional=_params("T_mult", "eta_min", "warmup_steps"),
                 cycle_ends=_sgdr_ends, compare="cycle_ends"),
    ScheduleSpec("constant", "the optimizer's lr, unchanged (the baseline)", _constant, peak="lr",
                 required=(), optional=(), cycle_ends=lambda step, total_steps, p: True, compare="milestones"),
)
SCHEDULES = tuple(s.name for s in SCHEDULE_SPECS)


def schedule_spec(name: str) -> ScheduleSpec:
    """The description of the schedule `name`; ValueError naming the allowed ones if there is none."""
    return lookup("schedule", name, SCHEDULE_SPECS)
