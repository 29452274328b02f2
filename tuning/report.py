"""`lrtune report`: a sweep's ranked table from MLflow, and its plots logged back to the sweep's
parent run (under report/): the best learning curve per schedule, the range tests side by side,
and Optuna's parameter importances and parallel coordinates.

The table is also what `lrtune sweep` prints at its end (`table`), so the two read the same.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from . import plots
from .tracking.reader import SweepView
from .tracking.store import STATUSES


def table(rows: list[dict], metric: str, out=None, top: int | None = None) -> None:
    """rows: dicts with metric (None for a trial that has none: it failed before its first epoch),
    std (or None), epochs, status, optimizer, schedule, lr (the peak LR), weight_decay and run_id,
    best first."""
    out = out or sys.stdout
    print(f"{'rank':>4}  {metric:>16}  {'epochs':>6}  {'status':9}  {'optimizer':9}  {'schedule':10}  "
          f"{'peak_lr':>11}  {'weight_decay':>12}  mlflow run", file=out)
    for i, r in enumerate(rows[:top] if top else rows, 1):
        value = ("-" if r["metric"] is None else f"{r['metric']:.4f}"
                 + (f" ± {r['std']:.4f}" if r.get("std") is not None else ""))
        print(f"{i:>4}  {value:>16}  {r['epochs']:>6}  {r['status']:9}  {r['optimizer']:9}  {r['schedule']:10}  "
              f"{r['lr']:>11.3g}  {r['weight_decay']:>12.3g}  {r.get('run_id') or '-'}", file=out)


def report(uri: str, experiment: str | None, sweep: str | None = None, top: int = 10, out=None,
           plot: bool = True) -> dict:
    """Print the ranked table of one sweep (the newest in `experiment`, or in the whole store when
    None, unless `sweep` names a parent run id or sweep name) and log the plots to its parent run.
    Returns what was printed and logged."""
    out = out or sys.stdout
    view = SweepView(uri, experiment, sweep)
    rows, metric = view.ranked()
    ended = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    print(f"sweep {view.name} (MLflow run {view.run_id}, {view.status}): {len(rows)} trials, "
          + ", ".join(f"{v} {k}" for k, v in ended.items() if v), file=out)
    table(rows, metric, out, top)
    logged = []
    if plot:
        with tempfile.TemporaryDirectory() as d:
            made = _plots(view, rows, metric, Path(d), out)
            for path in made:
                view.log_report_artifact(path)
            logged = [f"report/{Path(p).name}" for p in made]
        print(f"plots logged to run {view.run_id}: {', '.join(logged) or 'none'}", file=out)
    ranked = [r for r in rows if r["metric"] is not None and r["status"] != "failed"]
    print(f"export the best: lrtune export {ranked[0]['run_id']} -o workflow.yaml --tracking-uri {uri}"
          if ranked else "no trial has a result to export", file=out)
    return dict(name=view.name, run_id=view.run_id, metric=metric, rows=rows, artifacts=logged)


def _plots(view, rows: list[dict], metric: str, d: Path, out) -> list[str]:
    made = []
    best = {}
    for r in rows:  # rows are best first: the first of each schedule is its best
        best.setdefault(r["schedule"], r)
    curves = [(r, view.history(r["run_id"], metric)) for r in best.values()]
    if any(points for _, points in curves):
        made.append(plots.plot_learning_curves(curves, metric, str(d / "learning_curves.png")))
    tests = view.range_tests()
    if tests:
        chosen = {opt: s["weight_decay"] for opt, s in view.priors().items()}
        made.append(plots.plot_range_tests(tests, str(d / "range_tests.png"), chosen))
    storage, study_name = view.optuna_study()
    try:
        made += plots.plot_study(storage, study_name, metric, d, out)
    except Exception as e:  # noqa: BLE001 - the study itself unreadable (storage moved, another Optuna)
        print(f"(Optuna plots skipped: {type(e).__name__}: {e})", file=out)
    return made
