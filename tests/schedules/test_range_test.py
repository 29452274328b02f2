import copy
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from schedules import constant_baseline, default_step, range_test
from schedules.range_test import EDGE_MARGIN, LR_DIVISOR, SIGNAL_MARGIN, batch_baselines
from trainables.tasks import digits


@pytest.fixture(scope="module")
def task():
    return digits()


class Loader:
    """A re-iterable, reshuffling loader over the task's training tensors."""

    def __init__(self, task, batch_size=64, seed=0, labels=None):
        self.x, self.y = task.train
        if labels is not None:
            self.y = labels
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=self.gen)
        for i in range(0, len(order) - self.batch_size + 1, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.x[idx], self.y[idx]


def bn_mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))


class FakeStep:
    """A step_fn that returns a prescribed loss for each LR (no model involved)."""

    def __init__(self, loss_of_lr):
        self.loss_of_lr = loss_of_lr
        self.lrs = []

    def __call__(self, model, optimizer, loss_fn, batch):
        lr = optimizer.param_groups[0]["lr"]
        self.lrs.append(lr)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)  # parameters do change
        return self.loss_of_lr(lr)


def _linear_and_sgd():
    m = nn.Linear(2, 1)
    return m, torch.optim.SGD(m.parameters(), lr=0.1)


BATCHES = [(torch.zeros(1, 2), torch.zeros(1, 1))]


def test_exponential_and_linear_sweeps_hit_both_ends():
    for mode, mid in (("exp", math.sqrt(1e-6 * 1.0)), ("linear", (1e-6 + 1.0) / 2)):
        step = FakeStep(lambda lr: 1.0)
        m, o = _linear_and_sgd()
        range_test(m, o, None, BATCHES, start_lr=1e-6, end_lr=1.0, num_iter=21, step_mode=mode,
                   step_fn=step)
        assert step.lrs[0] == pytest.approx(1e-6) and step.lrs[-1] == pytest.approx(1.0)
        assert step.lrs[10] == pytest.approx(mid)


def test_smoothing_is_bias_corrected_ema_and_stops_at_diverge_factor():
    losses = [2.0, 1.0, 1.5, 0.5, 0.7, 0.6, 9.0, 50.0, 80.0, 90.0, 100.0, 200.0]
    it = iter(losses)
    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, num_iter=len(losses), smooth=0.9, diverge_factor=3.0,
                   step_fn=lambda *a: next(it))
    avg, expected, best = 0.0, [], math.inf
    for i, loss in enumerate(losses):
        avg = 0.9 * avg + 0.1 * loss
        s = avg / (1 - 0.9 ** (i + 1))
        expected.append(s)
        best = min(best, s)
        if s > 3.0 * best:
            break
    assert r.losses == pytest.approx(expected)
    assert len(r.raw_losses) == len(expected) < len(losses)
    assert r.curves[0].stop == "diverged"


def test_batches_are_cycled_and_one_shot_iterators_replayed():
    seen = []

    def step(model, optimizer, loss_fn, batch):
        seen.append(batch)
        return 1.0

    m, o = _linear_and_sgd()
    range_test(m, o, None, iter([1, 2, 3]), num_iter=10, step_fn=step)
    assert seen == [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
    with pytest.raises(ValueError, match="Expected batches to yield at least one"):
        range_test(m, o, None, [], num_iter=10, step_fn=step)


def _state(model, opt):
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), model.training


def _assert_same(a, b):
    (ma, oa, ta), (mb, ob, tb) = a, b
    assert ta == tb
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for k in oa["state"]:
        for name, v in oa["state"][k].items():
            w = ob["state"][k][name]
            assert torch.equal(v, w) if torch.is_tensor(v) else v == w


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_model_optimizer_and_batchnorm_restored_exactly(task, kind):
    model = bn_mlp()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if kind == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01))
    for x, y in list(Loader(task))[:3]:  # non-trivial momentum buffers and BN statistics
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    before = _state(model, opt)
    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task), num_iter=60)
    assert len(r.raw_losses) > 10
    _assert_same(before, _state(model, opt))


def test_restored_when_the_step_raises(task):
    model = bn_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = _state(model, opt)
    calls = []

    def step(m, o, loss_fn, batch):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("boom")
        o.zero_grad()
        loss = loss_fn(m(batch[0]), batch[1])
        loss.backward()
        o.step()
        return loss

    with pytest.raises(RuntimeError, match="boom"):
        range_test(model, opt, nn.functional.cross_entropy, Loader(task), step_fn=step)
    _assert_same(before, _state(model, opt))


def test_custom_step_gradient_accumulation(task):
    """A user step: two micro-batches accumulate into one optimizer step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    steps = []

    def accumulate(m, o, loss_fn, batch):
        x, y = batch
        o.zero_grad()
        total = 0.0
        for xs, ys in zip(x.chunk(2), y.chunk(2)):
            loss = loss_fn(m(xs), ys) / 2
            loss.backward()
            total += loss.item()
        o.step()
        steps.append(o.param_groups[0]["lr"])
        return total

    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task, 128), step_fn=accumulate)
    assert len(steps) == len(r.raw_losses)
    assert r.diagnosis.status == "ok", r.diagnosis.message


def test_custom_step_with_a_closure(task):
    """A user step that hands the optimizer a closure (as LBFGS needs); the test still restores."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = _state(model, opt)
    evaluations = []

    def with_closure(m, o, loss_fn, batch):
        def closure():
            o.zero_grad()
            loss = loss_fn(m(batch[0]), batch[1])
            loss.backward()
            evaluations.append(loss.item())
            return loss
        return o.step(closure)

    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task), step_fn=with_closure)
    assert len(evaluations) == len(r.raw_losses) and r.raw_losses == evaluations
    assert r.diagnosis.status == "ok", r.diagnosis.message
    _assert_same(before, _state(model, opt))


def test_healthy_model_ok_with_suggestion_and_spread(task, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task, 50), repeats=3, seed=0)
    assert r.diagnosis.status == "ok", r.diagnosis.message
    s = r.suggestion
    assert len(s.max_lrs) == 3
    assert s.max_lr == pytest.approx(10 ** np.median(np.log10(s.max_lrs)))
    assert s.spread == pytest.approx(np.std(np.log10(s.max_lrs)))
    assert s.lr == pytest.approx(s.max_lr / LR_DIVISOR)
    assert 1e-3 < s.max_lr < 10
    f = r.features
    assert f.log_lr_descent < f.log_lr_min < f.log_lr_edge
    # the bounds the curve supports: medians over the repeats of where the descent has begun and
    # of the divergence edge, around the suggestion
    from schedules.range_test import features

    feats = [features(c) for c in r.curves]
    lo, hi = s.bounds
    assert lo == pytest.approx(min(s.max_lr, 10 ** np.median([g.log_lr_descent for g in feats])))
    assert hi == pytest.approx(10 ** np.median([g.log_lr_edge for g in feats]))
    assert lo < s.max_lr < hi
    path = r.plot(str(tmp_path / "curve.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


class NaNSometimes(nn.Module):
    """A layer that turns its output to NaN on one batch in five (a sporadic data/numerics bug)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * math.nan if self.calls % 5 == 0 else x


def test_nan_producing_layer_is_non_finite(task):
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), NaNSometimes(), nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task))
    assert r.suggestion is None
    assert r.diagnosis.status == "non_finite"
    assert "gaps" in r.diagnosis.message
    assert sum(not math.isfinite(v) for v in r.raw_losses) >= 5


def test_nan_that_persists_without_a_rise_is_non_finite():
    """NaN from lr = 1e-2 on while the loss is still at its low (0/0 once units die, say): not the
    divergence region, which grows first."""
    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9,
                   step_fn=FakeStep(lambda lr: math.nan if lr > 1e-2 else _synthetic_curve(lr)))
    assert (r.diagnosis.status, r.suggestion) == ("non_finite", None), r.diagnosis.message
    found = re.search(r"at lr=(\S+) and stayed so, with no rise before it \(last finite loss (\S+), "
                      r"starting loss 2\)", r.diagnosis.message)
    assert found, r.diagnosis.message
    per_point = 10 ** (8 / 199)  # the sweep's LR ratio between points
    assert 1e-2 < float(found[1]) <= 1e-2 * per_point  # the first LR past 1e-2
    assert 0.5 <= float(found[2]) <= _synthetic_curve(1e-2 / per_point)  # the curve's low, just before
    assert r.curves[0].stop == "non_finite"


def test_inf_after_the_loss_has_grown_is_the_divergence():
    """The same sweep where the loss blows up past 10**-0.5 and turns inf only past lr = 3: a healthy
    divergence (the sweep's own stop disabled by a huge diverge_factor, so the inf ends it)."""
    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, diverge_factor=1e12,
                   step_fn=FakeStep(lambda lr: math.inf if lr > 3 else _synthetic_curve(lr)))
    assert r.curves[0].stop == "non_finite" and r.diagnosis.status == "ok", r.diagnosis.message
    assert r.suggestion is not None


def test_nan_from_the_start_is_non_finite(task):
    model = nn.Sequential(nn.Linear(64, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    r = range_test(model, opt, lambda out, y: nn.functional.cross_entropy(out, y) * math.nan, Loader(task))
    assert (r.diagnosis.status, r.suggestion) == ("non_finite", None)
    assert "already at start_lr" in r.diagnosis.message


def test_shuffled_labels_have_no_descent(task):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    shuffled = task.train[1][torch.randperm(len(task.train[1]))]
    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task, labels=shuffled))
    assert (r.diagnosis.status, r.suggestion) == ("no_descent", None), r.diagnosis.message
    assert "labels shuffled" in r.diagnosis.message


def test_frozen_parameters_are_flat(task):
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.requires_grad_(False)
    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task))
    assert (r.diagnosis.status, r.suggestion) == ("flat", None)
    assert "frozen" in r.diagnosis.message


def test_start_lr_too_high_diverges_immediately(task):
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task), start_lr=20.0, end_lr=1e4)
    assert (r.diagnosis.status, r.suggestion) == ("diverges_immediately", None), r.diagnosis.message
    assert "start_lr=20" in r.diagnosis.message


def test_no_divergence_refuses_and_says_raise_end_lr():
    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, step_fn=FakeStep(lambda lr: 1.0 if lr < 1e-4 else 0.5))
    assert (r.diagnosis.status, r.suggestion) == ("no_divergence", None)
    assert "raise end_lr" in r.diagnosis.message


def _synthetic_curve(lr, descent=-4.0, valley=-2.0, edge=-0.5):
    """Plateau at 2, falls between 10**descent and 10**valley to 0.5, flat, blows up past 10**edge."""
    x = math.log10(lr)
    t = min(max((x - descent) / (valley - descent), 0.0), 1.0)
    base = 2.0 - 1.5 * t
    return base if x < edge else base * 10 ** (3 * (x - edge))


def test_rule_reads_edge_and_minimum_off_a_known_curve():
    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(_synthetic_curve))
    assert r.diagnosis.status == "ok", r.diagnosis.message
    f = r.features
    per_point = 8 / 199  # decades between sweep points
    assert f.log_lr_descent == pytest.approx(-4.0 + 0.25 * 2, abs=3 * per_point)  # a quarter down
    assert -2.0 - 3 * per_point <= f.log_lr_min <= -0.5
    # back above the starting loss 2 where 0.5 * 10**(3(x+0.5)) > 2, i.e. x > -0.5 + log10(4)/3
    assert f.log_lr_edge == pytest.approx(-0.5 + math.log10(4) / 3, abs=3 * per_point)
    assert math.log10(r.suggestion.max_lr) == pytest.approx(f.log_lr_edge - EDGE_MARGIN["sgd"])
    adam = torch.optim.AdamW(m.parameters(), lr=1e-3)
    r = range_test(m, adam, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(_synthetic_curve))
    assert math.log10(r.suggestion.max_lr) == pytest.approx(f.log_lr_edge - EDGE_MARGIN["adaptive"])


def test_noise_dip_on_the_plateau_is_not_the_descent():
    def noisy(lr):
        x = math.log10(lr)
        dip = -0.6 if -6.5 < x < -6.2 else 0.0  # a few low batches early on
        return _synthetic_curve(lr) + dip
    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(noisy))
    assert r.diagnosis.status == "ok", r.diagnosis.message
    assert r.features.log_lr_descent > -4.0


@pytest.mark.parametrize("kwargs,message", [
    (dict(start_lr=0.0), "Expected start_lr to be a positive finite number, but got 0.0"),
    (dict(start_lr=1.0, end_lr=0.1), "Expected end_lr > start_lr=1.0, but got 0.1"),
    (dict(num_iter=5), "Expected num_iter to be at least 10, but got 5"),
    (dict(step_mode="log"), "Expected step_mode to be one of 'exp', 'linear', but got 'log'"),
    (dict(smooth=1.0), "Expected smooth in [0.0, 1.0), but got 1.0"),
    (dict(diverge_factor=1.0), "Expected diverge_factor in (1.0, inf), but got 1.0"),
    (dict(repeats=0), "Expected repeats to be a positive integer, but got 0"),
    (dict(baseline=-1.0), "Expected baseline to be None (auto), a non-negative finite loss (declared), "
                          "or False/'off', but got -1.0"),
    (dict(baseline=True), "Expected baseline to be None (auto), a non-negative finite loss (declared), "
                          "or False/'off', but got True"),
])
def test_argument_errors(kwargs, message):
    m, o = _linear_and_sgd()
    with pytest.raises(ValueError) as e:
        range_test(m, o, None, BATCHES, **kwargs)
    assert str(e.value) == message


# ---------------------------------------------------------------- the constant-predictor baseline

def _entropy(p):
    return -sum(q * math.log(q) for q in p if q > 0)


def test_constant_baseline_closed_forms():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    assert constant_baseline(nn.functional.cross_entropy, y) == pytest.approx(_entropy([1 / 2, 1 / 3, 1 / 6]))
    assert constant_baseline(nn.CrossEntropyLoss(), torch.tensor([0, 0, -100, 0, 1, 2, -100, 1])) \
        == pytest.approx(_entropy([1 / 2, 1 / 3, 1 / 6]), rel=1e-6)  # ignore_index left out
    # weighted mean: the best constant is the weighted class mass, w_c n_c / sum(w n) = 3/9, 4/9, 2/9
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 2.0]))
    assert constant_baseline(weighted, y) == pytest.approx(_entropy([3 / 9, 4 / 9, 2 / 9]), rel=1e-6)
    soft = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])  # mean target (3/4, 1/4, 0)
    assert constant_baseline(nn.functional.cross_entropy, soft) == pytest.approx(_entropy([3 / 4, 1 / 4]), rel=1e-6)
    # MSE: per output, the population variance; averaged over outputs: (8/3 + 8) / 2
    t = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 6.0]])
    assert constant_baseline(nn.functional.mse_loss, t) == pytest.approx(16 / 3)
    assert constant_baseline(nn.MSELoss(), [t[:1], t[1:]]) == pytest.approx(16 / 3)  # batches joined
    bce = torch.tensor([[1.0], [1.0], [0.0], [0.0], [0.0]])
    assert constant_baseline(nn.BCEWithLogitsLoss(), bce) == pytest.approx(_entropy([0.4, 0.6]), rel=1e-6)


@pytest.mark.parametrize("loss_fn", [lambda out, y: nn.functional.cross_entropy(out, y), nn.L1Loss(),
                                     nn.CrossEntropyLoss(label_smoothing=0.1), nn.MSELoss(reduction="sum"),
                                     nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))])
def test_constant_baseline_of_an_unknown_loss_is_none(loss_fn):
    assert constant_baseline(loss_fn, torch.zeros(4, 1)) is None


def test_batch_baselines_are_the_pooled_constant_on_each_batch():
    y = torch.tensor([0, 0, 0, 1, 0, 1, 1, 1])  # pooled frequencies 1/2, 1/2
    per_batch = batch_baselines(nn.functional.cross_entropy, [y[:4], y[4:]])
    # batch 1 (3/4, 1/4) and batch 2 (1/4, 3/4) both cost log 2 under the pooled constant (1/2, 1/2),
    # more than each batch's own best constant: its noise is not fitted
    assert per_batch == pytest.approx([math.log(2)] * 2, rel=1e-6)
    assert constant_baseline(nn.functional.cross_entropy, y[:4]) < math.log(2)


def _regression(offset=3.0, n=2000, dim=10, seed=0):
    """A teacher-student regression whose targets are not centred (like prices or counts)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 16, generator=g) / dim**0.5
    y = torch.tanh(x @ w) @ torch.randn(16, 1, generator=g) + offset
    return SimpleNamespace(train=(x, y + 0.1 * torch.randn(y.shape, generator=g)))


def _breast_cancer():
    """scikit-learn's bundled breast-cancer data: a binary task of 63 % / 37 %, standardised."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return SimpleNamespace(train=(torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32), torch.tensor(y)))


def _broken(data, case):
    x, y = data.train
    if case == "shuffled":
        return SimpleNamespace(train=(x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]))
    return SimpleNamespace(train=(torch.zeros_like(x), y)) if case == "zeroed" else data


@pytest.mark.parametrize("case", ["healthy", "shuffled", "zeroed"])
@pytest.mark.parametrize("kind", ["mse", "imbalanced"])
def test_a_model_that_learns_only_the_prior_has_no_signal(kind, case):
    data, loss_fn, outputs, batch = ((_regression(), nn.functional.mse_loss, 1, 100) if kind == "mse"
                                     else (_breast_cancer(), nn.functional.cross_entropy, 2, 32))
    data = _broken(data, case)

    def test(**kwargs):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(data.train[0].shape[1], 64), nn.ReLU(), nn.Linear(64, outputs))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        return range_test(model, opt, loss_fn, Loader(data, batch), **kwargs)

    r = test()
    x, y = data.train
    assert r.baseline == pytest.approx(y.double().var(0, correction=0).mean().item() if kind == "mse"
                                       else _entropy((torch.bincount(y) / len(y)).tolist()), rel=0.02)
    assert len(r.curves[0].baselines) == len(r.raw_losses)
    if case == "healthy":
        assert (r.diagnosis.status, r.suggestion is not None) == ("ok", True), r.diagnosis.message
        assert r.features.min_loss < 0.9 * r.features.baseline
        return
    assert (r.diagnosis.status, r.suggestion) == ("no_signal", None), r.diagnosis.message
    assert "labels are aligned with the inputs" in r.diagnosis.message
    assert r.features.min_loss >= (1 - SIGNAL_MARGIN) * r.features.baseline
    # the curve descends (to the prior) and diverges: without the baseline it passes as healthy
    assert test(baseline="off").diagnosis.status == "ok"


def test_declared_baseline_for_a_loss_it_does_not_know(tmp_path):
    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(_synthetic_curve), baseline=0.52)
    assert (r.diagnosis.status, r.baseline, r.features.baseline) == ("no_signal", 0.52, pytest.approx(0.52))
    assert "the baseline the task declared" in r.diagnosis.message
    assert r.plot(str(tmp_path / "no_signal.png")).endswith("no_signal.png")
    assert "learned the targets' prior" in r.diagnosis.message
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(_synthetic_curve), baseline=0.2)
    assert r.diagnosis.status == "no_signal" and "never came down even to that" in r.diagnosis.message
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(_synthetic_curve), baseline=0.6)
    assert r.diagnosis.status == "ok", r.diagnosis.message  # 0.5 < 0.95 x 0.6
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(_synthetic_curve))
    assert (r.diagnosis.status, r.baseline, r.curves[0].baselines) == ("ok", None, [])  # unknown loss: unchecked


def test_baseline_off_and_other_batch_structures_are_not_checked(task):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    r = range_test(model, opt, nn.functional.cross_entropy, Loader(task), baseline=False)
    assert r.baseline is None and r.features.baseline is None
    dicts = [dict(x=x, y=y) for x, y in list(Loader(task))[:5]]
    r = range_test(model, opt, nn.functional.cross_entropy, dicts,
                   step_fn=lambda m, o, loss_fn, b: default_step(m, o, loss_fn, (b["x"], b["y"])))
    assert r.baseline is None and r.diagnosis.status != "no_signal"


def test_plot_draws_the_curve_the_rule_reads_and_marks_edge_descent_and_suggestion():
    from schedules._plot import range_test_figure
    from schedules.range_test import centred_curve

    m, o = _linear_and_sgd()
    r = range_test(m, o, None, BATCHES, num_iter=200, smooth=0.9, step_fn=FakeStep(_synthetic_curve))
    f, s = r.features, r.suggestion
    lrs, centred = centred_curve(r.raw_lrs, r.raw_losses)
    # the rule's features are read off this curve: its minimum, and the first LR past it above the start
    assert math.log10(lrs[np.argmin(centred)]) == f.log_lr_min
    assert math.log10(lrs[np.argmin(centred) + np.nonzero(centred[np.argmin(centred):] > f.start_loss)[0][0]]) \
        == f.log_lr_edge
    ax = range_test_figure(r).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    curve = lines["loss, centred (what the rule reads)"]
    assert list(curve.get_xdata()) == list(lrs) and list(curve.get_ydata()) == list(centred)
    assert not any("smoothed" in label for label in lines)  # the sweep's lagging EMA is not drawn

    def at(prefix):
        (line,) = [v for k, v in lines.items() if k.startswith(prefix)]
        return line.get_xdata()[0]

    assert at("divergence edge") == pytest.approx(s.bounds[1]) == pytest.approx(10 ** f.log_lr_edge)
    assert (at("suggested max_lr"), at("suggested lr")) == (pytest.approx(s.max_lr), pytest.approx(s.lr))
    # the descent region runs from where the descent has begun to the minimum of the same curve
    (descent,) = [p for p in ax.patches if p.get_label().startswith("descent")]
    x0, x1 = descent.get_x(), descent.get_x() + descent.get_width()
    assert (x0, x1) == (pytest.approx(10 ** f.log_lr_descent), pytest.approx(10 ** f.log_lr_min))
