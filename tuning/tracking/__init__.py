"""MLflow, split by direction; the only package that imports MLflow.

- `writer`: what a sweep records — its parent run (`SweepRecord`: the config, the range tests' runs
  and priors, band extensions, the summary, the best workflow, a note), the trial runs, the run of
  `lrtune train` (`TrainRun`), models through mlflow.pytorch, the experiment's saved runs view;
- `callback`: the Ray Tune callback (`TrialRuns`) that opens, feeds and ends a run per trial through
  the writer, on a logging thread of its own, and makes MLflow agree with Tune's records on resume;
- `reader`: what `report`, `export` and `ui` read (`SweepView`, `exported_workflow`);
- `store`: the names (tags, artifacts) and conversions the three share.

MLflow is a record, not the sweep's state: `--resume` reads Tune's experiment state and the range
tests' priors from the sweep's folder under storage_path (tuning/sweep.py).
"""
