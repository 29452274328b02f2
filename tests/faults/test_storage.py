"""Storage: a sweep whose storage_path has no room for its checkpoints is refused before anything
starts (exit 2, naming storage_path, what is free and what it needs), also when the disk is full
from the start, where writing an empty file still succeeds. A disk that fills mid-sweep stops it
with one message, records that tell the truth and no empty files, and `--resume` finishes it once
there is room; a state file cut short is refused by `--resume`, naming it. A real small file
system (tmpfs)."""

import contextlib
import json
import shutil
import sqlite3
import subprocess
import threading
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tuning import preflight
from tuning.cli import main
from tuning.config import parse


def _tmpfs(tmp_path, size: str):
    """A tmpfs of `size` (needs root or CAP_SYS_ADMIN, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode}): needs root")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # a store may still be open (MLflow caches engines)


@pytest.fixture
def small_disk(tmp_path):
    yield from _tmpfs(tmp_path, "4m")


@pytest.fixture
def disk_8m(tmp_path):
    yield from _tmpfs(tmp_path, "8m")


def _fill(folder) -> None:
    """Write zeros into folder/filler until the disk has no room (ENOSPC)."""
    with open(folder / "filler", "wb") as f:
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * 2**16)
                f.flush()


def _config(tmp_path, storage_path, **over) -> str:
    cfg = dict(name="disk", task="digits", model="mlp", epochs=3, batch_size=100, schedules=["constant"],
               search=dict(num_samples=64, seeded=False), keep_checkpoints=2, checkpoint_every_s=0,
               tracking=dict(mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="disk",
                             optuna_storage=f"sqlite:///{tmp_path}/optuna.db"),
               storage_path=str(storage_path), **over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_space_needed_counts_every_trials_checkpoints_at_least_its_last():
    files = preflight.BASE_BYTES + 16 * (preflight.TRIAL_BYTES + 10 * preflight.EPOCH_BYTES)
    cfg = parse(dict(epochs=10, keep_checkpoints=4, checkpoint_every_s=10, search=dict(num_samples=16)))
    assert preflight.space_needed(cfg, 10**6) == (files + 16 * 10**6, files + 16 * 5 * 10**6)
    every_epoch = parse(dict(epochs=10, keep_checkpoints=4, checkpoint_every_s=0, search=dict(num_samples=16)))
    assert preflight.space_needed(every_epoch, 10**6) == (files + 16 * 5 * 10**6,) * 2
    short = parse(dict(epochs=2, keep_checkpoints=4, checkpoint_every_s=0, search=dict(num_samples=16)))
    files = preflight.BASE_BYTES + 16 * (preflight.TRIAL_BYTES + 2 * preflight.EPOCH_BYTES)
    assert preflight.space_needed(short, 10**6) == (files + 16 * 2 * 10**6,) * 2  # 2 epochs: 2 at most


@pytest.mark.parametrize("full", [False, True], ids=["too-small", "full-from-the-start"])
def test_a_storage_path_without_room_is_refused_before_anything_starts(full, small_disk, ray_session, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if full:
        _fill(small_disk)  # writing then fails with ENOSPC
    with pytest.raises(SystemExit) as e:
        main(["sweep", _config(tmp_path, small_disk / "results"), "--verbose", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"storage_path: {small_disk / 'results'} has " in err and "MB free" in err
    assert "this sweep needs at least" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small", "sweep.yaml"]  # no store, no results
    assert [p.name for p in small_disk.iterdir()] == (["filler"] if full else [])


def test_a_sweep_that_fits_on_the_small_disk_runs_there(small_disk, ray_session, tmp_path, monkeypatch, capsys):
    """Not refused by a guess: 2 trials x 1 epoch need about 1.7 MB of the 4."""
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path, small_disk / "results", stopping=dict(scheduler="none"))
    cfg = yaml.safe_load(open(path))
    cfg.update(epochs=1, search=dict(num_samples=2, seeded=False, points_to_evaluate=[
        dict(optimizer="adamw", schedule="constant", lr=1e-3, weight_decay=wd, momentum=0.9) for wd in (1e-4, 1e-3)]))
    open(path, "w").write(yaml.safe_dump(cfg))
    assert main(["sweep", path, "--verbose", "0"]) == 0
    assert "2 trials in" in capsys.readouterr().out
    assert len(list((small_disk / "results").glob("disk-*/trial_*/checkpoint_*"))) == 2


TRIALS, EPOCHS = 3, 20


def _three_trials(tmp_path, storage_path, store) -> str:
    """3 trials x 20 epochs one at a time, a checkpoint each epoch, at LRs that do not diverge."""
    path = _config(tmp_path, storage_path, stopping=dict(scheduler="none"))
    cfg = yaml.safe_load(open(path))
    cfg["search"].update(num_samples=TRIALS, max_concurrent=1, points_to_evaluate=[
        dict(optimizer="adamw", schedule="constant", lr=1e-3, weight_decay=wd, momentum=0.9) for wd in (1e-4, 1e-3, 1e-2)])
    cfg.update(epochs=EPOCHS, tracking=dict(cfg["tracking"], mlflow_uri=f"sqlite:///{store}"))
    open(path, "w").write(yaml.safe_dump(cfg))
    return path


def _sweep_filling(path: str, store, disk) -> int:
    """Run the sweep while a thread fills `disk` once the MLflow store holds three epochs' metrics
    (read with sqlite3, read-only: an MlflowClient would create the tables while the sweep does)."""
    def fill_at_epoch_3():
        while True:
            with contextlib.suppress(sqlite3.Error), \
                    contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
                if db.execute("select count(*) from metrics where key = 'accuracy'").fetchone()[0] >= 3:
                    break
            time.sleep(0.1)
        _fill(disk)

    filler = threading.Thread(target=fill_at_epoch_3, daemon=True)
    filler.start()
    code = main(["sweep", path, "--verbose", "0"])
    filler.join(5)
    return code


def _one_message(capfd) -> str:
    """The sweep's own message, the only `lrtune:` line, with no traceback anywhere."""
    out, err = capfd.readouterr()
    mine = [line for line in err.splitlines() if line.startswith("lrtune:")]
    assert len(mine) == 1, err[-3000:]
    assert "Traceback" not in out + err, (out + err)[-3000:]
    return mine[0]


def _runs(store):
    client = MlflowClient(f"sqlite:///{store}")
    return client, client.search_runs([client.get_experiment_by_name("disk").experiment_id], max_results=100)


def _assert_finished_once(store, optuna_db) -> None:
    """One parent FINISHED; each trial one run, FINISHED, every epoch logged once; Optuna: all COMPLETE."""
    client, runs = _runs(store)
    [parent] = [r for r in runs if r.data.tags.get("lrtune.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("lrtune.kind") == "trial"]
    assert parent.info.status == "FINISHED" and len(trials) == TRIALS
    assert len({t.data.tags["lrtune.trial_id"] for t in trials}) == TRIALS
    for t in trials:
        assert t.info.status == "FINISHED" and t.data.tags["status"] == "finished", t.data.tags
        assert sorted(m.step for m in client.get_metric_history(t.info.run_id, "accuracy")) == \
            list(range(1, EPOCHS + 1))
    study = optuna.load_study(study_name=parent.info.run_name, storage=f"sqlite:///{optuna_db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * TRIALS


def test_a_disk_full_mid_sweep_stops_it_and_resume_finishes_it_once_there_is_room(disk_8m, ray_session, tmp_path,
                                                                                 monkeypatch, capfd):
    """The disk fills once a trial has logged three epochs: Tune cannot copy a checkpoint (or its
    experiment state) there. The sweep stops at once, exit 1, one message naming storage_path and
    the command that continues; no traceback; the parent run FAILED, no run left RUNNING, no empty
    file left. `--resume` then refuses a state file cut short, naming it, and changes nothing;
    with the file whole and room made, it finishes every trial once, every epoch logged once."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlflow.db"
    path = _three_trials(tmp_path, disk_8m / "results", store)
    assert _sweep_filling(path, store, disk_8m) == 1
    message = _one_message(capfd)
    assert f"storage_path {disk_8m / 'results'} is full (" in message and f"lrtune sweep {path} --resume" in message

    _, before = _runs(store)
    [parent] = [r for r in before if r.data.tags.get("lrtune.kind") == "sweep"]
    assert parent.info.status == "FAILED" and "is full" in parent.data.tags["mlflow.note.content"]
    assert "RUNNING" not in {r.info.status for r in before}
    [experiment] = (disk_8m / "results").iterdir()
    assert [f.name for f in experiment.rglob("*") if f.is_file() and f.stat().st_size == 0] == \
        [".validate_storage_marker"]  # Tune's own marker: empty by design

    [state] = experiment.glob("experiment_state-*.json")
    whole = state.read_bytes()
    state.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SystemExit) as e:
        main(["sweep", path, "--verbose", "0", "--resume"])
    assert e.value.code == 2 and f"--resume: cannot read {state} " in capfd.readouterr().err
    assert [(r.info.run_id, r.info.status) for r in _runs(store)[1]] == [(r.info.run_id, r.info.status) for r in before]

    state.write_bytes(whole)
    (disk_8m / "filler").unlink()
    assert main(["sweep", path, "--verbose", "0", "--resume"]) == 0
    _assert_finished_once(store, tmp_path / "optuna.db")
    shutil.rmtree(experiment)  # before the tmpfs goes


@pytest.mark.parametrize("cut", ["empty", "half"])
@pytest.mark.parametrize("name", ["experiment_state-2026-01-01_00-00-01.json", "search_gen_state-2026-01-01_00-00-01.json",
                                  "searcher-state-2026-01-01_00-00-01.pkl", "tuner.pkl"])
def test_resume_refuses_a_state_file_cut_short_naming_it(tmp_path, name, cut):
    """Each kind of file Tune restores from (JSON, and pickles, one of them named .json), newest
    first: whole, it passes; empty or cut in half, `--resume` is refused naming it. An older file
    of a kind is not read by Tune, and not checked."""
    import pickle

    from tuning.config import ConfigError
    from tuning.sweep import check_state

    sweep = tmp_path / "s-20260101-000000-abcd"
    sweep.mkdir()
    files = {"experiment_state-2026-01-01_00-00-01.json": json.dumps({"trial_data": [[1, 2]] * 50}).encode(),
             "search_gen_state-2026-01-01_00-00-01.json": pickle.dumps({"counter": list(range(200))}),
             "searcher-state-2026-01-01_00-00-01.pkl": pickle.dumps(list(range(200))),
             "tuner.pkl": pickle.dumps({"x": list(range(200))}),
             "experiment_state-2025-01-01_00-00-01.json": b""}  # older: Tune reads the newest
    for f, data in files.items():
        (sweep / f).write_bytes(data)
    check_state(str(sweep))
    whole = files[name]
    (sweep / name).write_bytes(b"" if cut == "empty" else whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match=f"--resume: cannot read {sweep / name} "):
        check_state(str(sweep))


def test_an_mlflow_store_that_refuses_writes_mid_sweep_stops_it_and_resume_repairs_it(disk_8m, ray_session,
                                                                                      tmp_path, capfd):
    """MLflow's sqlite file and its artifact folder sit on a small disk that fills once a trial has
    logged three epochs: the store refuses what it cannot fit (a workflow.yaml, a plot, new rows);
    the same path as a store made read-only, which root, running CI, cannot be denied. The sweep
    stops (exit 1) with one message that names the store and says `--resume` repairs it, no
    traceback. Once there is room, `--resume` logs what the store missed from Tune's records, ends
    every run, and finishes the sweep: each trial once, each epoch logged once."""
    store = disk_8m / "mlflow.db"  # and MLflow's artifacts, which lrtune keeps beside a sqlite store
    path = _three_trials(tmp_path, tmp_path / "results", store)
    assert _sweep_filling(path, store, disk_8m) == 1
    message = _one_message(capfd)
    assert f"the MLflow store sqlite:///{store} refused a write" in message and f"lrtune sweep {path} --resume" in message

    (disk_8m / "filler").unlink()
    assert main(["sweep", path, "--verbose", "0", "--resume"]) == 0
    _assert_finished_once(store, tmp_path / "optuna.db")
