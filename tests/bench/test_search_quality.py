"""bench/search_quality.py's own arguments: what `--rerun` accepts is refused before anything
runs (the benchmark itself runs in test_bench_all)."""

import pytest

from bench import search_quality


@pytest.mark.parametrize("argv, needle", [
    (["--reuse", "--rerun", "lrtune,nope"], "--rerun: methods among lrtune, lrtune_blind, handwritten"),
    (["--rerun", "lrtune"], "with --reuse (got 'lrtune')"),
])
def test_rerun_names_the_methods_it_takes_and_needs_reuse(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        search_quality.main(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err
