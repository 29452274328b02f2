import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from tests.stores import mlflow_store
from tuning.tracking.callback import TrialRuns
from tuning.tracking.writer import SweepRecord


def _trial(trial_id, **config):
    return SimpleNamespace(trial_id=trial_id, config=dict(optimizer="adamw", schedule="sgdr", **config))


def test_a_dying_sweep_leaves_no_trial_run_open(tmp_path):
    uri = mlflow_store(tmp_path / "mlflow.db")
    sweep = SweepRecord(uri, "exp", "s-1", {"epochs": 3})
    runs = TrialRuns(sweep)
    done, cut = _trial("a", lr=0.1), _trial("b", lr=0.2)
    for t in (done, cut):
        runs.on_trial_start(0, [], t)
        runs.on_trial_result(0, [], t, dict(epoch=1, accuracy=0.5, lr=0.1, status="running"))
    runs.on_trial_result(0, [], done, dict(epoch=2, accuracy=0.7, lr=0.05, status="finished"))
    runs.on_trial_complete(0, [], done)
    runs.close(abandoned="KILLED")  # the sweep was interrupted while "b" ran
    sweep.end("KILLED")

    client = MlflowClient(uri)
    by_trial = {r.data.tags["lrtune.trial_id"]: r for r in sweep.trial_runs("trial")}
    assert by_trial["a"].info.status == "FINISHED" and by_trial["a"].data.tags["status"] == "finished"
    assert by_trial["b"].info.status == "KILLED" and by_trial["b"].data.tags["status"] == "stopped"
    assert client.get_run(sweep.run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(by_trial["a"].info.run_id, "accuracy")] == [1, 2]
    assert by_trial["a"].data.params["lr"] == "0.1"


def test_each_trial_run_gets_its_schedule_plot_drawn_by_the_actor_after_it_ends(ray_session, tmp_path):
    from tuning.plots import schedule_png_in_ray

    uri = mlflow_store(tmp_path / "mlflow.db")
    sweep = SweepRecord(uri, "exp", "s-1", {"epochs": 2})
    runs = TrialRuns(sweep, schedule_png_in_ray)
    schedules = dict(a=dict(schedule="one_cycle", max_lr=0.1), b=dict(schedule="constant", lr=1e-3),
                     c=dict(schedule="sgdr", lr=0.05, T_0=4, eta_min=1e-4))
    for trial_id, s in schedules.items():
        t = SimpleNamespace(trial_id=trial_id, config=dict(optimizer="sgdw", epochs=2, steps_per_epoch=4,
                                                          weight_decay=0.0, **s))
        runs.on_trial_start(0, [], t)
        runs.on_trial_result(0, [], t, dict(epoch=2, accuracy=0.7, status="finished"))
        runs.on_trial_complete(0, [], t)
    runs.close()
    sweep.end()

    client = MlflowClient(uri)
    for r in sweep.trial_runs("trial"):
        assert r.info.status == "FINISHED"
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["lr_schedule.png", "workflow.yaml"]
        with tempfile.TemporaryDirectory() as d:
            png = Path(client.download_artifacts(r.info.run_id, "lr_schedule.png", d)).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert runs.plots == []


def test_log_ticks_are_1_2_5_over_narrow_ranges_and_at_most_7_decades_over_wide_ones():
    from tuning.plots import _log_ticks

    assert _log_ticks(1.5e-4, 4e-3) == pytest.approx([1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2])
    assert _log_ticks(1e-9, 1e-4) == pytest.approx([1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4])
    assert len(_log_ticks(1e-12, 1.0)) <= 7


def test_experiments_keep_their_artifacts_beside_a_sqlite_store_not_in_the_working_directory(tmp_path):
    """A sweep's experiment and a `lrtune train` run's: artifacts under <the store's folder>/mlruns,
    wherever the command ran from (the test runs in tmp_path; the store sits in tmp_path/store)."""
    from tuning.tracking.store import artifact_location
    from tuning.tracking.writer import TrainRun

    store = tmp_path / "store"
    store.mkdir()
    uri = mlflow_store(store / "mlflow.db")
    sweep = SweepRecord(uri, "exp", "s-1", {"epochs": 3})
    MlflowClient(uri).log_text(sweep.run_id, "x", "note.txt")
    train = TrainRun(uri, "trained", dict(optimizer="adamw", schedule="constant", lr=0.01))
    MlflowClient(uri).log_text(train.run_id, "y", "note.txt")
    client = MlflowClient(uri)
    for name in ("exp", "trained"):
        assert client.get_experiment_by_name(name).artifact_location == (store / "mlruns").as_uri()
    assert len(list((store / "mlruns").glob("*/artifacts/note.txt"))) == 2  # <run id>/artifacts
    assert not (tmp_path / "mlruns").exists()
    assert artifact_location("http://127.0.0.1:5000") is None  # a server keeps its own
