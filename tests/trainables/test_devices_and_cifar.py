import pickle

import numpy as np
import pytest
import torch

from trainables.tasks import load_task
from trainables.trainable import device_for
from trainables.workflow import Run, amp_dtype


def _fake_cifar(root, n_per_batch=20, seed=0):
    """A tiny folder in the real cifar-10-batches-py format (pickled dicts of bytes keys)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n_per_batch)
        # images whose mean colour encodes the label, so that a model can learn them
        data = rng.integers(0, 60, (n_per_batch, 3072)) + (labels[:, None] * 19)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data.astype(np.uint8), b"labels": labels.tolist()}, fh)
    return root


def test_cifar10_reads_the_local_pickle_format(tmp_path):
    task = load_task("cifar10", str(_fake_cifar(tmp_path)))
    assert task.train[0].shape == (100, 3, 32, 32) and task.val[0].shape == (20, 3, 32, 32)
    assert task.train[0].dtype == torch.float32
    assert torch.allclose(task.train[0].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)  # normalised
    run = Run(task, dict(model="resnet", optimizer="sgdw", schedule="one_cycle", epochs=1,
                         batch_size=10, max_lr=0.01, weight_decay=5e-4))
    row = run.train_epoch()
    assert row["epoch"] == 1 and not row["diverged"]


def test_cifar10_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Expected data_batch_\\* and test_batch files in"):
        load_task("cifar10", str(tmp_path))


def test_cpu_path_has_no_amp_and_picks_cpu():
    assert amp_dtype(torch.device("cpu")) is None
    assert device_for({"gpu": 0}) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert device_for({"gpu": 0.25}) == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_gpu_run_uses_amp_and_gpu_resident_data():
    task = load_task("mnist1d").to("cuda")
    assert task.train[0].is_cuda
    run = Run(task, dict(model="cnn", optimizer="adamw", schedule="one_cycle", epochs=2,
                         batch_size=100, max_lr=0.03, weight_decay=1e-4), device="cuda")
    assert run.amp in (torch.bfloat16, torch.float16)
    rows = [run.train_epoch() for _ in range(2)]
    assert rows[-1]["accuracy"] > 0.5 and not rows[-1]["diverged"]
    assert device_for({"gpu": 0.25}) == torch.device("cuda")
