"""`python -m bench all --quick`: every benchmark runs (reduced) and leaves well-formed results,
plots, MLflow runs and a RESULTS_quick.md. The figures themselves are not asserted: quick runs
are too small to mean anything, and the full figures are the benchmarks' business."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.__main__ import BENCHMARKS
from bench.report import METHODS, TITLES, search_quality

pytestmark = pytest.mark.slow  # end to end (tests/conftest.py)
ROOT = Path(__file__).resolve().parents[2]


def test_bench_all_quick_writes_well_formed_results(tmp_path):
    env = dict(os.environ, LRTUNE_BENCH_RESULTS=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "bench", "all", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])

    for name in BENCHMARKS:
        payload = json.loads((tmp_path / f"{name}_quick.json").read_text())
        assert payload["headline"], f"{name}: empty headline"
        for png in payload["plots"]:
            assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name}: {png} is not a PNG"
    assert set(json.loads((tmp_path / "all_quick.json").read_text())["runs"]) == set(BENCHMARKS)

    md = (tmp_path / "RESULTS_quick.md").read_text()
    assert "No result yet" not in md
    for name in BENCHMARKS:
        assert f"## {TITLES[name]}" in md
    for png in json.loads((tmp_path / "sanity_quick.json").read_text())["plots"]:
        assert f"](./{png})" in md  # linked relative to the file, so the plots show where it lies

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id], max_results=100)
    assert sorted(r.data.tags["bench"] for r in runs) == sorted(f"{n}_quick" for n in BENCHMARKS)
    assert all(r.info.status == "FINISHED" for r in runs)

    # --reuse --rerun: one method runs again beside the others' stored runs, marked so, and the
    # report says its wall time is from another run
    part = tmp_path / "search_quality_parts" / "tanh_deep-0-quick.json"
    before = json.loads(part.read_text())
    done = subprocess.run([sys.executable, "-m", "bench.search_quality", "--quick", "--reuse", "--rerun", "adam"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    after = json.loads(part.read_text())
    assert {m: r for m, r in after.items() if m != "adam"} == {m: r for m, r in before.items() if m != "adam"}
    assert "rerun" in after["adam"] and "rerun" not in before["adam"]
    _, lines = search_quality(json.loads((tmp_path / "search_quality_quick.json").read_text()))
    assert any(line.startswith(f"{METHODS['adam']} was run again on {after['adam']['rerun']}") for line in lines)
