"""Like-for-like early stopping: a Ray Tune trial scheduler that compares trials only where their
LR schedules make them comparable.

Mid-cycle a trial's accuracy says more about where its LR is than about how good it is: a 1-cycle
trial at its peak LR looks worse than a constant-LR trial and ends better. So the rule of ASHA (Li
et al.; Ray's AsyncHyperBandScheduler) — at a rung, stop a trial that is not in the top
1/reduction_factor of the trials recorded there before it — is applied only between like trials:

- cyclic: at each cycle's end (LR back at base_lr);  sgdr: at each restart (LR at eta_min);
- constant: at ASHA's own milestones (grace_period * reduction_factor**k epochs) — its LR is always
  at its "minimum", so these are fair, and there are as few as ASHA would have;
  these three share their rungs: each trial there has its LR at a minimum (a constant-LR trial is
  at its minimum at every epoch, so each of its epochs is recorded for the others to be compared
  with, while it is itself judged only at the milestones);
- one_cycle: compared only with other 1-cycle trials at the same fraction of their budget (the
  same position in the cycle, the same LR relative to its peak), at ONE_CYCLE_FRACTIONS: half-way
  and three quarters, in its annealing phase. Not earlier: during the warm-up (the first 25 %) a
  trial's rank is its LR's rank — a higher max_lr is ahead at 10 % of the budget and may end
  worse (tests/tuning/test_stopping.py, on real curves).

A rung is (kind, fraction of the budget): a trial is compared with the values other trials of its
kind had at the same point. A diverged trial (non-finite or exploding loss, as reported by the
trainable) stops at once.
"""

from __future__ import annotations

import math
import pickle
from collections import defaultdict

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from schedules import schedule_spec

from .stores import write_atomically

ONE_CYCLE_FRACTIONS = (0.5, 0.75)  # of a 1-cycle trial's budget: where it is compared


class ScheduleFairStopping(FIFOScheduler):
    def __init__(self, metric: str, mode: str = "max", grace_period: int = 1,
                 reduction_factor: float = 3.0, max_epochs: int | None = None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
        if grace_period < 1 or reduction_factor <= 1:
            raise ValueError(f"grace_period must be >= 1 (got {grace_period}) and reduction_factor "
                             f"> 1 (got {reduction_factor})")
        self._metric, self._mode = metric, mode
        self.grace_period, self.reduction_factor, self.max_epochs = grace_period, reduction_factor, max_epochs
        # (kind, fraction of the budget) -> trial id -> value; kind: a schedule compared at fractions
        # of its budget ("one_cycle"), or "at_minimum"
        self.rungs: dict[tuple[str, float], dict[str, float]] = defaultdict(dict)
        self.stopped: list[str] = []

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the metric is fixed at construction (Optuna's first objective)

    def milestones(self) -> set[int]:
        out, m = set(), float(self.grace_period)
        while self.max_epochs is None or m < self.max_epochs:
            out.add(round(m))
            m *= self.reduction_factor
            if self.max_epochs is None and m > 10_000:
                break
        return out

    def fair(self, config: dict, result: dict) -> bool:
        """Whether this result is a point where the trial may be compared (its schedule's
        description says how: `compare`)."""
        epoch = int(result.get("epoch", 0))
        if epoch < self.grace_period or (self.max_epochs and epoch >= self.max_epochs):
            return False
        compare = schedule_spec(config.get("schedule")).compare
        if compare == "budget_fractions":
            budget = config.get("epochs") or self.max_epochs
            return bool(budget) and epoch in {max(1, round(f * budget)) for f in ONE_CYCLE_FRACTIONS}
        if compare == "milestones":
            return epoch in self.milestones()
        return bool(result.get("cycle_end"))

    def comparable(self, config: dict, result: dict) -> bool:
        """Whether this result is recorded for others to be compared with: every fair point, and
        every epoch of a trial compared at milestones (a constant LR is always at its minimum)."""
        epoch = int(result.get("epoch", 0))
        if schedule_spec(config.get("schedule")).compare == "milestones":
            return epoch >= 1 and not (self.max_epochs and epoch >= self.max_epochs)
        return self.fair(config, result)

    def rung(self, config: dict, result: dict) -> tuple[str, float]:
        """Where a fair result is recorded and compared: a schedule compared at fractions of its
        budget (1-cycle) among its own kind at the same fraction; the others together (their LR is
        at a minimum)."""
        schedule = config.get("schedule")
        kind = schedule if schedule_spec(schedule).compare == "budget_fractions" else "at_minimum"
        return kind, round(int(result["epoch"]) / (config.get("epochs") or self.max_epochs or 1), 6)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        value = result.get(self._metric)
        if result.get("diverged") or value is None or not math.isfinite(value):
            return self._stop(trial)
        if not self.comparable(trial.config, result):
            return TrialScheduler.CONTINUE
        sign = 1.0 if self._mode == "max" else -1.0
        recorded = self.rungs[self.rung(trial.config, result)]
        # the others at this rung (a trial restarted from an earlier checkpoint reaches it again)
        others = [v for k, v in recorded.items() if k != trial.trial_id]
        cutoff = np.nanpercentile(others, (1 - 1 / self.reduction_factor) * 100) if others else None
        recorded[trial.trial_id] = sign * value
        if self.fair(trial.config, result) and cutoff is not None and sign * value < cutoff:
            return self._stop(trial)
        return TrialScheduler.CONTINUE

    def _stop(self, trial) -> str:
        self.stopped.append(trial.trial_id)
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return f"ScheduleFairStopping: {len(self.stopped)} stopped, rungs {sorted(self.rungs)}"

    def save(self, checkpoint_path: str) -> None:
        write_atomically(checkpoint_path, pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
