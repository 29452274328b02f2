"""The search: define-by-run spaces and the Optuna searcher for Ray Tune (Optuna's plots of a
study are drawn in tuning/plots.py).

`space` reads like an optuna-examples objective: each value is suggested where it is used,
conditional parameters are plain `if`s, one function per schedule, registered by name with its
warm-start values (`@searched`); every schedule in schedules.SCHEDULES must have one (checked at
import). An optimizer with a range-test prior (tuning/seeding.py) gets the seeded space: its LR is
searched as `lr_shift`, decades from the range test's suggestion, within the band the curve supports
(`OptimizerPrior.shifts`), and its weight decay as `decay_shift`, at most ±half a decade around the
chosen decay's λ_norm (the same Optuna parameters for every optimizer, so TPE learns how far from
the range test the best runs lie); the absolute values (`lr`, `max_lr`, `weight_decay`,
`lambda_norm`) go into the trial's config. `Bands` extends an LR band while the search runs when its
best trial sits at an edge. Without a prior (blind mode, `search.seeded: false`) LR and decay are
searched directly over the wide ranges. The warm start (`start_points`) runs the suggestions
themselves and points in the middle of each side of each band before the sampler takes over.
"""

from __future__ import annotations

import functools
import math
import pickle
import warnings
from pathlib import Path

import optuna
from ray.tune.search.optuna import OptunaSearch

from schedules import SCHEDULES, sgdr_plans
from trainables.workflow import peak_lr

from .config import SweepConfig
from .seeding import BLIND_LR, OptimizerPrior

# The wide, blind ranges (no range test): LR 1e-5..1, weight decay 1e-6..1e-1.
LR_RANGE = BLIND_LR
DECAY_RANGE = (1e-6, 1e-1)
DECAY_SHIFT = (-0.5, 0.5)  # decades around the chosen decay's λ_norm: a one-decade band
# Momentum (SGD) or beta1 (Adam family): Smith's 1-cycle range 0.95 -> 0.85, else about 0.9.
MOMENTUM = (0.85, 0.95)
MAX_MOMENTUM, BASE_MOMENTUM = (0.9, 0.99), (0.8, 0.9)
START_MOMENTUM = 0.9  # the warm start's momentum (or beta1) for a schedule that does not cycle it
# Decades: a side of the LR band shorter than this gets no warm-start point of its own (its middle
# would lie within a quarter decade of the suggestion, the grid step of bench/suggestion.py).
MIN_SIDE = 0.5


def _sgdr_plans(epochs: int, steps_per_epoch: int) -> dict[str, dict]:
    """Labels for the SGDR plans whose restarts fall on epoch boundaries (where the stopper compares
    trials) and end exactly at the budget, with at most 10 % of it as warm-up; shortest first
    cycle last."""
    plans = sgdr_plans(epochs, T_mults=(1, 2), min_T_0=1, max_warmup=epochs // 10)
    return {f"T_0={t0}ep,T_mult={tm}" + (f",warmup={w}ep" if w else ""):
            dict(T_0=t0 * steps_per_epoch, T_mult=tm, warmup_steps=w * steps_per_epoch)
            for t0, tm, _, w in plans}


def _epochs_up(cfg: SweepConfig) -> tuple[int, int]:
    """CLR half-cycles of 2..10 epochs (Smith), at least one whole cycle within the budget."""
    hi = max(1, min(10, cfg.epochs // 2))
    return min(2, hi), hi


class Bands:
    """The seeded LR bands as the search moves them: `lr_shift` ranges in decades from each
    optimizer's suggested max_lr, starting at `OptimizerPrior.shifts`.

    When an optimizer's best completed trial so far (of at least MIN_TRIALS) lies in the outer
    EDGE fraction of its band, the band extends by STEP decades on that side (never past the blind
    range): the range test's bound was too tight for this task. The bands live in the Optuna study
    (user attributes `lrtune.band.<optimizer>`, `lrtune.band_extensions`), so a resumed sweep
    continues with them; each extension is printed and passed to `notify` (the sweep logs it to
    MLflow: notify(every extension so far))."""

    EDGE, STEP, MIN_TRIALS = 0.15, 0.5, 4

    def __init__(self, priors: dict[str, OptimizerPrior], notify=None):
        self.priors, self.notify = priors, notify

    def __getstate__(self):  # Tune pickles the searcher (and this) with its state; the hook stays
        return dict(self.__dict__, notify=None)

    def limits(self, optimizer: str) -> tuple[float, float]:
        """The shifts the blind range allows."""
        m = self.priors[optimizer].max_lr
        return math.log10(LR_RANGE[0] / m), math.log10(LR_RANGE[1] / m)

    def get(self, study: optuna.Study | None, optimizer: str) -> tuple[float, float]:
        prior = self.priors[optimizer]
        if study is None:  # a FixedTrial (tests, re-running one config): the range test's band
            return prior.shifts
        key = f"lrtune.band.{optimizer}"
        lo, hi = study.user_attrs.get(key, prior.shifts)
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.params.get("optimizer") == optimizer and "lr_shift" in t.params
                and t.values and math.isfinite(t.values[0])]
        if len(done) < self.MIN_TRIALS:
            return lo, hi
        sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
        best = max(done, key=lambda t: sign * t.values[0])
        x, edge = best.params["lr_shift"], self.EDGE * (hi - lo)
        floor, ceiling = self.limits(optimizer)
        side = "up" if x >= hi - edge and hi < ceiling else "down" if x <= lo + edge and lo > floor else None
        if side is None:
            return lo, hi
        new = (lo, min(hi + self.STEP, ceiling)) if side == "up" else (max(lo - self.STEP, floor), hi)
        m = prior.max_lr
        event = dict(optimizer=optimizer, side=side, trial=best.number, value=best.values[0],
                     max_lr_band=[m * 10 ** new[0], m * 10 ** new[1]], was=[m * 10 ** lo, m * 10 ** hi])
        events = study.user_attrs.get("lrtune.band_extensions", []) + [event]
        study.set_user_attr(key, list(new))
        study.set_user_attr("lrtune.band_extensions", events)
        print(describe_extension(event), flush=True)
        if self.notify is not None:
            self.notify(events)
        return new


def close_running(storage: str, study_name: str) -> int:
    """Tell FAIL the study's trials still RUNNING once Tune has ended the sweep: their Tune trials
    were lost with a killed driver and will never report (a resumed sweep runs new ones). Returns
    how many; none when the study does not exist (the sweep never started a trial)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    _fail(study, running, "failed")
    return len(running)


def _fail(study: optuna.Study, trials: list, status: str) -> None:
    """Tell these RUNNING trials FAIL, with the `status` attribute the dashboard shows (failed, lost)."""
    for t in trials:
        study._storage.set_trial_user_attr(t._trial_id, "status", status)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def known_to_saved_searcher(experiment: str) -> set[int] | None:
    """The numbers of the Optuna trials the searcher in Tune's newest saved state (under the
    experiment folder) had asked for; None without a saved searcher, or one saved in a form this
    does not know (then nothing is taken for lost)."""
    files = sorted(Path(experiment).glob("searcher-state-*.pkl"))
    if not files:
        return None
    with open(files[-1], "rb") as f:
        state = pickle.load(f)
    if not isinstance(state, dict) or "_ot_trials" not in state:
        return None
    return {t.number for t in state["_ot_trials"].values()}


def requeue_lost(storage: str, study_name: str, known: set[int]) -> int:
    """Before a resumed sweep: the study's RUNNING trials that the restored searcher does not know
    were asked for by a killed driver after Tune last saved its state; their Tune trials are lost
    (Tune will make others). Each is told FAIL, and a warm-start point among them (one Optuna was
    given: `fixed_params`) is enqueued again, so that it still runs, once. Returns how many."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    lost = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if t.number not in known]
    for t in lost:
        if "fixed_params" in t.system_attrs:
            study.enqueue_trial(t.system_attrs["fixed_params"], skip_if_exists=False)
    _fail(study, lost, "lost")
    return len(lost)


def band_extensions(storage: str, study_name: str) -> list[dict]:
    """Every band extension a sweep's search made so far (the study's record)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    return list(study.user_attrs.get("lrtune.band_extensions", []))


def describe_extension(e: dict) -> str:
    return (f"lrtune: {e['optimizer']}'s best trial so far (#{e['trial']}, {e['value']:.4g}) sits at the "
            f"{'upper' if e['side'] == 'up' else 'lower'} edge of its LR band {e['was'][0]:.3g}..{e['was'][1]:.3g}: "
            f"extended {e['side']} to {e['max_lr_band'][0]:.3g}..{e['max_lr_band'][1]:.3g} (max_lr)")


def _lr(trial, prior: OptimizerPrior | None, name: str, centre, band: tuple[float, float] | None = None) -> float:
    """`name` ("lr" or "max_lr"): blind, log-uniform over LR_RANGE; seeded, the centre shifted
    within the band (decades)."""
    if prior is None:
        return trial.suggest_float(name, *LR_RANGE, log=True)
    return centre(prior) * 10 ** trial.suggest_float("lr_shift", *(band or prior.shifts))


def _decay(trial, prior: OptimizerPrior | None, decay_scale: float | None = None) -> dict:
    """The absolute weight decay and its normalized λ_norm (weight_decay = λ_norm · decay_scale)."""
    if prior is None:
        wd = trial.suggest_float("weight_decay", *DECAY_RANGE, log=True)
        return dict(weight_decay=wd, **({"lambda_norm": wd / decay_scale} if decay_scale else {}))
    if prior.lambda_band is None:
        return dict(weight_decay=0.0, lambda_norm=0.0)
    lo, hi = prior.lambda_band
    lam = (lo * hi) ** 0.5 * 10 ** trial.suggest_float("decay_shift", *DECAY_SHIFT)
    return dict(weight_decay=lam * prior.decay_scale, lambda_norm=lam)


# schedule -> its search space: (trial, cfg, prior, steps_per_epoch, band) -> the trial's values
SPACES: dict = {}
# schedule -> its warm-start values of the space's own parameters: (cfg, micro_batches) -> dict
STARTS: dict = {}


def searched(schedule: str, start):
    """Registers the decorated function as `schedule`'s search space, and `start(cfg,
    micro_batches)` as the values of its own Optuna parameters in the warm start."""
    def register(space):
        SPACES[schedule], STARTS[schedule] = space, start
        return space
    return register


@searched("one_cycle", start=lambda cfg, micro_batches: dict(max_momentum=0.95, base_momentum=0.85))
def _one_cycle(trial, cfg, prior, steps_per_epoch, band=None) -> dict:
    return dict(max_lr=_lr(trial, prior, "max_lr", lambda s: s.max_lr, band),
                max_momentum=trial.suggest_float("max_momentum", *MAX_MOMENTUM),
                base_momentum=trial.suggest_float("base_momentum", *BASE_MOMENTUM))


def _cyclic_start(cfg, micro_batches) -> dict:
    """Half-cycles of a quarter of the budget (within the searched range)."""
    lo, hi = _epochs_up(cfg)
    return dict(base_div=4.0, mode="triangular2", momentum=START_MOMENTUM, epochs_up=max(lo, min(hi, cfg.epochs // 4)))


@searched("cyclic", start=_cyclic_start)
def _cyclic(trial, cfg, prior, steps_per_epoch, band=None) -> dict:
    max_lr = _lr(trial, prior, "max_lr", lambda s: s.max_lr, band)
    base_div = trial.suggest_float("base_div", 3.0, 10.0)  # Smith: base_lr = max_lr/10 .. max_lr/3
    epochs_up = trial.suggest_int("epochs_up", *_epochs_up(cfg))
    trial.suggest_categorical("mode", ["triangular", "triangular2"])
    return dict(max_lr=max_lr, base_lr=max_lr / base_div, step_size_up=epochs_up * steps_per_epoch,
                momentum=trial.suggest_float("momentum", *MOMENTUM))


def _sgdr_start(cfg, micro_batches) -> dict:
    """The plan with the shortest first cycle (labels in epochs: the same for any accumulate)."""
    return dict(eta_min_ratio=0.01, momentum=START_MOMENTUM, sgdr_plan=list(_sgdr_plans(cfg.epochs, micro_batches))[-1])


@searched("sgdr", start=_sgdr_start)
def _sgdr(trial, cfg, prior, steps_per_epoch, band=None) -> dict:
    lr = _lr(trial, prior, "lr", lambda s: s.sgdr_peak, band)
    plans = _sgdr_plans(cfg.epochs, steps_per_epoch)
    plan = plans[trial.suggest_categorical("sgdr_plan", sorted(plans))]
    ratio = trial.suggest_float("eta_min_ratio", 1e-3, 1e-1, log=True)
    return dict(lr=lr, eta_min=lr * ratio, **plan, momentum=trial.suggest_float("momentum", *MOMENTUM))


@searched("constant", start=lambda cfg, micro_batches: dict(momentum=START_MOMENTUM))
def _constant(trial, cfg, prior, steps_per_epoch, band=None) -> dict:
    return dict(lr=_lr(trial, prior, "lr", lambda s: s.lr, band),
                momentum=trial.suggest_float("momentum", *MOMENTUM))


def check_spaces(schedules: tuple[str, ...] = SCHEDULES) -> None:
    """Every schedule has a search space: else a RuntimeError naming those without one."""
    missing = [s for s in schedules if s not in SPACES]
    if missing:
        raise RuntimeError(f"schedule(s) {', '.join(missing)} have no search space: register one with "
                           f"@searched(name, start=...) in tuning/search.py")


check_spaces()


def _fixed_or_searched(trial, name: str, value):
    """A step feature: a list is searched (categorical), anything else is fixed."""
    return trial.suggest_categorical(name, value) if isinstance(value, list) else value


def space(trial: optuna.Trial, cfg: SweepConfig, micro_batches: int, constants: dict,
          priors: dict[str, OptimizerPrior] | None = None, bands: Bands | None = None,
          decay_scale: float | None = None) -> dict:
    """One trial's config. micro_batches: batches per epoch; an optimizer step takes `accumulate`.
    bands: the LR bands as the search has moved them (default: the priors' own). decay_scale:
    sqrt(b / (B·T)), so that a blind trial's λ_norm is recorded beside its weight decay. Every
    trial also gets `peak_lr`, its schedule's highest LR (max_lr or lr), the one LR that compares
    across schedules (the MLflow column, the progress table)."""
    optimizer = trial.suggest_categorical("optimizer", cfg.optimizers)
    schedule = trial.suggest_categorical("schedule", cfg.schedules)
    accumulate = _fixed_or_searched(trial, "accumulate", cfg.accumulate)
    grad_clip = _fixed_or_searched(trial, "grad_clip", cfg.grad_clip)
    steps_per_epoch = micro_batches // accumulate
    prior = (priors or {}).get(optimizer)
    band = bands.get(getattr(trial, "study", None), optimizer) if bands is not None and prior is not None else None
    decay = _decay(trial, prior, decay_scale)
    params = SPACES[schedule](trial, cfg, prior, steps_per_epoch, band)
    return dict(constants, accumulate=accumulate, grad_clip=grad_clip, steps_per_epoch=steps_per_epoch,
                peak_lr=peak_lr(dict(params, schedule=schedule)), **decay, **params)



def start_points(cfg: SweepConfig, micro_batches: int,
                 priors: dict[str, OptimizerPrior] | None = None) -> list[dict]:
    """The warm start, round by round across the seeded optimizers (so that a short sweep tries
    every optimizer): the first schedule (1-cycle by default) at the range test's suggestion, then
    at the middle of the band's larger side, then at the middle of its other side when that side
    reaches MIN_SIDE decades, then every other schedule at the suggestion. The band's sides are
    the curve's bounds within the rule's measured error (seeding.lr_band), so the larger side is
    where the curve leaves the most room: above the suggestion when the descent begins close below
    it (as on the CNN without normalisation layers, where the optimum lies above); below it for SGD,
    whose suggestion sits 0.4 decades under the divergence edge, and where the rule's error reaches
    furthest (as on the BatchNorm models, where the optimum lies below). An optimizer without a
    prior (blind mode) gets none: the blind search starts where its sampler does."""
    seeded = [(o, priors[o]) for o in cfg.optimizers if o in (priors or {})]

    def point(optimizer, prior, schedule, shift=0.0):
        p = dict(optimizer=optimizer, schedule=schedule, lr_shift=round(shift, 3))
        if prior.lambda_band is not None:
            p["decay_shift"] = 0.0
        return dict(p, **STARTS[schedule](cfg, micro_batches))

    first, *others = cfg.schedules
    rounds = [[point(o, s, first) for o, s in seeded]]
    rounds += [[point(o, s, first, side / 2) for o, s in seeded if abs(side := _sides(s)[k]) >= MIN_SIDE]
               for k in (0, 1)]
    rounds += [[point(o, s, schedule) for o, s in seeded] for schedule in others]
    return [p for r in rounds for p in r]


def _sides(prior: OptimizerPrior) -> tuple[float, float]:
    """The ends of the band's larger and smaller sides, in decades from the suggestion (a tie: up
    first)."""
    lo, hi = prior.shifts
    return (hi, lo) if hi >= -lo else (lo, hi)


class _FinalValueSearch(OptunaSearch):
    """OptunaSearch that tells the study each trial's final value but skips Ray's per-epoch
    `trial.report`: that is one sqlite commit (~6 ms) in the driver's loop per epoch of every trial,
    while the trial waits, and nothing reads it — stopping is Tune's scheduler, not an Optuna pruner,
    and the per-epoch curves are in MLflow.

    For optuna-dashboard, the study's objectives carry the metrics' names, and each trial the
    values a person reads (`ATTRS`: the absolute peak LR and decay, not only the shifts searched),
    how it ended (`status`: finished, stopped early, diverged, failed — Optuna's own state is
    COMPLETE for all but failed ones, since a stopped trial's value is real), Tune's trial id and
    its MLflow run id (`run_id_of(Tune trial id)`, from the sweep's MLflow callback: Optuna refuses
    attributes once a trial is told, so they are set just before)."""

    ATTRS = ("peak_lr", "lr", "max_lr", "weight_decay", "lambda_norm")

    def __init__(self, *args, run_id_of=None, **kwargs):
        self.run_id_of = run_id_of
        super().__init__(*args, **kwargs)

    def __getstate__(self):  # Tune pickles the searcher with the Tuner; the hook stays with the driver
        return dict(self.__dict__, run_id_of=None)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self._configs[trial_id] = config
        return config

    def _setup_study(self, mode):
        self._configs: dict[str, dict] = {}
        super()._setup_study(mode)
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(self.metric if isinstance(self.metric, list) else [self.metric])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def _describe(self, ot_trial, trial_id: str, result: dict | None, error: bool) -> None:
        """The user attributes of a trial about to be told (ATTRS, status, Tune's and MLflow's ids)."""
        config = self._configs.pop(trial_id, {})
        status = "failed" if error or not result else {"running": "stopped"}.get(
            result.get("status"), result.get("status", "finished"))
        for k in self.ATTRS:
            if isinstance(config.get(k), (int, float)):
                ot_trial.set_user_attr(k, float(config[k]))
        ot_trial.set_user_attr("status", status)
        ot_trial.set_user_attr("tune_trial_id", trial_id)
        run_id = self.run_id_of(trial_id) if self.run_id_of is not None else None
        if run_id:
            ot_trial.set_user_attr("mlflow_run_id", run_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials:
            if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
                # told by a driver killed before Tune saved that: Tune ran the trial's end again
                self._completed_trials.add(trial_id)
                return
            self._describe(ot_trial, trial_id, result, error)
        if result and result.get("status") == "failed":  # the task's code raised: FAIL, not PRUNED
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)


def objectives(cfg: SweepConfig, metric: str, mode: str = "max") -> tuple[list[str], list[str]]:
    """Optuna's objectives and directions: the task's metric, then the optional second one."""
    second = {"epochs_to_target": "epochs_to_target", "wall_time": "time_total_s"}
    if cfg.search.also_minimize is None:
        return [metric], [mode]
    return [metric, second[cfg.search.also_minimize]], [mode, "min"]


def searcher(cfg: SweepConfig, metric: str, mode: str, study_name: str, micro_batches: int,
             constants: dict, priors: dict[str, OptimizerPrior] | None = None, notify=None,
             decay_scale: float | None = None, run_id_of=None) -> OptunaSearch:
    """notify(extensions): called when the search extends an LR band (`Bands`). decay_scale: see
    `space`. run_id_of(Tune trial id): the trial's MLflow run id, for the Optuna trial's attributes."""
    sampler = (optuna.samplers.TPESampler(seed=cfg.search.seed) if cfg.search.algorithm == "optuna"
               else optuna.samplers.RandomSampler(seed=cfg.search.seed))
    storage = optuna.storages.RDBStorage(cfg.tracking.optuna_storage)
    metrics, modes = objectives(cfg, metric, mode)
    return _FinalValueSearch(
        space=functools.partial(space, cfg=cfg, micro_batches=micro_batches, constants=constants,
                                priors=priors, bands=Bands(priors, notify) if priors else None,
                                decay_scale=decay_scale),
        metric=metrics if len(metrics) > 1 else metrics[0], mode=modes if len(modes) > 1 else modes[0],
        sampler=sampler, storage=storage, study_name=study_name, run_id_of=run_id_of,
        points_to_evaluate=_warm_start(cfg, start_points(cfg, micro_batches, priors)))


def _warm_start(cfg: SweepConfig, points: list[dict]) -> list[dict]:
    """The range tests' start points, then the config's own, as many as `num_samples` allows; says
    which are left out (the start points go round by round across the optimizers, so the first ones
    try each optimizer's suggestion)."""
    points = points + [dict(p) for p in cfg.search.points_to_evaluate]
    n = cfg.search.num_samples
    if n < len(points):
        left = ", ".join(f"{p.get('optimizer', '?')}+{p.get('schedule', '?')}" for p in points[n:])
        print(f"lrtune: warning: search.num_samples={n} runs {n} of the {len(points)} warm-start points; left "
              f"out: {left} (raise num_samples to {len(points)} or more to try them all)", flush=True)
    return points[:n]
