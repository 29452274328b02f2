"""How the driver's connections to its sqlite stores (MLflow's and Optuna's) commit: in WAL mode
with `synchronous=NORMAL`. sqlite's default (a rollback journal, synchronous=FULL) waits for the
disk at every commit, ~5 ms here, and MLflow and Optuna commit once per call: ~10 Optuna commits in
Tune's loop per trial started, each MLflow call on the logging thread. In WAL mode a commit is an
append to the -wal file beside the database, synced at checkpoints; a crash of the process loses
nothing committed, a crash of the machine may lose the last commits but never corrupts the file.
sqlite's WAL needs the file on a local disk (not NFS), as a sqlite store does anyway.
"""

from __future__ import annotations

import os
import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine

_FILES: set[str] = set()  # the real paths of the stores whose connections are set up here


def commit_without_waiting(*uris: str) -> None:
    """Set up every connection this process opens from now on to the sqlite stores among `uris`
    (URIs of SQLAlchemy, as MLflow and Optuna take them; others are left alone). A hook on every
    engine's connections, not on one engine: MLflow and Optuna build their own."""
    for uri in uris:
        if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
            _FILES.add(os.path.realpath(uri[len("sqlite:///"):]))
    if not event.contains(Engine, "connect", _on_connect):
        event.listen(Engine, "connect", _on_connect)


def _on_connect(connection, _record) -> None:
    if not isinstance(connection, sqlite3.Connection):
        return
    file = connection.execute("PRAGMA database_list").fetchone()[2]
    if file and os.path.realpath(file) in _FILES:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
