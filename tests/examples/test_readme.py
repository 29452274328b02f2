"""The README's own task example, exactly as the README writes it: its mytasks.py and mytasks.yaml
blocks in a fresh folder, `lrtune sweep mytasks.yaml` run there by the installed console script."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]


def _block(text: str, first_line: str) -> str:
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", text, re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"no code block starting {first_line!r} in README.md")


def test_the_readme_task_example_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "mytasks.py").write_text(_block(readme, "# mytasks.py"))
    (tmp_path / "mytasks.yaml").write_text(_block(readme, "# mytasks.yaml"))
    lrtune = shutil.which("lrtune", path=str(Path(sys.executable).parent))
    assert lrtune, "the lrtune console script is not installed beside this Python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    proc = subprocess.run([lrtune, "sweep", "mytasks.yaml", "--verbose", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep sines-" in proc.stdout and "range tests (the search is seeded from these)" in proc.stdout
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "optuna.db").is_file()
    # then the README's commands in that folder, as it writes them: report, export (the command the
    # report prints), train
    commands = _block(readme, "lrtune ui ")
    assert "\nlrtune report   " in commands and "\nlrtune export RUN_ID -o workflow.yaml" in commands
    assert "\nlrtune train workflow.yaml --save model " in commands
    report = subprocess.run([lrtune, "report"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    export = re.search(r"lrtune export (\w+) -o workflow.yaml", report.stdout)
    assert export and "plots logged to run" in report.stdout, report.stdout
    for argv in (["export", export.group(1), "-o", "workflow.yaml"], ["train", "workflow.yaml", "--save", "model"]):
        proc = subprocess.run([lrtune, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "finished:" in proc.stdout and (tmp_path / "model" / "MLmodel").is_file()
    # `lrtune ui CONFIG` serves that store until Ctrl-C, printing the URL of the newest sweep's trials;
    # started with SIGINT ignored, as a script's `cmd &` starts it (Python then leaves it ignored)
    ui = subprocess.Popen([lrtune, "ui", "mytasks.yaml", "--port", str(_free_port())], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = [ui.stdout.readline() for _ in range(2)]
        url = re.search(r"MLflow runs of sweep sines-\S+: (http://127.0.0.1:\d+)/#/experiments/\d+/runs\?\S+",
                        lines[1])
        assert url, lines
        with urllib.request.urlopen(f"{url.group(1)}/health", timeout=10) as r:
            assert r.status == 200
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        assert ui.wait(timeout=60) == 0
    with pytest.raises(OSError):  # the server went with it
        urllib.request.urlopen(f"{url.group(1)}/health", timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
