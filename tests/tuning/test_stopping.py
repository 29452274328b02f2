"""Schedule-fair stopping against ASHA at fixed epochs, on real learning curves (digits, CPU)."""

import itertools
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from trainables.tasks import load_task
from trainables.workflow import fit
from tuning.stopping import ONE_CYCLE_FRACTIONS, ScheduleFairStopping

EPOCHS, GRACE, RF = 12, 3, 3
WORKFLOWS = {  # three constant-LR AdamW runs, then a 1-cycle run whose peak LR sits mid-training
    "constant-1e-3": dict(schedule="constant", lr=1e-3),
    "constant-3e-3": dict(schedule="constant", lr=3e-3),
    "constant-3e-4": dict(schedule="constant", lr=3e-4),
    "one_cycle": dict(schedule="one_cycle", max_lr=0.03),
}


@pytest.fixture(scope="module")
def curves():
    task = load_task("digits")
    return {name: fit(task, "mlp", "adamw", epochs=EPOCHS, batch_size=64, seed=0, weight_decay=1e-4, **w)
            for name, w in WORKFLOWS.items()}


def _feed(scheduler, curves, workflows=WORKFLOWS) -> dict[str, int | None]:
    """Trials one after another (as with a free slot each); the epoch each was stopped at, or None."""
    stopped = {}
    for name, history in curves.items():
        trial = SimpleNamespace(trial_id=name, config=dict(workflows[name], epochs=EPOCHS))
        scheduler.on_trial_add(None, trial)
        stopped[name] = None
        for row in history:
            if scheduler.on_trial_result(None, trial, row) == TrialScheduler.STOP:
                stopped[name] = row["epoch"]
                break
    return stopped


@pytest.mark.slow  # its curves are four real trainings of 12 epochs
def test_asha_kills_the_one_cycle_trial_that_ends_best_schedule_fair_does_not(curves):
    finals = {name: h[-1]["accuracy"] for name, h in curves.items()}
    assert max(finals, key=finals.get) == "one_cycle"  # the premise, on these real curves
    asha = AsyncHyperBandScheduler(time_attr="epoch", metric="accuracy", mode="max", max_t=EPOCHS,
                                   grace_period=GRACE, reduction_factor=RF, brackets=1)
    by_asha = _feed(asha, curves)
    fair = ScheduleFairStopping("accuracy", "max", grace_period=GRACE, reduction_factor=RF,
                                max_epochs=EPOCHS)
    by_fair = _feed(fair, curves)
    assert by_asha["one_cycle"] is not None and by_asha["one_cycle"] < EPOCHS  # killed mid-cycle
    assert by_fair["one_cycle"] is None  # runs to its end, where it is the best
    # the same ASHA rule still prunes where the comparison is fair: constant LR at the milestones
    assert by_fair["constant-3e-4"] == by_asha["constant-3e-4"] == GRACE
    assert fair.milestones() == {3, 9}
    # constants are recorded at every epoch they ran (comparators), the 1-cycle trial at its fractions
    assert {k for k in fair.rungs if k[0] == "one_cycle"} == {("one_cycle", f) for f in ONE_CYCLE_FRACTIONS}
    assert {k for k in fair.rungs if k[0] == "at_minimum"} == {("at_minimum", round(e / EPOCHS, 6))
                                                              for e in range(1, EPOCHS)}


MAX_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)
ONE_CYCLES = {f"one_cycle-{lr:g}": dict(schedule="one_cycle", max_lr=lr) for lr in MAX_LRS}


@pytest.fixture(scope="module")
def one_cycle_curves():
    task = load_task("digits")
    return {name: fit(task, "mlp", "adamw", epochs=EPOCHS, batch_size=64, seed=0, weight_decay=1e-4, **w)
            for name, w in ONE_CYCLES.items()}


@pytest.mark.slow  # its curves are six real trainings of 12 epochs
def test_one_cycle_trials_are_compared_like_for_like(one_cycle_curves):
    """1-cycle trials among themselves at the same fraction of the budget: in every one of the 720
    arrival orders of six real 1-cycle trials (max_lr 3e-4 .. 0.1) the eventual best is never
    stopped, and the clearly worse one is stopped half-way whenever a better one came first. ASHA
    (Ray's, grace 1) compares them during the warm-up, where a higher max_lr is ahead, and stops
    the eventual best in some orders."""
    curves = one_cycle_curves
    finals = {n: h[-1]["accuracy"] for n, h in curves.items()}
    best, worst = max(finals, key=finals.get), min(finals, key=finals.get)
    assert best not in (f"one_cycle-{MAX_LRS[0]:g}", f"one_cycle-{MAX_LRS[-1]:g}")  # premise: an inner optimum
    assert finals[best] - finals[worst] > 0.05  # premise: the worst is clearly worse
    half = round(ONE_CYCLE_FRACTIONS[0] * EPOCHS)
    asha_killed_best = 0
    for order in itertools.permutations(curves):
        ordered = {n: curves[n] for n in order}
        fair = ScheduleFairStopping("accuracy", "max", grace_period=1, reduction_factor=RF, max_epochs=EPOCHS)
        stopped = _feed(fair, ordered, ONE_CYCLES)
        assert stopped[best] is None, order
        assert all(e is None or e in {round(f * EPOCHS) for f in ONE_CYCLE_FRACTIONS} for e in stopped.values())
        if order.index(best) < order.index(worst):
            assert stopped[worst] == half, order
        asha = AsyncHyperBandScheduler(time_attr="epoch", metric="accuracy", mode="max", max_t=EPOCHS,
                                       grace_period=1, reduction_factor=RF, brackets=1)
        asha_killed_best += (_feed(asha, ordered, ONE_CYCLES)[best] or EPOCHS) < EPOCHS  # ASHA also stops at max_t
    assert asha_killed_best > 0  # 168 of the 720 orders when written


def test_sgdr_and_cyclic_are_compared_only_at_cycle_ends():
    fair = ScheduleFairStopping("accuracy", "max", grace_period=1, reduction_factor=2, max_epochs=20)
    for i in range(3):  # three good trials recorded at epoch 4
        fair.on_trial_result(None, SimpleNamespace(trial_id=f"good{i}", config={"schedule": "cyclic"}),
                             dict(epoch=4, accuracy=0.9, cycle_end=True))
    for schedule in ("sgdr", "cyclic"):
        weak = SimpleNamespace(trial_id=f"weak-{schedule}", config={"schedule": schedule})
        assert fair.on_trial_result(None, weak, dict(epoch=4, accuracy=0.1, cycle_end=False)) == "CONTINUE"
        assert fair.on_trial_result(None, weak, dict(epoch=4, accuracy=0.1, cycle_end=True)) == "STOP"
    one_cycle = SimpleNamespace(trial_id="oc", config={"schedule": "one_cycle"})
    assert fair.on_trial_result(None, one_cycle, dict(epoch=4, accuracy=0.1, cycle_end=False)) == "CONTINUE"


@pytest.mark.parametrize("row", [dict(epoch=1, accuracy=0.5, diverged=True),
                                 dict(epoch=1, accuracy=float("nan"), diverged=False)])
def test_divergence_stops_at_once_even_mid_cycle(row):
    fair = ScheduleFairStopping("accuracy", "max", grace_period=5)
    trial = SimpleNamespace(trial_id="t", config={"schedule": "one_cycle"})
    assert fair.on_trial_result(None, trial, dict(row, cycle_end=False)) == "STOP"


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="mode: expected 'max' or 'min', got 'up'"):
        ScheduleFairStopping("accuracy", "up")
    with pytest.raises(ValueError, match="reduction_factor > 1 \\(got 1\\)"):
        ScheduleFairStopping("accuracy", reduction_factor=1)


def test_a_constant_lr_trial_is_a_comparator_at_every_epoch_but_judged_at_milestones():
    """A constant LR is at its minimum at every epoch: its values are what a CLR or SGDR trial's
    cycle end is compared with, whatever epoch that falls on; it is itself judged only at ASHA's
    milestones."""
    fair = ScheduleFairStopping("accuracy", "max", grace_period=1, reduction_factor=3, max_epochs=10)
    strong = SimpleNamespace(trial_id="constant", config={"schedule": "constant", "epochs": 10})
    for epoch in range(1, 11):
        assert fair.on_trial_result(None, strong, dict(epoch=epoch, accuracy=0.5 + epoch / 100)) == "CONTINUE"
    weak = SimpleNamespace(trial_id="weak", config={"schedule": "constant", "epochs": 10})
    assert fair.on_trial_result(None, weak, dict(epoch=2, accuracy=0.1)) == "CONTINUE"  # 2: no milestone
    assert fair.on_trial_result(None, weak, dict(epoch=3, accuracy=0.1)) == "STOP"  # 1, 3, 9
    sgdr = SimpleNamespace(trial_id="sgdr", config={"schedule": "sgdr", "epochs": 10})
    assert fair.on_trial_result(None, sgdr, dict(epoch=2, accuracy=0.1, cycle_end=True)) == "STOP"
    one_cycle = SimpleNamespace(trial_id="oc", config={"schedule": "one_cycle", "epochs": 10})
    assert fair.on_trial_result(None, one_cycle, dict(epoch=5, accuracy=0.1)) == "CONTINUE"  # not like it
