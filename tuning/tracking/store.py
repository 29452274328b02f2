"""What the writer, the Tune callback and the reader share: the names lrtune's runs use (tags,
artifacts), an experiment and its artifact location, and the conversions of values and metrics."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "lrtune.kind"  # sweep, trial, range_test or train
SWEEP_TAG = "lrtune.sweep"  # the sweep's name, on its parent run
TRIAL_TAG = "lrtune.trial_id"  # Tune's trial id, on a trial's run
# Keys of a trial's result that are bookkeeping, not metrics: Tune's own and lrtune's flags. Every
# other finite number a trial reports (whatever the task's metrics are called) is logged.
NOT_METRICS = {"epoch", "diverged", "cycle_end", "status", "error", "timestamp", "checkpoint_dir_name",
               "should_checkpoint", "done", "training_iteration", "trial_id", "date", "time_this_iter_s",
               "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore",
               "iterations_since_restore", "experiment_tag"}
HIDDEN = {"task", "data_dir", "threads", "gpu", "checkpoint_every_s"}  # constants logged once on the parent
CONFIG_PREFIX = "config."  # the parent run's params: the sweep's config, apart from the trials' params
BEST_PREFIX = "best."  # the parent run's params: the best trial's workflow
# A trial's per-epoch `lr` and `momentum` are the last step's values: logged under these names, so
# that they never share a name (and a column) with the workflow's `lr` param.
RENAMED = {"lr": "schedule_lr", "momentum": "schedule_momentum"}
# How a trial ended (its run's `status` tag): stopped is early, by the scheduler (or an interruption)
STATUSES = ("finished", "stopped", "diverged", "failed")
WORKFLOW_ARTIFACT = "workflow.yaml"  # each trial's re-runnable workflow (`lrtune export`, `lrtune train`)
BEST_WORKFLOW_ARTIFACT = "best_workflow.yaml"  # the parent's copy of its best trial's workflow.yaml
PRIORS_ARTIFACT = "priors.json"  # the parent's record of what the range tests gave the search
NOTE_TAG = "mlflow.note.content"  # what MLflow's UI shows as a run's description
PLOT_ARTIFACT = "lr_schedule.png"  # each trial's LR and momentum per step (tuning.plots.plot_schedule)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside a sqlite store (`<its folder>/mlruns/<run id>/`), as
    `mlflow server` keeps them beside its own, not under whatever folder the sweep ran from (MLflow's
    default, ./mlruns of the working directory); a tracking server decides for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, made if there is none (its artifacts `artifact_location`);
    of two sweeps making it at once, the second's create fails on the unique name and it takes the
    first's."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))
    except MlflowException:
        if (exp := client.get_experiment_by_name(name)) is None:
            raise
        return exp.experiment_id


def require_store(uri: str) -> None:
    """A local store (a sqlite file, a folder) must exist before it is read: MLflow would create an
    empty one, which then has no runs. ValueError names --tracking-uri and where it looked."""
    path = None
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
    if path is not None and not path.exists():
        raise ValueError(f"--tracking-uri: no MLflow store at {uri} ({path.resolve()} does not exist); run "
                         f"this in the folder the sweep ran in, or pass the sweep's tracking.mlflow_uri")


def quoted(value: str) -> str:
    """A string as a literal of MLflow's filter grammar, which has no escapes: in single quotes, or
    in double quotes when it holds a single quote."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both quote characters, which MLflow's run search cannot match")


def children(client: MlflowClient, experiment_id: str, parent_run_id: str, kind: str | None = None) -> list:
    """The runs nested under a parent run (of one kind: trial, range_test, train)."""
    where = f"tags.`{PARENT_TAG}` = '{parent_run_id}'" + (f" and tags.`{KIND_TAG}` = '{kind}'" if kind else "")
    return client.search_runs([experiment_id], filter_string=where, max_results=10_000)


def read_artifact(client: MlflowClient, run_id: str, path: str) -> str:
    """A run's text artifact, from the store this client talks to (not the global tracking URI)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file
    with tempfile.TemporaryDirectory() as d:
        return Path(client.download_artifacts(run_id, path, d)).read_text()


def metrics_of(result: dict, now: int) -> list[Metric]:
    """The metrics of one epoch's result (every finite number but NOT_METRICS, `lr` and `momentum`
    as RENAMED), at step = epoch."""
    step = int(result.get("epoch", result.get("training_iteration", 0)))
    return [Metric(RENAMED.get(k, k), float(v), now, step) for k, v in sorted(result.items())
            if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested keys as dotted ones: {"search": {"seed": 0}} -> {"search.seed": 0}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def param_value(v) -> str:
    """A param's value as MLflow stores it: a string (JSON for anything else), at most 6000 characters."""
    s = v if isinstance(v, str) else json.dumps(v)
    return s[:6000]


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"
