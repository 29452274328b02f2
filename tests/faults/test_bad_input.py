"""Bad values refused before Ray starts (issue 17, points 9 and 10): each through `lrtune sweep`,
exit 2, the key named on stderr, nothing created, no Ray."""

import importlib.util
import math
from pathlib import Path

import pytest
import ray
import yaml

import tuning.sweep
from tuning.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _smoke(tmp_path, **over) -> dict:
    """examples/smoke.yaml with local stores in tmp_path and `over` applied (dotted keys)."""
    cfg = yaml.safe_load((ROOT / "examples" / "smoke.yaml").read_text())
    cfg["tracking"] = dict(mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="smoke",
                           optuna_storage=f"sqlite:///{tmp_path}/optuna.db")
    cfg["storage_path"] = str(tmp_path / "ray_results")
    for key, value in over.items():
        *parents, last = key.split(".")
        here = cfg
        for p in parents:
            here = here.setdefault(p, {})
        here[last] = value
    return cfg


@pytest.fixture
def sweep_refused(tmp_path, monkeypatch, capsys):
    """Runs `lrtune sweep` on a config file's text in an empty folder; returns its stderr after
    checking exit 2, that nothing was written beside the config and that Ray did not start."""
    monkeypatch.chdir(tmp_path)
    started = []
    monkeypatch.setattr(tuning.sweep, "init_ray", lambda *a, **k: started.append(1) or pytest.fail("Ray started"))
    ray_before = ray.is_initialized()

    def run(text: str | bytes) -> str:
        path = tmp_path / "sweep.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(SystemExit) as e:
            main(["sweep", str(path)])
        err = capsys.readouterr().err
        assert e.value.code == 2, err
        assert not started and ray.is_initialized() == ray_before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"], err  # no stores, no ray_results
        assert len(err) < 2000, err
        return err

    return run


no_psycopg2 = pytest.mark.skipif(importlib.util.find_spec("psycopg2") is not None, reason="psycopg2 is installed")


@pytest.mark.parametrize("over,needle", [
    ({"search.seed": -1}, "search.seed: a seed is an integer in [0, 2**32) (numpy's seeding range) (got -1)"),
    ({"search.seed": 2**32}, "search.seed: a seed is an integer in [0, 2**32)"),
    ({"seed": 2**64}, "seed: a seed is an integer in [0, 2**32)"),
    ({"seed": 1e23}, "seed: "),
    ({"range_test.end_lr": math.inf}, "range_test.end_lr: Input should be a finite number (got inf)"),
    ({"range_test.weight_decays": [math.nan]}, "range_test.weight_decays.0: Input should be a finite number (got nan)"),
    ({"grad_clip": [1.0, math.inf]}, "grad_clip.1: Input should be a finite number (got inf)"),
    ({"search.target": math.nan}, "search.target: Input should be a finite number"),
    ({"resources.gpu": math.inf}, "resources.gpu: Input should be a finite number (got inf)"),
    ({"resources.cpu": math.inf}, "resources.cpu: Input should be a finite number (got inf)"),
    ({"resources.cpu": 1e9}, "resources.cpu: Input should be less than or equal to 1024"),
    ({"tracking.optuna_storage": "postgres://me@db.example/optuna"},
     "tracking.optuna_storage: SQLAlchemy has no dialect 'postgres'; allowed: sqlite:///path.db"),
    pytest.param({"tracking.optuna_storage": "postgresql+psycopg2://me@db.example/optuna"},
                 "tracking.optuna_storage: the driver of 'postgresql+psycopg2' is not installed (ModuleNotFoundError",
                 marks=no_psycopg2),
    pytest.param({"tracking.mlflow_uri": "postgresql+psycopg2://me@db.example/mlflow"},
                 "tracking.mlflow_uri: the driver of 'postgresql+psycopg2' is not installed", marks=no_psycopg2),
    ({"tracking.mlflow_uri": "postgres://me@db.example/mlflow"},
     "tracking.mlflow_uri: MLflow has no tracking store 'postgres'; allowed: a folder, file:, http(s)://, databricks"),
    ({"tracking.mlflow_uri": "s3://bucket/mlruns"}, "tracking.mlflow_uri: MLflow has no tracking store 's3'"),
    ({"name": "n" * 300}, "name: a name of at most 64 letters, digits, '_', '-' and '.', starting with a letter "
                          "or digit (it names the sweep's directory and MLflow runs) (got 'nnnn"),
    ({"name": "o'brien"}, "name: a name of at most 64 letters"),
    ({"name": "a/b"}, "name: a name of at most 64 letters"),
    ({"name": "-x"}, "name: a name of at most 64 letters"),
    ({"model": "m" * 100_000}, "model: String should have at most 64 characters (got 'mmmm"),
    ({"data_dir": "d" * 100_000}, "data_dir: String should have at most 4096 characters (got 'dddd"),
    ({"task": "x" * 300 + ":task"}, "task: 'package.module:function': Python names, at most 200 characters"),
    ({"task": "tests.tuning.raises_at_import:task"},
     "task: Expected task 'tests.tuning.raises_at_import:task' to name an importable module"),
    ({"task": "tests.tuning.bad_syntax:task"}, "importing 'tests.tuning.bad_syntax' raised SyntaxError"),
    ({"task": "tests.faults.exits_at_import:task"},
     "importing 'tests.faults.exits_at_import' raised SystemExit: this module is a script"),
    ({"seeds": 2}, "seeds: renamed; write replicas: 2 instead (copies of each workflow trained in lockstep)"),
])
def test_bad_values_exit_2_naming_the_key_before_ray_starts(over, needle, tmp_path, sweep_refused):
    err = sweep_refused(yaml.safe_dump(_smoke(tmp_path, **over)))
    assert needle in err, err
    assert "Traceback" not in err


def test_a_long_value_is_quoted_cut(tmp_path, sweep_refused):
    err = sweep_refused(yaml.safe_dump(_smoke(tmp_path, epochs="x" * 100_000)))
    assert f"epochs: Input should be a valid integer, unable to parse string as an integer (got {'x' * 40!r}… " \
           f"(100000 characters))" in err, err


def test_task_import_errors_say_where(tmp_path, sweep_refused):
    err = sweep_refused(yaml.safe_dump(_smoke(tmp_path, task="tests.tuning.raises_at_import:task")))
    assert "raised RuntimeError: no GPU driver here (" in err and "raises_at_import.py:3)" in err, err
    err = sweep_refused(yaml.safe_dump(_smoke(tmp_path, task="tests.tuning.bad_syntax:task")))
    assert "bad_syntax.py:3)" in err, err


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("text,needle", [
    ("epochs: 2\nmodel: " + _nested(100_000) + "\n", "nested deeper than 32 levels (line 2)"),
    ("x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "nested deeper than 32 levels"),
    ("epochs: 2\nmodel:\n  " + "- " * 40 + "1\n", "nested deeper than 32 levels (line 3)"),
    (b"epochs: 2\nname: caf\xe9\n", "not UTF-8 text: byte 19 (0xe9, line 2) is not valid UTF-8"),
    (b"\xff\xfe" + "epochs: 2\n".encode("utf-16-le"), "not UTF-8 text: byte 0 (0xff, line 1)"),
    ("epochs: 2\n# " + "x" * 1_000_000 + "\n", "bytes; a config file is at most 1000000 bytes"),
    ("epochs: [1,\n", "not valid YAML at line 2, column 1"),
    ("epochs: !!int two\n", "not valid YAML: ValueError: invalid literal for int()"),
    ("epochs: !!python/object:os.system x\n", "not valid YAML at line 1, column 9"),
    ("a: &a [*a]\n", "the alias *a (line 1) is inside the collection it names"),
    # a billion laughs: nine levels of ten aliases would make pydantic walk 10**9 values
    ("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)), "more than 100000 values"),
    ("d0: &d0 " + _nested(28) + "\n" + "".join(f"d{i}: &d{i} [[*d{i - 1}]]\n" for i in range(1, 4)),
     "nested deeper than 32 levels, through the alias *d1 (line 3)"),
    ("epochs: 2\n---\nepochs: 3\n", "not valid YAML at line 2, column 1: expected a single document"),
    ("epochs: 2\x00\n", "not valid YAML: unacceptable character #x0000"),
])
def test_bad_files_exit_2_naming_the_file(text, needle, tmp_path, sweep_refused):
    err = sweep_refused(text)
    assert f"{tmp_path / 'sweep.yaml'}: " in err and needle in err, err
    assert "Traceback" not in err


def test_an_exported_workflow_with_an_old_key_is_refused_naming_the_new_one():
    """A workflow.yaml exported before `seeds` was renamed: `lrtune train` refuses it naming `replicas`,
    rather than dropping the setting."""
    from tuning.config import ConfigError, WorkflowConfig, parse

    old = dict(task="digits", optimizer="adamw", schedule="constant", lr=0.01, epochs=2, batch_size=100, seeds=3)
    with pytest.raises(ConfigError, match=r"seeds: renamed; write replicas: 3 instead"):
        parse(old, "workflow.yaml", WorkflowConfig)
    del old["seeds"]
    assert parse(dict(old, replicas=3), "workflow.yaml", WorkflowConfig).replicas == 3
