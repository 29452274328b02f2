"""The sweep config: YAML -> typed, validated objects, before anything starts.

Unknown keys, wrong types and impossible values raise `ConfigError`, whose message names each
offending key (dotted path), the rule it broke and the value given; the CLI turns it into exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.workflow import OPTIMIZERS, SCHEDULES

Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
Schedule = Literal[SCHEDULES]  # type: ignore[valid-type]


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class RangeTest(_Strict):
    num_iter: int = Field(100, ge=10)
    start_lr: float = Field(1e-7, gt=0)
    end_lr: float = Field(10.0, gt=0)
    weight_decays: list[float] = Field(default_factory=lambda: [0.0, 1e-5, 1e-4, 1e-3], min_length=1)
    repeats: int = Field(1, ge=1)
    # "stop": when every test refuses (diagnosis not ok), the sweep stops before any trial; an
    # optimizer refused while another's test is ok is searched blind. "stop_any": any refusal
    # stops. "blind": never stop, refused optimizers are searched blind.
    on_refusal: Literal["stop", "stop_any", "blind"] = "stop"

    @field_validator("weight_decays")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(w < 0 for w in v):
            raise ValueError("every weight decay must be >= 0")
        return v

    @model_validator(mode="after")
    def _order(self):
        if self.end_lr <= self.start_lr:
            raise ValueError(f"end_lr must be > start_lr={self.start_lr}")
        return self


class Search(_Strict):
    algorithm: Literal["optuna", "random"] = "optuna"
    num_samples: int = Field(16, ge=1)
    max_concurrent: int = Field(2, ge=1)
    seeded: bool = True
    seed: int = 0
    # Trials of your own to run first (after the seeded warm start), as Ray Tune's points_to_evaluate:
    # values of the search's parameters, e.g. {optimizer: adamw, schedule: constant, lr: 0.001}.
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    # A second objective for Optuna's multi-objective search (the metric is always the first).
    also_minimize: Literal["epochs_to_target", "wall_time"] | None = None
    target: float | None = None  # the metric value that epochs_to_target counts up to

    @model_validator(mode="after")
    def _target(self):
        if self.also_minimize == "epochs_to_target" and self.target is None:
            raise ValueError("also_minimize: epochs_to_target needs search.target (the metric value "
                             "to reach, e.g. 0.9)")
        return self


class Stopping(_Strict):
    # schedule_fair: compare trials only where their schedule ends a cycle (see tuning/stopping.py)
    scheduler: Literal["schedule_fair", "none"] = "schedule_fair"
    grace_period: int | None = Field(None, ge=1)  # epochs before any comparison; default epochs // 10 (at least 1)
    reduction_factor: float = Field(3.0, gt=1)


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _one_device(cls, v: float) -> float:
        # A trial trains on one device (no DDP inside a trial): Ray would reserve GPUs it never uses.
        if v > 1:
            raise ValueError("at most 1 GPU per trial: a trial trains on one device (lrtune runs no DDP "
                             "inside a trial); a fraction such as 0.25 packs several trials per GPU")
        return v


class Tracking(_Strict):
    mlflow_uri: str = "sqlite:///mlflow.db"
    experiment: str = "lrtune"
    optuna_storage: str = "sqlite:///optuna.db"
    # After the sweep, the best trial's model (from its last checkpoint) is logged to its MLflow run
    # with mlflow.pytorch, beside the metrics it was measured with.
    log_best_model: bool = False


class SweepConfig(_Strict):
    name: str = "sweep"
    task: str = "mnist1d"
    model: str | None = None
    data_dir: str | None = None  # for tasks that read local files (cifar10)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(100, ge=1)
    optimizers: list[Optimizer] = Field(default_factory=lambda: ["adamw", "sgdw"], min_length=1)
    schedules: list[Schedule] = Field(default_factory=lambda: list(SCHEDULES), min_length=1)
    range_test: RangeTest = RangeTest()
    search: Search = Search()
    stopping: Stopping = Stopping()
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    storage_path: str | None = None  # Ray Tune results and checkpoints; default ./ray_results
    # A trial checkpoints after an epoch once this many seconds have passed since its last checkpoint
    # (or its start), and after its last epoch; 0: after every epoch. A lost node or a killed driver
    # costs each running trial at most max(one epoch, this). Each checkpoint is a second round trip to
    # Tune's driver (its save() call) that the trial waits on, and Tune's own bookkeeping: 32 MNIST-1D
    # trials of 20 epochs took 1.17x their plain trainings with 0 and 1.03x with 10 (bench/overhead.py).
    checkpoint_every_s: float = Field(10.0, ge=0)
    # Checkpoints kept per trial (the oldest deleted). Tune rewrites its whole experiment state (~25 kB a
    # trial) every `keep_checkpoints` checkpoints so that no state names a deleted checkpoint.
    keep_checkpoints: int = Field(4, ge=1)
    threads_per_trial: int = Field(1, ge=1)
    seed: int = 0
    seeds: int = Field(1, ge=1)  # each trial trains this many seeds in lockstep: mean ± std
    # Step features (workflow keys): a value is fixed for every trial, a list is searched (categorical).
    accumulate: int | list[int] = Field(1)  # micro-batches per optimizer step
    grad_clip: float | list[float] | None = None  # max gradient norm; None: no clipping
    decay_norm_and_bias: bool = False  # decoupled decay also on biases and normalisation weights
    amp: bool = True  # mixed precision on CUDA (bf16, else fp16 with a GradScaler); CPU runs full precision

    @field_validator("accumulate")
    @classmethod
    def _accumulate(cls, v):
        if any(a < 1 for a in (v if isinstance(v, list) else [v])) or v == []:
            raise ValueError("micro-batches per optimizer step: an integer >= 1, or a non-empty list of them")
        return v

    @field_validator("grad_clip")
    @classmethod
    def _grad_clip(cls, v):
        if v is not None and (v == [] or any(not (c > 0) for c in (v if isinstance(v, list) else [v]))):
            raise ValueError("a max gradient norm > 0, or a non-empty list of them (omit for no clipping)")
        return v

    @field_validator("task")
    @classmethod
    def _task_name(cls, v: str) -> str:
        from trainables.tasks import BUILTIN

        if v not in BUILTIN and ":" not in v:
            raise ValueError(f"a built-in task ({', '.join(BUILTIN)}) or 'package.module:function'")
        return v


class Origin(_Strict):
    """Where an exported workflow came from (`lrtune export` writes it): `lrtune train` links its
    MLflow run to these."""
    run_id: str  # the trial's MLflow run
    sweep_run_id: str | None = None  # the sweep's parent run
    experiment: str | None = None
    tracking_uri: str | None = None


class WorkflowConfig(_Strict):
    """One training workflow, as `lrtune export` writes it and `lrtune train` re-runs it."""
    task: str
    data_dir: str | None = None
    model: str | None = None  # None: the task's own loop builds its model
    optimizer: Optimizer
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Schedule
    max_lr: float | None = Field(None, gt=0)
    base_lr: float | None = Field(None, gt=0)
    step_size_up: int | None = Field(None, ge=1)
    mode: Literal["triangular", "triangular2", "exp_range"] | None = None
    gamma: float | None = Field(None, gt=0, le=1)
    T_0: int | None = Field(None, ge=1)
    T_mult: int | None = Field(None, ge=1)
    eta_min: float | None = Field(None, ge=0)
    warmup_steps: int | None = Field(None, ge=0)
    pct_start: float | None = Field(None, gt=0, lt=1)
    div_factor: float | None = Field(None, gt=0)
    final_div_factor: float | None = Field(None, gt=0)
    base_momentum: float | None = Field(None, ge=0, lt=1)
    max_momentum: float | None = Field(None, ge=0, lt=1)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    accumulate: int = Field(1, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    decay_norm_and_bias: bool = False
    seed: int = 0
    seeds: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    amp: bool | None = None
    origin: Origin | None = None  # not part of the workflow: where it was exported from

    @model_validator(mode="after")
    def _schedule_needs(self):
        needs = {"one_cycle": ("max_lr",), "cyclic": ("base_lr", "max_lr", "step_size_up"),
                 "sgdr": ("lr", "T_0"), "constant": ("lr",)}[self.schedule]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"schedule {self.schedule} needs {', '.join(needs)}; missing: {', '.join(missing)}")
        return self


def _allowed(loc: tuple, model: type[BaseModel] = SweepConfig) -> list[str]:
    """The keys allowed beside the unknown one at `loc`."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        nested = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type)
                  and issubclass(t, BaseModel)] if field is not None else []  # `Origin | None` too
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def _describe(err: dict, model: type[BaseModel] = SweepConfig) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return (f"{key}: unknown key (value {err['input']!r}); allowed here: "
                f"{', '.join(_allowed(err['loc'], model))}")
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg} (got {err.get('input')!r})"


def parse(data: dict | None, source: str = "config", model: type[BaseModel] = SweepConfig):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err, model) for err in e.errors(include_url=False)]
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines)) from None


def load(path: str | Path, model: type[BaseModel] = SweepConfig):
    """A sweep config (or, with model=WorkflowConfig, an exported workflow) from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse(data, str(path), model)
