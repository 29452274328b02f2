"""lrtune's science core (torch only): the LR range test, LR/momentum schedules, SGDW and
normalized weight decay."""

from .lr import SCHEDULES, at_cycle_end, constant, cyclic, one_cycle, sgdr, sgdr_plans, sgdr_total_steps
from .optim import SGDW, normalized_weight_decay
from .range_test import Diagnosis, RangeTestResult, Suggestion, constant_baseline, default_step, range_test

__all__ = ["SCHEDULES", "range_test", "RangeTestResult", "Suggestion", "Diagnosis", "default_step",
           "constant_baseline", "one_cycle", "cyclic", "sgdr", "constant", "at_cycle_end", "sgdr_total_steps", "sgdr_plans", "SGDW",
           "normalized_weight_decay"]
