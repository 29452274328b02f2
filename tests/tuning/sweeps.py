"""Sweep configs for the tests (a config pointed at stores in a test's folder, written as YAML), and what
Tune has written of a running sweep (`last_results`)."""

import json
from pathlib import Path

import yaml

from tests.stores import mlflow_store


def write(tmp_path, cfg: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def local(cfg: dict, tmp_path, store: bool = True) -> dict:
    """`cfg` with its stores and results in `tmp_path`; its MLflow store made (tests.stores) unless
    `store` is False: for a test that the sweep itself creates nothing."""
    cfg, db = dict(cfg), Path(tmp_path) / "mlflow.db"
    cfg["tracking"] = dict(mlflow_uri=mlflow_store(db) if store else f"sqlite:///{db}", experiment=cfg.get("name", "t"),
                           optuna_storage=f"sqlite:///{tmp_path}/optuna.db")
    cfg["storage_path"] = str(tmp_path / "ray_results")
    return cfg


def last_results(results: Path) -> dict[Path, dict]:
    """Each trial folder under a Tune experiment folder (`results`, with its `*/trial_*/result.json`)
    and its last complete result. Tune may be writing a line while this reads: a line is complete
    once its newline is written, so the text after the last newline is left for the next read."""
    last = {}
    for f in Path(results).glob("*/trial_*/result.json"):
        complete = f.read_text().rpartition("\n")[0]
        if complete:
            last[f.parent] = json.loads(complete.rsplit("\n", 1)[-1])
    return last
