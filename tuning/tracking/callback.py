"""The Ray Tune callback that records trials: one nested MLflow run per trial, metrics at step=epoch,
written through the sweep's `SweepRecord` on a logging thread of its own."""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

import ray
from mlflow.exceptions import MlflowException
from ray import tune

from .store import PLOT_ARTIFACT, metrics_of
from .writer import SweepRecord

RETRY_S, GIVE_UP_S = 5.0, 30 * 60.0  # while a tracking server does not answer


class TrialRuns(tune.Callback):
    """Ray Tune callback: one nested MLflow run per trial, metrics at step=epoch. A trial that
    restarts from a checkpoint keeps its run (no duplicate), and each run ends with a `status` tag:
    finished, diverged, stopped or failed.

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

    def __init__(self, record: SweepRecord, plot_schedule=None):
        self.record = record
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

    def __getstate__(self):  # Tune pickles callbacks with its experiment state; a pool cannot be
        state = dict(self.__dict__)
        for k in ("_pool", "_pending", "plots", "_created", "broken"):
            del state[k]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrtune-mlflow")
        self._pending, self.plots, self._created, self.broken = [], [], {}, None

    def log_later(self, fn, *args) -> None:
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
                    print(f"lrtune: the MLflow tracking server at {self.record.uri} does not answer; logging "
                          f"waits and retries every {RETRY_S:g} s, the trials go on (waited {waited:.0f} s; "
                          f"{str(e)[:160]})", file=sys.stderr, flush=True)
                    said = waited
                time.sleep(RETRY_S)
                waited += RETRY_S
                continue
            if said is not None:
                print(f"lrtune: the MLflow tracking server at {self.record.uri} answers again after "
                      f"{waited:.0f} s; the logging catches up", file=sys.stderr, flush=True)
            return result

    def _run_id(self, trial_id: str, cfg: dict) -> str:
        self.configs[trial_id] = cfg
        if trial_id not in self.runs and self.record.resumed:  # it may have the run already
            found = self.record.find_trial_run(trial_id)
            if found:
                run_id, status, epochs = found
                self.runs[trial_id], self.logged[trial_id] = run_id, epochs
                if status == "RUNNING":
                    self.open.add(run_id)
        if trial_id not in self.runs:
            self.runs[trial_id] = self.record.create_trial_run(trial_id, cfg)
            self.open.add(self.runs[trial_id])
        return self.runs[trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self.log_later(self._run_id, trial.trial_id, dict(trial.config))
        self._created[trial.trial_id] = self._pending[-1]

    def run_id_of(self, trial_id: str, timeout: float = 60.0) -> str | None:
        """A trial's MLflow run id, once the logging thread has created the run (None if it could not)."""
        created = self._created.get(trial_id)
        try:
            return created.result(timeout) if created is not None else self.runs.get(trial_id)
        except Exception:  # noqa: BLE001 - the logging error itself surfaces in close()
            return None

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.log_later(self._tag, trial.trial_id, dict(trial.config), "lrtune.restored")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A failed trial (e.g. its node was lost) about to be retried from its last checkpoint."""
        self.log_later(self._tag, trial.trial_id, dict(trial.config), "lrtune.recovered")

    def _tag(self, trial_id: str, cfg: dict, tag: str) -> None:
        self.record.tag(self._run_id(trial_id, cfg), tag)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result
        metrics = metrics_of(result, int(time.time() * 1000))
        if metrics:
            self.log_later(self._log_metrics, trial.trial_id, dict(trial.config), metrics)

    def _log_metrics(self, trial_id: str, cfg: dict, metrics: list) -> None:
        run_id = self._run_id(trial_id, cfg)
        if metrics[0].step <= self.logged.get(trial_id, 0):
            return  # re-reported by a trial restarted from an earlier checkpoint (or its start): logged
        self.record.log_epochs(run_id, metrics)
        self.logged[trial_id] = metrics[0].step

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = self.last.get(trial.trial_id, {})
        status = ended_as(last)
        self.log_later(self._end, trial.trial_id, dict(trial.config), status,
                   "FAILED" if status == "failed" else "FINISHED", last.get("error"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.log_later(self._end, trial.trial_id, dict(trial.config), "failed", "FAILED")

    def _end(self, trial_id: str, cfg: dict, status: str, mlflow_status: str, error: str | None = None) -> None:
        run_id = self._run_id(trial_id, cfg)
        epochs = float(self.last.get(trial_id, {}).get("epoch", 0))
        self.record.end_trial_run(run_id, status, mlflow_status, epochs, cfg, error)
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
            self.record.log_file(run_id, PLOT_ARTIFACT, ray.get(ref))
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
        runs = {r.data.tags.get("lrtune.trial_id"): r for r in self.record.trial_runs("trial")}
        for t in trials:
            run = runs.get(t["trial_id"])
            if run is not None and run.info.status != "RUNNING" and not every_run:
                continue
            self.log_later(self._complete, t["trial_id"], dict(t["config"]), t["history"](), t["error"])
        self.close()

    def _complete(self, trial_id: str, cfg: dict, history: list[dict], error: str | None) -> None:
        run_id = self._run_id(trial_id, cfg)
        logged = self.record.epochs_logged(run_id)
        # Tune's files hold an epoch twice when a trial re-ran it after a restart: the later one counts.
        missing = [row for epoch, row in {int(row.get("epoch", 0)): row for row in history}.items()
                   if epoch not in logged]
        self.record.log_epochs(run_id, [m for row in missing for m in metrics_of(row, int(time.time() * 1000))])
        if history:
            self.last[trial_id] = history[-1]
        if not self.record.is_running(run_id):
            return  # it had ended: only epochs were missing
        status = "failed" if error else ended_as(self.last.get(trial_id, {}))
        self._end(trial_id, cfg, status, "FAILED" if status == "failed" else "FINISHED",
                  error or self.last.get(trial_id, {}).get("error"))

    def close(self, abandoned: str | None = None) -> None:
        """Wait for the queued logging. With `abandoned` (the sweep's MLflow status, e.g. KILLED),
        also end the trial runs still open as a trial's run ends (tagged `stopped`, with epochs_run,
        the epochs it logged, and workflow.yaml), so that no run is left running."""
        self.log_later(self._log_plots, True)
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending if f.exception() is not None]
        if abandoned:
            trial_of = {run_id: trial_id for trial_id, run_id in self.runs.items()}
            for run_id in sorted(self.open):
                trial_id = trial_of.get(run_id)
                self.record.end_trial_run(run_id, "stopped", abandoned, self.logged.get(trial_id, 0),
                                          self.configs.get(trial_id))
            self.open.clear()
        if errors:
            raise RuntimeError(f"{len(errors)} MLflow logging call(s) failed; first: {errors[0]!r}") from errors[0]

    def end_at_once(self, signum: int) -> None:
        """End the open trial runs and the sweep's parent KILLED, not waiting for the queue (a second signal)."""
        self.record.end_at_once(self.open, signum)


def _unreachable(e: MlflowException) -> bool:
    """Whether MLflow's HTTP client could not reach the server (not a refusal by the server)."""
    text = str(e)
    return "Max retries exceeded" in text or "Connection refused" in text or "ConnectionError" in text


def ended_as(last: dict) -> str:
    """How a trial ended (one of store.STATUSES) from its last result: failed, finished or diverged
    as it said; a trial whose last report was mid-budget (status running), or that never reported,
    was stopped."""
    status = last.get("status")
    return status if status in ("finished", "diverged", "failed") else "stopped"
