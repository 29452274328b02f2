"""Preflight: what a sweep needs from its surroundings, checked before any range test or trial,
each failing within seconds with a message that names the config key, what was found and what is
needed (a `ConfigError`: exit 2, nothing started, no MLflow run written).

- tracking.mlflow_uri, tracking.optuna_storage: a sqlite file's folder exists and is writable; an
  http(s) MLflow tracking server answers its /health endpoint within TIMEOUT_S.
- storage_path: a local folder can be created and written (remote URIs are left to Ray's pyarrow),
  and its file system has room for the sweep's checkpoints (`space_needed`).
- resources: some node of the Ray cluster offers one trial's cpu and gpu (a trial asking for a GPU
  on a cluster without one would otherwise stay pending forever).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .config import ConfigError, SweepConfig

TIMEOUT_S = 5.0


def sqlite_folder(key: str, uri: str) -> None:
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"{key}: the folder of {uri} ({folder}) must exist and be writable")


def tracking_uri(uri: str) -> None:
    sqlite_folder("tracking.mlflow_uri", uri)
    if uri.startswith(("http://", "https://")):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=TIMEOUT_S) as r:  # noqa: S310 - the user's own URI
                ok = r.status == 200
        except (urllib.error.URLError, OSError) as e:
            raise ConfigError(f"tracking.mlflow_uri: no MLflow tracking server answers at {uri} "
                              f"({health}: {getattr(e, 'reason', e)}); start it, or use sqlite:///mlflow.db") from None
        if not ok:
            raise ConfigError(f"tracking.mlflow_uri: {health} answered {r.status}, expected 200")


# Tune's own files beside the checkpoints: the experiment, searcher and scheduler state, and each
# trial's params, result.json and progress.csv (measured: 1.8 MB for the README's 32 x 20 epochs).
BASE_BYTES, TRIAL_BYTES, EPOCH_BYTES = 2**20, 16 * 2**10, 4 * 2**10


def space_needed(cfg: SweepConfig, checkpoint_bytes: int) -> tuple[int, int]:
    """What a sweep writes to storage_path, at least and at most: Tune's own files, and each trial's
    checkpoints, which Tune keeps for every trial, finished ones too: at least its last, at most its
    newest `keep_checkpoints` (one more while the next is written) — as many as checkpoint_every_s
    lets it make (every epoch when 0)."""
    files = BASE_BYTES + cfg.search.num_samples * (TRIAL_BYTES + cfg.epochs * EPOCH_BYTES)
    most = min(cfg.keep_checkpoints + 1, cfg.epochs)
    least = most if cfg.checkpoint_every_s == 0 else 1
    return (files + cfg.search.num_samples * least * checkpoint_bytes,
            files + cfg.search.num_samples * most * checkpoint_bytes)


def storage(path: str, need: tuple[int, int] = (0, 0)) -> None:
    """need: (at least, at most) bytes: refused below the least, warned below the most."""
    if "://" in path:
        return
    existing = next(p for p in (Path(path).absolute(), *Path(path).absolute().parents) if p.exists())
    least, most = need
    try:
        free = shutil.disk_usage(existing).free  # before the folder is made: a refusal leaves nothing
        if free >= least:
            Path(path).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".lrtune-preflight-"):
                pass
    except OSError as e:
        raise ConfigError(f"storage_path: cannot write trial results and checkpoints to {path} "
                          f"({e.strerror or e})") from None
    mb = 2**20
    if free < least:
        raise ConfigError(f"storage_path: {path} has {free / mb:.1f} MB free; this sweep needs at least "
                          f"{least / mb:.1f} MB there (each trial's last checkpoint and Tune's own files; up to "
                          f"{most / mb:.1f} MB with keep_checkpoints of each): free space there, or choose "
                          f"another storage_path")
    if free < most:
        print(f"lrtune: warning: storage_path: {path} has {free / mb:.1f} MB free; this sweep may write up to "
              f"{most / mb:.1f} MB there (keep_checkpoints checkpoints of each trial)", file=sys.stderr)


def resources(cfg: SweepConfig, nodes: list[dict]) -> None:
    """nodes: `ray.nodes()`; the alive ones' resources must fit one trial on some node."""
    need = {"CPU": cfg.resources.cpu, "GPU": cfg.resources.gpu}
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if any(all(r.get(k, 0.0) >= v for k, v in need.items() if v > 0) for r in alive):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in alive) or "no nodes"
    key = "resources.gpu" if cfg.resources.gpu > max((r.get("GPU", 0.0) for r in alive), default=0.0) \
        else "resources.cpu"
    raise ConfigError(f"{key}: a trial asks for {cfg.resources.cpu:g} CPU and {cfg.resources.gpu:g} GPU, but no "
                      f"node of this Ray cluster offers that (nodes: {have}); it would wait forever")


def check(cfg: SweepConfig, storage_path: str, nodes: list[dict], checkpoint_bytes: int = 0) -> None:
    """All of the above; the storage folder is created last, so a failed check leaves nothing.
    checkpoint_bytes: about one trial checkpoint's size."""
    tracking_uri(cfg.tracking.mlflow_uri)
    sqlite_folder("tracking.optuna_storage", cfg.tracking.optuna_storage)
    resources(cfg, nodes)
    storage(storage_path, space_needed(cfg, checkpoint_bytes))
