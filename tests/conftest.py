import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_fixed_seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs it: ray.init costs ~10 s."""
    import ray

    from tuning.sweep import init_ray

    init_ray("local")  # a new local cluster, never one a `ray start` on this machine left behind
    yield
    ray.shutdown()
