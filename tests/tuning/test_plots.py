"""The report's plots, checked on what they draw: Optuna's plots over the parameters the trials
share and per schedule (on a real study of the seeded space), the side-by-side range tests, the
learning curves."""

import math

import numpy as np
import optuna
import pytest
from matplotlib.figure import Figure

from schedules.range_test import centred_curve
from tuning import plots, search
from tuning.config import parse
from tuning.seeding import RangeTestOutcome, priors

STEPS = 40
CFG = parse(dict(epochs=20, batch_size=100, optimizers=["adamw", "sgdw"],
                 schedules=["one_cycle", "cyclic", "constant"], range_test=dict(weight_decays=[0, 1e-4])))


def _outcome(optimizer, wd, max_lr):
    return RangeTestOutcome(optimizer=optimizer, weight_decay=wd, status="ok", message="", lr=max_lr / 4,
                            max_lr=max_lr, spread=0.0, lrs=[], raw_losses=[], seconds=1.0,
                            bounds=(max_lr / 30, max_lr * 15))


# adamw's LR band is the curve's bounds (about 1.5 decades down, 1.2 up), sgdw's capped at the blind
# range's 1.0: lr_shift has a distribution per optimizer, which Optuna's importances refuse unless the
# plot widens them to one
PRIORS = priors([_outcome("adamw", 0, 0.05), _outcome("adamw", 1e-4, 0.045), _outcome("sgdw", 0, 0.9),
               _outcome("sgdw", 1e-4, 0.5)], CFG, train_size=4000)
MIXED = [("adamw", "one_cycle")] * 3 + [("sgdw", "one_cycle")] * 3 + [("adamw", "constant"), ("sgdw", "constant"),
                                                                       ("adamw", "cyclic")]


def _study(plan, storage=None):
    """A study of the seeded space (search.space), one trial per (optimizer, schedule) of plan."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="sweep", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for optimizer, schedule in plan:
        study.enqueue_trial(dict(optimizer=optimizer, schedule=schedule))

    def objective(trial):
        config = search.space(trial, CFG, STEPS, {}, PRIORS)
        return 0.9 - 0.05 * abs(math.log10(config.get("max_lr", config.get("lr"))) + 1.5)

    study.optimize(objective, n_trials=len(plan))
    return study


def test_shared_params_of_a_mixed_study_and_those_of_each_schedule():
    trials = _study(MIXED).trials
    assert len({repr(t.distributions["lr_shift"]) for t in trials}) == 2
    assert plots.shared_params(trials) == ["decay_shift", "lr_shift", "optimizer", "schedule"]
    of = {s: plots.shared_params([t for t in trials if t.params["schedule"] == s]) for s in CFG.schedules}
    assert of == {"one_cycle": ["base_momentum", "decay_shift", "lr_shift", "max_momentum", "optimizer"],
                  "constant": ["decay_shift", "lr_shift", "momentum", "optimizer"],
                  "cyclic": []}  # one trial: every value is its only one
    assert plots.shared_params([]) == []


@pytest.fixture
def drawn(monkeypatch):
    """What each saved figure showed: {file name: (x tick labels, y tick labels of every axes)}."""
    seen, save = {}, Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        seen[str(path).rsplit("/", 1)[-1]] = ([t.get_text() for t in ax.get_xticklabels()],
                                              [t.get_text() for a in fig.axes for t in a.get_yticklabels()])
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_study_plots_over_the_shared_params_and_one_pair_per_schedule(tmp_path, drawn, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    _study(MIXED, storage)
    paths = plots.plot_study(storage, "sweep", "accuracy", tmp_path)
    names = {f"optuna_{kind}{s}.png" for kind in ("importances", "parallel_coordinates")
             for s in ("", "_one_cycle", "_constant")}
    assert {p.rsplit("/", 1)[-1] for p in paths} == names  # cyclic's single trial: skipped
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert "Optuna plots of cyclic skipped: 1 completed trials" in capsys.readouterr().out
    # the axes are the shared parameters, none only some trials have (Optuna draws those as `None`)
    x, y = drawn["optuna_parallel_coordinates.png"]
    assert x == ["accuracy", "decay_shift", "lr_shift", "optimizer", "schedule"]
    assert "None" not in y
    assert drawn["optuna_parallel_coordinates_one_cycle.png"][0] == [
        "accuracy", "base_momentum", "decay_shift", "lr_shift", "max_momentum", "optimizer"]
    assert set(drawn["optuna_importances.png"][1]) == {"decay_shift", "lr_shift", "optimizer", "schedule"}
    assert set(drawn["optuna_importances_constant.png"][1]) == {"decay_shift", "lr_shift", "momentum", "optimizer"}


def test_tiny_studies_skip_what_they_cannot_plot(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    _study([("adamw", "one_cycle")], storage)
    assert plots.plot_study(storage, "sweep", "accuracy", tmp_path) == []
    assert "Optuna plots of all trials skipped: 1 completed trials" in capsys.readouterr().out
    # one schedule: no pair of its own (it would repeat the shared one); a constant parameter is left out
    storage = f"sqlite:///{tmp_path}/two.db"
    trials = _study([("adamw", "one_cycle")] * 2, storage).trials
    assert plots.shared_params(trials) == ["base_momentum", "decay_shift", "lr_shift", "max_momentum"]
    paths = plots.plot_study(storage, "sweep", "accuracy", tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["optuna_importances.png", "optuna_parallel_coordinates.png"]
    # every trial the same value: fANOVA refuses (zero variance), the parallel coordinates are drawn
    storage = f"sqlite:///{tmp_path}/flat.db"
    study = optuna.create_study(study_name="sweep", storage=storage, direction="maximize")
    study.optimize(lambda t: 0.5 + 0 * t.suggest_float("x", 0, 1), n_trials=3)
    capsys.readouterr()
    (tmp_path / "flat").mkdir()
    paths = plots.plot_study(storage, "sweep", "accuracy", tmp_path / "flat")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["optuna_parallel_coordinates.png"]
    assert "Optuna plot optuna_importances skipped: RuntimeError" in capsys.readouterr().out


@pytest.fixture
def figures(monkeypatch):
    made, make = [], plots.figure

    def figure(*args):
        made.append(make(*args))
        return made[-1]

    monkeypatch.setattr(plots, "figure", figure)
    return made


def test_learning_curves_have_integer_epochs_and_name_optimizer_peak_lr_and_run(tmp_path, figures):
    rows = [dict(schedule="one_cycle", optimizer="adamw", lr=0.0123, run_id="abc12345ffff"),
            dict(schedule="constant", optimizer="sgdw", lr=0.35, run_id="0f9e8d7c6b5a")]
    plots.plot_learning_curves([(rows[0], [(1, 0.6), (2, 0.7)]), (rows[1], [(1, 0.5), (2, 0.55)])],
                               "accuracy", str(tmp_path / "lc.png"))
    (ax,) = figures[0].axes
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [1, 2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "constant: sgdw, peak LR 3.5e-01, run 0f9e8d7c", "one_cycle: adamw, peak LR 1.2e-02, run abc12345"]


def _range_test(wd, losses, max_lr=None, optimizer="adamw"):
    lrs = list(np.logspace(-6, 0, len(losses)))
    return dict(optimizer=optimizer, weight_decay=wd, lrs=lrs, raw_losses=losses, status="ok" if max_lr else "flat",
                max_lr=max_lr, lr=max_lr and max_lr / 4)


def test_range_tests_side_by_side_keep_identical_curves_apart_and_mark_the_chosen_decay(tmp_path, figures):
    curve = [2.3] * 30 + list(np.linspace(2.3, 0.8, 30)) + [0.8, 1.0, 1.6, 2.5, None, 4.0, 9.0]
    tests = [_range_test(0, curve, 0.02), _range_test(1e-4, curve, 0.02), _range_test(1e-2, curve[:50]),
             _range_test(0, curve, 0.3, "sgdw")]
    plots.plot_range_tests(tests, str(tmp_path / "rt.png"), {"adamw": 1e-4})
    adamw, sgdw = figures[0].axes
    curves = [line for line in adamw.get_lines() if line.get_label().startswith("wd=")]
    assert [c.get_label() for c in curves] == ["wd=0: max_lr 0.02", "wd=0.0001: max_lr 0.02 (chosen)", "wd=0.01: flat"]
    lrs, centred = centred_curve(tests[0]["lrs"], [math.nan if v is None else v for v in curve])
    assert list(curves[0].get_xdata()) == list(lrs) and list(curves[0].get_ydata()) == list(centred)
    # the two identical curves: each its own line style and markers at other points; the chosen thick
    a, b = curves[:2]
    assert a.get_linestyle() != b.get_linestyle() and a.get_markevery() != b.get_markevery()
    assert b.get_linewidth() > a.get_linewidth() == curves[2].get_linewidth()
    # the same suggestion twice: two vertical lines at it, a ▼ for each at its own height
    marks = [line for line in adamw.get_lines() if line.get_marker() == "v"]
    assert [m.get_xdata()[0] for m in marks] == [0.02, 0.02] and marks[0].get_ydata()[0] > marks[1].get_ydata()[0]
    assert sum(1 for line in adamw.get_lines() if list(line.get_xdata()) == [0.02, 0.02]) == 2
    assert [line.get_label() for line in sgdw.get_lines() if line.get_label().startswith("wd=")] == ["wd=0: max_lr 0.3"]


WORKFLOWS = [  # an LR that spans decades, a constant one (a singular log range), a cycling one
    dict(optimizer="adamw", schedule="one_cycle", max_lr=0.01, epochs=2, max_momentum=0.95, base_momentum=0.85),
    dict(optimizer="sgdw", schedule="constant", lr=0.3, epochs=3, momentum=0.9),
    dict(optimizer="sgdw", schedule="cyclic", max_lr=0.3, base_lr=0.03, step_size_up=20, mode="triangular",
         epochs=4, momentum=0.9),
]


@pytest.mark.parametrize("before, after", [(a, b) for a in range(3) for b in range(3)])
def test_a_reused_schedule_figure_draws_what_a_fresh_one_draws(before, after):
    """The plotter actor keeps one figure and redraws it per trial: nothing of the trial drawn
    before (limits, ticks, title) may stay in the next one's PNG."""
    reused = plots.SchedulePlot()
    reused.png(WORKFLOWS[before], 10)
    assert reused.png(WORKFLOWS[after], 10) == plots.SchedulePlot().png(WORKFLOWS[after], 10)
