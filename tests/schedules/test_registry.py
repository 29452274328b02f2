"""Every schedule and optimizer description, walked: it builds, it is torch's, it resumes, its cycle
ends are where its LR trace is at a cycle's minimum, the configs accept and refuse what it says;
an unknown name is refused everywhere, naming the allowed ones. The last two tests run real
sweeps (slow): a tiny one per schedule, and one of a schedule added to a copy of lrtune."""

import math

import pytest
import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR

from schedules import (OPTIMIZER_SPECS, OPTIMIZERS, PARAMS, SCHEDULE_SPECS, SCHEDULES, at_cycle_end, optimizer_spec,
                       schedule_spec)
from schedules.range_test import optimizer_family
from trainables.workflow import (SCHEDULE_PARAMS, WORKFLOW_KEYS, build_optimizer, build_schedule, epoch_ends_cycle,
                                 peak_lr)
from tests.schedules.test_lr import _trace as lr_trace
from tuning.config import ConfigError, WorkflowConfig, parse

LR = 0.1
# Per schedule: parameters for a budget of whole cycles, the budget, and torch's own scheduler with
# the same values (None where torch has none).
EXAMPLES = {
    "one_cycle": (dict(max_lr=0.4, pct_start=0.3, div_factor=10.0, final_div_factor=100.0, base_momentum=0.8,
                       max_momentum=0.9), 30,
                  lambda o: OneCycleLR(o, max_lr=0.4, total_steps=30, pct_start=0.3, div_factor=10.0,
                                       final_div_factor=100.0, base_momentum=0.8, max_momentum=0.9)),
    "cyclic": (dict(base_lr=0.01, max_lr=0.1, step_size_up=3, mode="triangular2"), 18,
               lambda o: CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="triangular2", cycle_momentum=False)),
    "sgdr": (dict(T_0=4, T_mult=2, eta_min=0.001), 28,
             lambda o: CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2, eta_min=0.001)),
    "constant": ({}, 12, lambda o: ConstantLR(o, factor=1.0, total_iters=0)),
}
WARMED_UP = ("sgdr", dict(T_0=4, T_mult=2, eta_min=0.001, warmup_steps=2), 14)  # torch has no warm-up


def test_every_schedule_has_an_example_here():
    assert set(EXAMPLES) == set(SCHEDULES), "add the new schedule to EXAMPLES"


def _opt(kind="sgd", lr=LR):
    return build_optimizer(kind, [torch.nn.Parameter(torch.ones(3))], lr, momentum=0.9)


def _trace(opt, sched, steps) -> list[tuple[float, float]]:
    """(lr, momentum-or-beta1) that steps 0..steps-1 use, then the one after the last step."""
    g = opt.param_groups[0]
    return lr_trace(opt, sched, steps) + [(g["lr"], g["betas"][0] if "betas" in g else g["momentum"])]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("kind", ["sgdw", "adamw"])
def test_each_schedule_is_torchs_own(name, kind):
    params, total, reference = EXAMPLES[name]
    ours_opt, ref_opt = _opt(kind), _opt(kind)
    ours = build_schedule(name, ours_opt, total, **params)
    assert _trace(ours_opt, ours, total) == _trace(ref_opt, reference(ref_opt), total)


@pytest.mark.parametrize("name,params,total", [(n, *EXAMPLES[n][:2]) for n in SCHEDULES] + [WARMED_UP])
def test_each_schedule_resumes_from_its_state_dict(name, params, total):
    opt = _opt()
    through = _trace(opt, build_schedule(name, opt, total, **params), total)
    first_opt = _opt()
    first = build_schedule(name, first_opt, total, **params)
    head = _trace(first_opt, first, total // 2)[:-1]
    later_opt = _opt()
    later = build_schedule(name, later_opt, total, **params)
    later_opt.load_state_dict(first_opt.state_dict())
    later.load_state_dict(first.state_dict())
    assert head + _trace(later_opt, later, total - total // 2) == through


def _valleys(lrs: list[float]) -> set[int]:
    """Indices where the LR trace stops falling and rises again."""
    return {i for i in range(1, len(lrs) - 1)
            if lrs[i] < lrs[i - 1] * (1 - 1e-12) and lrs[i + 1] > lrs[i] * (1 + 1e-12)}


@pytest.mark.parametrize("name,params,total", [(n, *EXAMPLES[n][:2]) for n in SCHEDULES] + [WARMED_UP])
def test_declared_cycle_ends_are_the_lr_traces_cycle_minima(name, params, total):
    """Read off the scheduler's own trace, not off `cycle_ends`: the trace's valleys (the LR stops
    falling and rises again) are the cycle ends, give or take the step on which a cycle counts as
    ended (CLR's triangle starts and ends at base_lr, SGDR's cosine reaches eta_min just before its
    restart); the LR around each end (the last step's, or the next one's) is the lowest of its
    cycle; an end anywhere else is on a flat LR (constant) or the end of the budget."""
    opt = _opt()
    lrs = [lr for lr, _ in _trace(opt, build_schedule(name, opt, total, **params), total)]
    ends = [s for s in range(-1, total + 3) if at_cycle_end(name, s, total, **params)]
    valleys = _valleys(lrs)
    assert ends and ends[-1] == total and all(1 <= s <= total for s in ends)
    assert all(m in ends or m + 1 in ends for m in valleys), (valleys, ends)
    begin = 0
    for s in ends:
        assert min(lrs[s - 1], lrs[s]) <= min(lrs[begin:s + 1]) * (1 + 1e-12), (s, lrs[begin:s + 1])
        assert s == total or {s - 1, s} & valleys or lrs[s - 1] == lrs[s] == lrs[s + 1], (s, valleys)
        begin = s
    # trials are compared on epochs: the same rule, on the workflow
    workflow = dict(schedule=name, epochs=total, **params)
    assert [e for e in range(1, total + 1) if epoch_ends_cycle(workflow, e, 1)] == ends


@pytest.mark.parametrize("spec", SCHEDULE_SPECS, ids=SCHEDULES)
def test_the_fewest_steps_declared_are_what_the_builder_accepts(spec):
    params = EXAMPLES[spec.name][0]
    fewest = spec.min_steps({})
    build_schedule(spec.name, _opt(), fewest, **{k: v for k, v in params.items() if k != "pct_start"})
    if fewest > 1:
        with pytest.raises(ValueError, match="total_steps"):
            build_schedule(spec.name, _opt(), fewest - 1, **{k: v for k, v in params.items() if k != "pct_start"})


def test_the_workflow_keys_are_the_descriptions_parameters():
    for spec in SCHEDULE_SPECS:
        assert spec.peak in spec.needs and spec.peak in WORKFLOW_KEYS
        for p in spec.params:
            assert PARAMS[p.name] is p, f"{spec.name}.{p.name}: one rule per parameter name (schedules.lr.PARAMS)"
            assert p.name in SCHEDULE_PARAMS and p.name in WORKFLOW_KEYS
    assert set(SCHEDULE_PARAMS) == {p.name for s in SCHEDULE_SPECS for p in s.params}
    assert peak_lr(dict(schedule="one_cycle", max_lr=0.3, lr=0.01)) == 0.3
    assert peak_lr(dict(schedule="sgdr", max_lr=0.3, lr=0.01)) == 0.01


def _workflow(name: str, **over) -> dict:
    return dict(dict(task="digits", model="mlp", optimizer="adamw", schedule=name, lr=LR, epochs=2, batch_size=50,
                     **EXAMPLES[name][0]), **over)


@pytest.mark.parametrize("spec", SCHEDULE_SPECS, ids=SCHEDULES)
def test_the_workflow_config_takes_what_a_schedule_needs_and_names_what_is_missing(spec):
    parse(_workflow(spec.name), model=WorkflowConfig)
    for key in spec.needs:
        with pytest.raises(ConfigError) as e:
            parse({k: v for k, v in _workflow(spec.name).items() if k != key}, model=WorkflowConfig)
        assert f"schedule {spec.name} needs {', '.join(spec.needs)}; missing: {key}" in str(e.value)


@pytest.mark.parametrize("param", list(PARAMS.values()), ids=list(PARAMS))
def test_the_workflow_config_refuses_what_a_builder_refuses(param):
    """Each parameter's rule, as the config applies it and as the builder does."""
    bad = "cosine" if param.choices else (param.lo - 1 if param.lo is not None else param.hi + 1)
    with pytest.raises(ConfigError) as e:
        parse(_workflow("constant", **{param.name: bad}), model=WorkflowConfig)
    assert f"{param.name}: " in str(e.value) and f"(got {bad!r})" in str(e.value)
    with pytest.raises(ValueError, match=f"Expected {param.name} "):
        param.check(bad)


def _decayed_twice(spec, p0: torch.Tensor, lr: float, wd: float) -> torch.Tensor:
    """The weights after two steps on zero gradients."""
    p = torch.nn.Parameter(p0.clone())
    opt = spec.build([p], lr, wd, 0.9, 0.999)
    for _ in range(2):
        p.grad = torch.zeros_like(p)
        opt.step()
    return p.detach()


@pytest.mark.parametrize("spec", OPTIMIZER_SPECS, ids=OPTIMIZERS)
def test_each_optimizer_builds_steps_and_is_what_it_says(spec):
    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(spec.name, model.parameters(), 0.05, weight_decay=1e-2, momentum=0.8, beta2=0.99)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert optimizer_family(opt) == spec.family
    g = opt.param_groups[0]
    assert (g["lr"], g["weight_decay"]) == (0.05, 1e-2)
    assert (g["betas"] == (0.8, 0.99)) if "beta2" in spec.takes else g["momentum"] == 0.8
    # decoupled: zero gradients leave only the decay, (1 - lr * wd) a step, outside any momentum
    p0 = torch.linspace(-1, 1, 5)
    assert torch.allclose(_decayed_twice(spec, p0, 0.1, 0.5), p0 * (1 - 0.05) ** 2) == spec.decoupled


def _sweep_config(**over):
    from tuning.config import SweepConfig

    return parse(dict(dict(task="digits", model="mlp", epochs=2), **over), model=SweepConfig)


@pytest.mark.parametrize("call", [
    lambda: build_schedule("cosine", _opt(), 10),
    lambda: at_cycle_end("cosine", 1, 10),
    lambda: schedule_spec("cosine"),
    lambda: peak_lr(dict(schedule="cosine", lr=0.1)),
])
def test_an_unknown_schedule_is_refused_naming_the_allowed_ones(call):
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value) == f"Expected schedule to be one of {_listed(SCHEDULES)}, but got 'cosine'"


@pytest.mark.parametrize("call", [
    lambda: build_optimizer("lion", [torch.nn.Parameter(torch.zeros(1))], 0.1),
    lambda: optimizer_spec("lion"),
])
def test_an_unknown_optimizer_is_refused_naming_the_allowed_ones(call):
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value) == f"Expected optimizer to be one of {_listed(OPTIMIZERS)}, but got 'lion'"


def test_the_configs_refuse_unknown_names_naming_the_allowed_ones():
    with pytest.raises(ConfigError) as e:
        parse(_workflow("constant", schedule="cosine", optimizer="lion"), model=WorkflowConfig)
    assert f"optimizer: Input should be {_either(OPTIMIZERS)} (got 'lion')" in str(e.value)
    assert f"schedule: Input should be {_either(SCHEDULES)} (got 'cosine')" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _sweep_config(schedules=["sgdr", "cosine"], optimizers=["lion"])
    assert f"schedules.1: Input should be {_either(SCHEDULES)} (got 'cosine')" in str(e.value)
    assert f"optimizers.0: Input should be {_either(OPTIMIZERS)} (got 'lion')" in str(e.value)


def _listed(names) -> str:
    return ", ".join(repr(n) for n in names)


def _either(names) -> str:
    """As pydantic lists a Literal's values: 'a', 'b' or 'c'."""
    return ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}"


def test_every_schedule_has_a_search_space_and_one_without_is_named():
    from tuning import search

    assert set(search.SPACES) == set(search.STARTS) == set(SCHEDULES)
    search.check_spaces()
    with pytest.raises(RuntimeError, match="schedule\\(s\\) cosine have no search space: register one with "
                                           "@searched\\(name, start=...\\) in tuning/search.py"):
        search.check_spaces(("sgdr", "cosine"))


def test_the_stopper_compares_each_schedule_as_its_description_says():
    from tuning.stopping import ScheduleFairStopping

    fair = ScheduleFairStopping("accuracy", grace_period=1, reduction_factor=3, max_epochs=20)
    for spec in SCHEDULE_SPECS:
        config = dict(schedule=spec.name, epochs=20)
        at = {e for e in range(1, 20) if fair.fair(config, dict(epoch=e, cycle_end=e % 4 == 0))}
        expected = {"budget_fractions": {10, 15}, "milestones": {1, 3, 9}, "cycle_ends": {4, 8, 12, 16}}
        assert at == expected[spec.compare], spec.name
    with pytest.raises(ValueError, match="but got 'cosine'"):
        fair.fair(dict(schedule="cosine"), dict(epoch=4, cycle_end=True))


# One tiny real sweep per schedule; together they cover every optimizer.
SWEEPS = [(schedule, OPTIMIZERS[i % len(OPTIMIZERS)]) for i, schedule in enumerate(SCHEDULES)]
SWEEPS += [("constant", o) for o in OPTIMIZERS[len(SCHEDULES):]]


@pytest.mark.parametrize("schedule,optimizer", SWEEPS)
def test_a_tiny_sweep_of_each_schedule_trains_with_its_parameters(schedule, optimizer, ray_session, tmp_path):
    from tests.tuning.sweeps import local
    from trainables.workflow import workflow_of
    from tuning.sweep import run_sweep

    spec = schedule_spec(schedule)
    # the peak LR fixed (a safe one: a blind draw may diverge), the rest drawn from the search space
    start = {"optimizer": optimizer, "schedule": schedule, "weight_decay": 1e-4,
             spec.peak: 3e-3 if optimizer_spec(optimizer).family == "adaptive" else 0.03}
    cfg = parse(local(dict(name=f"reg-{schedule}", task="digits", model="mlp", epochs=2, batch_size=100,
                           optimizers=[optimizer], schedules=[schedule], stopping=dict(scheduler="none"),
                           search=dict(num_samples=1, max_concurrent=1, seeded=False, points_to_evaluate=[start])),
                      tmp_path))
    result = run_sweep(cfg, verbose=0)
    [trial] = result.trials
    assert trial["error"] is None and trial["result"]["status"] == "finished" and trial["result"]["epoch"] == 2
    config = trial["config"]
    assert (config["schedule"], config["optimizer"]) == (schedule, optimizer)
    assert all(config.get(k) is not None for k in spec.needs), config
    assert config["peak_lr"] == config[spec.peak]
    workflow = parse(workflow_of(config), model=WorkflowConfig)  # re-runnable as exported
    assert math.isfinite(trial["result"]["accuracy"]) and workflow.schedule == schedule


# A new schedule as a contributor adds it: its description and its search space, nothing else.
NEW_SCHEDULE = '''def _cosine(optimizer, total_steps, eta_min=0.0):
    return CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=eta_min)


SCHEDULE_SPECS = (
    ScheduleSpec("cosine", "one cosine annealing from the optimizer's lr to eta_min", _cosine, peak="lr",
                 required=(), optional=_params("eta_min"),
                 cycle_ends=lambda step, total_steps, p: step == total_steps, compare="budget_fractions"),
'''
NEW_SPACE = '''@searched("cosine", start=lambda cfg, micro_batches: dict(eta_min_ratio=0.01, momentum=START_MOMENTUM))
def _cosine(trial, cfg, prior, steps_per_epoch, band=None) -> dict:
    lr = _lr(trial, prior, "lr", lambda s: s.lr, band)
    return dict(lr=lr, eta_min=lr * trial.suggest_float("eta_min_ratio", 1e-3, 1e-1, log=True),
                momentum=trial.suggest_float("momentum", *MOMENTUM))


def check_spaces('''


@pytest.mark.slow  # a sweep process of its own: Ray, range tests, trials
def test_a_new_schedule_is_a_description_and_a_search_space(tmp_path):
    """On a copy of lrtune, `cosine` added as the README's "Extending lrtune" says (an entry in
    schedules/lr.py's SCHEDULE_SPECS with its builder, a @searched function in tuning/search.py) runs
    a seeded sweep end to end: the warm start and Optuna's trials train it and MLflow records it."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from tests.tuning.sweeps import local, write

    root, copy = Path(__file__).resolve().parents[2], tmp_path / "lrtune"
    for package in ("schedules", "trainables", "tuning"):
        shutil.copytree(root / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    lr = copy / "schedules" / "lr.py"
    source = lr.read_text().replace("SCHEDULE_SPECS = (\n", NEW_SCHEDULE, 1)
    lr.write_text(source.replace("from torch.optim.lr_scheduler import (", "from torch.optim.lr_scheduler import (CosineAnnealingLR, ", 1))
    search = copy / "tuning" / "search.py"
    search.write_text(search.read_text().replace("def check_spaces(", NEW_SPACE, 1))
    assert "cosine" in lr.read_text() and "cosine" in search.read_text() and "cosine" not in SCHEDULES

    cfg = local(dict(name="added", task="digits", model="mlp", epochs=2, batch_size=100, optimizers=["adamw"],
                     schedules=["cosine"], range_test=dict(num_iter=50, weight_decays=[1e-4]),
                     search=dict(num_samples=3, max_concurrent=2), stopping=dict(scheduler="none")), tmp_path)
    done = subprocess.run([sys.executable, "-m", "tuning.cli", "sweep", str(write(tmp_path, cfg)), "--verbose", "0"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(copy)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = MlflowClient(cfg["tracking"]["mlflow_uri"])
    runs = client.search_runs([client.get_experiment_by_name(cfg["tracking"]["experiment"]).experiment_id],
                              "tags.`lrtune.kind` = 'trial'")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert r.data.params["schedule"] == "cosine" and float(r.data.params["eta_min"]) < float(r.data.params["lr"])
        assert math.isfinite(r.data.metrics["accuracy"])
