"""Preflight: a sweep whose surroundings cannot work fails within seconds, naming the key, with
exit 2 and nothing written (no MLflow store, no results folder)."""

import time

import pytest
import yaml

from tuning import preflight
from tuning.cli import main
from tuning.config import ConfigError, parse

from .conftest import free_port


def _sweep(tmp_path, **over) -> list[str]:
    cfg = dict(name="pf", task="digits", model="mlp", epochs=1, batch_size=100, schedules=["constant"],
               tracking=dict(mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="pf",
                             optuna_storage=f"sqlite:///{tmp_path}/optuna.db"),
               storage_path=str(tmp_path / "ray_results"))
    for k, v in over.items():
        cfg[k] = dict(cfg[k], **v) if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return [str(path), "--verbose", "0"]


def _beyond_this_machine(what: str) -> tuple[dict, str]:
    """One more CPU, or GPU, than this test session's Ray has (asked of it, never assumed)."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
    if what == "more-gpus":
        return dict(resources=dict(gpu=gpus + 1)), (
            f"resources.gpu: a trial asks for 1 CPU and {gpus + 1:g} GPU, but no node of this Ray cluster offers "
            f"that (nodes: {cpus:g} CPU / {gpus:g} GPU)")
    return dict(resources=dict(cpu=cpus + 1)), f"resources.cpu: a trial asks for {cpus + 1:g} CPU and 0 GPU"


@pytest.mark.parametrize("over,needle", [
    ("more-gpus", None),
    ("more-cpus", None),
    ("unreachable", "tracking.mlflow_uri: no MLflow tracking server answers at http://127.0.0.1:"),
    ("file-in-the-way", "storage_path: cannot write trial results and checkpoints to"),
    ("no-folder", "tracking.optuna_storage: the folder of sqlite:////"),
])
def test_a_sweep_that_cannot_work_fails_fast_naming_the_key(over, needle, ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if over in ("more-gpus", "more-cpus"):
        over, needle = _beyond_this_machine(over)
    elif over == "unreachable":
        over = dict(tracking=dict(mlflow_uri=f"http://127.0.0.1:{free_port()}"))
    elif over == "file-in-the-way":
        (tmp_path / "afile").write_text("")
        over = dict(storage_path=str(tmp_path / "afile" / "results"))
    elif over == "no-folder":
        over = dict(tracking=dict(optuna_storage=f"sqlite:///{tmp_path}/missing/optuna.db"))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        main(["sweep", *_sweep(tmp_path, **over)])
    assert e.value.code == 2 and needle in capsys.readouterr().err
    assert time.perf_counter() - t0 < 20  # seconds, not a hang (the data load and Ray check included)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "mlflow.db" not in left and "optuna.db" not in left and "ray_results" not in left, left


def test_resources_fit_on_some_node():
    cfg = parse(dict(resources=dict(cpu=1, gpu=0.25)))
    gpu_node = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}
    cpu_node = {"Alive": True, "Resources": {"CPU": 2.0}}
    preflight.resources(cfg, [cpu_node, gpu_node])  # a fractional GPU fits on the GPU node
    with pytest.raises(ConfigError, match="resources.gpu"):
        preflight.resources(cfg, [cpu_node, dict(gpu_node, Alive=False)])  # the GPU node is gone
