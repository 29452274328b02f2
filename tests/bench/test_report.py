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


def test_every_missed_search_quality_target_says_why():
    """RESULTS.md's "Where a target is missed" has a line for each search-quality target the stored
    result misses, and none when a target is met."""
    payload = json.loads((STORED / "search_quality.json").read_text())
    claims, lines = report.search_quality(payload)
    missed = {row[0] for row in claims if row[3] == "missed"}
    said = [line for line in lines if line.startswith("- ")]
    starts = {"after 4 trials, on average": "- After 4 trials", "after 8 trials on every task": "- After 8 trials",
              "after 16 trials on every task": "- After 16 trials", "within 0.5 pt": "- Within 0.5 pt",
              "no more epochs": "- Epochs"}
    for claim in (row[0] for row in claims):
        key = next(k for k in starts if k in claim)
        assert any(line.startswith(starts[key]) for line in said) == (claim in missed), claim
