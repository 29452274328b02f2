"""Helpers shared by the benchmarks: a pool of one-thread workers, result files, plots, MLflow
logging, tables. Results go to bench/results/, or to $LRTUNE_BENCH_RESULTS (the tests' temp dir);
MLflow runs to $LRTUNE_BENCH_MLFLOW, default sqlite:///<results>/mlflow.db, experiment "bench"."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(os.environ.get("LRTUNE_BENCH_RESULTS") or Path(__file__).parent / "results")


def _one_thread() -> None:
    torch.set_num_threads(1)


def pool(workers: int | None = None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers or os.cpu_count() or 1, initializer=_one_thread)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(path)
    return path


def figure(size=(6.4, 4.0)):
    """A matplotlib Figure with an Agg canvas (object API: no pyplot state), as tuning's plots draw."""
    from tuning.plots import figure

    return figure(size)


def band(ax, x, curves, color, label: str, alpha: float = 0.25) -> np.ndarray:
    """The mean of `curves` (one row per seed) as a line, ± their std as a shaded band; the mean."""
    a = np.asarray(curves, dtype=float)
    m, s = np.nanmean(a, axis=0), np.nanstd(a, axis=0)
    ax.plot(x, m, color=color, label=label)
    ax.fill_between(x, m - s, m + s, color=color, alpha=alpha)
    return m


def save_png(fig, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def log_mlflow(name: str, params: dict, metrics: dict, files: list[Path]) -> str:
    """One MLflow run per benchmark run (experiment "bench"): params, headline metrics, the result
    JSON and plots as artifacts. Returns the run id."""
    import mlflow

    RESULTS.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(os.environ.get("LRTUNE_BENCH_MLFLOW") or f"sqlite:///{RESULTS.resolve()}/mlflow.db")
    exp = client.get_experiment_by_name("bench")
    if exp is None:  # artifacts beside the store, not in the working directory's ./mlruns
        exp = client.get_experiment(client.create_experiment(
            "bench", artifact_location=(RESULTS.resolve() / "mlartifacts").as_uri()))
    run = client.create_run(exp.experiment_id, run_name=name,
                            tags={"lrtune.kind": "bench", "bench": name})
    rid = run.info.run_id
    for k, v in params.items():
        client.log_param(rid, k, str(v)[:6000])
    for k, v in metrics.items():
        if v is not None and np.isfinite(v):
            client.log_metric(rid, k, float(v))
    for f in files:
        client.log_artifact(rid, str(f))
    client.set_terminated(rid, "FINISHED")
    return rid


def finish(name: str, quick: bool, payload: dict, figures: dict | None = None, params: dict | None = None,
           metrics: dict | None = None) -> Path:
    """Save `<name>[_quick].json` and its plots `<name>[_quick]_<key>.png`, log them to MLflow."""
    stem = name + ("_quick" if quick else "")
    pngs = [save_png(fig, f"{stem}_{key}") for key, fig in (figures or {}).items()]
    payload = dict(payload, plots=[p.name for p in pngs])
    path = save(stem, payload)
    log_mlflow(stem, params or {}, metrics or {}, [path, *pngs])
    return path


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}"


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])
