"""Two sweeps at once, and a sweep beside another Ray cluster (issue 17, points 5 and 11).

Each sweep is a real `lrtune sweep` in its own process. "Started in the same second" is made
certain, not left to timing: both processes see one fixed wall-clock time through `time.strftime()`
(the clock the sweep's name is read from), so that before the fix they got the same name.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.tuning.test_submit_ray_start import _client_env, ray_head  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]
TRIALS = 2

# `lrtune sweep ARGS` with time.strftime() fixed at the epoch seconds given first
_AT = """import sys, time
_strftime, _at = time.strftime, time.localtime(float(sys.argv[1]))
time.strftime = lambda fmt, t=None: _strftime(fmt, _at if t is None else t)
from tuning.cli import main
sys.exit(main(["sweep", *sys.argv[2:]]))
"""


def _config(folder: Path) -> Path:
    cfg = dict(name="twice", task="digits", model="mlp", epochs=1, batch_size=100, optimizers=["adamw"],
               schedules=["constant", "one_cycle"], search=dict(num_samples=TRIALS, max_concurrent=1, seeded=False),
               stopping=dict(scheduler="none"), resources=dict(cpu=1),
               tracking=dict(mlflow_uri="sqlite:///mlflow.db", experiment="twice",
                             optuna_storage="sqlite:///optuna.db"),
               storage_path="ray_results")
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _sweeps(folder: Path, n: int, *args: str, env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """`n` sweeps of folder/sweep.yaml started together, all named in one second; waited for."""
    at = str(time.time())
    procs = [subprocess.Popen([sys.executable, "-c", _AT, at, "sweep.yaml", "--verbose", "0", *args], cwd=folder,
                              env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _check_sweeps(folder: Path, count: int) -> list[str]:
    """`count` sweeps in the folder's stores, each whole and on its own; returns their names."""
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name("twice")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("lrtune.kind") == "sweep"]
    names = sorted(r.data.tags["lrtune.sweep"] for r in parents)
    assert len(names) == count and len(set(names)) == count, names  # one parent each
    assert all(r.info.status == "FINISHED" for r in parents)
    dirs = sorted(p.name for p in (folder / "ray_results").iterdir() if p.is_dir())
    assert dirs == names  # a Ray experiment directory each
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(f"sqlite:///{folder}/optuna.db")}
    assert sorted(studies) == names  # an Optuna study each
    for parent in parents:
        name = parent.data.tags["lrtune.sweep"]
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                  and r.data.tags.get("lrtune.kind") == "trial"]
        ids = [r.data.tags.get("lrtune.trial_id") for r in trials]
        assert len(trials) == TRIALS and len(set(ids)) == TRIALS, (name, ids)  # every trial once
        assert all(r.info.status == "FINISHED" for r in trials)
        assert len(list((folder / "ray_results" / name).glob("trial_*"))) == TRIALS
        assert studies[name].n_trials == TRIALS
    return names


def test_two_sweeps_at_once_on_a_new_folder(tmp_path):
    _config(tmp_path)
    done = _sweeps(tmp_path, 2)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-3000:] for d in done]
    names = _check_sweeps(tmp_path, 2)

    # --resume continues the newest of the two (the other is left alone): nothing to run again
    resumed = subprocess.run([sys.executable, "-m", "tuning.cli", "sweep", "sweep.yaml", "--verbose", "0", "--resume"],
                             cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _check_sweeps(tmp_path, 2) == names
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    tagged = client.search_runs([client.get_experiment_by_name("twice").experiment_id],
                                filter_string="tags.`lrtune.resumed` = 'true'")
    assert len(tagged) == 1 and tagged[0].data.tags["lrtune.sweep"] in names


def test_two_sweeps_at_once_on_an_existing_store(tmp_path):
    _config(tmp_path)
    # a store some earlier sweep made: both schemas, the experiment, a run
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    client.create_run(client.create_experiment("twice"), run_name="earlier").info.run_id
    client.set_terminated(client.search_runs([client.get_experiment_by_name("twice").experiment_id])[0].info.run_id)
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    (tmp_path / "ray_results").mkdir()

    done = _sweeps(tmp_path, 2)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-3000:] for d in done]
    _check_sweeps(tmp_path, 2)


def _drivers(temp: Path) -> set[Path]:
    """The drivers that connected to the `ray start` cluster whose temp dir is `temp` (the
    fixture's own check of the cluster among them), by their logs."""
    return set(temp.glob("session_*/logs/python-core-driver-*.log"))


def test_a_sweep_does_not_join_a_running_cluster(ray_head, tmp_path):  # noqa: F811
    address, temp = ray_head
    _config(tmp_path)
    # $RAY_ADDRESS names the other cluster, as after `ray start` and an `export RAY_ADDRESS=…`
    before = _drivers(temp)
    done = _sweeps(tmp_path, 1, env=_client_env(address))[0]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Found multiple active Ray instances" not in done.stderr
    assert _drivers(temp) == before  # (its idle workers, which Ray starts by itself, log too)
    _check_sweeps(tmp_path, 1)


def test_a_sweep_joins_the_cluster_its_address_names(ray_head, tmp_path):  # noqa: F811
    address, temp = ray_head
    _config(tmp_path)
    env = {k: v for k, v in _client_env(address).items() if k != "RAY_ADDRESS"}
    before = _drivers(temp)
    done = _sweeps(tmp_path, 1, "--address", address, env=env)[0]
    assert done.returncode == 0, done.stderr[-3000:]
    assert _drivers(temp) - before and list(temp.glob("session_*/logs/worker-*.out"))
    _check_sweeps(tmp_path, 1)


@pytest.mark.parametrize("address", ["local host", "http://h:1", "h:123456"])
def test_a_bad_address_is_refused(tmp_path, address):
    _config(tmp_path)
    done = subprocess.run([sys.executable, "-m", "tuning.cli", "sweep", "sweep.yaml", "--address", address],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "ray.address" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_resume_finds_the_newest_sweep_old_names_too(tmp_path):
    from tuning.config import parse
    from tuning.sweep import find_sweep

    cfg = parse(dict(name="twice", storage_path=str(tmp_path)))
    for name in ["twice-20250101-120000", "twice-20250101-120000-ab12", "twice-2025-oops", "twice-x-20250101-130000"]:
        (tmp_path / name).mkdir()
    assert Path(find_sweep(cfg)).name == "twice-20250101-120000-ab12"
    (tmp_path / "twice-20250101-115959-ffff").mkdir()  # made later, named earlier
    assert Path(find_sweep(cfg)).name == "twice-20250101-120000-ab12"
    time.sleep(0.01)
    (tmp_path / "twice-20250101-120000-0000").mkdir()  # the same second: the directory made last
    assert Path(find_sweep(cfg)).name == "twice-20250101-120000-0000"
    (tmp_path / "twice-20250101-120001").mkdir()  # an old name, newer
    assert Path(find_sweep(cfg)).name == "twice-20250101-120001"
