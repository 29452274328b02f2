"""The pieces that let a user's own code in: batches of any structure, accumulation and clipping
against torch, exact streaming metrics, decay groups, the report protocol, Task checks, and a
LightningModule against the plain loop."""

import collections
import dataclasses
import math
import os
import sys

import pytest
import torch
from torch import nn

from trainables.data import grouped, to_device
from trainables.loops import Report, StopTrial, run_workflow
from trainables.tasks import Task, accuracy, digits, load_task, r2
from trainables.trainable import fits_on_device
from trainables.workflow import Step, optimizer_and_schedule, param_groups

Pair = collections.namedtuple("Pair", "x y")


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    meta: str


def test_batches_of_any_structure_move_with_their_structure():
    t = torch.ones(2, dtype=torch.float64)
    batch = {"a": t, "b": [t, (t, "s")], "c": Pair(t, 3), "d": Batch(t, "m")}
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved["c"], Pair) and moved["c"].y == 3
    assert isinstance(moved["d"], Batch) and moved["d"].meta == "m"
    assert isinstance(moved["b"][1], tuple) and moved["b"][1][1] == "s"

    class WithTo:
        def to(self, device):
            return "moved"

    assert to_device(WithTo(), torch.device("cpu")) == "moved"


def test_grouped_makes_equal_groups_and_drops_the_rest():
    assert list(grouped(range(7), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(grouped(range(7), 2, limit=2)) == [[0, 1], [2, 3]]


def test_streaming_r2_and_accuracy_equal_the_whole_set():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(103, 3, generator=g), torch.randn(103, 3, generator=g)
    acc = r2.accumulator()
    for i in range(0, 103, 10):
        acc.update(out[i:i + 10], y[i:i + 10])
    o, t = out.double(), y.double()
    whole = 1 - ((o - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()
    assert acc.compute() == pytest.approx(whole.item(), rel=1e-9)
    logits, labels = torch.randn(103, 5, generator=g), torch.randint(0, 5, (103,), generator=g)
    a = accuracy.accumulator()
    for i in range(0, 103, 10):
        a.update(logits[i:i + 10], labels[i:i + 10])
    assert a.compute() == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def _task(model_fn):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
    return Task("t", (x, y), (x, y), models={"m": model_fn}, loss_fn=nn.functional.mse_loss, metric=r2,
                metric_name="r2")


def test_accumulated_step_equals_one_step_on_the_whole_batch_and_clipping_is_torchs():
    task = _task(lambda: nn.Linear(4, 1))
    x, y = task.train
    torch.manual_seed(0)
    a, b = nn.Linear(4, 1), nn.Linear(4, 1)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    Step(task, a, opt_a, grad_clip=0.05)([(x[:32], y[:32]), (x[32:], y[32:])])
    opt_b.zero_grad()
    nn.functional.mse_loss(b(x), y).backward()
    torch.nn.utils.clip_grad_norm_(b.parameters(), 0.05)
    opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-7)


def test_decay_skips_biases_and_norm_weights_unless_asked():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert len(param_groups(model, 0.1, decay_norm_and_bias=True)) == 1
    opt, sched = optimizer_and_schedule(dict(optimizer="adamw", schedule="constant", lr=1e-3, weight_decay=0.1,
                                             epochs=2), model, steps_per_epoch=5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_report_needs_the_metric_stops_on_nan_and_restores_rngs():
    task = _task(lambda: nn.Linear(4, 1))
    rows = []
    wf = dict(schedule="constant", epochs=3)
    report = Report(lambda row, ckpt: rows.append((row, ckpt() if ckpt else None)), task, wf, 4)
    with pytest.raises(ValueError, match="must include the task's metric 'r2'"):
        report({"accuracy": 1.0})
    report({"r2": torch.tensor(0.5)}, state=lambda: {"w": 1})
    assert rows[0][0]["r2"] == 0.5 and rows[0][0]["epoch"] == 1 and rows[0][1]["state"] == {"w": 1}
    with pytest.raises(StopTrial):
        report({"r2": math.nan})
    assert rows[-1][0]["diverged"]
    saved = rows[0][1]
    expected = torch.rand(3)
    torch.manual_seed(999)
    resumed = Report(lambda *a: None, task, wf, 4, checkpoint=dict(saved, rng=dict(saved["rng"])))
    torch.set_rng_state(saved["rng"]["torch"])
    again = torch.rand(3)
    torch.manual_seed(999)
    assert resumed.restored == {"w": 1} and torch.equal(torch.rand(3), again) and resumed.epoch == 1
    assert torch.equal(expected, again)


def test_gpu_placement_only_when_the_data_fits():
    assert fits_on_device(100, 1000) and not fits_on_device(300, 1000) and not fits_on_device(0, 1000)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(train=torch.utils.data.TensorDataset(torch.zeros(4, 1)), val=None),
     "train must be an (inputs, targets) pair of tensors; a Dataset or DataLoader goes in train_loader="),
    (dict(train=(torch.zeros(4, 1), torch.zeros(3)), val=(torch.zeros(4, 1), torch.zeros(4))),
     "train inputs and targets must have the same, non-zero length; got 4 inputs and 3 targets"),
    (dict(train_loader=lambda b: [], val_loader=None), "train_loader/val_loader must both be given"),
    (dict(mode="up"), "mode must be one of 'max', 'min'; got 'up'"),
    (dict(models={}), "models must offer at least one model"),
    (dict(loss_fn=None), "loss or loss_fn must be given"),
    (dict(loss_fn=None, loss=lambda m, b: 0), "evaluate must be given with loss(model, batch)"),
])
def test_task_checks_name_the_field(kwargs, needle):
    x, y = torch.zeros(4, 1), torch.zeros(4)
    base = dict(name="bad", train=(x, y), val=(x, y), models={"m": lambda: nn.Linear(1, 1)},
                loss_fn=nn.functional.mse_loss, metric=r2)
    with pytest.raises(ValueError) as e:
        Task(**dict(base, **kwargs)).check()
    assert needle in str(e.value)


def test_the_current_directory_is_importable_for_task_strings(tmp_path, monkeypatch):
    (tmp_path / "cwd_task_module.py").write_text(
        "from trainables.tasks import digits\n\ndef task():\n    return digits()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    assert load_task("cwd_task_module:task").name == "digits"


@pytest.mark.slow  # Lightning: its import alone takes ~5 s
def test_a_lightning_module_and_the_plain_loop_end_on_the_same_metric():
    pytest.importorskip("lightning", reason="the lightning extra (lrtune[lightning]) is not installed")
    from examples.tasks.lightning_module import LitDigits, lit_digits, mlp

    lit = lit_digits()
    module = LitDigits()
    plain = Task("plain", models={"mlp": mlp}, loss_fn=nn.functional.cross_entropy, metric=accuracy,
                 train_loader=lambda batch_size, seed, epoch: LitDigits.train_dataloader(module),
                 val_loader=lambda batch_size: LitDigits.val_dataloader(module))
    wf = dict(optimizer="adamw", schedule="one_cycle", max_lr=0.01, weight_decay=1e-4, epochs=3, batch_size=50)
    a = run_workflow(lit, dict(wf, model="lit"))
    b = run_workflow(plain, dict(wf, model="mlp"))
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2, 3]
    assert a[-1]["accuracy"] > 0.9 and b[-1]["accuracy"] > 0.9
    assert a[-1]["accuracy"] == pytest.approx(b[-1]["accuracy"], abs=0.02)
    assert a[-1]["val_loss"] == pytest.approx(b[-1]["val_loss"], rel=0.15)


def _through_and_resumed(task, workflow, stop_after: int):
    """Rows of a run-through, and of a run stopped after `stop_after` epochs and resumed from the
    checkpoint its report made there (in a state of other RNGs)."""
    from trainables.loops import run_loop

    spe = task.steps_per_epoch(workflow["batch_size"])
    through = []
    run_loop(task, workflow, Report(lambda row, ckpt: through.append(row), task, workflow, spe))
    saved = []

    class Stop(Exception):
        pass

    def until(row, ckpt):
        saved.append(ckpt())
        if row["epoch"] == stop_after:
            raise Stop

    with pytest.raises(Stop):
        run_loop(task, workflow, Report(until, task, workflow, spe))
    torch.manual_seed(12345)
    resumed = []
    run_loop(task, workflow, Report(lambda row, ckpt: resumed.append(row), task, workflow, spe,
                                    checkpoint=saved[-1]))
    return through, resumed


# the image folder's DataLoaders start worker processes: slow
@pytest.mark.parametrize("example", ["own_loop", pytest.param("image_folder", marks=pytest.mark.slow)])
def test_stop_and_resume_equals_run_through_for_user_loops_and_loaders(example, tmp_path):
    if example == "own_loop":
        from examples.tasks.own_loop import own_loop as factory
        task, model = factory(), "mlp"
    else:
        from examples.tasks.image_folder import digits_folder, write_digits
        task, model = digits_folder(str(write_digits(tmp_path / "png"))), "cnn"
    wf = dict(model=model, optimizer="adamw", schedule="one_cycle", max_lr=0.01, weight_decay=1e-4,
              epochs=2, batch_size=64, seed=5)
    through, resumed = _through_and_resumed(task, wf, stop_after=1)
    assert [r["epoch"] for r in resumed] == [2]
    assert [r["accuracy"] for r in resumed] == [r["accuracy"] for r in through[1:]]
    assert [r["val_loss"] for r in resumed] == [r["val_loss"] for r in through[1:]]


@pytest.mark.parametrize("loop", ["lrtune", pytest.param("lightning", marks=pytest.mark.slow), "train_fn"])
def test_the_trained_model_comes_back_and_is_rebuilt_from_the_last_checkpoint(loop):
    """train_workflow returns the trained model (a fresh LightningModule for Lightning, None for a
    train_fn), and model_from_checkpoint rebuilds the same one from the loop's last checkpoint."""
    from trainables.loops import micro_batches, model_from_checkpoint, run_loop, train_workflow

    if loop == "lightning":
        pytest.importorskip("lightning", reason="the lightning extra (lrtune[lightning]) is not installed")
        from examples.tasks.lightning_module import lit_digits
        task, model_name = lit_digits(), "lit"
    elif loop == "train_fn":
        from examples.tasks.own_loop import own_loop
        task, model_name = own_loop(), "mlp"
    else:
        task, model_name = digits(), "mlp"
    wf = dict(model=model_name, optimizer="adamw", schedule="one_cycle", max_lr=0.01, epochs=2, batch_size=50)
    history, model = train_workflow(task, wf)
    checkpoints = []
    run_loop(task, wf, Report(lambda row, ckpt: checkpoints.append(ckpt()), task, wf,
                              micro_batches(task, model_name, 50)[0]))
    rebuilt = model_from_checkpoint(task, wf, checkpoints[-1])
    if loop == "train_fn":
        assert model is None and rebuilt is None
        return
    assert type(model) is type(rebuilt) is type(task.models[model_name]())
    if loop == "lightning":  # a fresh module: no Trainer, no lrtune optimizer on it
        assert model._trainer is None and "configure_optimizers" not in vars(model)
    val = digits()
    x = val.val[0][:50]
    with torch.no_grad():
        assert torch.equal(model.eval()(x), rebuilt.eval()(x))
    assert val.evaluate_model(rebuilt, 50)["accuracy"] == pytest.approx(history[-1]["accuracy"], abs=1e-6)
