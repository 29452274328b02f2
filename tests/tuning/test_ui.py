import urllib.parse

import pytest

from tuning import ui
from tuning.cli import main


def test_runs_url_opens_the_trials_of_a_sweep_best_first():
    url = ui.runs_url("http://127.0.0.1:5000/", "7", "accuracy", "max", "abc123")
    assert url == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&searchFilter=tags.%60lrtune.kind%60%20%3D%20%27trial%27%20and%20tags.%60mlflow.parentRunId%60%20%3D%20"
        "%27abc123%27&orderByKey=metrics.%60accuracy%60&orderByAsc=false")
    query = urllib.parse.parse_qs(url.split("?", 1)[1])
    assert query["searchFilter"] == ["tags.`lrtune.kind` = 'trial' and tags.`mlflow.parentRunId` = 'abc123'"]
    # every trial of the experiment, smallest first for a metric to minimize
    query = urllib.parse.parse_qs(ui.runs_url("https://mlflow.example", "7", "val_loss", "min").split("?", 1)[1])
    assert query == dict(workflowType=["machine_learning"], searchFilter=["tags.`lrtune.kind` = 'trial'"],
                         orderByKey=["metrics.`val_loss`"], orderByAsc=["true"])


def test_a_saved_view_carries_search_and_columns_and_its_url_only_names_it():
    view = ui.runs_view("accuracy", "max", "abc123")
    assert view["selectedColumns"] == ["metrics.`accuracy`", "params.`peak_lr`", "params.`optimizer`",
                                       "params.`schedule`", "params.`weight_decay`", "tags.`status`"]
    assert view["orderByKey"] == "metrics.`accuracy`" and view["orderByAsc"] is False
    # MLflow ignores a saved view when the URL has search parameters too
    assert ui.runs_url("http://h:1", "7", "accuracy", "max", "abc123", view_id="lrtune") == (
        "http://h:1/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=lrtune")
    with pytest.raises(ValueError, match="mode: expected 'max' or 'min', got 'maximize'"):
        ui.runs_view("accuracy", "maximize")


def test_ui_refuses_a_sqlite_store_that_is_not_there_and_creates_nothing(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    with pytest.raises(SystemExit) as e:
        main(["ui", "--tracking-uri", f"sqlite:///{db}", "--experiment", "smoke"])
    assert e.value.code == 2
    assert f"--tracking-uri: no MLflow store at sqlite:///{db}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
