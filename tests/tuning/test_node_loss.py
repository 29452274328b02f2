"""Fault tolerance with real components: a three-node Ray cluster on this machine loses a worker
node mid-sweep; every trial still finishes, the trials that lost their node continue from their
last checkpoint (their epoch count since restore shows it), and the MLflow server holds exactly one
run per trial. The cluster lives in a child process (tests/tuning/node_loss.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]


def test_a_lost_node_costs_at_most_the_epochs_since_a_checkpoint(mlflow_server, tmp_path):
    epochs = 8
    cfg = dict(name="nodeloss", task="mnist1d", model="cnn", epochs=epochs, batch_size=100,
               optimizers=["adamw"], schedules=["constant", "one_cycle"], replicas=1,
               range_test=dict(num_iter=30, weight_decays=[0]), stopping=dict(scheduler="none"),
               checkpoint_every_s=0,  # every epoch: the trial on the lost node must have one to continue from
               search=dict(num_samples=4, max_concurrent=2),
               tracking=dict(mlflow_uri=mlflow_server, experiment="nodeloss",
                             optuna_storage=f"sqlite:///{tmp_path}/optuna.db"),
               storage_path=str(tmp_path / "shared"))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "tests.tuning.node_loss", "sweep.yaml", str(tmp_path / "shared")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("NODE_LOSS ")), None)
    assert done.returncode == 0 and line, (done.stdout[-2000:], done.stderr[-4000:])
    out = json.loads(line.removeprefix("NODE_LOSS "))
    assert out["removed"] and out["alive_nodes"] == 2  # head + the surviving worker
    trials = out["trials"]
    assert len(trials) == 4 and all(t["epoch"] == epochs and t["status"] == "finished" and not t["error"]
                                    for t in trials)
    resumed = [t for t in trials if t["since_restore"] < epochs]
    assert resumed, trials  # the trial on the lost node continued from a checkpoint, not from scratch
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("nodeloss").experiment_id], max_results=100,
                              filter_string="tags.`lrtune.kind` = 'trial'")
    by_trial = sorted(r.data.tags["lrtune.trial_id"] for r in runs)
    assert by_trial == sorted(t["trial_id"] for t in trials)  # one run each, none duplicated
    for t in resumed:
        run = next(r for r in runs if r.data.tags["lrtune.trial_id"] == t["trial_id"])
        assert run.data.tags.get("lrtune.recovered") == "true" and run.data.tags["status"] == "finished"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
        assert sorted(set(steps)) == list(range(1, epochs + 1))
