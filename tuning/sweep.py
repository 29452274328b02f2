"""`lrtune sweep`: the Ray Tune run of one sweep — Tuner, Optuna searcher, resources, MLflow runs.

Validation happens before Ray starts (config, task, model); MLflow's parent run is ended with the
sweep's real status whatever happens, so no run is left open. A signal (SIGINT, SIGTERM, SIGHUP)
stops the sweep one way (`StopSignals`): the trials stop, Tune saves its experiment state, the open
runs and the parent end KILLED and `Interrupted` says which signal it was; a second one exits at once.
A full disk at storage_path (`DiskFull`) or an MLflow store that refuses a write stops it the same
way, ending FAILED with one message (`StorageFull`, `StoreUnwritable`); `--resume` continues it once
there is room, after reading Tune's experiment state (`check_state`) rather than trusting it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from schedules import schedule_spec
from trainables.loops import form, micro_batches
from trainables.tasks import load_task
from trainables.trainable import storage_full, train
from trainables.workflow import peak_lr, workflow_of

from . import preflight, search, seeding, stores, ui
from .config import ConfigError, SweepConfig, cut
from .plots import schedule_png_in_ray
from .report import table
from .stopping import ScheduleFairStopping
from .tracking.callback import TrialRuns, ended_as
from .tracking.store import STATUSES, ui_command
from .tracking.writer import SweepRecord, log_best_model


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    metric: str
    trials: list[dict]  # one per trial: trial_id, config, result (the last), checkpoint, error
    wall_time: float
    started_at: float  # time.time() when the sweep began (trial timestamps are on that clock)
    priors: dict | None = None  # optimizer -> OptimizerPrior, when the search was seeded
    range_test_seconds: float = 0.0  # the range tests' own time, summed over their Ray tasks
    mode: str = "max"
    experiment_id: str = ""  # MLflow's, for the UI's URLs

    def best(self, n: int = 5) -> list[dict]:
        """The trials with a finite metric, best first; failed trials never rank."""
        done = [t for t in self.trials if trial_status(t) != "failed"
                and isinstance(t["result"].get(self.metric), (int, float)) and math.isfinite(t["result"][self.metric])]
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(done, key=lambda t: sign * t["result"][self.metric])[:n]

    def failed(self) -> list[dict]:
        return [t for t in self.trials if trial_status(t) == "failed"]

    def counts(self) -> dict[str, int]:
        """Trials by how they ended: finished, stopped (early, by the scheduler), diverged, failed."""
        ended = [trial_status(t) for t in self.trials]
        return {s: ended.count(s) for s in STATUSES}


def trial_status(trial: dict) -> str:
    """How a trial ended (one of tracking.store.STATUSES): a trial whose last report was mid-budget was stopped."""
    return "failed" if trial.get("error") else ended_as(trial["result"])


@dataclass(frozen=True)
class TaskInfo:
    """What the driver keeps of a checked task: no data (the trials and range tests build theirs,
    so the driver holds no copy while they run)."""

    model: str | None
    metric: str
    mode: str
    loop: str  # "lrtune", "lightning" or "train_fn" (trainables.loops.form)
    micro_batches: int  # batches per epoch, before accumulation
    examples: int  # training examples per epoch (B of the normalized decay)
    has_range_test: bool  # models, data and loss for the range tests
    checkpoint_bytes: int = 0  # about one trial checkpoint's size (preflight's disk-space check)


def prepare(cfg: SweepConfig) -> TaskInfo:
    """Everything that can fail on bad input, before Ray starts: the task loads and is a valid
    Task, the model exists, the data gives enough steps for the schedules and `accumulate`."""
    try:
        task = load_task(cfg.task, _abs(cfg.data_dir))
    except ValueError as e:
        raise ConfigError(f"task: {e}") from None
    try:
        model = task.model_name(cfg.model) if task.models or cfg.model else None
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
    loop = form(task, model)
    if loop != "lrtune" and cfg.replicas > 1:
        raise ConfigError(f"replicas: {cfg.replicas} copies in lockstep need lrtune's own loop; task {cfg.task!r} "
                          f"brings its own ({loop}); use replicas: 1")
    has_range_test = model is not None and (task.tensors or task.train_loader is not None
                                            or task.datamodule is not None or loop == "lightning")
    if cfg.search.seeded and not has_range_test:
        raise ConfigError(f"search.seeded: the range tests need the task's models, data and loss, and task "
                          f"{cfg.task!r} gives only its own loop (train_fn); add them to the Task, or set "
                          f"search.seeded: false")
    try:
        micro, examples = micro_batches(task, model, cfg.batch_size)
    except Exception as e:  # noqa: BLE001 - the user's loader factory
        raise ConfigError(f"task: {e}") from None
    for a in (cfg.accumulate if isinstance(cfg.accumulate, list) else [cfg.accumulate]):
        if micro // a < 1:
            raise ConfigError(f"accumulate: {a} micro-batches per optimizer step, but an epoch has {micro} "
                              f"batches of batch_size={cfg.batch_size}")
        total = cfg.epochs * (micro // a)
        for schedule in cfg.schedules:
            spec = schedule_spec(schedule)
            fewest = spec.min_steps({})  # at the builder's defaults: the searches keep them
            if total < fewest:
                why = f" ({spec.min_steps_reason})" if spec.min_steps_reason else ""
                raise ConfigError(f"epochs: {schedule} needs more than {fewest - 1} steps in all{why}; "
                                  f"epochs={cfg.epochs} x {micro // a} steps gives {total}")
    return TaskInfo(model, task.metric_name, task.mode, loop, micro, examples, has_range_test,
                    _state_bytes(task, model) * cfg.replicas)


def _state_bytes(task, model: str | None) -> int:
    """About what one checkpoint of a trial holds: the model's weights and buffers, and an optimizer
    state of twice the weights (AdamW's two moments; SGD's momentum is one). 0 for a task without
    lrtune's models (its own loop keeps its own state)."""
    if model is None or not task.models:
        return 0
    try:
        with torch.device("meta"):  # shapes only: no memory, however large the model
            state = task.models[model]().state_dict()
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: no estimate, no refusal
        return 0
    return 3 * sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "numel"))


def _last_epoch(trial_id: str, result: dict) -> bool:
    """Stop a trial on its final report (last epoch, diverged, failed) instead of waiting for the
    trainable to return: Tune would otherwise idle on the finished trial for up to a second."""
    return result.get("status") in ("finished", "diverged", "failed")


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def init_ray(address: str | None = None) -> None:
    """Join Ray once per process. None (or "local"): a new local Ray of this sweep's own, in a temp
    dir of its own, never a cluster some other `ray start` left running on the machine (nor the one
    $RAY_ADDRESS names); "auto" or host:port: that cluster (`ray.address`, `lrtune sweep --address`,
    tuning/submit.py)."""
    # Keeping few checkpoints per trial makes Tune snapshot its experiment state every few reports
    # (see SweepConfig.keep_checkpoints) and warn about it each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    # Tune runs trials in their own directories; user task modules must stay importable there.
    path = os.pathsep.join([os.getcwd(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    own = {} if address not in (None, "local") else dict(_temp_dir=_ray_temp_dir())
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"PYTHONPATH": path}}, **own)


def _ray_temp_dir() -> str:
    """A new folder for a local Ray's session (logs, sockets, spilled objects), so that two sweeps,
    or a sweep and a `ray start` cluster, share no /tmp/ray/session_latest nor address file. Under
    /tmp like Ray's own default: its Unix sockets (<dir>/session_<date>_<pid>/sockets/raylet) must
    stay under 107 characters, and $TMPDIR can be long (macOS: /var/folders/…/T/)."""
    base = os.environ.get("RAY_TMPDIR") or ("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir())
    return tempfile.mkdtemp(prefix="lrtune-ray-", dir=base)


def find_sweep(cfg: SweepConfig) -> str:
    """The newest sweep of this config's name (for --resume): its folder under the storage path,
    made as the sweep starts (before its range tests), where Tune keeps its experiment state and
    lrtune the range tests' priors."""
    root = Path(_abs(cfg.storage_path or "ray_results"))
    # name-YYYYmmdd-HHMMSS-xxxx; older sweeps have no suffix. Newest by the timestamp, then by when
    # its directory was made (two sweeps started in the same second differ only by their suffix).
    pattern = re.compile(rf"{re.escape(cfg.name)}-(\d{{8}}-\d{{6}})(-[0-9a-f]{{4}})?")
    made = {p.name: p.stat().st_mtime_ns for p in root.glob(f"{cfg.name}-*") if pattern.fullmatch(p.name)
            and p.is_dir()}
    found = sorted(made, key=lambda n: (pattern.fullmatch(n)[1], made[n], n))
    if not found:
        raise ConfigError(f"--resume: no sweep named {cfg.name!r} under {root} to resume (a folder "
                          f"{cfg.name}-YYYYmmdd-HHMMSS-xxxx); run it without --resume first")
    return str(root / found[-1])


def check_state(path: str) -> set[str] | None:
    """Read Tune's experiment state under `path` before Tune trusts it (--resume): a file cut short
    (by a full disk, or a kill mid-write) is refused, naming it. Tune would fail deep in its
    restore, or, where it finds no state, start the sweep over. The newest file of each kind is
    checked, as what it holds: a pickle (some named .json) must end with its STOP opcode, JSON
    must parse. Returns the ids of the trials the newest experiment state lists (None: it has none
    yet, the sweep was stopped before Tune first saved it, or one of a form this does not know)."""
    root, known = Path(path), None
    patterns = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl", "tuner.pkl",
                "trainable.pkl")
    for f in [max(found) for pattern in patterns if (found := sorted(root.glob(pattern)))]:
        try:
            data = f.read_bytes()
            if not data:
                raise ValueError("empty")
            if data[:1] == pickle.PROTO:
                if not data.endswith(pickle.STOP):
                    raise ValueError(f"a pickle of {len(data)} bytes without its end")
            else:
                parsed = json.loads(data)
                if f.name.startswith("experiment_state-"):
                    known = _trial_ids(parsed)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--resume: cannot read {f} (Tune's experiment state of sweep {root.name}: "
                              f"{str(e)[:80]}); it was cut short, by a full disk or a kill as it was written. "
                              f"lrtune will not start the sweep over in its place: run it without --resume for "
                              f"a new sweep (this one's trials stay in MLflow)") from None
    return known


def _trial_ids(state) -> set[str] | None:
    """The trial ids in Tune's experiment state (Ray 2.x: trial_data, a list of [trial JSON, ...]);
    None for a form this does not know (then no trial is taken for lost)."""
    try:
        return {json.loads(t[0])["trial_id"] for t in state["trial_data"]}
    except (KeyError, TypeError, IndexError, ValueError):
        return None


def _forget_lost_trials(cfg: SweepConfig, path: str, sweep: SweepRecord, known: set[str]) -> None:
    """Before Tune restores a sweep: what a killed driver started after Tune last saved its state
    (`known`: the trials that state lists, from `check_state`) is lost. Their MLflow runs and
    folders go, their Optuna trials are told FAIL and the warm-start points among them queued again
    (`search.requeue_lost`)."""
    lost = sweep.drop_lost_trials(known)
    for trial_id in lost:
        shutil.rmtree(Path(path, f"trial_{trial_id}"), ignore_errors=True)
    asked = search.known_to_saved_searcher(path)
    requeued = search.requeue_lost(cfg.tracking.optuna_storage, Path(path).name, asked) if asked is not None else 0
    if lost or requeued:
        print(f"lrtune: {len(lost)} trial(s) the killed driver had started after Tune last saved its state were "
              f"lost with it (their MLflow runs deleted, their Optuna trials told FAIL); their warm-start points "
              f"run again", flush=True)


def range_test_priors(cfg: SweepConfig, info: TaskInfo, sweep: SweepRecord, log_later, folder: Path) -> tuple[dict, float]:
    """The range tests (as Ray tasks), each logged as a nested MLflow run (by `log_later`, the logging
    thread, while the trials start), read into priors by the seeding rules and kept in the sweep's
    folder (`folder`, beside Tune's experiment state), from which a resumed sweep takes them. Returns the priors and the tests' summed seconds. Raises SeedingRefused,
    or RangeTestFailed when the task's code raised in a test."""
    logged = seeding.load_priors(folder)
    if logged is not None:
        return logged, 0.0
    if sweep.resumed:  # stopped in the range tests: they run again, and are logged once
        sweep.drop_range_tests()
    t0 = time.perf_counter()
    print(f"lrtune: {len(cfg.optimizers) * len(cfg.range_test.weight_decays)} range tests (optimizers "
          f"{', '.join(cfg.optimizers)} x weight decays {', '.join(f'{w:g}' for w in cfg.range_test.weight_decays)}) "
          f"run as Ray tasks", flush=True)
    outcomes = seeding.run_range_tests(cfg, info.model, on_done=lambda o, i, n: print(
        seeding.describe_outcome(o, i, n), flush=True))
    settings = seeding.range_test_settings(cfg, info.model)
    for o in outcomes:
        log_later(sweep.log_range_test, o, settings)
    try:
        priors = seeding.priors(outcomes, cfg, info.examples)
    except (seeding.SeedingRefused, seeding.RangeTestFailed):
        log_later(sweep.stopped_by, "range_test")
        raise
    seconds = sum(o.seconds for o in outcomes)
    seeding.save_priors(folder, priors)
    log_later(sweep.log_priors, priors, seconds, time.perf_counter() - t0)
    print(seeding.describe(outcomes, priors), flush=True)  # before the trials, whatever Tune's verbosity
    return priors, seconds


class SweepFailed(RuntimeError):
    """Every trial of a sweep failed: the sweep has no result (its parent run is FAILED)."""


class StorageFull(SweepFailed):
    """storage_path ran out of room mid-sweep: the sweep was stopped as a signal stops it (its open
    runs and its parent ended FAILED) and `--resume` continues it once there is room."""


class StoreUnwritable(SweepFailed):
    """The MLflow store refused a write mid-sweep: the sweep was stopped; what its runs could not
    record, `--resume` logs from Tune's records once the store can be written."""


class Interrupted(KeyboardInterrupt):
    """A signal stopped the sweep: its open runs and its parent run ended KILLED."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """While a sweep runs, SIGINT, SIGTERM and SIGHUP stop it one way: outside Tune's loop as
    `Interrupted` raised in the main thread; inside it (`fitting`) through Tune's own interrupt
    event, so that Tune stops the trials and saves its experiment state and fit() returns (Ray's
    SIGTERM handler would exit mid-loop and its C++ side abort). Tune's own SIGINT handler is
    switched off (TUNE_DISABLE_SIGINT_HANDLER) so that every signal comes here; its event is set
    by calling the handler it installs for SIGUSR1. A second signal calls `at_once(first signal)`
    (given a few seconds: it may wait on a store the interrupted main thread holds) and exits
    with 128 + the first. The previous handlers are back after the sweep."""

    def __init__(self, at_once):
        self.received: list[int] = []
        self.fitting, self.at_once = False, at_once

    def install(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()  # signal.signal needs it
        if self.active:
            self.previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
            self.tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            for s in STOP_SIGNALS:
                signal.signal(s, self._handle)

    def restore(self) -> None:
        if self.active:
            for s, handler in self.previous.items():
                signal.signal(s, handler)
            if self.tune_sigint is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self.tune_sigint

    def _handle(self, signum, frame) -> None:
        self.received.append(signum)
        if len(self.received) > 1:
            last = threading.Thread(target=self.at_once, args=(self.received[0],), daemon=True)
            last.start()
            last.join(5.0)
            os._exit(128 + self.received[0])
        if not self.stop_tune(signum, frame):
            raise Interrupted(signum)

    def stop_tune(self, signum: int = signal.SIGUSR1, frame=None) -> bool:
        """Ask Tune's loop, when in it, to stop the trials, save its state and return from fit()."""
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not (self.fitting and getattr(tune_stop, "__name__", "") == "signal_interrupt_tune_run"):
            return False
        quiet = logging.getLogger("ray.tune.tune")  # its "Stop signal received" only for a signal
        disabled, quiet.disabled = quiet.disabled, not self.received
        try:
            tune_stop(signum, frame)
        finally:
            quiet.disabled = disabled
        return True


class DiskFull(tune.Callback):
    """Watches for a full disk where Tune writes (storage_path): in a trial's error (a checkpoint that
    could not be copied there) and in Tune's own copy of its experiment state, whose traceback it
    keeps off the console (a filter on that logger). Seen once, it stops Tune's loop as a signal
    does (`StopWhen`), and the sweep ends with one message."""

    # Tune's copy of its state, its trial errors, its closing lines (a Tuner.restore hint: not ours)
    LOGGERS = ("ray.tune.execution.experiment_state", "ray.tune.execution.tune_controller", "ray.tune.tune")

    def __init__(self):
        self.seen: str | None = None  # what could not be written

    def __getstate__(self):  # Tune pickles callbacks with its experiment state
        return dict(self.__dict__, seen=None)

    def __enter__(self):
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc):
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        if storage_full(text):
            if record.name == self.LOGGERS[0]:
                self.seen = self.seen or "Tune's experiment state"
            return False
        return not (self.seen and record.name == self.LOGGERS[2])

    def _trial_failed(self, trial) -> None:
        error = Path(trial.error_file).read_text(errors="replace") if trial.error_file and \
            os.path.exists(trial.error_file) else ""
        if storage_full(error):
            self.seen = self.seen or f"trial {trial.trial_id}'s checkpoint"

    def on_trial_error(self, iteration, trials, trial, **info):
        self._trial_failed(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._trial_failed(trial)



class StopWhen(tune.Callback):
    """Stops Tune's loop once (`stop`, as a signal does), at the step after any of `reasons` first
    gives something true: a full disk (`DiskFull.seen`), an MLflow store that refused a write
    (`TrialRuns.broken`: trials going on would log nothing; Tune's records keep what they did and
    `--resume` logs it)."""

    def __init__(self, stop, *reasons):
        self.stop, self.reasons = stop, reasons

    def __getstate__(self):  # Tune pickles callbacks with its experiment state; the hooks stay here
        return dict(self.__dict__, stop=None, reasons=())

    def on_step_end(self, iteration, trials, **info):
        if self.stop is not None and any(reason() for reason in self.reasons):
            self.stop, stop = None, self.stop
            stop()


def _remove_cut_files(experiment: Path) -> None:
    """Empty files Tune left on a full disk (an error.pkl, a checkpoint's file: copies that found no
    room), with the checkpoint folders holding one: Tune registers a checkpoint only once copied, so
    none of these is in its experiment state. Its own empty marker file stays."""
    empty = [f for f in experiment.rglob("*") if f.is_file() and f.stat().st_size == 0]
    for f in empty:
        if f.name != ".validate_storage_marker":
            checkpoint = next((p for p in f.parents if p.name.startswith("checkpoint_")), None)
            if checkpoint is not None and checkpoint.is_relative_to(experiment):
                shutil.rmtree(checkpoint, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)


def run_sweep(cfg: SweepConfig, *, verbose: int = 1, resume: bool = False) -> SweepResult:
    info = prepare(cfg)
    path = find_sweep(cfg) if resume else None
    known = check_state(path) if path else None  # before Ray starts or any run is touched
    # the suffix tells apart sweeps of one config started in the same second (its own Ray directory,
    # Optuna study and MLflow parent run each)
    name = Path(path).name if path else f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
    constants = dict(task=cfg.task, model=info.model, epochs=cfg.epochs, batch_size=cfg.batch_size,
                     data_dir=_abs(cfg.data_dir), threads=cfg.threads_per_trial,
                     checkpoint_every_s=cfg.checkpoint_every_s, decay_norm_and_bias=cfg.decay_norm_and_bias,
                     amp=cfg.amp, gpu=cfg.resources.gpu, seed=cfg.seed, replicas=cfg.replicas, target=cfg.search.target)
    init_ray(cfg.ray.address)
    # Tune's own result files (progress.csv, result.json) stay; its TensorBoard logger goes: MLflow is
    # the tracking UI, and the event writer costs ~6 ms of the driver's loop per epoch of every trial.
    # TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 in the environment brings it back. Set for the fit only.
    tune_env = dict(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"),
                    RAY_AIR_NEW_OUTPUT="1" if verbose >= 2 else "0")
    storage = _abs(cfg.storage_path or "ray_results")
    preflight.check(cfg, storage, ray.nodes(),  # before any run is written
                    info.checkpoint_bytes)
    stores.commit_without_waiting(cfg.tracking.mlflow_uri, cfg.tracking.optuna_storage)
    stores.create_schemas(cfg.tracking.mlflow_uri, cfg.tracking.optuna_storage)
    folder = Path(storage, name)
    folder.mkdir(parents=True, exist_ok=True)  # before the parent run: --resume finds the sweep by it
    sweep = SweepRecord(cfg.tracking.mlflow_uri, cfg.tracking.experiment, name, cfg.model_dump(),
                           resume=resume, metric=info.metric, mode=info.mode)
    trial_runs = TrialRuns(sweep, schedule_png_in_ray)
    status, ended = "FAILED", False
    t0, started_at = time.perf_counter(), time.time()
    signals = StopSignals(trial_runs.end_at_once)
    full = DiskFull()
    stop_when = StopWhen(signals.stop_tune, lambda: full.seen, lambda: trial_runs.broken)
    why = ""
    try:
        signals.install()
        priors, range_s = range_test_priors(cfg, info, sweep, trial_runs.log_later, folder) if cfg.search.seeded else (None, 0.0)
        trainable = tune.with_resources(train, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})
        callbacks = [trial_runs, CSVLoggerCallback(), JsonLoggerCallback(), full, stop_when]
        if path and tune.Tuner.can_restore(path):
            if known is not None:
                _forget_lost_trials(cfg, path, sweep, known)
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
            # Tune restores the callbacks it pickled; use this run's (no public API: ray#41364).
            tuner._local_tuner.get_run_config().callbacks = callbacks
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search.searcher(cfg, info.metric, info.mode, name, info.micro_batches, constants,
                                               priors, notify=functools.partial(
                                                   trial_runs.log_later, sweep.log_band_extensions),
                                               decay_scale=seeding.decay_scale(cfg, info.examples),
                                               run_id_of=trial_runs.run_id_of),
                    scheduler=_scheduler(cfg, info.metric, info.mode),
                    num_samples=cfg.search.num_samples, max_concurrent_trials=cfg.search.max_concurrent,
                    reuse_actors=True, trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=verbose,
                    progress_reporter=_progress(info.metric, info.mode, verbose),
                    stop=_last_epoch, callbacks=callbacks,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                    # retries a trial whose worker or node was lost; the task's own exceptions end
                    # the trial as failed in the trainable and are never retried
                    failure_config=tune.FailureConfig(max_failures=2)))
        signals.fitting = True
        try:
            with full, _environ(**tune_env):
                grid = tuner.fit()
        except Exception:
            if not full.seen and trial_runs.broken is None:
                raise
            # Tune reads back what it wrote on the full disk (an empty error.pkl: EOFError)
        signals.fitting = False
        if signals.received:
            raise Interrupted(signals.received[0])
        if trial_runs.broken is not None:
            refused = cut(" ".join(str(trial_runs.broken).split()), 160)
            why = f": the MLflow store {cfg.tracking.mlflow_uri} refused a write ({refused})"
            raise StoreUnwritable(f"sweep {name} stopped{why}")
        if full.seen:
            _remove_cut_files(Path(storage, name))
            why = f": storage_path {storage} is full ({full.seen} could not be written there)"
            raise StorageFull(f"sweep {name} stopped{why}")
        if closed := search.close_running(cfg.tracking.optuna_storage, name):
            print(f"lrtune: {closed} Optuna trial(s) of a killed driver told FAIL (their Tune trials were lost)",
                  flush=True)
        if priors and (extended := search.band_extensions(cfg.tracking.optuna_storage, name)):
            sweep.log_band_extensions(extended)  # also those a resumed search made (no live hook)
        trial_runs.reconcile([dict(trial_id=r.metrics.get("trial_id"), config=r.config,
                                   error=str(r.error) if r.error else None,
                                   history=functools.partial(_history, r)) for r in grid], every_run=resume)
        trials = [dict(trial_id=r.metrics.get("trial_id"), config=r.config, result=r.metrics,
                       checkpoint=r.checkpoint, error=str(r.error) if r.error else r.metrics.get("error"),
                       run_id=trial_runs.runs.get(r.metrics.get("trial_id"))) for r in grid]
        result = SweepResult(name, sweep.run_id, info.metric, trials, time.perf_counter() - t0,
                             started_at, priors, range_s, info.mode, sweep.experiment_id)
        best = result.best(1)
        status = "FINISHED" if best or len(result.failed()) < len(trials) else "FAILED"
        sweep.end(status, summary=summary(result), note=note(result, cfg, info),
                  best=dict(run_id=best[0]["run_id"], workflow=workflow_of(best[0]["config"])) if best else None)
        ended = True
        sweep.show_in_view()
        if status == "FAILED":
            raise SweepFailed(f"all {len(trials)} trials failed; the first: {result.failed()[0]['error']}")
        if cfg.tracking.log_best_model and best:
            print(log_best_model(cfg.tracking.mlflow_uri, best[0]), flush=True)
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            if not ended:
                try:
                    trial_runs.close(abandoned=status)
                finally:
                    why = f" by {signal.Signals(signals.received[0]).name}" if signals.received else why
                    sweep.end(status, note=f"lrtune sweep {name} ended {status}{why} before it finished: "
                                           f"`lrtune sweep <config> --resume` continues it.")
        except Exception:
            if trial_runs.broken is None:
                raise
            # the store still refuses: its runs stay as they are (RUNNING), the message says why
        finally:
            signals.restore()


def summary(result: SweepResult) -> dict:
    """The numbers a sweep ends with (the parent run's metrics and summary.json)."""
    m, best = result.metric, result.best(1)
    out = {f"best_{m}": best[0]["result"][m] if best else None}
    if best and best[0]["result"].get(f"{m}_std") is not None:
        out[f"best_{m}_std"] = best[0]["result"][f"{m}_std"]
    return dict(out, trials=len(result.trials), **{f"trials_{k}": v for k, v in result.counts().items()},
                wall_time=result.wall_time, range_test_seconds=result.range_test_seconds)


def note(result: SweepResult, cfg: SweepConfig, info: TaskInfo) -> str:
    """The parent run's description (Markdown, shown by MLflow's UI): the winner and how the trials
    ended first (what the page shows before "Show more"), then how to re-run it, what ran and what
    the range tests found."""
    m, best = result.metric, result.best(1)
    ended = ", ".join(f"{v} {k}" for k, v in result.counts().items())
    if best:
        t = best[0]
        std = t["result"].get(f"{m}_std")
        head = (f"best {m} **{t['result'][m]:.4g}**" + (f" ± {std:.2g}" if std is not None else "")
                + f": {t['config']['optimizer']} + {t['config']['schedule']}, peak_lr {peak_lr(t['config']):.3g}, "
                f"weight_decay {t['config'].get('weight_decay', 0):.3g} (run {t.get('run_id')})")
        rerun = [f"Re-run it: `lrtune export {t.get('run_id')} -o workflow.yaml --tracking-uri "
                 f"{cfg.tracking.mlflow_uri}`, then `lrtune train workflow.yaml`.", ""]
    else:
        head, rerun = "no trial has a result", []
    lines = [f"lrtune sweep **{result.name}**: {head}; {len(result.trials)} trials: {ended}.", "", *rerun,
             f"- ran: {cfg.task}" + (f"/{info.model}" if info.model else "") + f", {cfg.epochs} epochs a trial; "
             f"optimizers {', '.join(cfg.optimizers)} x schedules {', '.join(cfg.schedules)}; search "
             f"{cfg.search.algorithm}, {'seeded by range tests' if result.priors else 'blind'}; early stopping "
             f"{cfg.stopping.scheduler}; {result.wall_time:.0f} s"]
    for opt, s in (result.priors or {}).items():
        lo, hi = s.lr_band or (s.max_lr, s.max_lr)
        lines.append(f"- range tests, {opt}: max_lr {s.max_lr:.3g} (searched {lo:.3g}..{hi:.3g}), "
                     f"weight decay {s.weight_decay:g} chosen")
    trials = ui.runs_url("", result.experiment_id, m, result.mode, result.parent_run_id)
    return "\n".join(lines + ["", f"[This sweep's trials, best first]({trials})"])


def _history(result) -> list[dict]:
    """One trial's per-epoch results from Tune's own files (progress.csv)."""
    df = result.metrics_dataframe
    return [] if df is None else df.to_dict("records")


def _progress(metric: str, mode: str, verbose: int):
    """What the sweep shows while trials run. verbose 1: Ray Tune's trial table (its CLIReporter)
    with lrtune's columns, best first, every 10 s; verbose 2: Ray Tune's newer output, a box per
    trial's config and results; 0: nothing. Ray picks between its two outputs by the environment
    variable RAY_AIR_NEW_OUTPUT, read when the run starts: `run_sweep` sets it for the fit."""
    if verbose != 1:
        return None
    return tune.CLIReporter(
        metric_columns={"epoch": "epoch", metric: metric},
        parameter_columns={"optimizer": "optimizer", "schedule": "schedule", "peak_lr": "peak_lr",
                           "weight_decay": "weight_decay"},
        metric=metric, mode=mode, sort_by_metric=True, max_progress_rows=12, max_error_rows=5,
        max_report_frequency=10, print_intermediate_tables=True)


@contextlib.contextmanager
def _environ(**values: str):
    """These environment variables set while the block runs, then as they were (Ray reads them when
    a run starts; a process that runs several sweeps, or goes on after one, keeps its own)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _scheduler(cfg: SweepConfig, metric: str, mode: str):
    if cfg.stopping.scheduler == "none":
        return None
    return ScheduleFairStopping(metric, mode, grace_period=cfg.stopping.grace_period or max(1, cfg.epochs // 10),
                                reduction_factor=cfg.stopping.reduction_factor, max_epochs=cfg.epochs)


def print_summary(result: SweepResult, cfg: SweepConfig, out=None) -> None:
    out = out or sys.stdout
    m = result.metric
    failed = result.failed()
    print(f"\nsweep {result.name}: {len(result.trials)} trials in {result.wall_time:.0f} s ("
          + ", ".join(f"{v} {k}" for k, v in result.counts().items() if v) + f"; MLflow parent run "
          f"{result.parent_run_id})", file=out)
    rows = [dict(metric=t["result"][m], std=t["result"].get(f"{m}_std"), epochs=t["result"].get("epoch", 0),
                 status=trial_status(t), optimizer=t["config"]["optimizer"],
                 schedule=t["config"]["schedule"], lr=peak_lr(t["config"]),
                 weight_decay=t["config"]["weight_decay"], run_id=t.get("run_id")) for t in result.best(10)]
    table(rows, m, out)
    for t in failed:
        print(f"failed: trial {t['trial_id']} ({t['config'].get('optimizer')} + {t['config'].get('schedule')}, "
              f"MLflow run {t.get('run_id') or '-'}): {t['error']}", file=out)
    uri = cfg.tracking.mlflow_uri
    base = ui.base_url(uri)
    print("\nMLflow UI:          " + ("(the tracking server)" if base == uri.rstrip("/") else
                                    f"lrtune ui --tracking-uri {uri}   (or: {ui_command(uri)})"), file=out)
    print(f"The trials:         {ui.runs_url(base, result.experiment_id, m, result.mode, view_id=ui.VIEW_ID)}\n"
          f"                    (best first, with their columns: the experiment's saved view, which shows "
          f"its newest sweep;\n                    this sweep's, whatever runs later: "
          f"{ui.runs_url(base, result.experiment_id, m, result.mode, result.parent_run_id)})", file=out)
    print(f"Optuna dashboard:   optuna-dashboard --host 127.0.0.1 {cfg.tracking.optuna_storage}", file=out)
    print(f"Report and plots:   lrtune report --experiment {cfg.tracking.experiment} --tracking-uri "
          f"{cfg.tracking.mlflow_uri}", file=out)
    if rows and rows[0]["run_id"]:
        print(f"Export the best:    lrtune export {rows[0]['run_id']} -o workflow.yaml --tracking-uri "
              f"{cfg.tracking.mlflow_uri}", file=out)
