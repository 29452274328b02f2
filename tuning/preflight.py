"""Preflight: what a sweep needs from its surroundings, checked before any range test or trial,
each failing within seconds with a message that names the config key, what was found and what is
needed (a `ConfigError`: exit 2, nothing started, no MLflow run written).

- tracking.mlflow_uri, tracking.optuna_storage: a sqlite file's folder exists and is writable; an
  http(s) MLflow tracking server answers its /health endpoint within TIMEOUT_S.
- storage_path: a local folder can be created and written (remote URIs are left to Ray's pyarrow).
- resources: some node of the Ray cluster offers one trial's cpu and gpu (a trial asking for a GPU
  on a cluster without one would otherwise stay pending forever).
"""

from __future__ import annotations

import os
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


def storage(path: str) -> None:
    if "://" in path:
        return
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lrtune-preflight-"):
            pass
    except OSError as e:
        raise ConfigError(f"storage_path: cannot write trial results and checkpoints to {path} "
                          f"({e.strerror or e})") from None


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


def check(cfg: SweepConfig, storage_path: str, nodes: list[dict]) -> None:
    """All of the above; the storage folder is created last, so a failed check leaves nothing."""
    tracking_uri(cfg.tracking.mlflow_uri)
    sqlite_folder("tracking.optuna_storage", cfg.tracking.optuna_storage)
    resources(cfg, nodes)
    storage(storage_path)
