import json
import math
import os
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.tuning.sweeps import last_results
from tests.tuning.sweeps import local as _local
from tests.tuning.sweeps import write as _write
from tuning import search
from trainables.loops import as_computed
from tuning.cli import main
from tuning.config import ConfigError, load, parse
from tuning.seeding import OptimizerPrior
from tuning.tracking.store import read_artifact

ROOT = Path(__file__).resolve().parents[2]


def _runs(tmp_path, experiment):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lrtune.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("lrtune.kind") == "trial"]
    range_tests = [r for r in runs if r.data.tags.get("lrtune.kind") == "range_test"]
    return client, parents, trials, range_tests


def test_smoke_sweep_end_to_end_run_tree(smoke):
    tmp_path, cfg = smoke.path, smoke.cfg
    assert smoke.code == 0
    assert "mlflow ui --backend-store-uri sqlite:///" in smoke.out and "rank" in smoke.out
    assert "range tests (the search is seeded from these)" in smoke.out
    client, parents, trials, range_tests = _runs(tmp_path, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    # the config under one prefix, apart from the trials' params
    assert parent.data.params["config.epochs"] == "2" and parent.data.params["config.task"] == "digits"
    assert not {"epochs", "optimizers", "optimizer"} & set(parent.data.params)
    assert {"config.yaml", "priors.json", "summary.json", "best_workflow.yaml"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    # one range test per optimizer x weight decay, nested under the sweep, with plot and curve
    assert sorted((r.data.tags["optimizer"], float(r.data.tags["weight_decay"])) for r in range_tests) == [
        ("adamw", 0.0), ("adamw", 1e-4), ("sgdw", 0.0), ("sgdw", 1e-4)]
    for r in range_tests:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.data.tags["status"] == "ok"
        assert r.data.metrics["suggested_lr"] == pytest.approx(r.data.metrics["suggested_max_lr"] / 4)
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["range_test.json", "range_test.png"]
    priors = json.loads(read_artifact(client, parent.info.run_id, "priors.json"))
    tested = {(r.data.tags["optimizer"], float(r.data.tags["weight_decay"])): r.data.metrics["suggested_max_lr"]
              for r in range_tests}
    for opt, prior in priors.items():  # the prior's max_lr is its chosen decay's suggestion
        assert prior["max_lr"] == pytest.approx(tested[(opt, prior["weight_decay"])])
    assert len(trials) == cfg["search"]["num_samples"]
    for t in trials:
        assert t.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert t.info.status == "FINISHED" and t.data.tags["status"] == "finished"
        assert t.data.tags["optimizer"] == t.data.params["optimizer"] in ("adamw", "sgdw")
        assert t.data.tags["schedule"] == t.data.params["schedule"]
        history = client.get_metric_history(t.info.run_id, "accuracy")
        assert sorted(m.step for m in history) == [1, 2]
        for key in ("train_loss", "val_loss", "schedule_lr", "schedule_momentum", "epoch_time"):
            assert len(client.get_metric_history(t.info.run_id, key)) == 2, key
        assert not {"lr", "momentum"} & set(t.data.metrics)  # `lr` is the workflow's param only
        # one peak LR column whatever the schedule, beside the absolute and normalized decay
        p = t.data.params
        assert float(p["peak_lr"]) == float(p.get("max_lr") or p["lr"]) > 0
        assert float(p["weight_decay"]) == pytest.approx(float(p["lambda_norm"]) * priors[p["optimizer"]]["decay_scale"])
        # metrics as the numbers the task computed (float32 accuracies), not their float64 widening
        assert repr(t.data.metrics["accuracy"]) == str(np.float32(t.data.metrics["accuracy"]))
        assert [a.path for a in client.list_artifacts(t.info.run_id)] == ["lr_schedule.png", "workflow.yaml"]
    # the first four warm-start points: 1-cycle for each optimizer at its seed, then in the middle of
    # its band's larger side (both bands here reach beyond MIN_SIDE on their larger side)
    priors_ = {o: OptimizerPrior.from_dict(v) for o, v in priors.items()}
    starts = sorted((t.data.params["optimizer"], float(t.data.params["lr_shift"])) for t in trials)
    assert {t.data.tags["schedule"] for t in trials} == {"one_cycle"}
    assert all(abs(search._sides(s)[0]) >= search.MIN_SIDE for s in priors_.values())
    assert starts == sorted([(o, 0.0) for o in ("adamw", "sgdw")] + [
        (o, round(search._sides(s)[0] / 2, 3)) for o, s in priors_.items()])
    assert max(t.data.metrics["accuracy"] for t in trials) > 0.8
    # the parent run is the sweep's summary: best metric and run, counts, the best workflow, a note
    best = max(trials, key=lambda t: t.data.metrics["accuracy"])
    assert parent.data.metrics["best_accuracy"] == best.data.metrics["accuracy"]
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["trials_finished"] == len(trials) and parent.data.metrics["trials_failed"] == 0
    assert parent.data.params["best.peak_lr"] == best.data.params["peak_lr"]
    assert parent.data.params["best.optimizer"] == best.data.params["optimizer"]
    assert read_artifact(client, parent.info.run_id, "best_workflow.yaml") == read_artifact(
        client, best.info.run_id, "workflow.yaml")
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"lrtune sweep **{parent.info.run_name}**: best accuracy "
                           f"**{best.data.metrics['accuracy']:.4g}**: {best.data.params['optimizer']} + one_cycle")
    assert "; 4 trials: 4 finished, 0 stopped, 0 diverged, 0 failed.\n" in note
    assert f"lrtune export {best.info.run_id}" in note and "- ran: digits/mlp, 2 epochs a trial" in note
    for opt in ("adamw", "sgdw"):
        assert f"range tests, {opt}: max_lr {priors[opt]['max_lr']:.3g}" in note
    # the progress: a line per range test as it finishes; the short warm start said so
    assert sorted(line.split(":")[0] for line in smoke.out.splitlines() if line.startswith("range test ")) == [
        f"range test {i}/4" for i in range(1, 5)]
    # 2 at the suggestions, 2 on the larger sides, one per other side that reaches MIN_SIDE, 3 schedules x 2
    others = sum(abs(search._sides(s)[1]) >= search.MIN_SIDE for s in priors_.values())
    assert f"search.num_samples=4 runs 4 of the {10 + others} warm-start points" in smoke.out
    # --verbose 1: Ray Tune's trial table with lrtune's columns, no box per trial
    header = next(line for line in smoke.out.splitlines() if line.startswith("| Trial name"))
    assert [c.strip() for c in header.strip("|").split("|")][3:7] == ["optimizer", "schedule", "peak_lr",
                                                                      "weight_decay"]
    assert "Number of trials: 4/4 (4 TERMINATED)" in smoke.out
    assert "started with configuration" not in smoke.out and "Trial status:" not in smoke.out
    # the Optuna study is in the sqlite file, named after the sweep, for optuna-dashboard
    import optuna
    studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/optuna.db")
    assert [s.study_name for s in studies] == [parent.info.run_name]
    study = optuna.load_study(study_name=studies[0].study_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * len(trials)
    assert sorted(t.value for t in study.trials) == sorted(t.data.metrics["accuracy"] for t in trials)
    # for optuna-dashboard: the objective's name, each trial's absolute values, status and MLflow run
    assert study.metric_names == ["accuracy"]
    runs = {t.info.run_id: t for t in trials}
    for t in study.trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert t.user_attrs["tune_trial_id"] == run.data.tags["lrtune.trial_id"]
        assert t.user_attrs["status"] == run.data.tags["status"] == "finished"
        assert t.user_attrs["peak_lr"] == pytest.approx(float(run.data.params["peak_lr"]))
        assert t.user_attrs["weight_decay"] == pytest.approx(float(run.data.params["weight_decay"]))
        assert t.value == pytest.approx(run.data.metrics["accuracy"], abs=1e-7)


def test_export_then_train_reproduces_the_trial(smoke, tmp_path, capsys):
    _, _, trials, _ = _runs(smoke.path, "smoke")
    best = max(trials, key=lambda t: t.data.metrics["accuracy"])
    uri = f"sqlite:///{smoke.path}/mlflow.db"
    out = tmp_path / "workflow.yaml"
    assert main(["export", best.info.run_id, "-o", str(out), "--tracking-uri", uri]) == 0
    workflow = yaml.safe_load(out.read_text())
    assert out.read_text().startswith(f"# lrtune workflow exported from MLflow run {best.info.run_id}")
    assert workflow["optimizer"] == best.data.params["optimizer"] and workflow["epochs"] == 2
    assert "lr_shift" not in workflow and "trial_id" not in workflow  # only what defines the workflow
    capsys.readouterr()
    assert main(["train", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["epochs_run"] == 2 and not again["diverged"]
    assert abs(again["accuracy"] - best.data.metrics["accuracy"]) <= 0.005  # within 0.5 pt on CPU
    # its MLflow run went to the sweep's store and experiment (the workflow's origin), nested under
    # the sweep as its result, not as a trial, and names the trial it re-ran; its model is logged
    parent = best.data.tags["mlflow.parentRunId"]
    run = MlflowClient(uri).get_run(again["mlflow_run_id"])
    assert run.info.experiment_id == best.info.experiment_id and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["lrtune.kind"] == "train" and run.data.tags["lrtune.source_run_id"] == best.info.run_id
    assert again["model_uri"] == f"models:/{run.outputs.model_outputs[0].model_id}"
    # a run that is not a trial is refused by name, and nothing is written
    with pytest.raises(SystemExit) as e:
        main(["export", parent, "-o", str(tmp_path / "no.yaml"), "--tracking-uri", uri])
    assert e.value.code == 2 and f"RUN_ID: run {parent} is a sweep run" in capsys.readouterr().err
    assert not (tmp_path / "no.yaml").exists()


def test_report_ranks_the_trials_and_logs_the_plots_to_the_parent(smoke, capsys):
    client, parents, trials, _ = _runs(smoke.path, "smoke")
    uri = f"sqlite:///{smoke.path}/mlflow.db"
    assert main(["report", "--experiment", "smoke", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    ranked = sorted(trials, key=lambda t: -t.data.metrics["accuracy"])
    lines = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [line.split()[-1] for line in lines] == [t.info.run_id for t in ranked]  # best first
    assert f"{ranked[0].data.metrics['accuracy']:.4f}" in lines[0]
    assert f"lrtune export {ranked[0].info.run_id}" in out
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert logged == {f"report/{n}.png" for n in ("learning_curves", "range_tests", "optuna_importances",
                                                  "optuna_parallel_coordinates")}, out
    with pytest.raises(SystemExit) as e:
        main(["report", "--experiment", "nope", "--tracking-uri", uri])
    assert e.value.code == 2 and "--experiment: no MLflow experiment 'nope'" in capsys.readouterr().err
    # --sweep by the sweep's name and by its parent run id (MLflow's filter grammar has no `or`)
    for which in (parents[0].info.run_name, parents[0].info.run_id):
        assert main(["report", "--experiment", "smoke", "--tracking-uri", uri, "--sweep", which, "--no-plots"]) == 0
        assert f"sweep {parents[0].info.run_name} (MLflow run {parents[0].info.run_id}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["report", "--experiment", "smoke", "--tracking-uri", uri, "--sweep", trials[0].info.run_id])
    assert e.value.code == 2 and "--sweep: no lrtune sweep" in capsys.readouterr().err  # a trial is no sweep
    # without --experiment: the newest lrtune sweep in the store
    assert main(["report", "--tracking-uri", uri, "--no-plots"]) == 0
    assert f"sweep {parents[0].info.run_name} (MLflow run {parents[0].info.run_id}" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["report"], ["export", "0123abcd"]])
def test_report_and_export_refuse_a_store_that_does_not_exist_and_create_none(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([*command, "--tracking-uri", "sqlite:///mlflow.db"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--tracking-uri: no MLflow store at sqlite:///mlflow.db" in err
    assert str(tmp_path / "mlflow.db") in err and list(tmp_path.iterdir()) == []


def test_replicas_in_lockstep_and_a_second_objective(ray_session, tmp_path, monkeypatch, capsys):
    """replicas: 2 gives mean ± std per trial; also_minimize: epochs_to_target makes the Optuna study
    two-objective, and the report shows the spread."""
    import optuna

    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="two", task="digits", model="mlp", epochs=3, batch_size=100, replicas=2,
                      optimizers=["adamw"], schedules=["one_cycle", "constant"],
                      range_test=dict(num_iter=30, weight_decays=[0]), stopping=dict(scheduler="none"),
                      search=dict(num_samples=2, max_concurrent=2, also_minimize="epochs_to_target",
                                  target=0.5)), tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    client, parents, trials, _ = _runs(tmp_path, "two")
    for t in trials:
        m = t.data.metrics
        assert m["accuracy_std"] >= 0 and 1 <= m["epochs_to_target"] <= 4
        history = {x.step: x.value for x in client.get_metric_history(t.info.run_id, "accuracy")}
        reached = min([e for e, v in history.items() if v >= 0.5], default=4)
        assert m["epochs_to_target"] == reached  # the first epoch whose mean reached the target
    study = optuna.load_study(study_name=parents[0].info.run_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["accuracy", "epochs_to_target"]
    # the parent's best is the best trial's mean, with its std
    best = max(trials, key=lambda t: t.data.metrics["accuracy"])
    assert parents[0].data.metrics["best_accuracy"] == best.data.metrics["accuracy"]
    assert parents[0].data.metrics["best_accuracy_std"] == best.data.metrics["accuracy_std"]
    assert f"best accuracy **{best.data.metrics['accuracy']:.4g}** ± " in parents[0].data.tags["mlflow.note.content"]
    by_value = sorted(tuple(t.values) for t in study.trials)
    assert by_value == sorted((t.data.metrics["accuracy"], t.data.metrics["epochs_to_target"]) for t in trials)
    capsys.readouterr()
    assert main(["report", "--experiment", "two", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                 "--no-plots"]) == 0
    assert " ± " in capsys.readouterr().out


@pytest.mark.parametrize("extra,needle", [
    (dict(learning_rate=0.1, max_lr=0.1),
     "learning_rate: unknown key (value 0.1); allowed here: task, data_dir, model, optimizer, lr"),
    ({}, "schedule one_cycle needs max_lr; missing: max_lr"),
    (dict(max_lr=0.1, epochs=0), "epochs: Input should be greater than or equal to 1 (got 0)"),
])
def test_train_refuses_a_bad_workflow_naming_the_key(extra, needle, tmp_path, capsys):
    bad = tmp_path / "wf.yaml"
    bad.write_text(yaml.safe_dump(dict(dict(task="digits", model="mlp", optimizer="adamw", schedule="one_cycle",
                                            epochs=2, batch_size=100), **extra)))
    with pytest.raises(SystemExit) as e:
        main(["train", str(bad)])
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_a_refusing_range_test_stops_the_sweep_before_any_trial(ray_session, tmp_path, monkeypatch, capsys):
    """The insurance check: labels that are noise make the range tests refuse; the sweep prints the
    diagnosis, exits 1 and starts no trial; MLflow keeps the tests and a FAILED parent."""
    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="noise", task="tests.tuning.user_tasks:shuffled_labels", epochs=2, batch_size=50,
                      optimizers=["adamw", "sgdw"], schedules=["constant"],
                      range_test=dict(num_iter=50, weight_decays=[0]), search=dict(num_samples=2)), tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "range test refused, no trial was started" in err
    assert "adamw weight_decay=0: no_descent: the loss never fell" in err and "on_refusal: blind" in err
    _, parents, trials, range_tests = _runs(tmp_path, "noise")
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert parents[0].data.tags["lrtune.stopped_by"] == "range_test"
    assert trials == [] and sorted(r.data.tags["status"] for r in range_tests) == ["no_descent"] * 2
    assert not list((tmp_path / "ray_results").glob("*/trial_*"))  # Tune never started


def test_user_task_runs_and_a_diverged_trial_is_recorded(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="fragile", task="tests.tuning.user_tasks:fragile", epochs=3, batch_size=50,
                      optimizers=["adamw", "sgdw"], schedules=["constant"],
                      search=dict(num_samples=2, max_concurrent=2, seeded=False, points_to_evaluate=[
                          dict(optimizer="sgdw", schedule="constant", lr=0.05, weight_decay=1e-4, momentum=0.9),
                          dict(optimizer="adamw", schedule="constant", lr=1e-3, weight_decay=1e-4, momentum=0.9)])),
                 tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    _, parents, trials, _ = _runs(tmp_path, "fragile")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_opt = {t.data.tags["optimizer"]: t for t in trials}
    assert by_opt.keys() == {"adamw", "sgdw"}
    assert by_opt["sgdw"].data.tags["status"] == "diverged"  # lr 0.05 on a x100 output
    assert by_opt["sgdw"].data.metrics["epochs_run"] == 1
    assert by_opt["adamw"].data.tags["status"] == "finished"  # the user task trained to the end
    assert by_opt["adamw"].data.metrics["epochs_run"] == 3
    assert math.isfinite(by_opt["adamw"].data.metrics["r2"])



def test_log_best_model_logs_the_best_trials_model_to_its_run(ray_session, tmp_path, monkeypatch, capsys):
    """tracking.log_best_model: the best trial's model, rebuilt from its last checkpoint, is logged
    to its MLflow run at its last epoch, and scores there what the trial logged."""
    import mlflow.pytorch

    from trainables.tasks import load_task

    monkeypatch.chdir(tmp_path)
    points = [dict(optimizer="adamw", schedule="one_cycle", max_lr=lr, weight_decay=1e-4, max_momentum=0.95,
                   base_momentum=0.85) for lr in (0.01, 1e-4)]
    cfg = _local(dict(name="best", task="digits", model="mlp", epochs=2, batch_size=100, optimizers=["adamw"],
                      schedules=["one_cycle"], stopping=dict(scheduler="none"),
                      search=dict(num_samples=2, max_concurrent=2, seeded=False, points_to_evaluate=points)), tmp_path)
    cfg["tracking"]["log_best_model"] = True
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    client, _, trials, _ = _runs(tmp_path, "best")
    best, other = sorted(trials, key=lambda t: -t.data.metrics["accuracy"])
    assert [o.step for o in best.outputs.model_outputs] == [2] and not other.outputs.model_outputs
    model_id = best.outputs.model_outputs[0].model_id
    assert f"MLflow run {best.info.run_id})'s model after epoch 2: models:/{model_id}" in out
    assert best.info.status == "FINISHED" and best.data.tags["status"] == "finished"  # as the trial ended
    assert best.info.end_time < client.get_logged_model(model_id).creation_timestamp
    assert sorted(m.step for m in client.get_metric_history(best.info.run_id, "accuracy")) == [1, 2]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg["tracking"]["mlflow_uri"])
    model = mlflow.pytorch.load_model(f"models:/{model_id}")
    assert as_computed(load_task("digits").evaluate_model(model, 1000)["accuracy"]) == best.data.metrics["accuracy"]


@pytest.mark.parametrize("cfg,needle", [
    (dict(epochs=0), "epochs: Input should be greater than or equal to 1 (got 0)"),
    (dict(search=dict(max_concurrent=-1)), "search.max_concurrent: Input should be greater than or equal to 1 (got -1)"),
    (dict(schedules=["one_cycle", "step"]), "schedules.1: Input should be 'one_cycle', 'cyclic', 'sgdr' or 'constant' (got 'step')"),
    (dict(optimizers=["adamw", "lamb"]), "optimizers.1: Input should be 'adamw', 'sgdw', 'adam' or 'sgd' (got 'lamb')"),
    (dict(epoch=20), "epoch: unknown key (value 20); allowed here: name, task, model"),
    (dict(search=dict(samples=3)), "search.samples: unknown key (value 3); allowed here: algorithm, num_samples"),
    (dict(batch_size="big"), "batch_size: Input should be a valid integer"),
    (dict(resources=dict(gpu=2)), "resources.gpu: at most 1 GPU per trial: a trial trains on one device (lrtune runs no DDP inside a trial); a fraction such as 0.25 packs several trials per GPU (got 2"),
    (dict(range_test=dict(start_lr=1.0, end_lr=0.1)), "range_test: end_lr must be > start_lr=1.0 (got {"),
    (dict(task="imagenet"), "task: a built-in task (mnist1d, digits, synthetic, cifar10) or 'package.module:function' (got 'imagenet')"),
    (dict(task="tests.tuning.user_tasks:nope"), "task: Expected task 'tests.tuning.user_tasks:nope' to name a function of module 'tests.tuning.user_tasks'"),
    (dict(task="tests.tuning.raises_at_import:task"), "task: Expected task 'tests.tuning.raises_at_import:task' to name an importable module 'package.module:function' (searched the current directory"),
    (dict(task="tests.tuning.raises_at_import:task"), "importing 'tests.tuning.raises_at_import' raised RuntimeError: no GPU driver here"),
    (dict(task="tests.tuning.bad_syntax:task"), "raised SyntaxError"),
    (dict(task="tests.tuning.user_tasks:dataset_as_train"), "train must be an (inputs, targets) pair of tensors; a Dataset or DataLoader goes in train_loader=lambda batch_size, seed, epoch"),
    (dict(task="tests.tuning.user_tasks:no_loss"), "loss or loss_fn must be given"),
    (dict(task="digits", accumulate=50), "accumulate: 50 micro-batches per optimizer step, but an epoch has 14 batches"),
    (dict(task="tests.tuning.user_tasks:own_loop_only", search=dict(seeded=True)), "search.seeded: the range tests need the task's models, data and loss"),
    (dict(task="tests.tuning.user_tasks:not_a_task"), "to return a trainables.tasks.Task, but got dict"),
    (dict(task="digits", model="resnet"), "model: task 'digits' offers mlp, cnn, not 'resnet'"),
    (dict(task="cifar10"), "Expected data_dir for task cifar10"),
    (dict(task="digits", epochs=1, batch_size=500), "epochs: one_cycle needs more than 4 steps in all"),
])
def test_config_errors_exit_2_naming_the_key_before_anything_starts(cfg, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(_write(tmp_path, _local(cfg, tmp_path, store=False)))])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # no stores, no results


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load(bad)


def test_examples_are_valid_configs():
    for path in (ROOT / "examples").glob("*.yaml"):
        load(path)
    assert parse({}).search.max_concurrent == 2


@pytest.mark.parametrize("every_s,restarted_at", [(0.0, 2), (1e6, 0)],
                         ids=["checkpoint-every-epoch", "final-only"])
def test_a_crashed_trial_resumes_from_its_checkpoint_exactly(ray_session, tmp_path, monkeypatch, every_s,
                                                            restarted_at):
    """Through the real trainable and Tune: a trial whose worker is killed in epoch 3 is retried from its
    last checkpoint (epoch 2 with `checkpoint_every_s: 0`; none, so from the start, when the interval
    is longer than the trial) and ends with the weights of an uninterrupted run; MLflow keeps one run
    with every epoch once, although epochs 1-2 are reported twice when it restarts from the start."""
    import torch

    from trainables.tasks import load_task
    from trainables.trainable import CHECKPOINT_FILE
    from trainables.workflow import Run
    from tuning.config import parse
    from tuning.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    cfg = parse(_local(dict(name="flaky", task="tests.tuning.user_tasks:flaky", data_dir=str(data),
                            epochs=5, batch_size=50, optimizers=["adamw"], schedules=["one_cycle"],
                            checkpoint_every_s=every_s, search=dict(num_samples=1, max_concurrent=1, seeded=False, points_to_evaluate=[
                                dict(optimizer="adamw", schedule="one_cycle", max_lr=0.01, weight_decay=1e-4,
                                     max_momentum=0.95, base_momentum=0.85)])), tmp_path))
    result = run_sweep(cfg, verbose=0)
    assert (data / "crashed-once").exists()  # it did crash
    [trial] = result.trials
    assert trial["error"] is None and trial["result"]["epoch"] == 5
    assert trial["result"]["status"] == "finished"
    # epochs 3, 4, 5 after the epoch-2 checkpoint, or all five
    assert trial["result"]["iterations_since_restore"] == 5 - restarted_at
    # checkpoints taken (Tune numbers them from 0): epochs 1, 2, then 3, 4, 5; or only epoch 5
    assert Path(trial["checkpoint"].path).name == f"checkpoint_{4 if every_s == 0 else 0:06d}"

    with trial["checkpoint"].as_directory() as d:
        resumed = torch.load(Path(d) / CHECKPOINT_FILE, weights_only=False)
    (data / "crashed-once").touch()  # the reference run must not crash
    through = Run(load_task(cfg.task, str(data)), trial["config"])
    while not through.done:
        through.train_epoch()
    for k, v in through.model.state_dict().items():
        assert torch.equal(v, resumed["loop"]["state"]["replicas"][0]["model"][k]), k

    client, parents, trials, _ = _runs(tmp_path, "flaky")
    assert len(trials) == 1 and trials[0].data.tags["status"] == "finished"
    # each epoch logged once, although a restart from the start reports epochs 1 and 2 again
    assert sorted(m.step for m in client.get_metric_history(trials[0].info.run_id, "r2")) == [1, 2, 3, 4, 5]


def _finished_in_tune(results: Path) -> list[str]:
    """Trials whose last result in Tune's own result.json, as copied to storage_path with the
    experiment state, says finished (what a resumed driver will know)."""
    return [d.name.removeprefix("trial_") for d, r in last_results(results).items() if r.get("status") == "finished"]


def test_resume_after_a_killed_driver_loses_no_trial_and_runs_none_twice(ray_session, tmp_path, monkeypatch):
    """The driver (lrtune sweep in its own process, on this session's Ray) is killed with SIGKILL
    once Tune has finished two trials; `--resume` continues the same experiment, study and parent
    run. MLflow logging the dead driver had queued is made good from Tune's records."""
    import signal
    import subprocess
    import sys
    import time

    import optuna
    import ray

    from tuning.config import parse
    from tuning.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    n, epochs = 6, 8
    raw = _local(dict(name="killed", task="mnist1d", model="cnn", epochs=epochs, batch_size=100,
                      optimizers=["adamw", "sgdw"], schedules=["one_cycle", "constant"],
                      range_test=dict(num_iter=30, weight_decays=[0]),
                      search=dict(num_samples=n, max_concurrent=2), stopping=dict(scheduler="none")), tmp_path)
    path = _write(tmp_path, raw)
    # Tune writes result.json on the driver and copies it to storage_path with its experiment state,
    # by default every 10 s or more: a whole sweep of short trials can fit between two copies, and
    # then the first this test sees is the last. Copies every second make "two finished" visible.
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, TUNE_GLOBAL_CHECKPOINT_S="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    driver = subprocess.Popen([sys.executable, "-m", "tuning.cli", "sweep", str(path), "--verbose", "0"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished_before: list[str] = []
    deadline = time.time() + 300
    try:
        while time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
            finished_before = _finished_in_tune(tmp_path / "ray_results")
            if len(finished_before) >= 2:
                driver.send_signal(signal.SIGKILL)
                break
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
    assert driver.returncode == -signal.SIGKILL and 2 <= len(finished_before) < n, "killed mid-sweep"
    # the range tests' priors are the sweep's state, kept beside Tune's in its folder: resume takes
    # them from there, not from MLflow's record (taken away here)
    assert (next((tmp_path / "ray_results").glob("killed-*")) / "lrtune-priors.json").is_file()
    for record in (tmp_path / "mlruns").rglob("priors.json"):
        record.unlink()

    result = run_sweep(parse(raw), verbose=0, resume=True)

    ids = [t["trial_id"] for t in result.trials]
    assert len(ids) == n == len(set(ids))  # none lost, none twice
    assert all(t["result"]["epoch"] == epochs and t["result"]["status"] == "finished" for t in result.trials)
    for t in result.trials:
        if t["trial_id"] in finished_before:  # not run again: its last result is the one from before
            assert t["result"]["iterations_since_restore"] == epochs
    client, parents, trials, range_tests = _runs(tmp_path, "killed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags.get("lrtune.resumed") == "true"
    assert len(range_tests) == 2  # the priors were reused, not tested again
    by_id = {}
    for t in trials:
        by_id.setdefault(t.data.tags["lrtune.trial_id"], []).append(t)
    assert sorted(by_id) == sorted(ids) and all(len(v) == 1 for v in by_id.values())  # one MLflow run each
    for t in trials:  # every epoch logged exactly once, every run ended
        steps = [m.step for m in client.get_metric_history(t.info.run_id, "accuracy")]
        assert sorted(steps) == list(range(1, epochs + 1)), (t.data.tags["lrtune.trial_id"], steps)
        assert t.info.status == "FINISHED" and t.data.tags["status"] == "finished"
    study = optuna.load_study(study_name=parents[0].info.run_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == n


def test_a_failing_user_step_is_recorded_failed_once_and_the_sweep_exits_non_zero(ray_session, tmp_path,
                                                                                   monkeypatch, capsys):
    """An exception in the task's code is not retried (only lost workers are): each trial is built
    once, ends FAILED with the error and where it was raised; all failed -> exit 1, parent FAILED."""
    import optuna

    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="raises", task="tests.tuning.user_tasks:raises_in_step", data_dir=str(tmp_path),
                      epochs=2, batch_size=50, optimizers=["adamw"], schedules=["constant"],
                      search=dict(num_samples=2, seeded=False), stopping=dict(scheduler="none")), tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "all 2 trials failed" in err and "bad batch shape" in err
    # two trials, no retry, and the driver's build on torch's meta device (the checkpoint-size estimate)
    assert (tmp_path / "built").read_text().count("built") == 3
    client, parents, trials, _ = _runs(tmp_path, "raises")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert len(trials) == 2
    for t in trials:
        assert t.info.status == "FAILED" and t.data.tags["status"] == "failed"
        assert "ValueError: bad batch shape" in t.data.tags["error"] and "user_tasks.py:" in t.data.tags["error"]
    study = optuna.load_study(study_name=parents[0].info.run_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]


def test_data_larger_than_the_trials_memory_budget_streams(ray_session, tmp_path, monkeypatch):
    """A 256 MB training file read by a lazy Dataset: the trial process's resident memory grows by
    at most half the data (budget 128 MB; imports and torch's allocator take ~60-90 MB of it),
    measured inside the trial by the task itself; holding the data would take 256 MB."""
    from pathlib import Path as P

    if not P("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident memory")
    from tests.tuning.user_tasks import write_rows

    n = 16384  # x 16 kB = 256 MB
    write_rows(tmp_path / "train.f32", n)
    (tmp_path / "train.n").write_text(str(n))
    write_rows(tmp_path / "val.f32", 512, seed=1)
    assert (tmp_path / "train.f32").stat().st_size == 256 * 2**20
    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="stream", task="tests.tuning.user_tasks:lazy_files", data_dir=str(tmp_path),
                      epochs=1, batch_size=64, optimizers=["adamw"], schedules=["constant"],
                      search=dict(num_samples=1, seeded=False, points_to_evaluate=[
                          dict(optimizer="adamw", schedule="constant", lr=1e-3, weight_decay=1e-4, momentum=0.9)]),
                      stopping=dict(scheduler="none")), tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    client, _, trials, _ = _runs(tmp_path, "stream")
    (trial,) = trials
    assert trial.data.tags["status"] == "finished"
    assert trial.data.metrics["peak_growth_mb"] < 128, trial.data.metrics


def test_any_metric_name_and_a_min_mode_end_to_end(ray_session, tmp_path, monkeypatch, capsys):
    """A task whose metric is `mae` (lower is better): logged to MLflow, ranked ascending in the
    summary and in `report`, the Optuna study minimises it, and `export` keeps it."""
    import optuna

    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="mae", task="tests.tuning.user_tasks:mae_task", epochs=2, batch_size=50,
                      optimizers=["adamw"], schedules=["one_cycle", "constant"],
                      range_test=dict(num_iter=40, weight_decays=[0]), search=dict(num_samples=3),
                      stopping=dict(scheduler="none")), tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    client, parents, trials, _ = _runs(tmp_path, "mae")
    values = sorted(t.data.metrics["mae"] for t in trials)
    assert len(values) == 3 and all(len(client.get_metric_history(t.info.run_id, "mae")) == 2 for t in trials)
    ranked_summary = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert f"{values[0]:.4f}" in ranked_summary[0]  # the lowest first
    study = optuna.load_study(study_name=parents[0].info.run_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [d.name for d in study.directions] == ["MINIMIZE"]
    assert sorted(t.value for t in study.trials) == pytest.approx(values)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["report", "--experiment", "mae", "--tracking-uri", uri, "--no-plots"]) == 0
    report_lines = [line for line in capsys.readouterr().out.splitlines() if line[:4].strip().isdigit()]
    assert [float(line.split()[1]) for line in report_lines] == pytest.approx(values, abs=1e-4)
    best = min(trials, key=lambda t: t.data.metrics["mae"])
    assert main(["export", best.info.run_id, "-o", str(tmp_path / "wf.yaml"), "--tracking-uri", uri]) == 0
    assert f"mae={best.data.metrics['mae']:.4g}" in (tmp_path / "wf.yaml").read_text()


def test_the_search_extends_a_band_whose_best_trial_sits_at_its_edge(ray_session, tmp_path, capsys):
    """A real sweep (Ray, Optuna, MLflow) where a lower LR always scores better: after the warm
    start and a point at the band's bottom, the band extends down; the sweep prints it, later
    trials sample the wider band, and the parent run records it. (Down: on this task the band's top
    is the blind range's 1.0, which no band passes.)"""
    cfg = _local(dict(name="edge", task="tests.tuning.user_tasks:lower_lr_wins", model="linear", epochs=1,
                      batch_size=50, optimizers=["adamw"], schedules=["one_cycle"],
                      range_test=dict(num_iter=60, weight_decays=[0]),
                      search=dict(num_samples=6, max_concurrent=1,
                                  points_to_evaluate=[dict(optimizer="adamw", schedule="one_cycle", lr_shift=-0.15),
                                                      dict(optimizer="adamw", schedule="one_cycle", lr_shift=0.3)]),
                      stopping=dict(scheduler="none")), tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    client, parents, trials, _ = _runs(tmp_path, "edge")
    seed = OptimizerPrior.from_dict(json.loads(read_artifact(client, parents[0].info.run_id, "priors.json"))["adamw"])
    lo, hi = seed.shifts
    # the warm start: the suggestion and the middle of the larger (upper) side; the lower side is
    # too short for a point of its own, and -0.15 lies in its outer 15 %
    assert -search.MIN_SIDE < lo < -0.15 <= lo + search.Bands.EDGE * (hi - lo)
    assert "adamw's best trial so far" in out and "extended down" in out
    study = optuna.load_study(study_name=parents[0].info.run_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    lows = [t.distributions["lr_shift"].low for t in sorted(study.trials, key=lambda t: t.number)]
    assert lows[:4] == pytest.approx([lo] * 4)  # the warm start's 2 and the 2 points: the range test's band
    assert lows[-1] == pytest.approx(max(lo - search.Bands.STEP, math.log10(search.LR_RANGE[0] / seed.max_lr)))
    events = json.loads(read_artifact(client, parents[0].info.run_id, "band_extensions.json"))
    assert events[0]["side"] == "down" and events[0]["trial"] == 2  # the -0.15 point
    assert client.get_run(parents[0].info.run_id).data.tags["lrtune.band.adamw"].startswith("max_lr ")


def test_report_and_export_with_failed_trials_and_a_custom_metric(ray_session, tmp_path, monkeypatch, capsys):
    """A user loop scored by `f1` whose SGDW trials raise before their first epoch: the sweep ends
    FINISHED with the failures counted, `report` lists the failed trials last (no metric) and
    points `export` at the best finished one, which exports with its f1."""
    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="f1", task="tests.tuning.user_tasks:fails_for_sgdw", epochs=2, batch_size=50,
                      optimizers=["adamw", "sgdw"], schedules=["constant"], stopping=dict(scheduler="none"),
                      search=dict(num_samples=4, seeded=False, points_to_evaluate=[
                          dict(optimizer=o, schedule="constant", lr=lr, weight_decay=1e-4, momentum=0.9)
                          for o, lr in (("adamw", 0.01), ("sgdw", 0.1), ("adamw", 0.02), ("sgdw", 0.2))])),
                 tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "4 trials in" in out and "2 finished, 2 failed" in out
    client, (parent,), trials, _ = _runs(tmp_path, "f1")
    for t in trials:  # a blind trial has its normalized decay beside the absolute one too
        assert float(t.data.params["lambda_norm"]) > 0 and t.data.params["peak_lr"] == t.data.params["lr"]
    finished = sorted((t for t in trials if t.data.tags["status"] == "finished"), key=lambda t: -t.data.metrics["f1"])
    assert len(finished) == 2 and all(len(client.get_metric_history(t.info.run_id, "f1")) == 2 for t in finished)
    assert parent.data.metrics["best_f1"] == finished[0].data.metrics["f1"] == pytest.approx(0.72)
    assert parent.data.metrics["trials_failed"] == 2 and parent.data.tags["best_run_id"] == finished[0].info.run_id
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["report", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [r[-1] for r in rows[:2]] == [t.info.run_id for t in finished]
    assert [(r[1], r[3]) for r in rows[2:]] == [("-", "failed")] * 2  # no metric, ranked last
    assert "2 finished, 2 failed" in out and f"lrtune export {finished[0].info.run_id}" in out
    assert main(["export", finished[0].info.run_id, "-o", str(tmp_path / "wf.yaml"), "--tracking-uri", uri]) == 0
    assert "f1=0.72" in (tmp_path / "wf.yaml").read_text()


def test_a_trial_stopped_early_is_recorded_stopped_everywhere(ray_session, tmp_path, monkeypatch, capsys):
    """Schedule-fair stopping ends a clearly worse constant-LR trial at its first milestone: its
    MLflow run, its Optuna trial (COMPLETE with its value, user attribute status), the summary and
    the parent run's counts all say `stopped`."""
    import optuna

    monkeypatch.chdir(tmp_path)
    cfg = _local(dict(name="stops", task="tests.tuning.user_tasks:lr_scored", epochs=4, batch_size=50,
                      optimizers=["adamw"], schedules=["constant"],
                      stopping=dict(scheduler="schedule_fair", grace_period=1, reduction_factor=2),
                      search=dict(num_samples=2, max_concurrent=1, seeded=False, points_to_evaluate=[
                          dict(optimizer="adamw", schedule="constant", lr=lr, weight_decay=1e-4, momentum=0.9)
                          for lr in (0.01, 1e-4)])), tmp_path)
    assert main(["sweep", str(_write(tmp_path, cfg)), "--verbose", "0"]) == 0
    assert "(1 finished, 1 stopped;" in capsys.readouterr().out
    client, (parent,), trials, _ = _runs(tmp_path, "stops")
    by_lr = {float(t.data.params["lr"]): t for t in trials}
    assert by_lr[0.01].data.tags["status"] == "finished" and by_lr[0.01].data.metrics["epochs_run"] == 4
    assert by_lr[1e-4].data.tags["status"] == "stopped" and by_lr[1e-4].data.metrics["epochs_run"] == 1
    assert parent.data.metrics["trials_stopped"] == 1 and parent.data.metrics["trials_finished"] == 1
    study = optuna.load_study(study_name=parent.info.run_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    states = {t.user_attrs["mlflow_run_id"]: (t.state.name, t.user_attrs["status"], t.value) for t in study.trials}
    assert states[by_lr[1e-4].info.run_id] == ("COMPLETE", "stopped", pytest.approx(-1.0 + 0.01))
    assert states[by_lr[0.01].info.run_id] == ("COMPLETE", "finished", pytest.approx(1.04))
