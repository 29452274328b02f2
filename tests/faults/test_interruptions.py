"""Interruptions of a real `lrtune sweep` process (issue 17, points 1-4 and 7): each leaves a true
record (runs per status, epochs per run, Optuna trial states, files), and `--resume` repairs it:
every trial done once, every epoch logged once, nothing left RUNNING, one parent run."""

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 5


def _config(tmp: Path, **over) -> Path:
    cfg = dict(name="sig", task="tests.faults.slow_tasks:slow", epochs=EPOCHS, batch_size=50,
               optimizers=["adamw"], schedules=["constant"], stopping=dict(scheduler="none"),
               search=dict(num_samples=2, max_concurrent=1, seeded=False, seed=0), resources=dict(cpu=1, gpu=0),
               tracking=dict(mlflow_uri=f"sqlite:///{tmp}/mlflow.db", experiment="sig",
                             optuna_storage=f"sqlite:///{tmp}/optuna.db"),
               storage_path=str(tmp / "ray_results"))
    cfg.update(over)
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(tmp: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.Popen([sys.executable, "-m", "tuning.cli", "sweep", str(tmp / "sweep.yaml"), "--verbose", "0",
                             *args], cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _client(tmp: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")


def _runs(tmp: Path):
    client = _client(tmp)
    exp = client.get_experiment_by_name("sig")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    parents = [r for r in runs if r.data.tags.get("lrtune.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("lrtune.kind") == "trial"]
    return client, parents, trials


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - the store is being created by the sweep
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"not ready in {timeout} s: {proc.communicate()[0][-3000:]}")


def _a_trial_at_epoch_1(tmp: Path):
    """Ready when a trial has logged an epoch; read with sqlite3, read-only: an MlflowClient would
    create the store's tables while the sweep does."""
    def ready():
        with contextlib.closing(sqlite3.connect(f"file:{tmp}/mlflow.db?mode=ro", uri=True)) as db:
            return db.execute("select count(*) from metrics where key = 'score'").fetchone()[0] > 0
    return ready


def _rows(out: str) -> list[list[str]]:
    """The ranked rows of a printed table (rank first, the MLflow run id last)."""
    return [line.split() for line in out.splitlines()
            if re.match(r"\s*\d+\s", line) and re.search(r"\b[0-9a-f]{32}$", line.strip())]


def _epochs(client, run, metric: str = "score") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))


def _study(tmp: Path, parent):
    return optuna.load_study(study_name=parent.info.run_name, storage=f"sqlite:///{tmp}/optuna.db")


def _assert_interrupted(tmp: Path, code: int, out: str, expected_code: int) -> None:
    """The records a signal leaves: the parent KILLED, every trial run ended (open ones KILLED with
    epochs_run and workflow.yaml), none counted finished that did not finish."""
    assert code == expected_code, out[-3000:]
    client, parents, trials = _runs(tmp)
    assert [p.info.status for p in parents] == ["KILLED"], out[-3000:]
    assert "summary.json" not in [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    assert trials and all(t.info.status in ("KILLED", "FINISHED") for t in trials)
    assert any(t.info.status == "KILLED" for t in trials)
    for t in trials:
        epochs = _epochs(client, t)
        assert epochs == list(range(1, len(epochs) + 1))
        assert t.data.metrics["epochs_run"] == len(epochs)
        assert "workflow.yaml" in [a.path for a in client.list_artifacts(t.info.run_id)]
        if t.info.status == "KILLED":
            assert t.data.tags["status"] == "stopped" and len(epochs) < EPOCHS
        else:
            assert t.data.tags["status"] == "finished" and len(epochs) == EPOCHS


def _assert_resumed(tmp: Path, trials_expected: int = 2, epochs: int = EPOCHS, metric: str = "score") -> None:
    """After --resume: one parent FINISHED, every trial once and FINISHED with every epoch once,
    every Optuna trial COMPLETE (none RUNNING), no trial directory without its trial."""
    client, parents, trials = _runs(tmp)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(trials) == trials_expected
    assert len({t.data.tags["lrtune.trial_id"] for t in trials}) == trials_expected
    for t in trials:
        assert t.info.status == "FINISHED" and t.data.tags["status"] == "finished"
        assert _epochs(client, t, metric) == list(range(1, epochs + 1))
        assert t.data.metrics["epochs_run"] == epochs
    assert parents[0].data.metrics["trials_finished"] == trials_expected
    study = _study(tmp, parents[0])
    # and trials a killed driver had asked for after Tune last saved its state: FAIL, marked lost
    assert sum(s.state.name == "COMPLETE" for s in study.trials) == trials_expected
    assert all(s.state.name == "FAIL" and s.user_attrs["status"] == "lost"
               for s in study.trials if s.state.name != "COMPLETE"), [(s.state.name, s.user_attrs) for s in study.trials]
    dirs = {p.name.removeprefix("trial_") for p in (tmp / "ray_results" / parents[0].info.run_name).glob("trial_*")}
    assert dirs == {t.data.tags["lrtune.trial_id"] for t in trials}


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_mid_trial_ends_the_sweep_killed_and_resume_finishes_it(tmp_path, sig, code):
    """Points 1 and 2: Ctrl-C (Tune's own handler used to make it a success, exit 0, parent
    FINISHED) and SIGTERM (Ray's C++ side used to abort, exit -6)."""
    _config(tmp_path)
    proc = _start(tmp_path)
    _wait_for(proc, _a_trial_at_epoch_1(tmp_path))
    proc.send_signal(sig)
    code_, out = _finish(proc)
    _assert_interrupted(tmp_path, code_, out, code)
    _, (parent,), _ = _runs(tmp_path)
    assert {s.state.name for s in _study(tmp_path, parent).trials} <= {"RUNNING", "COMPLETE"}
    code_, out = _finish(_start(tmp_path, "--resume"))
    assert code_ == 0, out[-3000:]
    _assert_resumed(tmp_path)


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    _config(tmp_path)
    proc = _start(tmp_path)
    _wait_for(proc, _a_trial_at_epoch_1(tmp_path))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    code, out = _finish(proc)
    assert code == 130 and time.time() - t0 < 10, out[-3000:]
    _, parents, _ = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    code, out = _finish(_start(tmp_path, "--resume"))
    assert code == 0, out[-3000:]
    _assert_resumed(tmp_path)


def test_a_trial_whose_step_raises_is_failed_and_never_the_best(tmp_path):
    """Point 7: SGDW trials raise in their second epoch (after a better first epoch than any AdamW
    trial): they count failed, never rank, and `Export the best` and `report` name a finished one."""
    _config(tmp_path, task="tests.faults.slow_tasks:raises_for_sgdw", epochs=3, optimizers=["adamw", "sgdw"],
            search=dict(num_samples=4, max_concurrent=2, seeded=False, points_to_evaluate=[
                dict(optimizer=o, schedule="constant", lr=lr, weight_decay=1e-4, momentum=0.9)
                for o, lr in (("sgdw", 0.01), ("adamw", 0.01), ("sgdw", 0.02), ("adamw", 0.02))]))
    code, out = _finish(_start(tmp_path))
    assert code == 0, out[-3000:]
    client, (parent,), trials = _runs(tmp_path)
    assert parent.info.status == "FINISHED"
    failed = [t for t in trials if t.data.params["optimizer"] == "sgdw"]
    finished = [t for t in trials if t.data.params["optimizer"] == "adamw"]
    assert len(failed) == len(finished) == 2
    assert all(t.info.status == "FAILED" and t.data.tags["status"] == "failed" for t in failed)
    assert all(t.info.status == "FINISHED" and t.data.tags["status"] == "finished" for t in finished)
    assert parent.data.metrics["trials_failed"] == 2 and parent.data.metrics["trials_finished"] == 2
    best = max(finished, key=lambda t: t.data.metrics["score"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert "2 finished, 2 failed" in out
    assert f"lrtune export {best.info.run_id}" in out
    assert [r[-1] for r in _rows(out)] == sorted((t.info.run_id for t in finished), key=lambda r: r != best.info.run_id)
    assert sorted(s.state.name for s in _study(tmp_path, parent).trials) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    report = subprocess.run([sys.executable, "-m", "tuning.cli", "report", "--no-plots", "--tracking-uri",
                             f"sqlite:///{tmp_path}/mlflow.db"], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert report.returncode == 0, report.stderr
    assert f"lrtune export {best.info.run_id}" in report.stdout
    assert [r[-1] for r in _rows(report.stdout)[:2]] == [best.info.run_id, next(t.info.run_id for t in finished if t is not best)]


def _range_tests_running(tmp: Path):
    def ready():
        with contextlib.closing(sqlite3.connect(f"file:{tmp}/mlflow.db?mode=ro", uri=True)) as db:
            return db.execute("select count(*) from tags where key = 'lrtune.kind' and value = 'sweep'").fetchone()[0]
    return ready


def test_killed_in_the_range_tests_resume_reuses_the_parent(tmp_path):
    """Point 3: a sweep killed (SIGKILL) while its range tests run has no Tune state yet; --resume
    used to refuse it ("no sweep named ...") and the parent stayed RUNNING. It is found by its
    folder (made as the sweep starts, without Tune's state yet), its MLflow
    parent run is reused (one parent, FINISHED), and its range tests logged once."""
    _config(tmp_path, task="digits", model="mlp", epochs=2, range_test=dict(num_iter=30, weight_decays=[0, 1e-4]),
            search=dict(num_samples=2, max_concurrent=1, seeded=True, seed=0))
    proc = _start(tmp_path)
    _wait_for(proc, _range_tests_running(tmp_path))
    proc.kill()
    proc.wait(30)
    _, parents, trials = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["RUNNING"] and not trials
    (folder,) = (tmp_path / "ray_results").iterdir()
    assert folder.name == parents[0].info.run_name and not list(folder.glob("experiment_state-*"))
    code, out = _finish(_start(tmp_path, "--resume"))
    assert code == 0, out[-3000:]
    _assert_resumed(tmp_path, epochs=2, metric="accuracy")
    client, (parent,), _ = _runs(tmp_path)
    tests = client.search_runs([parent.info.experiment_id], filter_string="tags.`lrtune.kind` = 'range_test'")
    assert len(tests) == 2 and all(t.info.status == "FINISHED" for t in tests)
    assert parent.data.tags["lrtune.resumed"] == "true"


def _trials_started(tmp: Path, n: int):
    def ready():
        with contextlib.closing(sqlite3.connect(f"file:{tmp}/mlflow.db?mode=ro", uri=True)) as db:
            return db.execute("select count(*) from tags where key = 'lrtune.kind' and value = 'trial'").fetchone()[0] >= n
    return ready


@pytest.mark.parametrize("started", [1, 2], ids=["first-trial", "second-trial"])
def test_killed_as_a_trial_starts_resume_runs_each_warm_start_point_once(tmp_path, started):
    """Point 4: the driver killed (SIGKILL) right after its first, or its second, trial started; the
    second: after the first was told to Optuna, and before Tune saved that (it saves every 10 s).
    That second trial used to be lost: its warm-start point never ran, its Optuna trial and MLflow
    run stayed RUNNING, and Tune's re-run of the first re-told Optuna ("Cannot tell a COMPLETE
    trial"). After --resume each warm-start point has run exactly once, no Optuna trial is left
    RUNNING or told twice (a lost one is FAIL, marked lost), no MLflow run is left of a lost
    trial, and no trial directory is left without its trial."""
    points = [dict(optimizer="adamw", schedule="constant", lr=lr, weight_decay=1e-4, momentum=0.9) for lr in (0.01, 0.02)]
    _config(tmp_path, search=dict(num_samples=3, max_concurrent=1, seeded=False, seed=0, points_to_evaluate=points))
    proc = _start(tmp_path)
    _wait_for(proc, _trials_started(tmp_path, started))
    proc.kill()
    proc.wait(30)
    code, out = _finish(_start(tmp_path, "--resume"))
    assert code == 0, out[-3000:]
    assert "Cannot tell a COMPLETE trial" not in out
    _assert_resumed(tmp_path, trials_expected=3)
    _, _, trials = _runs(tmp_path)
    lrs = sorted(float(t.data.params["lr"]) for t in trials)
    assert lrs.count(0.01) == 1 and lrs.count(0.02) == 1, lrs
