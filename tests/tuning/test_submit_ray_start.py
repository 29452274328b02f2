"""The `ray submit` path end to end against a cluster this test starts with `ray start --head`.

Why not the cluster launcher itself (`ray up` + `ray submit` with the `local` provider over SSH to
127.0.0.1): the launcher's start commands must begin with `ray stop` (every real cluster.yaml
has it, so that `ray up` can restart a cluster), and `ray stop` kills every Ray process on the
machine, the test session's own cluster included; on a CI machine the launcher's node and the
test runner are the same host. What `ray submit` adds to the script (rsync of the file, then
`python submit.py ARGS` on the head over SSH) is reproduced here: the script runs as a separate
process on the head's machine with its default address, $RAY_ADDRESS (under `ray submit` that is
unset and the default is "auto", the cluster of the node; this test's cluster keeps its address
file in its own temp dir, where "auto" does not look, so that nothing else finds it); the sweep's
tracking server comes from the config (an `mlflow server` on 127.0.0.1).

The cluster runs in its own temp dir with its own ports, so it cannot be mistaken for the test
session's (`ray.init(address="local")`), and it is stopped by killing its process group.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from .conftest import free_port

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")  # shared by a module's tests: each reads what it did from logs it lists first
def ray_head():
    """`ray start --head --block` as its own process group: (address, temp dir)."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # Ray's socket paths must stay under 107 characters
    port = free_port()
    ports = {f"--{k}": str(free_port()) for k in ("dashboard-agent-listen-port",
                                                   "dashboard-agent-grpc-port", "metrics-export-port",
                                                   "runtime-env-agent-port", "node-manager-port",
                                                   "object-manager-port")}
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(port),
           "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
           "--temp-dir", temp, "--disable-usage-stats", *[a for kv in ports.items() for a in kv]]
    log = open(Path(temp) / "ray-start.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address_file = Path(temp) / "ray_current_cluster"  # in its temp dir: no other ray.init() finds it
    try:
        deadline = time.time() + 90
        while not address_file.exists() or not _answers(address_file.read_text().strip()):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start --head did not come up: {(Path(temp) / 'ray-start.log').read_text()[-2000:]}")
            time.sleep(1)
        address = address_file.read_text().strip()
        assert address.endswith(f":{port}")
        yield address, Path(temp)
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the cluster's process group (never `ray stop`: it stops every Ray on the machine,
    the test session's too), SIGKILL to whatever is left after 5 s (`ray start --block` was seen
    to outlast 30 s of SIGTERM, each time: a test's cluster has nothing to save)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _answers(address: str) -> bool:
    done = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}); "
                           "print(int(ray.cluster_resources().get('CPU', 0)))"],
                          env=_client_env(address), capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and done.stdout.strip().endswith("2")


def _client_env(address: str) -> dict:
    """A process on the head that finds the cluster through $RAY_ADDRESS. `ray start` clusters use
    token authentication (the token in ~/.ray/auth_token); Ray turns it on by itself only for
    address "auto", so a driver given an address says RAY_AUTH_MODE=token, as the README tells users."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_ADDRESS=address, RAY_AUTH_MODE="token",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return env


def test_submit_script_against_a_ray_start_head(ray_head, mlflow_server, tmp_path):
    address, temp = ray_head
    cfg = dict(name="on-head", task="digits", model="mlp", epochs=2, batch_size=100,
               optimizers=["adamw"], schedules=["one_cycle", "sgdr"],
               range_test=dict(num_iter=30, weight_decays=[0]), search=dict(num_samples=3, max_concurrent=2),
               stopping=dict(scheduler="none"),  # every trial runs both epochs (an SGDR restart at 1 is a fair stop)
               tracking=dict(mlflow_uri=mlflow_server, experiment="on-head",
                             optuna_storage=f"sqlite:///{tmp_path}/optuna.db"),
               storage_path=str(tmp_path / "shared" / "ray_results"))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    done = subprocess.run([sys.executable, str(ROOT / "tuning" / "submit.py"), "sweep.yaml", "--verbose", "0"],
                          cwd=tmp_path, env=_client_env(address), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Ray cluster: {address}; MLflow tracking server: {mlflow_server}" in done.stdout

    # The script's driver and the trials ran in the `ray start` cluster (its logs are in its temp dir).
    logs = next(temp.glob("session_*/logs"))
    drivers = list(logs.glob("python-core-driver-*.log"))
    assert drivers, f"no driver connected to the ray start cluster: {sorted(p.name for p in logs.iterdir())}"
    assert list(logs.glob("worker-*.out")), "no worker of the ray start cluster ran anything"

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("on-head").experiment_id], max_results=100)
    kinds = sorted(r.data.tags.get("lrtune.kind") for r in runs)
    assert kinds == ["range_test", "sweep", "trial", "trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        if run.data.tags["lrtune.kind"] == "trial":
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "accuracy")) == [1, 2]
    sweeps = list((tmp_path / "shared" / "ray_results").glob("on-head-*"))
    assert len(sweeps) == 1
    trial_dirs = list(sweeps[0].glob("trial_*"))
    assert len(trial_dirs) == 3 and all(list(t.glob("checkpoint_*")) for t in trial_dirs)  # on the storage
    assert not (tmp_path / "mlflow.db").exists()
