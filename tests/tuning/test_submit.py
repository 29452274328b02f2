"""The `ray submit` path against a cluster on this machine: tuning/submit.py run as `ray submit`
runs it (a script on the head, with the arguments after `--`), against this session's running
Ray cluster (`ray submit` needs the cluster launcher and SSH; the script is what it runs, so the
script is what is tested end to end here), reporting to a real `mlflow server` started on
127.0.0.1 on a free port."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from .conftest import free_port

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]


def test_submit_script_runs_the_sweep_on_a_running_cluster_into_an_mlflow_server(ray_session, mlflow_server, tmp_path):
    import ray

    cfg = dict(name="submitted", task="digits", model="mlp", epochs=2, batch_size=100,
               optimizers=["adamw"], schedules=["one_cycle", "constant"],
               range_test=dict(num_iter=30, weight_decays=[0]), search=dict(num_samples=2, max_concurrent=2),
               stopping=dict(scheduler="none"),  # both trials are 1-cycle: one may stop at half its 2 epochs
               tracking=dict(experiment="submitted", optuna_storage=f"sqlite:///{tmp_path}/optuna.db"),
               storage_path=str(tmp_path / "shared" / "ray_results"))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(ROOT / "tuning" / "submit.py"), "sweep.yaml", "--verbose", "0",
                           "--address", ray.get_runtime_context().gcs_address, "--tracking-uri", mlflow_server],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"MLflow tracking server: {mlflow_server}" in done.stdout and "rank" in done.stdout
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("submitted").experiment_id], max_results=100)
    kinds = sorted(r.data.tags.get("lrtune.kind") for r in runs)
    assert kinds == ["range_test", "sweep", "trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)
    trial = next(r for r in runs if r.data.tags.get("lrtune.kind") == "trial")
    assert sorted(m.step for m in client.get_metric_history(trial.info.run_id, "accuracy")) == [1, 2]
    assert "workflow.yaml" in [a.path for a in client.list_artifacts(trial.info.run_id)]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local store


def test_submit_fails_fast_when_the_head_tracking_server_is_down(ray_session, tmp_path):
    import ray

    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(dict(name="down", task="digits", model="mlp", epochs=1)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.time()
    done = subprocess.run([sys.executable, str(ROOT / "tuning" / "submit.py"), "sweep.yaml",
                           "--address", ray.get_runtime_context().gcs_address,
                           "--tracking-uri", f"http://127.0.0.1:{free_port()}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "tracking.mlflow_uri: no MLflow tracking server answers" in done.stderr
    assert time.time() - t0 < 60
