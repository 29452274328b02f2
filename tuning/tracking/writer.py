"""Writing what a sweep records in MLflow: its parent run (`SweepRecord`), the trial runs the Tune
callback (tuning/tracking/callback.py) opens, feeds and ends through it, the range tests' runs, the
run of `lrtune train` (`TrainRun`), models through mlflow.pytorch, and the experiment's saved view.
Only the driver writes, so a sqlite store needs no server. Nothing outside tuning/tracking holds an
MLflow client: the sweep records through these methods.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.workflow import peak_lr, workflow_of

from .. import ui
from .store import (BEST_PREFIX, BEST_WORKFLOW_ARTIFACT, CONFIG_PREFIX, HIDDEN, KIND_TAG, NOTE_TAG, PARENT_TAG,
                    PRIORS_ARTIFACT, SWEEP_TAG, TRIAL_TAG, WORKFLOW_ARTIFACT, children, experiment_id, flatten,
                    metrics_of, param_value, quoted)


def _now() -> int:
    return int(time.time() * 1000)


class SweepRecord:
    """The MLflow record of one sweep: its parent run, and every write the sweep and its Tune
    callback make under it. `resume=True` reopens the parent run of the sweep named `name` (an
    interrupted one) instead of creating another."""

    def __init__(self, uri: str, experiment: str, name: str, config: dict, resume: bool = False,
                 metric: str = "accuracy", mode: str = "max"):
        if uri.startswith(("http://", "https://")):
            # MLflow's own HTTP retries back off silently for ~4 min; fewer, and TrialRuns waits
            # for the server visibly (TrialRuns._retrying)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        self._client, self.uri = MlflowClient(tracking_uri=uri), uri
        self.name, self.metric = name, metric
        self.experiment_id = experiment_id(self._client, experiment)
        if resume:
            found = self._client.search_runs([self.experiment_id], max_results=2, filter_string=(
                f"tags.`{KIND_TAG}` = 'sweep' and tags.`{SWEEP_TAG}` = {quoted(name)}"))
            if len(found) != 1:
                raise RuntimeError(f"expected one MLflow parent run tagged {SWEEP_TAG}={name!r} in "
                                   f"experiment {experiment!r} to resume, found {len(found)}")
            self.run_id, self.resumed = found[0].info.run_id, True
            self._client.update_run(self.run_id, status="RUNNING")
            self._client.set_tag(self.run_id, "lrtune.resumed", "true")
            return
        self.resumed = False
        run = self._client.create_run(self.experiment_id, run_name=name,
                                      tags={KIND_TAG: "sweep", SWEEP_TAG: name,
                                            "lrtune.metric": metric, "lrtune.mode": mode})
        self.run_id = run.info.run_id
        flat = flatten(config, CONFIG_PREFIX)
        self._client.log_batch(self.run_id, params=[Param(k, param_value(v)) for k, v in flat.items()])
        self._client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")

    # --- the parent run ---------------------------------------------------------------------

    def log_range_test(self, outcome, settings: dict) -> str:
        """A nested run for one range test: settings as params, the suggestion as metrics, the
        diagnosis as tags, the curve as a plot and as JSON."""
        client = self._client
        run = client.create_run(
            self.experiment_id, run_name=f"range-test-{outcome.optimizer}-wd{outcome.weight_decay:g}",
            tags={PARENT_TAG: self.run_id, KIND_TAG: "range_test", "optimizer": outcome.optimizer,
                  "weight_decay": f"{outcome.weight_decay:g}", "status": outcome.status,
                  "diagnosis": outcome.message[:5000]})
        rid = run.info.run_id
        params = dict(settings, optimizer=outcome.optimizer, weight_decay=outcome.weight_decay)
        metrics = {"suggested_lr": outcome.lr, "suggested_max_lr": outcome.max_lr,
                   "spread_decades": outcome.spread, "seconds": outcome.seconds}
        client.log_batch(rid, params=[Param(k, param_value(v)) for k, v in sorted(params.items())],
                         metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items() if v is not None])
        client.log_dict(rid, dict(lrs=outcome.lrs, raw_losses=outcome.raw_losses, status=outcome.status,
                                  message=outcome.message, lr=outcome.lr, max_lr=outcome.max_lr,
                                  spread=outcome.spread), "range_test.json")
        if outcome.result is not None:
            with tempfile.TemporaryDirectory() as d:
                title = (f"{settings['task']}/{settings['model']} {outcome.optimizer} "
                         f"wd={outcome.weight_decay:g}: {outcome.status}")
                client.log_artifact(rid, outcome.result.plot(str(Path(d) / "range_test.png"), title))
        client.set_terminated(rid, "FAILED" if outcome.status == "error" else "FINISHED")
        return rid

    def log_priors(self, priors: dict, seconds: float, wall_s: float) -> None:
        """What the range tests gave the search (`priors.json`: optimizer -> OptimizerPrior), and
        their summed task time and wall time. A record: `--resume` reads the priors from the sweep's
        folder under storage_path, never from here."""
        self._client.log_dict(self.run_id, {k: v.to_dict() for k, v in priors.items()}, PRIORS_ARTIFACT)
        self._client.log_batch(self.run_id, metrics=[Metric("range_test_seconds", float(seconds), _now(), 0),
                                                     Metric("range_test_wall_s", float(wall_s), _now(), 0)])

    def stopped_by(self, what: str) -> None:
        """What stopped the sweep before its trials (the tag `lrtune.stopped_by`, e.g. range_test)."""
        self._client.set_tag(self.run_id, "lrtune.stopped_by", what)

    def log_band_extensions(self, events: list[dict]) -> None:
        """The LR bands the search extended (tuning/search.py, Bands): `band_extensions.json`, and
        per optimizer a tag with its last band."""
        self._client.log_dict(self.run_id, events, "band_extensions.json")
        for e in events:
            lo, hi = e["max_lr_band"]
            self._client.set_tag(self.run_id, f"lrtune.band.{e['optimizer']}",
                                 f"max_lr {lo:.3g}..{hi:.3g} (extended {e['side']} after trial #{e['trial']})")

    def end(self, status: str = "FINISHED", summary: dict | None = None, note: str | None = None,
            best: dict | None = None) -> None:
        """End the parent run as the sweep's summary. summary: numbers (best_<metric>, trial counts,
        wall time), logged as summary.json and as metrics; best: the best trial (run_id, workflow),
        as a `best_run_id` tag, `best.*` params (peak_lr, then the workflow's keys) and
        best_workflow.yaml; note: MLflow's run description (the tag `mlflow.note.content`)."""
        client = self._client
        if summary:
            client.log_dict(self.run_id, summary, "summary.json")
            client.log_batch(self.run_id, metrics=[
                Metric(k, float(v), _now(), 0) for k, v in summary.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)])
        if best:
            workflow = best["workflow"]
            client.set_tag(self.run_id, "best_run_id", best["run_id"])
            client.log_text(self.run_id, yaml.safe_dump(workflow, sort_keys=False), BEST_WORKFLOW_ARTIFACT)
            # params are write-once: a resumed sweep that had ended keeps its first best.* params
            # (its tag, note and best_workflow.yaml say the new best)
            if not any(k.startswith(BEST_PREFIX) for k in client.get_run(self.run_id).data.params):
                values = dict(peak_lr=peak_lr(workflow), **workflow)
                client.log_batch(self.run_id, params=[Param(BEST_PREFIX + k, param_value(v))
                                                      for k, v in values.items()])
        if note:
            client.set_tag(self.run_id, NOTE_TAG, note)
        client.set_terminated(self.run_id, status)

    def end_at_once(self, open_runs, signum: int) -> None:
        """End these trial runs and the parent run KILLED, without waiting for any queued logging (a
        second signal: the sweep exits at once; `--resume` completes the runs)."""
        for run_id in list(open_runs):
            self._client.set_terminated(run_id, "KILLED")
        self._client.set_tag(self.run_id, NOTE_TAG, f"lrtune sweep {self.name} ended KILLED by a second signal "
                                                    f"({signum}) before it finished: `lrtune sweep <config> --resume` "
                                                    f"continues it.")
        self._client.set_terminated(self.run_id, "KILLED")

    def drop_lost_trials(self, known: set[str]) -> list[str]:
        """Delete (MLflow's soft delete) the trial runs whose Tune trials the restored experiment
        state does not have: started by a killed driver after Tune last saved its state, they will
        never continue (their workflows run again as new trials). Returns their Tune trial ids."""
        lost = [r for r in self.trial_runs("trial") if r.data.tags.get(TRIAL_TAG) not in known]
        for run in lost:
            self._client.delete_run(run.info.run_id)
        return [r.data.tags.get(TRIAL_TAG) for r in lost]

    def drop_range_tests(self) -> None:
        """Delete the range-test runs logged before an interruption that came before the range
        tests' priors were (the resumed sweep runs its range tests again)."""
        for run in self.trial_runs("range_test"):
            self._client.delete_run(run.info.run_id)

    def trial_runs(self, kind: str | None = None) -> list:
        """The runs under the parent (of one kind: trial, range_test, train)."""
        return children(self._client, self.experiment_id, self.run_id, kind)

    # --- trial runs (what the Tune callback writes, on its logging thread) -------------------

    def find_trial_run(self, trial_id: str):
        """The run of a Tune trial that a resumed sweep may have made already: (run id, status,
        epochs logged), or None."""
        found = self._client.search_runs([self.experiment_id], max_results=1, filter_string=(
            f"tags.`{PARENT_TAG}` = '{self.run_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"))
        if not found:
            return None
        run = found[0].info
        return run.run_id, run.status, max(self.epochs_logged(run.run_id), default=0)

    def create_trial_run(self, trial_id: str, config: dict) -> str:
        """A trial's run, named optimizer-schedule-trial id, its config as params (HIDDEN left to the
        parent), tagged `status` running."""
        run = self._client.create_run(
            self.experiment_id, run_name=f"{config.get('optimizer')}-{config.get('schedule')}-{trial_id}",
            tags={PARENT_TAG: self.run_id, KIND_TAG: "trial", TRIAL_TAG: trial_id,
                  "optimizer": str(config.get("optimizer")), "schedule": str(config.get("schedule")),
                  "status": "running"})
        params = [Param(k, param_value(v)) for k, v in sorted(config.items()) if k not in HIDDEN]
        self._client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def tag(self, run_id: str, key: str, value: str = "true") -> None:
        self._client.set_tag(run_id, key, value)

    def log_epochs(self, run_id: str, metrics: list[Metric]) -> None:
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self._client.log_batch(run_id, metrics=metrics[i:i + 1000])

    def epochs_logged(self, run_id: str) -> set[int]:
        """The epochs a trial run has metrics for."""
        return {m.step for m in self._client.get_metric_history(run_id, self.metric)}

    def is_running(self, run_id: str) -> bool:
        return self._client.get_run(run_id).info.status == "RUNNING"

    def end_trial_run(self, run_id: str, status: str, mlflow_status: str, epochs: float, config: dict | None,
                      error: str | None = None) -> None:
        """What a trial's run holds when it ends, before it is ended (`lrtune export` takes a FINISHED
        run's workflow.yaml): the `status` tag (and `error`), `epochs_run`, the workflow of its config."""
        tags = [RunTag("status", status)] + ([RunTag("error", error[:5000])] if error else [])
        self._client.log_batch(run_id, tags=tags, metrics=[Metric("epochs_run", float(epochs), _now(), 0)])
        if config is not None:
            self._client.log_text(run_id, yaml.safe_dump(workflow_of(config), sort_keys=False), WORKFLOW_ARTIFACT)
        self._client.set_terminated(run_id, mlflow_status)

    def log_file(self, run_id: str, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / name
            path.write_bytes(data)
            self._client.log_artifact(run_id, str(path))

    def show_in_view(self) -> None:
        """Point the experiment's saved runs view at this sweep's trials (`show_sweep_in_view`)."""
        mode = self._client.get_run(self.run_id).data.tags.get("lrtune.mode", "max")
        show_sweep_in_view(self.uri, self.experiment_id, self.name, self.run_id, self.metric, mode)


def show_sweep_in_view(uri: str, experiment_id: str, sweep_name: str, parent_run_id: str, metric: str,
                       mode: str) -> None:
    """Point the experiment's saved runs view (`ui.VIEW_ID`, one per experiment) at this sweep's
    trials, best first, with their columns (`ui.runs_view`)."""
    save_runs_view(uri, experiment_id, ui.VIEW_ID, f"lrtune: {sweep_name}", ui.runs_view(metric, mode, parent_run_id))


def save_runs_view(uri: str, experiment_id: str, view_id: str, name: str, state: dict) -> None:
    """Save (or replace) a view of the experiment's runs page as MLflow 3.17's UI saves one: the
    experiment tag `mlflow.sharedViewState.<view_id>` holding {name, createdAt, updatedAt, state}
    (`state` the page's search and columns as JSON), which `viewStateShareKey=<view_id>` opens."""
    now = int(time.time() * 1000)
    value = json.dumps(dict(name=name, createdAt=now, updatedAt=now, state=json.dumps(state)))
    MlflowClient(tracking_uri=uri).set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{view_id}", value)


# The trained model through mlflow.pytorch: `lrtune train`'s run, and the best trial's model.

MODEL_NAME = "model"


def _model_format(model) -> dict:
    """How lrtune writes a model with mlflow.pytorch. Pickled: the module loads back as its own class
    (a LightningModule stays one) whatever its inputs are, and needs no input example; MLflow's
    default, pt2, traces the model on a tensor input example and loads back as an ExportedProgram.
    Loading needs the model's class importable (lrtune for the built-in tasks, else your task's
    module) and, as torch.load of a whole module does, runs the pickle's code: load models you
    trust (MLflow's warning that says so on every save is silenced, the choice being made here).
    The pip requirements are given: MLflow infers them by loading the model in a subprocess, which
    is slow."""
    import logging
    from importlib.metadata import version

    import torch

    logging.getLogger("mlflow.pytorch").addFilter(_pickle_chosen)  # added once however often called

    packages = {c.__module__.split(".")[0] for c in type(model).__mro__}
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    requirements += [f"{dist}=={version(dist)}" for dist, package in (("lightning", "lightning"),
                     ("pytorch-lightning", "pytorch_lightning")) if package in packages]
    return dict(serialization_format="pickle", pip_requirements=requirements)


def _pickle_chosen(record) -> bool:
    return not record.getMessage().startswith("Saving pytorch model by Pickle")


def save_model(model, path: str) -> None:
    """`model` as an MLflow model folder at `path` (mlflow.pytorch.save_model: MLmodel, the pickled
    module, its requirements), in eval mode: `mlflow.pytorch.load_model(path)` reads it back and
    `mlflow models serve -m path` serves it. Written beside `path` first and then renamed (onto an
    empty folder, or none), so that a failure leaves nothing half-written."""
    import mlflow.pytorch

    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".lrtune-") as d:
        mlflow.pytorch.save_model(model.eval(), os.path.join(d, MODEL_NAME), **_model_format(model))
        os.replace(os.path.join(d, MODEL_NAME), target)


def log_model(uri: str, run_id: str, model, step: int) -> str:
    """Log `model` (in eval mode) with mlflow.pytorch.log_model to the run `run_id` at `uri`, as its
    model after epoch `step` (MLflow 3: a LoggedModel, the run's output, whose metrics are the run's
    at that step); returns its URI, models:/<model id>. log_model is fluent only, and files the
    LoggedModel under the active run's experiment (with none active, experiment 0's): the run is
    made the active one for the call, at `uri`; the tracking URI, and the run's status and end
    time, are as they were after it."""
    import mlflow
    import mlflow.pytorch

    client = MlflowClient(tracking_uri=uri)
    info = client.get_run(run_id).info
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.pytorch.log_model(model.eval(), name=MODEL_NAME, step=step, **_model_format(model))
    finally:
        mlflow.set_tracking_uri(before)
        if info.status == "RUNNING":
            client.update_run(run_id, status="RUNNING")
        else:
            client.set_terminated(run_id, info.status, end_time=info.end_time)
    return logged.model_uri


class TrainRun:
    """The MLflow run of `lrtune train`: the workflow's keys as params, with `peak_lr` (max_lr for
    one_cycle and cyclic, lr otherwise); each epoch's finite numbers as metrics at step=epoch, the
    row's `lr` and `momentum` (its last step's) as `schedule_lr`, `schedule_momentum`; the workflow
    as `workflow.yaml`; the trained model (`log_model`). Tagged `lrtune.kind` = train, `status`.

    An exported workflow's `origin` links it: tags `lrtune.source_run_id` (the trial) and
    `lrtune.sweep_run_id`, and, when the sweep's parent run is in this store and experiment (by
    default the sweep's), nested under it as the sweep's result — the sweep's trial views select
    `lrtune.kind` = trial and leave it out. As a context manager, an exception ends the run FAILED
    (KILLED for an interrupt), tagged `status` failed and the error, and propagates."""

    def __init__(self, uri: str, experiment: str | None, workflow: dict, origin: dict | None = None):
        self._client, self.uri, origin = MlflowClient(tracking_uri=uri), uri, origin or {}
        sweep = self._run(origin.get("sweep_run_id"))
        name = (experiment or (sweep and self._client.get_experiment(sweep.info.experiment_id).name)
                or origin.get("experiment") or "lrtune")
        self.experiment, self.experiment_id = name, experiment_id(self._client, name)
        tags = {KIND_TAG: "train", "status": "running", "optimizer": workflow["optimizer"],
                "schedule": workflow["schedule"]}
        if origin:
            tags["lrtune.source_run_id"] = origin["run_id"]
        if origin.get("sweep_run_id"):
            tags["lrtune.sweep_run_id"] = origin["sweep_run_id"]
        self.parent = sweep.info.run_id if sweep and sweep.info.experiment_id == self.experiment_id else None
        if self.parent:
            tags[PARENT_TAG] = self.parent
        run = self._client.create_run(self.experiment_id, run_name=f"train-{workflow['optimizer']}-"
                                     f"{workflow['schedule']}", tags=tags)
        self.run_id, self.ended = run.info.run_id, False
        params = dict(workflow, peak_lr=peak_lr(workflow))
        self._client.log_batch(self.run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
        self._client.log_text(self.run_id, yaml.safe_dump(workflow, sort_keys=False), WORKFLOW_ARTIFACT)

    def _run(self, run_id: str | None):
        try:
            return self._client.get_run(run_id) if run_id else None
        except MlflowException:
            return None  # exported from another store: the tags still name it

    def log_epoch(self, row: dict) -> None:
        metrics = metrics_of(row, int(time.time() * 1000))
        self._client.log_batch(self.run_id, metrics=metrics)

    def log_model(self, model, epoch: int) -> str:
        return log_model(self.uri, self.run_id, model, epoch)

    def end(self, status: str, epochs: int) -> None:
        """status: finished or diverged (the run is FINISHED either way, as a trial's)."""
        self._client.log_batch(self.run_id, tags=[RunTag("status", status)],
                              metrics=[Metric("epochs_run", float(epochs), int(time.time() * 1000), 0)])
        self._client.set_terminated(self.run_id, "FINISHED")
        self.ended = True

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is not None and not self.ended:
            failed = not isinstance(error, KeyboardInterrupt)
            tags = [RunTag("status", "failed" if failed else "stopped")]
            if failed:
                tags.append(RunTag("error", f"{type(error).__name__}: {error}"[:5000]))
            self._client.log_batch(self.run_id, tags=tags)
            self._client.set_terminated(self.run_id, "FAILED" if failed else "KILLED")
        return False


def log_best_model(uri: str, trial: dict) -> str:
    """Log a sweep's trial's model (`SweepResult.best`'s dict: config, checkpoint, run_id, result),
    rebuilt from its last checkpoint, to its MLflow run at the checkpoint's epoch; returns a line
    saying what was logged, or why nothing was."""
    from trainables.trainable import trained_model

    which = f"the best trial ({trial['trial_id']}, MLflow run {trial.get('run_id')})"
    if trial.get("checkpoint") is None or trial.get("run_id") is None:
        return f"{which}: no model logged: it has no {'checkpoint' if trial.get('run_id') else 'MLflow run'}"
    model, epoch = trained_model(trial["checkpoint"], trial["config"])
    if model is None:
        return (f"{which}: no model logged: its task trains with its own loop (train_fn), which keeps "
                f"its model to itself")
    model_uri = log_model(uri, trial["run_id"], model, epoch)
    ran = trial["result"].get("epoch", epoch)
    return (f"logged {which}'s model after epoch {epoch}" + (f" (its last checkpoint; it ran {ran})"
            if ran != epoch else "") + f": {model_uri}")
