"""The sweep config: YAML -> typed, validated objects, before anything starts.

Unknown keys, wrong types and impossible values raise `ConfigError`, whose message names each
offending key (dotted path), the rule it broke and the value given (long values cut, see `cut`); the
CLI turns it into exit 2. Nothing else escapes `load` or `parse`, whatever the file holds: a file
that is not UTF-8, larger than MAX_BYTES, nested deeper than MAX_DEPTH or expanding (through YAML
aliases) to more than MAX_NODES values is refused naming the file. Every float is finite, every seed
in [0, 2**32), every string at most MAX_STR characters, and the stores' URLs name a scheme whose
driver is installed, so that a value that passes here does not fail later, after Ray started.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator,
                      model_validator)

from schedules import MOMENTUM, OPTIMIZERS, PARAMS, SCHEDULES, Param, schedule_spec
from trainables.workflow import SCHEDULE_PARAMS

Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
Schedule = Literal[SCHEDULES]  # type: ignore[valid-type]


MAX_BYTES = 1_000_000  # a config file
MAX_DEPTH = 32  # nesting of YAML collections (PyYAML composes recursively)
MAX_NODES = 100_000  # values after YAML aliases are expanded
MAX_STR = 4096  # characters of any string value (a path fits)
MAX_ERRORS = 5  # errors listed in one message


class ConfigError(ValueError):
    pass


def cut(text: str, limit: int = 40) -> str:
    """`text`, or its first `limit` characters and '… (N characters)': every message the loader
    builds quotes values through this, so that none echoes a long value."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _quote(value: Any) -> str:
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:40]!r}… ({len(value)} characters)"
    try:
        return cut(repr(value))
    except RecursionError:  # parse() given deeply nested Python data (a YAML file is bounded first)
        return f"a {type(value).__name__} nested too deeply to show"


def _seed(v: int) -> int:
    if not 0 <= v < 2**32:
        raise ValueError("a seed is an integer in [0, 2**32) (numpy's seeding range)")
    return v


Seed = Annotated[int, AfterValidator(_seed)]


def _driver(url: str) -> str | None:
    """Why SQLAlchemy cannot open `url` here (no such dialect, its driver not installed), or None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except NoSuchModuleError:
        return f"SQLAlchemy has no dialect {cut(url.partition(':')[0])!r}"
    except Exception as e:  # noqa: BLE001 - ArgumentError, or a dialect plugin's own error
        return f"not a SQLAlchemy URL ({cut(str(e), 80)})"
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
    except Exception as e:  # noqa: BLE001 - a driver may fail to import in any way
        return f"the driver of {cut(url.partition(':')[0])!r} is not installed ({type(e).__name__}: {cut(str(e), 80)})"
    return None


_DATABASES = ("sqlite:///path.db, or dialect+driver://user@host/db with the driver installed "
              "(postgresql+psycopg2, mysql+pymysql, mssql+pyodbc)")


class _Strict(BaseModel):
    # allow_inf_nan=False: a nan or inf passes every bound (nan compares False) and fails in a trial.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, allow_inf_nan=False,
                              str_max_length=MAX_STR)


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
    seed: Seed = 0
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
    cpu: float = Field(1.0, gt=0, le=1024)
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

    @field_validator("mlflow_uri")
    @classmethod
    def _mlflow_store(cls, v: str) -> str:
        scheme = urlsplit(v).scheme
        if v.strip() and (v == "databricks" or scheme in ("", "file", "http", "https", "databricks")):
            return v
        if scheme.partition("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
            why = _driver(v)
            if why is None:
                return v
        else:
            why = f"MLflow has no tracking store {cut(scheme or v)!r}"
        raise ValueError(f"{why}; allowed: a folder, file:, http(s)://, databricks, or {_DATABASES}")

    @field_validator("optuna_storage")
    @classmethod
    def _optuna_storage(cls, v: str) -> str:
        why = _driver(v)
        if why is not None:
            raise ValueError(f"{why}; allowed: {_DATABASES}")
        return v


class Ray(_Strict):
    # None: `lrtune sweep` starts a local Ray of its own (its own temp dir), never joining a cluster
    # that a `ray start` left running on the machine, whatever $RAY_ADDRESS says. "auto" joins the
    # cluster of this node; host:port (or ray://host:port, Ray Client) joins that one.
    address: str | None = Field(None, max_length=256)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"auto|(ray://)?[A-Za-z0-9_.-]+:\d{1,5}|(ray://)?\[[0-9A-Fa-f:]+\]:\d{1,5}", v):
            raise ValueError("a Ray cluster: auto (this node's), host:port or ray://host:port; "
                             "omit it for a local Ray of the sweep's own")
        return v


class SweepConfig(_Strict):
    name: str = "sweep"
    task: str = "mnist1d"
    model: str | None = Field(None, max_length=64)
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
    ray: Ray = Ray()
    storage_path: str | None = None  # Ray Tune results and checkpoints; default ./ray_results
    # A trial checkpoints after an epoch once this many seconds have passed since its last checkpoint
    # (or its start), and after its last epoch; 0: after every epoch. A lost node or a killed driver
    # costs each running trial at most max(one epoch, this). Each checkpoint is a second round trip to
    # Tune's driver (its save() call) that the trial waits on, and Tune's own bookkeeping; on 32 MNIST-1D
    # trials of 20 epochs (~0.35 s an epoch) the two were within noise in the latest run: 1.06x their plain
    # trainings with 0, 1.07x with 10 (bench/results/overhead.json). Shorter epochs make 0 cost more.
    checkpoint_every_s: float = Field(10.0, ge=0)
    # Checkpoints kept per trial (the oldest deleted). Tune rewrites its whole experiment state (~25 kB a
    # trial) every `keep_checkpoints` checkpoints so that no state names a deleted checkpoint.
    keep_checkpoints: int = Field(4, ge=1)
    threads_per_trial: int = Field(1, ge=1)
    seed: Seed = 0
    replicas: int = Field(1, ge=1)  # copies of each trial's workflow (RNG seeds seed, seed+1, ...) in lockstep: mean ± std
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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # The name becomes a directory (name-YYYYmmdd-HHMMSS, found again by --resume) and the
        # `lrtune.sweep` tag that MLflow filter strings match: with no quote, slash or glob character
        # in it, no name can break a path or a filter (tracking.store.quoted quotes it all the same).
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v):
            raise ValueError("a name of at most 64 letters, digits, '_', '-' and '.', starting with a letter "
                             "or digit (it names the sweep's directory and MLflow runs)")
        return v

    @field_validator("task")
    @classmethod
    def _task_name(cls, v: str) -> str:
        from trainables.tasks import BUILTIN

        if v in BUILTIN:
            return v
        if ":" not in v:
            raise ValueError(f"a built-in task ({', '.join(BUILTIN)}) or 'package.module:function'")
        module, _, function = v.partition(":")
        if not (len(v) <= 200 and function.isidentifier() and all(p.isidentifier() for p in module.split("."))):
            raise ValueError("'package.module:function': Python names, at most 200 characters")
        return v


class Origin(_Strict):
    """Where an exported workflow came from (`lrtune export` writes it): `lrtune train` links its
    MLflow run to these."""
    run_id: str  # the trial's MLflow run
    sweep_run_id: str | None = None  # the sweep's parent run
    experiment: str | None = None
    tracking_uri: str | None = None


class _Workflow(_Strict):
    task: str
    data_dir: str | None = None
    model: str | None = None  # None: the task's own loop builds its model
    optimizer: Optimizer
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, **MOMENTUM.bounds())
    schedule: Schedule


def _field(param: Param):
    """A schedule parameter as an optional field with its description's type and bounds or choices."""
    kind = Literal[param.choices] if param.choices is not None else param.type  # type: ignore[valid-type]
    return kind | None, Field(None, description=param.help, **param.bounds())


# The schedules' parameters, from their descriptions, between the optimizer's keys and the rest.
_WorkflowSchedule = create_model("_WorkflowSchedule", __base__=_Workflow,
                                 **{name: _field(PARAMS[name]) for name in SCHEDULE_PARAMS})


class WorkflowConfig(_WorkflowSchedule):
    """One training workflow, as `lrtune export` writes it and `lrtune train` re-runs it: the
    optimizer's keys, every schedule's parameters (schedules.lr.PARAMS), then these."""
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    accumulate: int = Field(1, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    decay_norm_and_bias: bool = False
    seed: Seed = 0
    replicas: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    amp: bool | None = None
    origin: Origin | None = None  # not part of the workflow: where it was exported from

    @model_validator(mode="after")
    def _schedule_needs(self):
        needs = schedule_spec(self.schedule).needs
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


def _key(loc: tuple, model: type[BaseModel]) -> str:
    """The dotted key of an error's location, without the names pydantic gives the members of a
    union (`accumulate.list[int].0` is `accumulate.0`)."""
    parts, loc = [], list(loc)
    while loc:
        part = loc.pop(0)
        parts.append(str(part) if re.fullmatch(r"[\w-]+", str(part)) else repr(part))  # an unknown key: quoted
        field = model.model_fields.get(str(part)) if model is not None else None
        model = None
        if field is None:
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif (typing.get_origin(ann) in (typing.Union, types.UnionType) and loc and isinstance(loc[0], str)
              and len([a for a in typing.get_args(ann) if a is not type(None)]) > 1):
            loc.pop(0)
    return cut(".".join(parts)) or "(top level)"


# Keys of earlier versions (dotted, as in a sweep config or an exported workflow) -> the key that
# took their meaning: refused naming it, so that an old config never silently loses a setting.
RENAMED_KEYS = {"seeds": ("replicas", "copies of each workflow trained in lockstep")}  # seed: RNG seeds only


def _describe(err: dict, model: type[BaseModel] = SweepConfig, listed: set | None = None) -> str:
    """One error as 'key: rule (got value)'; `listed`: the sections whose allowed keys were listed
    already (by an earlier unknown key of the same message)."""
    key = _key(err["loc"], model)
    dotted = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden" and dotted in RENAMED_KEYS:
        new, meaning = RENAMED_KEYS[dotted]
        return f"{key}: renamed; write {new}: {_quote(err['input'])} instead ({meaning})"
    if err["type"] == "extra_forbidden":
        section = tuple(err["loc"][:-1])
        allowed = "as above" if listed is not None and section in listed else ", ".join(_allowed(err["loc"], model))
        if listed is not None:
            listed.add(section)
        return f"{key}: unknown key (value {_quote(err['input'])}); allowed here: {allowed}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {cut(msg, 300)} (got {_quote(err.get('input'))})"


def parse(data: dict | None, source: str = "config", model: type[BaseModel] = SweepConfig):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        listed: set = set()
        lines = list(dict.fromkeys(_describe(err, model, listed) for err in errors))
        more = f"\n  (and {len(lines) - MAX_ERRORS} more)" if len(lines) > MAX_ERRORS else ""
        raise ConfigError(f"{source}: invalid config:\n  " + "\n  ".join(lines[:MAX_ERRORS]) + more) from None


def _shape(text: str, source: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, expanding to more than MAX_NODES values, or
    holding an alias to a collection that contains it, from PyYAML's event stream (which, unlike
    its composer, does not recurse)."""
    frames: list[list] = []  # per open collection: anchor, values inside, height
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (values, height) of its node
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            frames.append([event.anchor, 1, 0])
            total += 1
            if len(frames) > MAX_DEPTH:
                raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels (line {event.start_mark.line + 1})")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, values, height = frames.pop()
            node = (values, height + 1)
            if anchor is not None:
                anchors[anchor] = node
        elif isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            if any(f[0] == event.anchor for f in frames):
                raise ConfigError(f"{source}: the alias *{cut(event.anchor)} (line {line}) is inside the "
                                  f"collection it names")
            node = anchors.get(event.anchor, (1, 0))  # an unknown anchor: the composer names it
            if len(frames) + node[1] > MAX_DEPTH:
                raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels, through the alias "
                                  f"*{cut(event.anchor)} (line {line})")
            total += node[0]
        elif isinstance(event, yaml.ScalarEvent):
            node = (1, 0)
            total += 1
            if event.anchor is not None:
                anchors[event.anchor] = node
        else:
            continue
        if total > MAX_NODES:
            raise ConfigError(f"{source}: more than {MAX_NODES} values (YAML aliases expanded)")
        if frames:
            frames[-1][1] += node[0]
            frames[-1][2] = max(frames[-1][2], node[1])


def _yaml(text: str, source: str) -> Any:
    try:
        _shape(text, source)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise ConfigError(f"{source}: not valid YAML{where}: {cut(what, 200)}") from None
    except yaml.YAMLError as e:  # the reader's: a character YAML does not allow
        raise ConfigError(f"{source}: not valid YAML: {cut(str(e), 200)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - PyYAML's constructors raise ValueError & co. (`!!int x`)
        raise ConfigError(f"{source}: not valid YAML: {type(e).__name__}: {cut(str(e), 200)}") from None


def load(path: str | Path, model: type[BaseModel] = SweepConfig):
    """A sweep config (or, with model=WorkflowConfig, an exported workflow) from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: {len(raw)} bytes; a config file is at most {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text: byte {e.start} (0x{raw[e.start]:02x}, line {line}) "
                          f"is not valid UTF-8") from None
    return parse(_yaml(text, str(path)), str(path), model)
