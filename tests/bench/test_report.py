"""bench.report's readers on the stored full results (bench/results/*.json, nothing re-run): every
benchmark gives claim rows of four cells with a verdict in the table's words, and a section
table; RESULTS.md written from them opens with the claims table."""

import json
from pathlib import Path

import pytest

from bench import report

STORED = Path(report.__file__).parent / "results"
VERDICTS = {"met", "missed", "reproduced", "not reproduced", "partly"}


@pytest.mark.parametrize("name", report.ORDER)
def test_each_reader_turns_its_stored_result_into_claims_and_a_table(name):
    path = STORED / f"{name}.json"
    if not path.exists():
        pytest.skip(f"no stored result for {name}")
    claims, lines = report.BENCHMARKS[name][1](json.loads(path.read_text()))
    assert claims, f"{name}: no claim rows"
    for row in claims:
        assert len(row) == 4 and all(str(c).strip() for c in row), row
        assert row[3] in VERDICTS, row
    assert any(line.startswith("| ") for line in lines), f"{name}: no table"


def test_results_md_opens_with_the_claims_table(tmp_path, monkeypatch):
    for f in STORED.glob("*.json"):
        (tmp_path / f.name).write_text(f.read_text())
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "BENCH", tmp_path)
    text = report.write().read_text()
    first_section = text.index("\n## ", text.index("## Claims") + 1)
    assert "| claim " in text[:first_section] and "| verdict" in text[:first_section]
    for title in report.TITLES.values():
        assert f"## {title}" in text
