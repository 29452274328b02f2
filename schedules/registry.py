"""One description per schedule and per optimizer: everything else (the workflow keys, config
validation, the builders' dispatch, cycle ends, the stopper's comparison, the sweep's checks, the
CLI's help) is derived from them, and an unknown name is an error naming the allowed ones.

To add a schedule: write its builder and its `ScheduleSpec` in schedules/lr.py (append it to
`SCHEDULE_SPECS`; new parameter names go in `lr.PARAMS`), then its search space, registered with
`@searched("<name>", start=...)`, in tuning/search.py. To add an optimizer: its builder and its
`OptimizerSpec` in schedules/optim.py (append it to `OPTIMIZER_SPECS`). Nothing else changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ._checks import in_range, non_negative, one_of, positive, positive_int, require


@dataclass(frozen=True)
class Param:
    """A parameter of a schedule or an optimizer: its type and either its bounds (`lo`/`hi`, each
    included when `closed` says so, "[)" as in [0, 1)) or its choices."""

    name: str
    type: type  # int, float or str
    help: str
    lo: float | None = None
    hi: float | None = None
    closed: str = "[]"
    choices: tuple[str, ...] | None = None

    def named(self, name: str, help: str) -> Param:
        """The same rule under another name (base_momentum and max_momentum are momenta)."""
        return replace(self, name=name, help=help)

    def check(self, value: object, name: str | None = None) -> None:
        """Raises ValueError in torch's style (argument, rule, value) unless `value` obeys the rule."""
        name = name or self.name
        if self.choices is not None:
            one_of(name, value, self.choices)
        elif self.type is int and self.lo == 1 and self.hi is None:
            positive_int(name, value)
        elif self.type is int:
            rule = "to be a non-negative integer" if (self.lo, self.hi) == (0, None) else f"to be an integer {self.rule}"
            require(isinstance(value, int) and not isinstance(value, bool) and self._within(value), name, rule, value)
        elif self.lo == 0 and self.hi is None:
            (positive if self.closed[0] == "(" else non_negative)(name, value)
        elif self.lo is not None and self.hi is not None:
            in_range(name, value, self.lo, self.hi, closed=self.closed)
        else:
            require(isinstance(value, (int, float)) and math.isfinite(value) and self._within(value), name,
                    f"to be a finite number {self.rule}", value)

    @property
    def rule(self) -> str:
        lo = "" if self.lo is None else f"{'>=' if self.closed[0] == '[' else '>'} {self.lo}"
        hi = "" if self.hi is None else f"{'<=' if self.closed[1] == ']' else '<'} {self.hi}"
        return " and ".join(r for r in (lo, hi) if r)

    def _within(self, v) -> bool:
        return ((self.lo is None or (v >= self.lo if self.closed[0] == "[" else v > self.lo))
                and (self.hi is None or (v <= self.hi if self.closed[1] == "]" else v < self.hi)))

    def bounds(self) -> dict:
        """The bounds as pydantic's Field arguments (ge/gt/le/lt)."""
        out = {}
        if self.lo is not None:
            out["ge" if self.closed[0] == "[" else "gt"] = self.lo
        if self.hi is not None:
            out["le" if self.closed[1] == "]" else "lt"] = self.hi
        return out


# Momentum (SGD) or β1 (Adam family): the one definition of its range.
MOMENTUM = Param("momentum", float, "momentum (SGD) or beta1 (Adam family)", 0.0, 1.0, "[)")


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule: `build(optimizer, total_steps, **params)` -> torch scheduler. `peak` is the key
    of its highest LR: one of its parameters (max_lr) or the optimizer's "lr". `cycle_ends(step,
    total_steps, params)`: whether after `step` optimizer steps (0 < step <= total_steps) its LR is
    at a cycle's minimum. `compare`: how the stopper compares it ("budget_fractions": with its own
    kind at fractions of the budget; "milestones": judged at ASHA's milestones, recorded at every
    epoch, its LR always at its minimum; "cycle_ends": at its cycle ends). `min_steps(params)`:
    the fewest total steps the builder accepts, `min_steps_reason` why."""

    name: str
    help: str
    build: Callable[..., LRScheduler]
    peak: str
    required: tuple[Param, ...]
    optional: tuple[Param, ...]
    cycle_ends: Callable[[int, int, dict], bool]
    compare: str
    min_steps: Callable[[dict], int] = lambda params: 1
    min_steps_reason: str = ""

    def __post_init__(self):
        one_of("compare", self.compare, COMPARISONS)

    @property
    def params(self) -> tuple[Param, ...]:
        return self.required + self.optional

    @property
    def needs(self) -> tuple[str, ...]:
        """The workflow keys it cannot do without: the optimizer's lr when that is its peak, and its
        required parameters."""
        own = tuple(p.name for p in self.required)
        return own if self.peak in own else (self.peak, *own)


COMPARISONS = ("budget_fractions", "milestones", "cycle_ends")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer: `build(params, lr, weight_decay, momentum, beta2)`. `decoupled`: its weight
    decay shrinks the weights (AdamW, SGDW) rather than entering the gradient as L2. `family`: the
    range test's ("adaptive" with betas, else "sgd"; see range_test.EDGE_MARGIN). `takes`: the
    arguments it uses."""

    name: str
    help: str
    build: Callable[..., Optimizer]
    decoupled: bool
    family: str
    takes: tuple[str, ...]

    def __post_init__(self):
        one_of("family", self.family, ("adaptive", "sgd"))


def lookup(kind: str, name: object, specs: tuple):
    """The spec called `name`; else ValueError naming it and the allowed names."""
    by_name = {s.name: s for s in specs}
    one_of(kind, name, tuple(by_name))
    return by_name[name]
