"""lrtune's science core (torch only): the LR range test, LR/momentum schedules, SGDW and
normalized weight decay, and the description of each schedule and optimizer (schedules/registry.py)."""

from .lr import (PARAMS, SCHEDULE_SPECS, SCHEDULES, at_cycle_end, constant, cyclic, one_cycle, schedule_spec, sgdr,
                 sgdr_plans, sgdr_total_steps)
from .optim import OPTIMIZER_SPECS, OPTIMIZERS, SGDW, normalized_weight_decay, optimizer_spec
from .range_test import Diagnosis, RangeTestResult, Suggestion, constant_baseline, default_step, range_test
from .registry import MOMENTUM, OptimizerSpec, Param, ScheduleSpec

__all__ = ["SCHEDULES", "SCHEDULE_SPECS", "PARAMS", "schedule_spec", "OPTIMIZERS", "OPTIMIZER_SPECS",
           "optimizer_spec", "Param", "ScheduleSpec", "OptimizerSpec", "MOMENTUM", "range_test", "RangeTestResult",
           "Suggestion", "Diagnosis", "default_step", "constant_baseline", "one_cycle", "cyclic", "sgdr", "constant",
           "at_cycle_end", "sgdr_total_steps", "sgdr_plans", "SGDW", "normalized_weight_decay"]
