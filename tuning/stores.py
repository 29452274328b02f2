"""How the driver's connections to its sqlite stores (MLflow's and Optuna's) commit: in WAL mode
with `synchronous=NORMAL`. sqlite's default (a rollback journal, synchronous=FULL) waits for the
disk at every commit, ~5 ms here, and MLflow and Optuna commit once per call: ~10 Optuna commits in
Tune's loop per trial started, each MLflow call on the logging thread. In WAL mode a commit is an
append to the -wal file beside the database, synced at checkpoints; a crash of the process loses
nothing committed, a crash of the machine may lose the last commits but never corrupts the file.
sqlite's WAL needs the file on a local disk (not NFS), as a sqlite store does anyway.

Also the first use of a store: MLflow (alembic) and Optuna create their tables when they first open
a new database, and two sweeps opening one at once both try (`table _alembic_tmp_experiments already
exists`). `create_schemas` makes them under a lock file beside each sqlite file, before the sweep's
runs are written, so that a second sweep finds them made; the only MLflow and Optuna calls outside
tuning/tracking/ and tuning/search.py, because the lock is about the files, not the runs.

And `write_atomically`, for the files lrtune writes itself (an exported workflow, the stopper's
state): a full disk or a kill leaves the old file or none, never a half-written one.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import tempfile
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine

_FILES: set[str] = set()  # the real paths of the stores whose connections are set up here


def commit_without_waiting(*uris: str) -> None:
    """Set up every connection this process opens from now on to the sqlite stores among `uris`
    (URIs of SQLAlchemy, as MLflow and Optuna take them; others are left alone). A hook on every
    engine's connections, not on one engine: MLflow and Optuna build their own."""
    _FILES.update(file for file in map(_sqlite_file, uris) if file)
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)


def _on_connect(connection, _record) -> None:
    if not isinstance(connection, sqlite3.Connection):
        return
    file = connection.execute("PRAGMA database_list").fetchone()[2]
    if file and os.path.realpath(file) in _FILES:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")


def create_schemas(mlflow_uri: str, optuna_storage: str) -> None:
    """MLflow's and Optuna's tables (and MLflow's Default experiment), made under `<db>.lock` when
    a store is a sqlite file: of two processes the second waits, then finds them. Other stores
    (a tracking server, a database server) are left to MLflow and Optuna."""
    if _sqlite_file(mlflow_uri):
        from mlflow.tracking import MlflowClient

        with _locked(mlflow_uri):
            MlflowClient(tracking_uri=mlflow_uri).search_experiments(max_results=1)
    if _sqlite_file(optuna_storage):
        import optuna

        with _locked(optuna_storage):
            optuna.storages.RDBStorage(optuna_storage)


def _sqlite_file(uri: str) -> str | None:
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return os.path.realpath(uri[len("sqlite:///"):].partition("?")[0])
    return None


@contextmanager
def _locked(uri: str):
    """An exclusive flock on the sqlite file's `<file>.lock` (kept: removing it would race too)."""
    with open(f"{_sqlite_file(uri)}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_atomically(path: str, data: str | bytes) -> None:
    """Write via a temporary file in the same folder, then rename: a failure (a full disk, a kill)
    leaves the old file or none, never a half-written one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lrtune-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
