"""Shared by every test: one torch thread and a fixed seed, a temporary working directory (no
test writes into the repository), one Ray for the tests that need it, and the test lanes.

Lanes: `slow` marks the end-to-end tests, those that use a real Ray, a server, a browser, Lightning,
fresh processes or many real trainings: found by the fixtures they use (SLOW_FIXTURES), or marked by
their modules (those that start sweep processes, the import-layer check, the config fuzz test's 3000
documents) or themselves (the console script, Lightning's Trainer, DataLoader worker processes, the
stopper on ten real learning curves). The fast lane,
`python -m pytest -m "not slow"`, takes under a minute; the README's test command (and CI) runs both.
"""

import pytest
import torch

SLOW_FIXTURES = {"ray_session", "smoke", "mlflow_server", "ray_head"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _one_thread_fixed_seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _in_a_temporary_folder(tmp_path, monkeypatch):
    """Each test runs in its own tmp_path: what a sweep writes by default (./mlruns, ./ray_results,
    sqlite stores) lands there, never in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs it: ray.init costs ~10 s."""
    import ray

    from tuning.sweep import init_ray

    init_ray("local")  # a new local cluster, never one a `ray start` on this machine left behind
    yield
    ray.shutdown()
