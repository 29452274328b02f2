"""Fixtures of the tuning tests: real servers, and the smoke sweep its tests share."""

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.tuning.sweeps import local, write

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                             "--artifacts-destination", str(tmp_path / "server-artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("mlflow server did not come up within 90 s")
        time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def smoke(ray_session, tmp_path_factory):
    """examples/smoke.yaml through `lrtune sweep`, once for every test of its results (its runs,
    report, export, the MLflow UI in a browser)."""
    from tuning.cli import main

    tmp = tmp_path_factory.mktemp("smoke")
    cwd, out = os.getcwd(), io.StringIO()
    os.chdir(tmp)
    try:
        cfg = local(yaml.safe_load((ROOT / "examples" / "smoke.yaml").read_text()), tmp)
        with contextlib.redirect_stdout(out):
            code = main(["sweep", str(write(tmp, cfg)), "--verbose", "1"])
    finally:
        os.chdir(cwd)
    return SimpleNamespace(path=tmp, cfg=cfg, code=code, out=out.getvalue())
