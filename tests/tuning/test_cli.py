import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuning.cli import main


def test_range_test_json_on_a_task(capsys, tmp_path):
    plot = tmp_path / "rt.png"
    rc = main(["range-test", "--task", "digits", "--optimizer", "sgd", "--batch-size", "50",
               "--json", "--plot", str(plot)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["status"] == "ok"
    s = out["suggestion"]
    assert s["lr"] == pytest.approx(s["max_lr"] / 4)
    assert len(out["lrs"]) == len(out["raw_losses"]) <= 100
    assert out["lrs"][0] == pytest.approx(1e-7)
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_range_test_refusal_exits_1_with_the_diagnosis(capsys):
    rc = main(["range-test", "--task", "digits", "--start-lr", "30", "--end-lr", "3e4"])
    assert rc == 1
    assert "range test refused (diverges_immediately)" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["--optimizer", "adamx"], "--optimizer: expected one of adamw, sgdw, adam, sgd, got 'adamx'"),
    (["--task", "imagenet"], "Expected task to be one of 'mnist1d', 'digits', 'synthetic', 'cifar10' "
                             "or 'package.module:function', but got 'imagenet'"),
    (["--task", "digits", "--model", "gru"], "--model: task 'digits' offers mlp, cnn, not 'gru'"),
    (["--task", "digits", "--num-iter", "3"], "Expected num_iter to be at least 10, but got 3"),
    (["--task", "digits", "--weight-decay", "-1"], "Expected weight_decay to be a non-negative"),
])
def test_bad_input_exits_2_naming_the_argument(argv, needle, capsys, tmp_path):
    plot = tmp_path / "never.png"
    with pytest.raises(SystemExit) as e:
        main(["range-test", *argv, "--plot", str(plot)])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    assert not plot.exists()


@pytest.mark.slow  # a fresh process
def test_console_script_is_installed():
    """The `lrtune` script pip installed beside this Python (the venv's bin/), not `python -m`."""
    script = Path(sys.executable).parent / "lrtune"
    assert script.is_file(), f"no lrtune script beside {sys.executable}: pip install -e . makes it"
    out = subprocess.run([str(script), "range-test", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--weight-decay" in out.stdout
