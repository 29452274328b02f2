import io

import pytest
import torch

from trainables.tasks import digits
from trainables.workflow import Run

WORKFLOWS = {
    "one_cycle": dict(max_lr=0.01),
    "cyclic": dict(base_lr=0.002, max_lr=0.01, step_size_up=20, mode="triangular2"),
    "sgdr": dict(lr=0.01, T_0=15, T_mult=2, eta_min=1e-5),
    "constant": dict(lr=0.003),
}


@pytest.fixture(scope="module")
def task():
    return digits()


@pytest.mark.parametrize("schedule", sorted(WORKFLOWS))
@pytest.mark.parametrize("optimizer", ["adamw", "sgdw"])
def test_stop_and_resume_equals_run_through(task, schedule, optimizer):
    w = dict(model="mlp", optimizer=optimizer, schedule=schedule, epochs=5, batch_size=50, seed=3,
             weight_decay=1e-3, **WORKFLOWS[schedule])
    through = Run(task, w)
    rows = [through.train_epoch() for _ in range(5)]

    first = Run(task, w)
    for _ in range(2):
        first.train_epoch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # what a checkpoint holds
    torch.manual_seed(12345)  # the resumed process starts with other RNG state
    resumed = Run(task, w)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    resumed_rows = [resumed.train_epoch() for _ in range(3)]

    assert resumed.done and resumed.epoch == 5
    for k, v in through.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [r["val_loss"] for r in resumed_rows] == [r["val_loss"] for r in rows[2:]]
    assert [r["lr"] for r in resumed_rows] == [r["lr"] for r in rows[2:]]


def test_seeds_in_lockstep_are_the_mean_of_separate_runs_and_resume_exactly(task):
    from trainables.workflow import Replicas

    w = dict(model="mlp", optimizer="adamw", schedule="constant", lr=3e-3, epochs=3, batch_size=50, seed=7,
             weight_decay=1e-4)
    alone = [[Run(task, dict(w, seed=s)).train_epoch()] for s in (7, 8)]
    both = Replicas(task, w, replicas=2)
    row = both.train_epoch()
    accs = [a[0]["accuracy"] for a in alone]
    assert row["accuracy_replicas"] == accs and row["accuracy"] == pytest.approx(sum(accs) / 2)
    assert row["accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)  # sample std of two
    assert row["val_loss"] == pytest.approx((alone[0][0]["val_loss"] + alone[1][0]["val_loss"]) / 2)
    buf = io.BytesIO()
    torch.save(both.state_dict(), buf)
    rest = [both.train_epoch() for _ in range(2)]
    resumed = Replicas(task, w, replicas=2)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    assert [resumed.train_epoch()["accuracy_replicas"] for _ in range(2)] == [r["accuracy_replicas"] for r in rest]
    assert resumed.done and resumed.epoch == 3
