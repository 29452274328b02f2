"""MLflow sqlite stores for the tests, made from one migrated copy.

A new sqlite store runs all of MLflow's schema migrations when it is first opened: about 2 s each
on a 2-core machine, and the suite opens dozens. `mlflow_store(path)` copies a store that was
migrated once per test process (MLflow's own code made it: nothing here writes its schema), less
its Default experiment, which MLflow recreates on the copy's first open with that store's own
artifact root. A test of how lrtune creates a store (its lock, WAL mode, the README's first run)
lets lrtune create it instead.
"""

import atexit
import contextlib
import shutil
import sqlite3
import tempfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _migrated() -> Path:
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="lrtune-mlflow-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # MLflow migrates the new file
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM experiments")
    return db


def mlflow_store(path: str | Path) -> str:
    """A migrated, empty MLflow store at `path` (a .db file; its folder is made); its sqlite URI."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated(), path)
    return f"sqlite:///{path}"
