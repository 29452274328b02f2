"""MLflow: a parent run per sweep, one nested run per trial and per range test, the run of
`lrtune train`, and the reads behind `report`, `export` and `ui`. The only module that imports
MLflow. Only the driver writes, so a sqlite store needs no server.

Trial runs are opened and fed by a Ray Tune callback; a trial that restarts from a checkpoint keeps
its run (no duplicate), and each run ends with a `status` tag: finished, diverged, stopped or failed.
The parent run ends as the sweep's summary (`Sweep.end`: best metric and run, counts, the best
workflow, a note); the experiment's saved runs view is pointed at the newest sweep's trials.
Models go through mlflow.pytorch (`TrainRun`, `log_best_model`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ray
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

from trainables.workflow import peak_lr, workflow_of

from . import ui

PARENT_TAG = "mlflow.parentRunId"
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


class Sweep:
    """The parent run of one sweep. `resume=True` reopens the parent run of the sweep named `name`
    (an interrupted one) instead of creating another."""

    def __init__(self, uri: str, experiment: str, name: str, config: dict, resume: bool = False,
                 metric: str = "accuracy", mode: str = "max"):
        if uri.startswith(("http://", "https://")):
            # MLflow's own HTTP retries back off silently for ~4 min; fewer, and TrialRuns waits
            # for the server visibly (TrialRuns._retrying)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        self.client, self.uri = MlflowClient(tracking_uri=uri), uri
        self.name, self.metric = name, metric
        self.experiment_id = experiment_id(self.client, experiment)
        if resume:
            found = self.client.search_runs([self.experiment_id], max_results=2, filter_string=(
                f"tags.`lrtune.kind` = 'sweep' and tags.`lrtune.sweep` = {quoted(name)}"))
            if len(found) != 1:
                raise RuntimeError(f"expected one MLflow parent run tagged lrtune.sweep={name!r} in "
                                   f"experiment {experiment!r} to resume, found {len(found)}")
            self.run_id, self.resumed = found[0].info.run_id, True
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "lrtune.resumed", "true")
            return
        self.resumed = False
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"lrtune.kind": "sweep", "lrtune.sweep": name,
                                           "lrtune.metric": metric, "lrtune.mode": mode})
        self.run_id = run.info.run_id
        flat = _flatten(config, CONFIG_PREFIX)
        self.client.log_batch(self.run_id, params=[Param(k, _short(v)) for k, v in flat.items()])
        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")

    def log_range_test(self, outcome, settings: dict) -> str:
        """A nested run for one range test: settings as params, the suggestion as metrics, the
        diagnosis as tags, the curve as a plot and as JSON."""
        run = self.client.create_run(
            self.experiment_id, run_name=f"range-test-{outcome.optimizer}-wd{outcome.weight_decay:g}",
            tags={PARENT_TAG: self.run_id, "lrtune.kind": "range_test", "optimizer": outcome.optimizer,
                  "weight_decay": f"{outcome.weight_decay:g}", "status": outcome.status,
                  "diagnosis": outcome.message[:5000]})
        rid, now = run.info.run_id, int(time.time() * 1000)
        params = dict(settings, optimizer=outcome.optimizer, weight_decay=outcome.weight_decay)
        metrics = {"suggested_lr": outcome.lr, "suggested_max_lr": outcome.max_lr,
                   "spread_decades": outcome.spread, "seconds": outcome.seconds}
        self.client.log_batch(rid, params=[Param(k, _short(v)) for k, v in sorted(params.items())],
                              metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None])
        self.client.log_dict(rid, dict(lrs=outcome.lrs, raw_losses=outcome.raw_losses, status=outcome.status,
                                       message=outcome.message, lr=outcome.lr, max_lr=outcome.max_lr,
                                       spread=outcome.spread), "range_test.json")
        if outcome.result is not None:
            with tempfile.TemporaryDirectory() as d:
                title = (f"{settings['task']}/{settings['model']} {outcome.optimizer} "
                         f"wd={outcome.weight_decay:g}: {outcome.status}")
                self.client.log_artifact(rid, outcome.result.plot(str(Path(d) / "range_test.png"), title))
        self.client.set_terminated(rid, "FAILED" if outcome.status == "error" else "FINISHED")
        return rid

    def log_seeds(self, seeds: dict) -> None:
        self.client.log_dict(self.run_id, {k: v.to_dict() for k, v in seeds.items()}, "seeds.json")

    def log_band_extensions(self, events: list[dict]) -> None:
        """The LR bands the search extended (tuning/search.py, Bands): `band_extensions.json`, and
        per optimizer a tag with its last band."""
        self.client.log_dict(self.run_id, events, "band_extensions.json")
        for e in events:
            lo, hi = e["max_lr_band"]
            self.client.set_tag(self.run_id, f"lrtune.band.{e['optimizer']}",
                                f"max_lr {lo:.3g}..{hi:.3g} (extended {e['side']} after trial #{e['trial']})")

    def load_seeds(self) -> dict | None:
        """The seeds logged by this sweep before an interruption (None when none were)."""
        if "seeds.json" not in [a.path for a in self.client.list_artifacts(self.run_id)]:
            return None
        return json.loads(read_artifact(self.client, self.run_id, "seeds.json"))

    def end(self, status: str = "FINISHED", summary: dict | None = None, note: str | None = None,
            best: dict | None = None) -> None:
        """End the parent run as the sweep's summary. summary: numbers (best_<metric>, trial counts,
        wall time), logged as summary.json and as metrics; best: the best trial (run_id, workflow),
        as a `best_run_id` tag, `best.*` params (peak_lr, then the workflow's keys) and
        best_workflow.yaml; note: MLflow's run description (the tag `mlflow.note.content`)."""
        if summary:
            self.client.log_dict(self.run_id, summary, "summary.json")
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[
                Metric(k, float(v), now, 0) for k, v in summary.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)])
        if best:
            workflow = best["workflow"]
            self.client.set_tag(self.run_id, "best_run_id", best["run_id"])
            self.client.log_text(self.run_id, yaml.safe_dump(workflow, sort_keys=False), BEST_WORKFLOW_ARTIFACT)
            # params are write-once: a resumed sweep that had ended keeps its first best.* params
            # (its tag, note and best_workflow.yaml say the new best)
            if not any(k.startswith(BEST_PREFIX) for k in self.client.get_run(self.run_id).data.params):
                values = dict(peak_lr=peak_lr(workflow), **workflow)
                self.client.log_batch(self.run_id, params=[Param(BEST_PREFIX + k, _short(v)) for k, v in values.items()])
        if note:
            self.client.set_tag(self.run_id, NOTE_TAG, note)
        self.client.set_terminated(self.run_id, status)

    def drop_lost_trials(self, known: set[str]) -> list[str]:
        """Delete (MLflow's soft delete) the trial runs whose Tune trials the restored experiment
        state does not have: started by a killed driver after Tune last saved its state, they will
        never continue (their workflows run again as new trials). Returns their Tune trial ids."""
        lost = [r for r in self.client.search_runs([self.experiment_id], max_results=10_000, filter_string=(
                f"tags.`{PARENT_TAG}` = '{self.run_id}' and tags.`lrtune.kind` = 'trial'"))
                if r.data.tags.get("lrtune.trial_id") not in known]
        for run in lost:
            self.client.delete_run(run.info.run_id)
        return [r.data.tags.get("lrtune.trial_id") for r in lost]

    def drop_range_tests(self) -> None:
        """Delete the range-test runs logged before an interruption that came before the seeds were
        (the resumed sweep runs its range tests again)."""
        for run in self.client.search_runs([self.experiment_id], max_results=10_000, filter_string=(
                f"tags.`{PARENT_TAG}` = '{self.run_id}' and tags.`lrtune.kind` = 'range_test'")):
            self.client.delete_run(run.info.run_id)

    def trial_runs(self) -> list:
        return self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'",
                                       max_results=10_000)


class TrialRuns(tune.Callback):
    """Ray Tune callback: one nested MLflow run per trial, metrics at step=epoch.

    Every MLflow call runs, in order, on one background thread: Tune's trial loop (which each
    trial's synchronous `tune.report` waits on) only enqueues. `close()` waits for the queue and
    re-raises the first logging error; the sweep calls it whatever happens.

    What a trial's run holds when it ends (status, epochs_run, workflow.yaml) is written before the
    run is ended, in one job: `lrtune export` takes a FINISHED run's workflow.yaml. Its schedule
    plot (lr_schedule.png) follows a moment later: `plot_schedule(trial config, steps_per_epoch)`
    returns at once a Ray object that becomes the PNG's bytes (the sweep's is drawn by a Ray actor,
    `tuning.plots.schedule_png_in_ray`), and the logging thread logs each plot once drawn, at its
    next job, without waiting on it; `close()` waits for them all. Drawing is ~0.1 s of CPU: waited
    on once per trial, it made the logging fall behind the trials, and drawn in this process it
    would hold the GIL and stall Tune's loop, which every running trial's report waits on.
    """

    def __init__(self, sweep: Sweep, plot_schedule=None):
        self.sweep, self.client = sweep, sweep.client
        self.plot_schedule = plot_schedule  # (trial config, steps_per_epoch) -> Ray object of PNG bytes
        self.plots: list[tuple[str, object]] = []  # (run id, its plot being drawn), logging thread only
        self.runs: dict[str, str] = {}  # touched on the logging thread only
        self.open: set[str] = set()  # runs not yet ended, likewise
        self.logged: dict[str, int] = {}  # trial id -> last epoch logged, likewise
        self.last: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}  # trial id -> its config, likewise
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrtune-mlflow")
        self._pending: list[Future] = []
        self._created: dict[str, Future] = {}  # trial id -> the creation of its run
        self.broken: Exception | None = None  # the first logging call the store refused
        self.stop = None  # called once, from Tune's loop, when the store is broken

    def __getstate__(self):  # Tune pickles callbacks with its experiment state; a pool cannot be
        state = dict(self.__dict__)
        for k in ("_pool", "_pending", "plots", "_created", "broken", "stop"):
            del state[k]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrtune-mlflow")
        self._pending, self.plots, self._created, self.broken, self.stop = [], [], {}, None, None

    def on_step_end(self, iteration, trials, **info):
        """A store that refuses a write (read-only, full, its schema gone) stops the sweep (`stop`):
        trials going on would log nothing. Tune's records keep what they did; `--resume` logs it."""
        if self.broken is not None and self.stop is not None:
            self.stop, stop = None, self.stop
            stop()

    def later(self, fn, *args) -> None:
        """Run fn(*args) on the logging thread, after what is queued (errors surface in close()),
        waiting out a tracking server that does not answer (`_retrying`)."""
        self._pending.append(self._pool.submit(self._retrying, fn, *args))

    def _retrying(self, fn, *args):
        """fn(*args), again every RETRY_S while the tracking server does not answer (restarting, or
        its network down), for up to GIVE_UP_S; says so when it starts waiting, once a minute, and
        when the server is back. The trials go on meanwhile; their results queue here."""
        waited, said = 0.0, None
        while True:
            if self.broken is not None:
                return None  # the store refused an earlier call: the sweep is stopping, resume logs it
            try:
                result = fn(*args)
            except Exception as e:
                if not isinstance(e, MlflowException) or not _unreachable(e) or waited >= GIVE_UP_S:
                    self.broken = e  # the store (or its artifact folder) refused it: full, read-only, gone
                    raise
                if said is None or waited - said >= 60:
                    print(f"lrtune: the MLflow tracking server at {self.sweep.uri} does not answer; logging "
                          f"waits and retries every {RETRY_S:g} s, the trials go on (waited {waited:.0f} s; "
                          f"{str(e)[:160]})", file=sys.stderr, flush=True)
                    said = waited
                time.sleep(RETRY_S)
                waited += RETRY_S
                continue
            if said is not None:
                print(f"lrtune: the MLflow tracking server at {self.sweep.uri} answers again after "
                      f"{waited:.0f} s; the logging catches up", file=sys.stderr, flush=True)
            return result

    def _run_id(self, trial_id: str, cfg: dict) -> str:
        self.configs[trial_id] = cfg
        if trial_id not in self.runs and self.sweep.resumed:  # it may have the run already
            found = self.client.search_runs([self.sweep.experiment_id], max_results=1, filter_string=(
                f"tags.`{PARENT_TAG}` = '{self.sweep.run_id}' and tags.`lrtune.trial_id` = '{trial_id}'"))
            if found:
                self.runs[trial_id] = found[0].info.run_id
                self.logged[trial_id] = max(self._steps(found[0].info.run_id), default=0)
                if found[0].info.status == "RUNNING":
                    self.open.add(found[0].info.run_id)
        if trial_id not in self.runs:
            run = self.client.create_run(
                self.sweep.experiment_id, run_name=f"{cfg.get('optimizer')}-{cfg.get('schedule')}-{trial_id}",
                tags={PARENT_TAG: self.sweep.run_id, "lrtune.kind": "trial", "lrtune.trial_id": trial_id,
                      "optimizer": str(cfg.get("optimizer")), "schedule": str(cfg.get("schedule")),
                      "status": "running"})
            self.runs[trial_id] = run.info.run_id
            self.open.add(run.info.run_id)
            params = [Param(k, _short(v)) for k, v in sorted(cfg.items()) if k not in HIDDEN]
            self.client.log_batch(run.info.run_id, params=params)
        return self.runs[trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self.later(self._run_id, trial.trial_id, dict(trial.config))
        self._created[trial.trial_id] = self._pending[-1]

    def run_id_of(self, trial_id: str, timeout: float = 60.0) -> str | None:
        """A trial's MLflow run id, once the logging thread has created the run (None if it could not)."""
        created = self._created.get(trial_id)
        try:
            return created.result(timeout) if created is not None else self.runs.get(trial_id)
        except Exception:  # noqa: BLE001 - the logging error itself surfaces in close()
            return None

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.later(self._tag, trial.trial_id, dict(trial.config), "lrtune.restored")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A failed trial (e.g. its node was lost) about to be retried from its last checkpoint."""
        self.later(self._tag, trial.trial_id, dict(trial.config), "lrtune.recovered")

    def _tag(self, trial_id: str, cfg: dict, tag: str) -> None:
        self.client.set_tag(self._run_id(trial_id, cfg), tag, "true")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result
        metrics = _metrics(result, int(time.time() * 1000))
        if metrics:
            self.later(self._log_metrics, trial.trial_id, dict(trial.config), metrics)

    def _log_metrics(self, trial_id: str, cfg: dict, metrics: list) -> None:
        run_id = self._run_id(trial_id, cfg)
        if metrics[0].step <= self.logged.get(trial_id, 0):
            return  # re-reported by a trial restarted from an earlier checkpoint (or its start): logged
        self.client.log_batch(run_id, metrics=metrics)
        self.logged[trial_id] = metrics[0].step

    def _steps(self, run_id: str) -> set[int]:
        """The epochs a trial run has metrics for."""
        return {m.step for m in self.client.get_metric_history(run_id, self.sweep.metric)}

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = self.last.get(trial.trial_id, {})
        status = _status(last)
        self.later(self._end, trial.trial_id, dict(trial.config), status,
                   "FAILED" if status == "failed" else "FINISHED", last.get("error"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.later(self._end, trial.trial_id, dict(trial.config), "failed", "FAILED")

    def _end(self, trial_id: str, cfg: dict, status: str, mlflow_status: str, error: str | None = None) -> None:
        run_id = self._run_id(trial_id, cfg)
        epochs = float(self.last.get(trial_id, {}).get("epoch", 0))
        tags = [RunTag("status", status)] + ([RunTag("error", error[:5000])] if error else [])
        self.client.log_batch(run_id, tags=tags, metrics=[Metric("epochs_run", epochs, int(time.time() * 1000), 0)])
        self.client.log_text(run_id, yaml.safe_dump(workflow_of(cfg), sort_keys=False), WORKFLOW_ARTIFACT)
        self.client.set_terminated(run_id, mlflow_status)
        self.open.discard(run_id)
        if self.plot_schedule is not None:
            self.plots.append((run_id, self.plot_schedule(cfg, cfg["steps_per_epoch"])))
        self._log_plots(wait=False)

    def _log_plots(self, wait: bool) -> None:
        """Log the schedule plots drawn so far (`wait`: all of them, once drawn)."""
        if not self.plots:
            return
        refs = [ref for _, ref in self.plots]
        drawn, _ = ray.wait(refs, num_returns=len(refs), timeout=None if wait else 0, fetch_local=True)
        drawn = set(drawn)
        for run_id, ref in [p for p in self.plots if p[1] in drawn]:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / PLOT_ARTIFACT
                path.write_bytes(ray.get(ref))
                self.client.log_artifact(run_id, str(path))
        self.plots = [p for p in self.plots if p[1] not in drawn]

    def on_experiment_end(self, trials, **info):
        if self.broken is None:  # else the sweep reports the store's refusal, and stops
            self.close()

    def reconcile(self, trials: list[dict], every_run: bool = False) -> None:
        """Make MLflow agree with Tune's own records. A driver killed mid-sweep loses the logging it
        had queued; on resume, Tune does not re-run the trials it had finished by then, and continues
        the others from their checkpoints, so runs are created, completed (missing epochs) and ended
        here. `trials`: dicts with trial_id, config, error, and history (a callable giving one result
        dict per epoch, from Tune's files). Only missing or unfinished runs are checked (one query in
        all) unless `every_run` (a resumed sweep: a run may lack the epochs of a dead driver)."""
        self.close()
        runs = {r.data.tags.get("lrtune.trial_id"): r for r in self.sweep.trial_runs()}
        for t in trials:
            run = runs.get(t["trial_id"])
            if run is not None and run.info.status != "RUNNING" and not every_run:
                continue
            self.later(self._complete, t["trial_id"], dict(t["config"]), t["history"](), t["error"])
        self.close()

    def _complete(self, trial_id: str, cfg: dict, history: list[dict], error: str | None) -> None:
        run_id = self._run_id(trial_id, cfg)
        logged = self._steps(run_id)
        # Tune's files hold an epoch twice when a trial re-ran it after a restart: the later one counts.
        missing = [row for epoch, row in {int(row.get("epoch", 0)): row for row in history}.items()
                   if epoch not in logged]
        metrics = [m for row in missing for m in _metrics(row, int(time.time() * 1000))]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if history:
            self.last[trial_id] = history[-1]
        if self.client.get_run(run_id).info.status != "RUNNING":
            return  # it had ended: only epochs were missing
        status = "failed" if error else _status(self.last.get(trial_id, {}))
        self._end(trial_id, cfg, status, "FAILED" if status == "failed" else "FINISHED",
                  error or self.last.get(trial_id, {}).get("error"))

    def close(self, abandoned: str | None = None) -> None:
        """Wait for the queued logging. With `abandoned` (the sweep's MLflow status, e.g. KILLED),
        also end the trial runs still open as a trial's run ends (tagged `stopped`, with epochs_run,
        the epochs it logged, and workflow.yaml), so that no run is left running."""
        self.later(self._log_plots, True)
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending if f.exception() is not None]
        if abandoned:
            trial_of = {run_id: trial_id for trial_id, run_id in self.runs.items()}
            for run_id in sorted(self.open):
                trial_id = trial_of.get(run_id)
                self.client.log_batch(run_id, tags=[RunTag("status", "stopped")], metrics=[
                    Metric("epochs_run", float(self.logged.get(trial_id, 0)), int(time.time() * 1000), 0)])
                if trial_id in self.configs:
                    self.client.log_text(run_id, yaml.safe_dump(workflow_of(self.configs[trial_id]), sort_keys=False),
                                         WORKFLOW_ARTIFACT)
                self.client.set_terminated(run_id, abandoned)
            self.open.clear()
        if errors:
            raise RuntimeError(f"{len(errors)} MLflow logging call(s) failed; first: {errors[0]!r}") from errors[0]


def sweep_names(uri: str, experiment: str, prefix: str) -> list[str]:
    """The names of the sweeps (parent runs) in `experiment` that start with `prefix`; none when
    the store or the experiment does not exist (nothing is created)."""
    try:
        require_store(uri)
    except ValueError:
        return []
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=10_000, filter_string=(
        f"tags.`lrtune.kind` = 'sweep' and tags.`lrtune.sweep` LIKE {quoted(prefix + '%')}"))
    return [r.data.tags["lrtune.sweep"] for r in runs]


def kill_at_once(sweep: Sweep, trial_runs: TrialRuns, signum: int) -> None:
    """End the sweep's open trial runs and its parent run KILLED, without waiting for the queued
    logging (a second signal: the sweep exits at once; `--resume` completes the runs)."""
    for run_id in list(trial_runs.open):
        sweep.client.set_terminated(run_id, "KILLED")
    sweep.client.set_tag(sweep.run_id, NOTE_TAG, f"lrtune sweep {sweep.name} ended KILLED by a second signal "
                                                 f"({signum}) before it finished: `lrtune sweep <config> --resume` "
                                                 f"continues it.")
    sweep.client.set_terminated(sweep.run_id, "KILLED")


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
            where = "tags.`lrtune.kind` = 'sweep'" + (f" and tags.`lrtune.sweep` = {quoted(sweep)}" if sweep else "")
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
        ok = run.info.experiment_id in experiment_ids and run.data.tags.get("lrtune.kind") == "sweep"
        return run if ok else None

    def _children(self, kind: str) -> list:
        return self.client.search_runs([self.experiment_id], max_results=10_000, filter_string=(
            f"tags.`{PARENT_TAG}` = '{self.run_id}' and tags.`lrtune.kind` = '{kind}'"))

    def ranked(self) -> tuple[list[dict], str]:
        """One row per trial, best first in the sweep's mode (failed runs and runs without the
        metric last: a failed trial never ranks, whatever it reported first), and the metric's name
        (the parent's `lrtune.metric` tag)."""
        trials = self._children("trial")
        metric, sign = self.metric, -1.0 if self.mode == "max" else 1.0
        rows = []
        for t in trials:
            p, m = t.data.params, t.data.metrics
            lr = p.get("peak_lr") or p.get("max_lr") or p.get("lr")  # peak_lr: sweeps since issue 16
            rows.append(dict(run_id=t.info.run_id, trial_id=t.data.tags.get("lrtune.trial_id"),
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
        for r in self._children("range_test"):
            curve = json.loads(read_artifact(self.client, r.info.run_id, "range_test.json"))
            out.append(dict(curve, optimizer=r.data.tags["optimizer"], weight_decay=float(r.data.tags["weight_decay"])))
        return sorted(out, key=lambda c: (c["optimizer"], c["weight_decay"]))

    def seeds(self) -> dict[str, dict]:
        """The sweep's seeds (`seeds.json`: optimizer -> OptimizerSeed.to_dict()); {} when it logged
        none (a blind sweep)."""
        if "seeds.json" not in [a.path for a in self.client.list_artifacts(self.run_id)]:
            return {}
        return json.loads(read_artifact(self.client, self.run_id, "seeds.json"))

    def optuna_study(self) -> tuple[str, str]:
        """The Optuna storage and study name of this sweep."""
        params = self.run.data.params
        storage = params.get(f"{CONFIG_PREFIX}tracking.optuna_storage") or params.get("tracking.optuna_storage")
        return storage or "sqlite:///optuna.db", self.name

    def log_report_artifact(self, path: str) -> None:
        self.client.log_artifact(self.run_id, path, "report")


def _metrics(result: dict, now: int) -> list:
    """The metrics of one epoch's result (every finite number but NOT_METRICS, `lr` and `momentum`
    as RENAMED), at step = epoch."""
    step = int(result.get("epoch", result.get("training_iteration", 0)))
    return [Metric(RENAMED.get(k, k), float(v), now, step) for k, v in sorted(result.items())
            if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


RETRY_S, GIVE_UP_S = 5.0, 30 * 60.0  # while a tracking server does not answer


def _unreachable(e: MlflowException) -> bool:
    """Whether MLflow's HTTP client could not reach the server (not a refusal by the server)."""
    text = str(e)
    return "Max retries exceeded" in text or "Connection refused" in text or "ConnectionError" in text


def _status(last: dict) -> str:
    status = last.get("status", "finished")
    return "stopped" if status == "running" else status  # ended early without diverging: stopped


def read_artifact(client: MlflowClient, run_id: str, path: str) -> str:
    """A run's text artifact, from the store this client talks to (not the global tracking URI)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small file
    with tempfile.TemporaryDirectory() as d:
        return Path(client.download_artifacts(run_id, path, d)).read_text()


def exported_workflow(uri: str, run_id: str) -> tuple[dict, dict]:
    """A trial run's workflow (its workflow.yaml artifact) and where it came from. ValueError names
    what is wrong when the run is not a finished trial of an lrtune sweep."""
    require_store(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"RUN_ID: no MLflow run {run_id!r} in {uri}") from None
    kind = run.data.tags.get("lrtune.kind")
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


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s[:6000]


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"


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


def workflow_origin(uri: str, run_id: str) -> dict:
    """Where a trial's exported workflow comes from (the exported YAML's `origin`)."""
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    return dict(run_id=run_id, sweep_run_id=run.data.tags.get(PARENT_TAG),
                experiment=client.get_experiment(run.info.experiment_id).name, tracking_uri=uri)


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
        self.client, self.uri, origin = MlflowClient(tracking_uri=uri), uri, origin or {}
        sweep = self._run(origin.get("sweep_run_id"))
        name = (experiment or (sweep and self.client.get_experiment(sweep.info.experiment_id).name)
                or origin.get("experiment") or "lrtune")
        self.experiment, self.experiment_id = name, experiment_id(self.client, name)
        tags = {"lrtune.kind": "train", "status": "running", "optimizer": workflow["optimizer"],
                "schedule": workflow["schedule"]}
        if origin:
            tags["lrtune.source_run_id"] = origin["run_id"]
        if origin.get("sweep_run_id"):
            tags["lrtune.sweep_run_id"] = origin["sweep_run_id"]
        self.parent = sweep.info.run_id if sweep and sweep.info.experiment_id == self.experiment_id else None
        if self.parent:
            tags[PARENT_TAG] = self.parent
        run = self.client.create_run(self.experiment_id, run_name=f"train-{workflow['optimizer']}-"
                                     f"{workflow['schedule']}", tags=tags)
        self.run_id, self.ended = run.info.run_id, False
        params = dict(workflow, peak_lr=peak_lr(workflow))
        self.client.log_batch(self.run_id, params=[Param(k, _short(v)) for k, v in params.items()])
        self.client.log_text(self.run_id, yaml.safe_dump(workflow, sort_keys=False), WORKFLOW_ARTIFACT)

    def _run(self, run_id: str | None):
        try:
            return self.client.get_run(run_id) if run_id else None
        except MlflowException:
            return None  # exported from another store: the tags still name it

    def log_epoch(self, row: dict) -> None:
        metrics = _metrics(row, int(time.time() * 1000))
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_model(self, model, epoch: int) -> str:
        return log_model(self.uri, self.run_id, model, epoch)

    def end(self, status: str, epochs: int) -> None:
        """status: finished or diverged (the run is FINISHED either way, as a trial's)."""
        self.client.log_batch(self.run_id, tags=[RunTag("status", status)],
                              metrics=[Metric("epochs_run", float(epochs), int(time.time() * 1000), 0)])
        self.client.set_terminated(self.run_id, "FINISHED")
        self.ended = True

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is not None and not self.ended:
            failed = not isinstance(error, KeyboardInterrupt)
            tags = [RunTag("status", "failed" if failed else "stopped")]
            if failed:
                tags.append(RunTag("error", f"{type(error).__name__}: {error}"[:5000]))
            self.client.log_batch(self.run_id, tags=tags)
            self.client.set_terminated(self.run_id, "FAILED" if failed else "KILLED")
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
