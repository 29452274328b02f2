import sqlite3

from mlflow.tracking import MlflowClient

from tests.stores import mlflow_store
from tuning.stores import commit_without_waiting


def test_the_named_sqlite_stores_commit_in_wal_mode_and_others_are_left_alone(tmp_path):
    named, other = mlflow_store(tmp_path / "mlflow.db"), mlflow_store(tmp_path / "other.db")
    commit_without_waiting(named, "http://127.0.0.1:5000")
    MlflowClient(named).create_experiment("e")
    MlflowClient(other).create_experiment("e")
    mode = lambda f: sqlite3.connect(tmp_path / f).execute("PRAGMA journal_mode").fetchone()[0]  # noqa: E731
    assert mode("mlflow.db") == "wal"
    assert mode("other.db") == "delete"
