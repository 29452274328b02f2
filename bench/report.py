"""bench/RESULTS.md (or, for --quick, RESULTS_quick.md beside the quick results) from the result
files: per benchmark, what it measures (its docstring's first paragraph), its headline numbers,
its plots, and the run's date and machine. Nothing is re-run."""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
from pathlib import Path

from bench.common import RESULTS

BENCH = Path(__file__).parent
ORDER = ("search_quality", "short_trials", "sanity", "clr", "sgdr", "adamw_vs_l2", "one_cycle", "suggestion",
         "workflows", "seeded_vs_blind", "overhead")
TITLES = {"search_quality": "Search quality against the hand-written sweep", "sanity": "Range test as a sanity check",
          "clr": "Cyclical learning rates",
          "sgdr": "SGDR: warm restarts", "adamw_vs_l2": "AdamW vs Adam + L2",
          "one_cycle": "1-cycle super-convergence", "suggestion": "Range-test suggestion quality",
          "workflows": "Workflow comparison at equal compute", "seeded_vs_blind": "Seeded vs blind search",
          "overhead": "Framework overhead and parallel throughput",
          "short_trials": "Per-trial cost with many short trials"}


def write(quick: bool = False) -> Path:
    out = RESULTS / "RESULTS_quick.md" if quick else BENCH / "RESULTS.md"
    prefix = os.path.relpath(RESULTS, out.parent)
    parts = [_header(quick)]
    for name in ORDER:
        path = RESULTS / f"{name}{'_quick' if quick else ''}.json"
        if path.exists():
            parts.append(section(name, json.loads(path.read_text()), prefix))
        else:
            parts.append(f"## {TITLES[name]}\n\nNo result yet: run `python -m bench.{name}`.\n")
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    return out


def section(name: str, payload: dict, prefix: str) -> str:
    lines = [f"## {TITLES[name]}", "", _about(name), "", f"`python -m bench.{name}`", ""]
    headline = payload.get("headline") or {}
    if headline:
        lines += ["| measure | value |", "|---|---|"]
        lines += [f"| {k} | {_value(v)} |" for k, v in headline.items()]
        lines.append("")
    if name == "suggestion" and payload.get("aggregate"):
        lines += _aggregate(payload["aggregate"])
    if name == "search_quality" and payload.get("tasks"):
        lines += _search_tables(payload["tasks"])
        if payload.get("rule_distances"):
            lines += ["The suggestion rule on these held-out tasks: log10(best 1-cycle max_lr any search found / "
                      "lrtune's suggested max_lr), per search seed (decades; the band reaches 1 decade each way):", "",
                      "| task | adamw | sgdw |", "|---|---|---|"]
            lines += [f"| {task} | " + " | ".join(", ".join(f"{x:+.2f}" for x in d[o]) or "-" for o in ("adamw", "sgdw"))
                      + " |" for task, d in payload["rule_distances"].items()] + [""]
    for png in payload.get("plots", []):
        lines += [f"![{name}]({prefix}/{png})", ""]
    return "\n".join(lines)


def _about(name: str) -> str:
    doc = importlib.import_module(f"bench.{name}").__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _aggregate(aggregate: dict) -> list[str]:
    keys = list(next(iter(aggregate.values())).keys())
    lines = ["| rule | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {rule} | " + " | ".join(_value(m.get(k)) for k in keys) + " |" for rule, m in aggregate.items()]
    return lines + [""]


def _search_tables(tasks: dict) -> list[str]:
    """Per task: each method's best metric after each budget (mean ± std over search seeds), its
    epochs trained and wall time at the largest budget."""
    import numpy as np

    lines = []
    for task, t in tasks.items():
        budgets = [str(n) for n in t["budgets"]]
        lines += [f"**{task}** (best any method reached in any seed: {t['ceiling']:.4f})", "",
                  "| method | " + " | ".join(f"best of {n}" for n in budgets)
                  + f" | epochs ({budgets[-1]} trials) | wall s |", "|---|" + "---|" * (len(budgets) + 2)]
        for m, r in t["rows"].items():
            cells = []
            for n in budgets:
                v = np.asarray(r["best"][n], dtype=float)
                v = v[np.isfinite(v)]
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}" if len(v) else "-")
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean(r['epochs'][budgets[-1]]):.0f} | "
                         f"{np.mean(r['wall_s']):.0f} |")
        lines.append("")
    return lines


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _header(quick: bool) -> str:
    total = RESULTS / f"all{'_quick' if quick else ''}.json"
    took = ""
    if total.exists():
        took = (f" The benchmarks' latest runs (`python -m bench all`, or `--only` for some) add up to "
                f"{json.loads(total.read_text())['seconds'] / 60:.1f} minutes.")
    import torch

    return "\n".join([
        "# lrtune benchmarks" + (" (quick run: reduced sizes, figures not meaningful)" if quick else ""), "",
        "Regenerate: `.ci/venv python -m bench all` (everything, one process per benchmark) or "
        "`python -m bench report` (this file from `bench/results/*.json`). Every comparison is measured "
        "side by side in one run; figures are mean ± std over seeds where the benchmark says so." + took, "",
        f"Written {datetime.date.today()}, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}.", ""])
