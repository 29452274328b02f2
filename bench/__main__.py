"""Run the benchmarks and regenerate bench/RESULTS.md.

    python -m bench all             # everything, ~85 minutes on 2 CPU cores (search_quality ~30 of them)
    python -m bench all --quick     # a reduced run of each (CI: well-formed results, < 3 minutes)
    python -m bench all --only clr,sgdr
    python -m bench report          # RESULTS.md from bench/results/*.json, nothing re-run

Each benchmark runs as its own process (`python -m bench.<name>`), one after another, so the
timing benchmarks have the machine to themselves; --quick runs them in this process instead, one
after another, sharing one Ray and one set of imports (most of a quick run is start-up). A failed
benchmark does not stop the others; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback

from bench import report
from bench.common import RESULTS, save

BENCHMARKS = report.ORDER


def run_all(names: list[str], quick: bool) -> dict:
    runs = {}
    for name in names:
        print(f"\n=== bench.{name}{' --quick' if quick else ''}", flush=True)
        t0 = time.perf_counter()
        code = _in_process(name) if quick else subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode
        runs[name] = dict(seconds=time.perf_counter() - t0, returncode=code)
        print(f"=== bench.{name}: exit {code}, {runs[name]['seconds']:.0f} s", flush=True)
    return runs


def _in_process(name: str) -> int:
    try:
        importlib.import_module(f"bench.{name}").main(["--quick"])
        return 0
    except Exception:
        traceback.print_exc()
        return 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("all", "report"))
    ap.add_argument("--quick", action="store_true", help="reduced runs; results in *_quick.json and RESULTS_quick.md")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    args = ap.parse_args(argv)
    names = BENCHMARKS if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.command == "all":
        t0 = time.perf_counter()
        runs = run_all(list(names), args.quick)
        name = "all_quick" if args.quick else "all"
        kept = {}
        if args.only and (RESULTS / f"{name}.json").exists():  # a partial re-run updates the record
            kept = json.loads((RESULTS / f"{name}.json").read_text())["runs"]
        both = {**kept, **runs}
        merged = {n: both[n] for n in BENCHMARKS if n in both}
        save(name, dict(runs=merged, seconds=sum(r["seconds"] for r in merged.values())))
        failed = [n for n, r in runs.items() if r["returncode"] != 0]
        print(f"\nall: {len(runs)} benchmarks in {time.perf_counter() - t0:.0f} s"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    path = report.write(args.quick)
    print(f"wrote {path} (results in {RESULTS})")
    return 1 if args.command == "all" and failed else 0


if __name__ == "__main__":
    sys.exit(main())
