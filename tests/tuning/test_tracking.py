from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from tuning.tracking import Sweep, TrialRuns


def _trial(trial_id, **config):
    return SimpleNamespace(trial_id=trial_id, config=dict(optimizer="adamw", schedule="sgdr", **config))


def test_a_dying_sweep_leaves_no_trial_run_open(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = Sweep(uri, "exp", "s-1", {"epochs": 3})
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
    by_trial = {r.data.tags["lrtune.trial_id"]: r for r in sweep.trial_runs()}
    assert by_trial["a"].info.status == "FINISHED" and by_trial["a"].data.tags["status"] == "finished"
    assert by_trial["b"].info.status == "KILLED" and by_trial["b"].data.tags["status"] == "stopped"
    assert client.get_run(sweep.run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(by_trial["a"].info.run_id, "accuracy")] == [1, 2]
    assert by_trial["a"].data.params["lr"] == "0.1"
