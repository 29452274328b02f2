"""Sweep configs for the tests: a config pointed at stores in a test's folder, written as YAML."""

from pathlib import Path

import yaml


def write(tmp_path, cfg: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def local(cfg: dict, tmp_path) -> dict:
    cfg = dict(cfg)
    cfg["tracking"] = dict(mlflow_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment=cfg.get("name", "t"),
                           optuna_storage=f"sqlite:///{tmp_path}/optuna.db")
    cfg["storage_path"] = str(tmp_path / "ray_results")
    return cfg
