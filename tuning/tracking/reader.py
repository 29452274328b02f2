"""Reading what sweeps recorded, for `lrtune report`, `export` and `ui`. Nothing here writes, apart from a report's own artifact (`SweepView.log_report_artifact`)."""

from __future__ import annotations

import json

import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .store import (CONFIG_PREFIX, KIND_TAG, PARENT_TAG, PRIORS_ARTIFACT, RENAMED, SWEEP_TAG, TRIAL_TAG,
                    WORKFLOW_ARTIFACT, children, quoted, read_artifact, require_store)


class SweepView:
    """Read access to one sweep's runs, for `lrtune report`: the newest sweep of `experiment` (of
    the whole store when None), or the one `sweep` names (a parent run id or a sweep name)."""

    def __init__(self, uri: str, experiment: str | None, sweep: str | None = None):
        require_store(uri)
        self.client = client = MlflowClient(tracking_uri=uri)
        if experiment is None:
            ids = [e.experiment_id for e in client.search_experiments()]
        else:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                names = ", ".join(e.name for e in client.search_experiments()) or "none"
                raise ValueError(f"--experiment: no MLflow experiment {experiment!r} at {uri} (experiments "
                                 f"there: {names})")
            ids = [exp.experiment_id]
        # MLflow's filter grammar has no `or`: a parent run id is looked up directly, a name searched
        found = [r for r in [self._parent_run(sweep, ids)] if r is not None] if sweep else []
        if not found and ids:
            where = f"tags.`{KIND_TAG}` = 'sweep'" + (f" and tags.`{SWEEP_TAG}` = {quoted(sweep)}" if sweep else "")
            found = client.search_runs(ids, filter_string=where, max_results=1,
                                       order_by=["attributes.start_time DESC"])
        where = f"experiment {experiment!r}" if experiment else f"any experiment at {uri}"
        if not found:
            raise ValueError(f"--sweep: no lrtune sweep {sweep!r} in {where}" if sweep else
                             f"--experiment: no lrtune sweep runs in {where}")
        self.run = found[0]
        self.experiment_id = self.run.info.experiment_id
        self.run_id, self.name, self.status = self.run.info.run_id, self.run.info.run_name, self.run.info.status
        self.metric = self.run.data.tags.get("lrtune.metric", "accuracy")
        self.mode = self.run.data.tags.get("lrtune.mode", "max")

    def _parent_run(self, run_id: str, experiment_ids: list[str]):
        """The sweep's parent run with this id in these experiments, or None (not an id, or not one)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        ok = run.info.experiment_id in experiment_ids and run.data.tags.get(KIND_TAG) == "sweep"
        return run if ok else None

    def ranked(self) -> tuple[list[dict], str]:
        """One row per trial, best first in the sweep's mode (failed runs and runs without the
        metric last: a failed trial never ranks, whatever it reported first), and the metric's name
        (the parent's `lrtune.metric` tag)."""
        trials = children(self.client, self.experiment_id, self.run_id, "trial")
        metric, sign = self.metric, -1.0 if self.mode == "max" else 1.0
        rows = []
        for t in trials:
            p, m = t.data.params, t.data.metrics
            lr = p.get("peak_lr") or p.get("max_lr") or p.get("lr")  # peak_lr: sweeps since issue 16
            rows.append(dict(run_id=t.info.run_id, trial_id=t.data.tags.get(TRIAL_TAG),
                             metric=m.get(metric), std=m.get(f"{metric}_std"),
                             epochs=int(m.get("epochs_run", 0)), status=t.data.tags.get("status", "?"),
                             optimizer=p.get("optimizer", "?"), schedule=p.get("schedule", "?"),
                             lr=float(lr) if lr else float("nan"),
                             weight_decay=float(p.get("weight_decay", "nan"))))
        rows.sort(key=lambda r: (r["metric"] is None or r["status"] == "failed", sign * (r["metric"] or 0.0)))
        return rows, metric

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, metric))

    def range_tests(self) -> list[dict]:
        out = []
        for r in children(self.client, self.experiment_id, self.run_id, "range_test"):
            curve = json.loads(read_artifact(self.client, r.info.run_id, "range_test.json"))
            out.append(dict(curve, optimizer=r.data.tags["optimizer"], weight_decay=float(r.data.tags["weight_decay"])))
        return sorted(out, key=lambda c: (c["optimizer"], c["weight_decay"]))

    def priors(self) -> dict[str, dict]:
        """What the range tests gave the search (`priors.json`, or `seeds.json` as sweeps before
        lrtune 0.2 named it: optimizer -> OptimizerPrior.to_dict()); {} when it logged none (a
        blind sweep)."""
        logged = {a.path for a in self.client.list_artifacts(self.run_id)}
        for name in (PRIORS_ARTIFACT, "seeds.json"):
            if name in logged:
                return json.loads(read_artifact(self.client, self.run_id, name))
        return {}

    def optuna_study(self) -> tuple[str, str]:
        """The Optuna storage and study name of this sweep."""
        params = self.run.data.params
        storage = params.get(f"{CONFIG_PREFIX}tracking.optuna_storage") or params.get("tracking.optuna_storage")
        return storage or "sqlite:///optuna.db", self.name

    def log_report_artifact(self, path: str) -> None:
        self.client.log_artifact(self.run_id, path, "report")


def exported_workflow(uri: str, run_id: str) -> tuple[dict, dict]:
    """A trial run's workflow (its workflow.yaml artifact) and where it came from. ValueError names
    what is wrong when the run is not a finished trial of an lrtune sweep."""
    require_store(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"RUN_ID: no MLflow run {run_id!r} in {uri}") from None
    kind = run.data.tags.get(KIND_TAG)
    if kind != "trial":
        raise ValueError(f"RUN_ID: run {run_id} is {'a ' + kind if kind else 'not an lrtune'} run; export "
                         f"takes a trial's run id (`lrtune report` lists them)")
    if WORKFLOW_ARTIFACT not in [a.path for a in client.list_artifacts(run_id)]:
        raise ValueError(f"RUN_ID: trial run {run_id} has no {WORKFLOW_ARTIFACT} (it did not end: "
                         f"status {run.data.tags.get('status')!r})")
    workflow = yaml.safe_load(read_artifact(client, run_id, WORKFLOW_ARTIFACT))
    source = dict(run_id=run_id, run_name=run.info.run_name, status=run.data.tags.get("status"),
                  sweep_run_id=run.data.tags.get(PARENT_TAG),
                  metrics={k: v for k, v in run.data.metrics.items()
                           if k not in ("epochs_run", "epoch_time", *RENAMED, *RENAMED.values())})
    return workflow, source


def workflow_origin(uri: str, run_id: str) -> dict:
    """Where a trial's exported workflow comes from (the exported YAML's `origin`)."""
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    return dict(run_id=run_id, sweep_run_id=run.data.tags.get(PARENT_TAG),
                experiment=client.get_experiment(run.info.experiment_id).name, tracking_uri=uri)
