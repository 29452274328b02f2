"""`lrtune train`: its MLflow run (params, per-epoch metrics, the trained model through
mlflow.pytorch, the link to the trial and sweep it was exported from), `--save`, `--no-mlflow`,
and how a failed, diverged or own-loop training ends. Real MLflow on a tmp sqlite store, real
training on the built-in digits task."""

import json
import re

import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from trainables.loops import train_workflow
from trainables.tasks import load_task
from trainables.loops import as_computed
from tests.stores import mlflow_store
from tuning.cli import main
from tuning.tracking.store import WORKFLOW_ARTIFACT, read_artifact
from tuning.tracking.writer import SweepRecord

WORKFLOW = dict(task="digits", model="mlp", optimizer="adamw", schedule="one_cycle", max_lr=0.01,
                weight_decay=1e-4, epochs=2, batch_size=100)


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A fresh folder as the working directory (where sqlite:///mlflow.db and mlruns/ would go),
    with no tracking URI in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _write(path, workflow: dict):
    path.write_text(yaml.safe_dump(workflow, sort_keys=False))
    return str(path)


def _exported_trial(uri: str, tmp_path) -> tuple[str, str, str]:
    """A sweep's parent run and one finished trial run with its workflow.yaml (what a sweep logs),
    exported with `lrtune export`: (workflow path, trial run id, parent run id)."""
    sweep = SweepRecord(uri, "exp", "swp-1", dict(name="swp"))
    client = MlflowClient(uri)
    trial = client.create_run(sweep.experiment_id, tags={"mlflow.parentRunId": sweep.run_id,
                                                          "lrtune.kind": "trial", "status": "finished"})
    client.log_text(trial.info.run_id, yaml.safe_dump(WORKFLOW, sort_keys=False), WORKFLOW_ARTIFACT)
    client.log_metric(trial.info.run_id, "accuracy", 0.9, step=2)
    client.set_terminated(trial.info.run_id)
    sweep.end()
    out = tmp_path / "workflow.yaml"
    assert main(["export", trial.info.run_id, "-o", str(out), "--tracking-uri", uri]) == 0
    return str(out), trial.info.run_id, sweep.run_id


def _printed_rows(out: str) -> dict[int, dict[str, str]]:
    rows = {}
    for line in out.splitlines():
        if line.startswith("epoch "):
            words = line.split()
            rows[int(words[1])] = dict(zip(words[2::2], words[3::2]))
    return rows


def _model_of(client, run_id: str, monkeypatch):
    """The run's one LoggedModel, loaded by the URI `lrtune train` prints (models:/<id>, read from
    the store the tracking URI names)."""
    outputs = client.get_run(run_id).outputs.model_outputs
    assert len(outputs) == 1
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    return outputs[0], mlflow.pytorch.load_model(f"models:/{outputs[0].model_id}")


def test_train_logs_a_run_linked_to_its_sweep_with_metrics_and_a_loadable_model(here, capsys, monkeypatch):
    uri = mlflow_store(here / "t.db")
    path, trial_id, parent_id = _exported_trial(uri, here)
    assert yaml.safe_load(open(path))["origin"] == dict(run_id=trial_id, sweep_run_id=parent_id,
                                                        experiment="exp", tracking_uri=uri)
    capsys.readouterr()
    assert main(["train", path]) == 0  # the store and experiment come from the origin
    out = capsys.readouterr().out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id],
                              filter_string="tags.`lrtune.kind` = 'train'")
    assert len(runs) == 1
    run = runs[0]
    assert f"MLflow run {run.info.run_id} in experiment 'exp', under the sweep's run {parent_id}" in out
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
    # the link: nested under the sweep's parent (not as a trial), naming the trial it re-runs
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.data.tags["lrtune.source_run_id"] == trial_id and run.data.tags["lrtune.sweep_run_id"] == parent_id
    full = dict(WORKFLOW, momentum=0.9, accumulate=1, decay_norm_and_bias=False, seed=0, replicas=1, threads=1)
    assert {k: yaml.safe_load(v) for k, v in run.data.params.items()} == dict(full, peak_lr=0.01)
    assert yaml.safe_load(read_artifact(client, run.info.run_id, WORKFLOW_ARTIFACT)) == full  # no origin
    # per-epoch metrics at step=epoch, equal to what was printed; the schedule's LR renamed
    printed = _printed_rows(out)
    assert sorted(printed) == [1, 2]
    for key, shown, fmt in (("train_loss", "train_loss", ".4f"), ("val_loss", "val_loss", ".4f"),
                            ("accuracy", "accuracy", ".4f"), ("schedule_lr", "lr", ".3g")):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [s for s, _ in history] == [1, 2], key
        assert [format(v, fmt) for _, v in history] == [printed[s][shown] for s in (1, 2)], key
    assert "lr" not in run.data.metrics and "momentum" not in run.data.metrics
    assert run.data.metrics["schedule_momentum"] == pytest.approx(0.95)  # one_cycle's momentum ends high
    # the model: a LoggedModel of the run at its last epoch, that predicts as the trained model does
    output, loaded = _model_of(client, run.info.run_id, monkeypatch)
    assert output.step == 2 and f"model: models:/{output.model_id}" in out
    task = load_task("digits")
    _, trained = train_workflow(task, WORKFLOW)  # the same seeds: the same weights, bit for bit
    x = task.val[0][:50]
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), trained.eval()(x))
    assert as_computed(task.evaluate_model(loaded, 1000)["accuracy"]) == run.data.metrics["accuracy"]


def test_save_writes_a_model_that_loads_and_predicts_the_same(here, capsys, monkeypatch):
    path, uri = _write(here / "wf.yaml", WORKFLOW), mlflow_store(here / "t.db")
    assert main(["train", path, "--save", str(here / "out" / "model"), "--json",
                 "--tracking-uri", uri, "--experiment", "mine"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["saved"] == str(here / "out" / "model") and summary["model_uri"].startswith("models:/")
    saved = mlflow.pytorch.load_model(str(here / "out" / "model"))
    client = MlflowClient(uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "mine"
    assert "mlflow.parentRunId" not in run.data.tags and "lrtune.source_run_id" not in run.data.tags
    _, logged = _model_of(client, run.info.run_id, monkeypatch)
    x = load_task("digits").val[0][:50]
    with torch.no_grad():
        assert torch.equal(saved(x), logged(x))
    assert as_computed(load_task("digits").evaluate_model(saved, 1000)["accuracy"]) == summary["accuracy"]


@pytest.mark.parametrize("target", ["folder", "file"])
def test_save_onto_an_existing_path_exits_2_before_training(here, capsys, target):
    taken = here / "taken"
    if target == "folder":
        taken.mkdir()
        (taken / "keep.txt").write_text("mine")
    else:
        taken.write_text("mine")
    with pytest.raises(SystemExit) as e:
        main(["train", _write(here / "wf.yaml", WORKFLOW), "--save", str(taken)])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and f"--save: {taken} exists and is not an empty folder; nothing was trained" in err
    assert "epoch" not in out and not (here / "mlflow.db").exists()
    assert (taken / "keep.txt" if target == "folder" else taken).read_text() == "mine"


def test_no_mlflow_logs_nothing_and_creates_no_store(here, capsys):
    (here / "empty").mkdir()  # an empty folder is a fine target
    assert main(["train", _write(here / "wf.yaml", WORKFLOW), "--no-mlflow", "--save", str(here / "empty")]) == 0
    out = capsys.readouterr().out
    assert "MLflow run" not in out and f"saved the model to {here / 'empty'}" in out
    assert sorted(p.name for p in here.iterdir()) == ["empty", "wf.yaml"]  # no mlflow.db, no mlruns/
    accuracy = float(re.search(r"finished: accuracy (\S+) after 2 epochs", out).group(1))
    saved = mlflow.pytorch.load_model(str(here / "empty"))
    assert f"{load_task('digits').evaluate_model(saved, 1000)['accuracy']:.4f}" == f"{accuracy:.4f}"


def test_own_loop_logs_no_model_and_refuses_save_diverged_logs_none_failed_is_failed(here, capsys):
    uri = mlflow_store(here / "t.db")
    client = MlflowClient(uri)
    own = dict(WORKFLOW, task="examples.tasks.own_loop:own_loop", epochs=1)
    with pytest.raises(SystemExit) as e:
        main(["train", _write(here / "own.yaml", own), "--save", str(here / "m")])
    assert e.value.code == 2 and "trains with its own loop (train_fn)" in capsys.readouterr().err
    assert main(["train", str(here / "own.yaml"), "--tracking-uri", uri, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_uri"] is None and "keeps its model to itself" in summary["notes"][0]
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
    assert not run.outputs.model_outputs and [m.step for m in client.get_metric_history(run.info.run_id,
                                                                                      "accuracy")] == [1]
    # a diverging workflow: FINISHED, tagged diverged, no model logged nor saved
    wild = dict(WORKFLOW, schedule="constant", lr=50.0, optimizer="sgdw", max_lr=None)
    assert main(["train", _write(here / "wild.yaml", {k: v for k, v in wild.items() if v is not None}),
                 "--tracking-uri", uri, "--json", "--save", str(here / "wild")]) == 0
    summary = json.loads(capsys.readouterr().out)
    run = client.get_run(summary["mlflow_run_id"])
    assert summary["diverged"] and run.data.tags["status"] == "diverged" and run.info.status == "FINISHED"
    assert not run.outputs.model_outputs and summary["saved"] is None and not (here / "wild").exists()
    # the task's code raises: the run is FAILED with the error, and the error reaches the user
    (here / "data").mkdir()
    broken = dict(WORKFLOW, task="tests.tuning.user_tasks:raises_in_step", model="linear", data_dir=str(here / "data"))
    with pytest.raises(SystemExit) as e:
        main(["train", _write(here / "broken.yaml", broken), "--tracking-uri", uri])
    assert e.value.code == 2 and "bad batch shape" in capsys.readouterr().err
    failed = client.search_runs([client.get_experiment_by_name("lrtune").experiment_id],
                                filter_string="tags.status = 'failed'")
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert "ValueError: bad batch shape" in failed[0].data.tags["error"]


def test_an_unknown_origin_key_is_named_with_the_allowed_ones(here, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", _write(here / "wf.yaml", dict(WORKFLOW, origin=dict(run_id="r", sweep="s")))])
    assert e.value.code == 2 and ("origin.sweep: unknown key (value 's'); allowed here: run_id, sweep_run_id, "
                                  "experiment, tracking_uri") in capsys.readouterr().err
