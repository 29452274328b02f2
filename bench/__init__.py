"""lrtune's benchmarks: each module prints a table of side-by-side measurements and writes
bench/results/<name>.json."""
