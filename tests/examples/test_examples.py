"""The five forms of user code in examples/tasks/, each through `lrtune sweep` end to end (from the
repository root, as the README runs them), and its best trial's `lrtune export` -> `lrtune train`
re-running to the trial's metric."""

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tuning.cli import main

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ["image_folder", "dict_batch", "two_outputs", "lightning_module", "own_loop"]


def _sweep(name: str, tmp_path: Path) -> tuple[dict, str]:
    cfg = yaml.safe_load((ROOT / "examples" / "tasks" / f"{name}.yaml").read_text())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg["tracking"] = dict(mlflow_uri=uri, experiment=name, optuna_storage=f"sqlite:///{tmp_path}/optuna.db")
    cfg["storage_path"] = str(tmp_path / "ray_results")
    if name == "image_folder":
        from examples.tasks.image_folder import write_digits

        cfg["data_dir"] = str(write_digits(tmp_path / "digits-png"))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, str(path)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_sweeps_and_its_best_reruns_equal(name, ray_session, tmp_path, monkeypatch, capsys):
    if name == "lightning_module":
        pytest.importorskip("lightning", reason="the lightning extra (lrtune[lightning]) is not installed")
    monkeypatch.chdir(ROOT)  # task strings are importable from the repository root, as the README runs them
    cfg, path = _sweep(name, tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["sweep", path, "--verbose", "0"])
    assert code == 0, out.getvalue()
    client = MlflowClient(cfg["tracking"]["mlflow_uri"])
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get("lrtune.kind") == "trial"]
    assert len(trials) == cfg["search"]["num_samples"]
    assert all(t.info.status == "FINISHED" and t.data.tags["status"] == "finished" for t in trials)
    for t in trials:
        assert sorted(m.step for m in client.get_metric_history(t.info.run_id, "accuracy")) == list(
            range(1, cfg["epochs"] + 1))
    tests = [r for r in runs if r.data.tags.get("lrtune.kind") == "range_test"]
    assert tests and all(r.data.tags["status"] == "ok" for r in tests)  # the range tests ran the task's step
    best = max(trials, key=lambda t: t.data.metrics["accuracy"])
    assert best.data.metrics["accuracy"] > 0.5
    workflow = tmp_path / "workflow.yaml"
    assert main(["export", best.info.run_id, "-o", str(workflow), "--tracking-uri", cfg["tracking"]["mlflow_uri"]]) == 0
    exported = yaml.safe_load(workflow.read_text())
    for key in ("accumulate", "grad_clip"):
        if cfg.get(key) is not None:
            assert exported[key] == cfg[key]
    capsys.readouterr()
    assert main(["train", str(workflow), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["epochs_run"] == cfg["epochs"]
    # the same computation on the same CPU thread count: the exported workflow re-runs equal
    assert again["accuracy"] == pytest.approx(best.data.metrics["accuracy"], abs=1e-6)
