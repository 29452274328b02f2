"""Storage: a sweep whose storage_path has no room for its checkpoints is refused before anything
starts (exit 2, naming storage_path, what is free and what it needs), also when the disk is full
from the start, where writing an empty file still succeeds. A real small file system (tmpfs)."""

import subprocess

import pytest
import yaml

from tuning import preflight
from tuning.cli import main
from tuning.config import parse


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (needs root or CAP_SYS_ADMIN, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode}): needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


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
        with open(small_disk / "filler", "wb") as f:  # fill it: writing then fails with ENOSPC
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 2**16)
                    f.flush()
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
