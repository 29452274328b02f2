"""A tracking server that goes down mid-sweep and comes back: the sweep says it is waiting, the
trials go on, the logging catches up once the server answers, and the records are whole (every
epoch of every trial once, nothing RUNNING). A real `mlflow server`, stopped and restarted on its
port with its store."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.tuning.conftest import free_port

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]


def _server(tmp_path, port) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                             "--artifacts-destination", str(tmp_path / "server-artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("mlflow server did not come up within 90 s")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_a_tracking_server_down_mid_sweep_is_waited_for_and_caught_up(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _server(tmp_path, port)
    cfg = dict(name="down", task="tests.faults.server_tasks:one_epoch_a_second", epochs=8, batch_size=16,
               optimizers=["adamw"], schedules=["constant"], stopping=dict(scheduler="none"),
               search=dict(num_samples=2, max_concurrent=2, seeded=False, points_to_evaluate=[
                   dict(optimizer="adamw", schedule="constant", lr=lr, weight_decay=1e-4, momentum=0.9)
                   for lr in (0.01, 0.02)]),
               tracking=dict(mlflow_uri=uri, experiment="down", optuna_storage=f"sqlite:///{tmp_path}/optuna.db"),
               storage_path=str(tmp_path / "ray_results"), checkpoint_every_s=0)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    sweep = subprocess.Popen([sys.executable, "-m", "tuning.cli", "sweep", "sweep.yaml", "--verbose", "0"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = MlflowClient(uri)
        deadline = time.time() + 120
        while time.time() < deadline:  # until a trial has logged an epoch
            exp = client.get_experiment_by_name("down")
            runs = client.search_runs([exp.experiment_id], "tags.`lrtune.kind` = 'trial'") if exp else []
            if any(r.data.metrics.get("score") for r in runs):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no trial logged an epoch within 120 s")
        _stop(server)
        time.sleep(12)  # the trials go on meanwhile
        server = _server(tmp_path, port)
        out, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        _stop(server)
    assert sweep.returncode == 0, out[-2000:] + err[-3000:]
    assert f"the MLflow tracking server at {uri} does not answer; logging waits and retries" in err
    assert f"the MLflow tracking server at {uri} answers again after" in err
    client = MlflowClient(f"sqlite:///{tmp_path}/server.db")  # the store itself, the server gone
    exp = client.get_experiment_by_name("down")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert sorted(r.data.tags["lrtune.kind"] for r in runs) == ["sweep", "trial", "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for t in (r for r in runs if r.data.tags["lrtune.kind"] == "trial"):
        steps = [m.step for m in client.get_metric_history(t.info.run_id, "score")]
        assert sorted(steps) == list(range(1, 9)), steps  # every epoch once
        assert t.data.tags["status"] == "finished" and t.data.metrics["epochs_run"] == 8
