"""The LR range test (Smith 2015): sweep the LR upwards for a few hundred steps, read the loss curve.

It owns the sweep, the exact restore of model and optimizer afterwards, the diagnosis (the
"insurance check": a healthy curve has a too-small-LR plateau, a fast descent and a divergence;
anything else is a bug in model or data until shown otherwise; and a curve that goes no lower than
the best constant predictor, `constant_baseline`, learned the targets' prior and nothing from the
inputs) and the suggestion rule, which is documented on `suggest` below. torch and numpy only; matplotlib only when a plot is asked for.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from numbers import Real
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._checks import in_range, one_of, positive, positive_int, require

StepFn = Callable[[nn.Module, torch.optim.Optimizer, Callable, Any], "float | torch.Tensor"]

# A run of this many non-finite losses in a row ends the sweep: the model is gone.
_NONFINITE_RUN = 3


@dataclass
class Suggestion:
    lr: float  # a safe constant LR, and the CLR base_lr
    max_lr: float  # the 1-cycle max_lr and the CLR upper bound
    spread: float = 0.0  # std of log10(max_lr) over the repeats, in decades
    max_lrs: list[float] = field(default_factory=list)  # one per repeat
    # The LRs the curve supports (Smith's CLR bounds, medians over the repeats): where the descent
    # has begun (a quarter of the way down to the minimum) and the divergence edge.
    bounds: tuple[float, float] | None = None


@dataclass
class Diagnosis:
    status: str  # "ok", "non_finite", "flat", "no_descent", "no_signal", "diverges_immediately",
    #              "no_divergence", "starts_descending"
    message: str


@dataclass
class Curve:
    """One sweep as measured: every LR tried and its loss (NaN/inf kept)."""

    lrs: list[float]
    raw_losses: list[float]
    smoothed: list[float]  # bias-corrected EMA over the finite losses, NaN where the loss was not finite
    stop: str  # "diverged", "non_finite", "end"
    params_changed: bool
    # per step, the baseline of its batch (declared, or the best constant predictor's loss on it);
    # empty when not checked
    baselines: list[float] = field(default_factory=list)


@dataclass
class Features:
    """What the rule reads off a curve, all LRs as log10."""

    start_loss: float
    min_loss: float
    log_lr_min: float  # the centred-smoothed curve's minimum
    log_lr_descent: float | None  # where the loss has fallen (for good) a quarter of the way to its minimum
    log_lr_edge: float | None  # first LR past the minimum whose loss is back above start_loss
    baseline: float | None = None  # the batches' baselines smoothed as the loss is, at the minimum


@dataclass
class RangeTestResult:
    lrs: list[float]
    losses: list[float]
    raw_lrs: list[float]
    raw_losses: list[float]
    suggestion: Suggestion | None
    diagnosis: Diagnosis
    features: Features | None
    curves: list[Curve]
    settings: dict
    # Declared, or the best constant predictor's loss on all the batches the test consumed (the
    # line on the plot); None when not checked. The diagnosis compares each curve's lowest loss
    # with its batches' baselines around that point (Features.baseline).
    baseline: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def plot(self, path: str, title: str | None = None) -> str:
        from ._plot import plot_range_test

        return plot_range_test(self, path, title)


def default_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, batch) -> float:
    """One optimizer step on (inputs, targets); a non-finite loss is recorded but not stepped on,
    as GradScaler does, so that a sporadic NaN shows as a gap instead of poisoning the weights."""
    inputs, targets = batch
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(inputs), targets)
    value = loss.item()
    if math.isfinite(value) and loss.requires_grad:
        loss.backward()
        optimizer.step()
    return value


def _cross_entropy_constant(targets: torch.Tensor, weight: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    """The best constant logits. With a_c the (weighted) mass of class c among the targets, the
    mean loss is proportional to sum_c a_c (-log q_c), least at q = a / sum(a): the log of the
    (weighted) label frequencies, and the loss left is their entropy."""
    weight = None if weight is None else weight.detach().double().cpu()
    if targets.is_floating_point():  # class probabilities, classes along dim 1
        a = targets.double().movedim(1, -1).reshape(-1, targets.shape[1]).mean(0)
        shape = targets.shape[1:]
    else:  # class indices
        a = torch.bincount(targets[targets != ignore_index].flatten(),
                           minlength=0 if weight is None else len(weight)).double()
        shape = (len(a), *targets.shape[1:])
    a = a if weight is None else a * weight
    # an unseen class gets ~0 probability, not log(0): 0 * -inf would be NaN for soft targets
    logits = (a / a.sum()).clamp_min(torch.finfo(torch.float32).tiny).log().float()
    return logits.view(1, -1, *[1] * (len(shape) - 1)).expand(1, *shape)


def _mean_constant(targets: torch.Tensor) -> torch.Tensor:
    """MSE's best constant: each output's mean (what is left is its population variance)."""
    return targets.double().mean(0, keepdim=True).to(targets.dtype)


def _bce_constant(targets: torch.Tensor) -> torch.Tensor:
    """BCE's best constant: the logit of each output's mean target p (the loss is linear in the
    targets, so soft targets too); what is left is the binary entropy of p."""
    return torch.logit(targets.double().mean(0, keepdim=True)).to(targets.dtype)


def _constant_fit(loss_fn) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """How the best constant output is fitted to targets under `loss_fn`, for the losses whose
    settings lrtune can see (the torch function itself, or the module with mean reduction); None
    for any other: a wrapper or lambda may weight, smooth or rescale in ways it cannot read."""
    if loss_fn is F.cross_entropy:
        return lambda t: _cross_entropy_constant(t, None, -100)
    if (isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.reduction == "mean"
            and loss_fn.label_smoothing == 0):  # smoothing's constant needs the number of classes
        return lambda t: _cross_entropy_constant(t, loss_fn.weight, loss_fn.ignore_index)
    if loss_fn is F.mse_loss or isinstance(loss_fn, nn.MSELoss) and loss_fn.reduction == "mean":
        return _mean_constant
    if loss_fn is F.binary_cross_entropy_with_logits or (
            isinstance(loss_fn, nn.BCEWithLogitsLoss) and loss_fn.reduction == "mean"
            and loss_fn.weight is None and loss_fn.pos_weight is None):
        return _bce_constant
    return None


def _batches_of_targets(targets: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    batches = [targets] if torch.is_tensor(targets) else list(targets)
    require(bool(batches) and all(torch.is_tensor(t) and len(t) for t in batches), "targets",
            "to be a non-empty tensor or a non-empty sequence of non-empty tensors", targets)
    return [t.detach().cpu() for t in batches]


def batch_baselines(loss_fn: Callable, targets: Iterable[torch.Tensor]) -> list[float] | None:
    """The loss, on each batch of `targets`, of the best constant predictor fitted to all of them:
    what a model that learned only the targets' prior scores on each batch (a curve's noise from
    batch to batch is shared by it). None for a loss `constant_baseline` does not know."""
    fit = _constant_fit(loss_fn)
    if fit is None:
        return None
    batches = _batches_of_targets(targets)
    constant = fit(torch.cat(batches))
    # evaluated by the loss itself, so that it is the user's loss (weights, ignore_index) exactly
    weight = getattr(loss_fn, "weight", None)
    device = weight.device if weight is not None else "cpu"
    with torch.no_grad():
        return [float(loss_fn(constant.expand(len(t), *constant.shape[1:]).to(device), t.to(device)))
                for t in batches]


def constant_baseline(loss_fn: Callable, targets: torch.Tensor | Iterable[torch.Tensor]) -> float | None:
    """The loss of the best constant predictor of `targets` under `loss_fn`: what a model reaches
    that learns the label frequencies or the target mean and nothing from its inputs.

    cross-entropy (`F.cross_entropy`, `nn.CrossEntropyLoss` with mean reduction, class weights and
    ignore_index honoured): the entropy of the label frequencies; MSE (`F.mse_loss`, `nn.MSELoss`,
    mean reduction): the targets' population variance, averaged over outputs; BCE with logits
    (`F.binary_cross_entropy_with_logits`, `nn.BCEWithLogitsLoss` without weights): the binary
    entropy of each output's mean target, averaged. None for any other loss: declare the baseline.
    targets: one tensor, or the targets of several batches (joined along dim 0).
    """
    if _constant_fit(loss_fn) is None:
        return None
    return batch_baselines(loss_fn, [torch.cat(_batches_of_targets(targets))])[0]


def _targets(batch) -> torch.Tensor | None:
    """The targets of a default-structure (inputs, targets) batch, on the CPU; None otherwise."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and torch.is_tensor(batch[1]):
        return batch[1].detach().cpu()
    return None


def _cycle(batches: Iterable):
    """Endless batches: a re-iterable (a loader) is iterated again when it ends, so it reshuffles;
    only a one-shot iterator is replayed from memory."""
    if iter(batches) is batches:
        seen = []
        for batch in batches:
            seen.append(batch)
            yield batch
        require(bool(seen), "batches", "to yield at least one (inputs, targets) batch", batches)
        while True:
            yield from seen
    while True:
        fresh = False
        for batch in batches:
            fresh = True
            yield batch
        require(fresh, "batches", "to yield at least one (inputs, targets) batch", batches)


def _lr_at(i: int, num_iter: int, start_lr: float, end_lr: float, step_mode: str) -> float:
    t = i / (num_iter - 1)
    if step_mode == "exp":
        return start_lr * (end_lr / start_lr) ** t
    return start_lr + (end_lr - start_lr) * t


def _sweep(model, optimizer, loss_fn, batches, step_fn, *, start_lr, end_lr, num_iter, step_mode,
           smooth, diverge_factor, targets: list | None = None) -> Curve:
    """One sweep; the targets of every batch it consumes are appended to `targets` when given."""
    lrs, raw, smoothed = [], [], []
    avg, n_finite, best, nonfinite_run, stop = 0.0, 0, math.inf, 0, "end"
    model.train()
    batches = _cycle(batches)
    for i in range(num_iter):
        lr = _lr_at(i, num_iter, start_lr, end_lr, step_mode)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = next(batches)
        if targets is not None:
            targets.append(_targets(batch))
        loss = step_fn(model, optimizer, loss_fn, batch)
        loss = float(loss.detach() if torch.is_tensor(loss) else loss)
        lrs.append(lr)
        raw.append(loss)
        if not math.isfinite(loss):
            smoothed.append(math.nan)
            nonfinite_run += 1
            if nonfinite_run >= _NONFINITE_RUN:
                stop = "non_finite"
                break
            continue
        nonfinite_run = 0
        n_finite += 1
        avg = smooth * avg + (1 - smooth) * loss
        s = avg / (1 - smooth**n_finite)
        smoothed.append(s)
        best = min(best, s)
        if s > diverge_factor * best:
            stop = "diverged"
            break
    return Curve(lrs, raw, smoothed, stop, params_changed=False)


def _centred(y: np.ndarray, k: int) -> np.ndarray:
    """Centred moving median then mean over 2k+1 points: no lag, unlike the EMA, and robust to
    single spikes."""
    n = len(y)
    med = np.array([np.median(y[max(0, i - k):i + k + 1]) for i in range(n)])
    return np.array([med[max(0, i - k):i + k + 1].mean() for i in range(n)])


def _window(log_lrs: np.ndarray) -> int:
    """The centred smoothing's half-width in points: a fifth of a decade, at least 2."""
    per_decade = (len(log_lrs) - 1) / max(log_lrs[-1] - log_lrs[0], 1e-12)
    return max(2, round(0.2 * per_decade))


def centred_curve(lrs, losses) -> tuple[np.ndarray, np.ndarray]:
    """The curve the rule reads (`features`, `suggest`): the finite losses with their LRs, the
    losses smoothed by `_centred`. The plots draw this one, not the EMA that stops the sweep."""
    lr, loss = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    ok = np.isfinite(loss)
    if not ok.any():
        return lr[ok], loss[ok]
    return lr[ok], _centred(loss[ok], _window(np.log10(lr[ok])))


def features(curve: Curve) -> Features | None:
    loss = np.asarray(curve.raw_losses)
    ok = np.isfinite(loss)
    if ok.sum() < 5:
        return None
    lr, c = centred_curve(curve.lrs, curve.raw_losses)
    x, y = np.log10(lr), loss[ok]
    k = _window(x)
    head = max(3, len(c) // 20)
    start = float(np.median(y[:head]))
    i_min = int(np.argmin(c))
    low = float(c[i_min])
    drop = start - low
    descent = None
    if drop > 0:
        # The last time before the minimum that the loss was still above a quarter of the way
        # down: a noise dip on the plateau (batch MSE is noisy) does not count as the descent.
        above_quarter = np.nonzero(c[:i_min + 1] > start - 0.25 * drop)[0]
        descent = float(x[above_quarter[-1] + 1]) if len(above_quarter) else float(x[0])
    above = np.nonzero(c[i_min:] > start)[0]
    edge = float(x[i_min + above[0]]) if len(above) else None
    if edge is None and curve.stop != "end":
        edge = float(np.log10(curve.lrs[-1]))
    baseline = None
    if curve.baselines:  # the same batches and smoothing as the loss, so their noise cancels
        baseline = float(_centred(np.asarray(curve.baselines)[ok], k)[i_min])
    return Features(start, low, float(x[i_min]), descent, edge, baseline)


def _start(loss: np.ndarray) -> float:
    """The starting loss: the median of the finite ones among the first three."""
    return float(np.median(loss[:3][np.isfinite(loss[:3])])) if np.isfinite(loss[:3]).any() else math.inf


def _gaps(loss: np.ndarray) -> int:
    """Non-finite losses followed by finite ones, counted only where the last finite loss before
    them was still below twice the starting loss: NaNs inside the divergence blow-up are not gaps."""
    start = _start(loss)
    finite_idx = np.nonzero(np.isfinite(loss))[0]
    if not len(finite_idx):
        return 0
    count, last = 0, math.nan
    for v in loss[:finite_idx[-1]]:
        if math.isfinite(v):
            last = v
        elif math.isfinite(last) and last <= 2 * abs(start):
            count += 1
    return count


# A curve learned from its inputs when its lowest loss is below (1 - SIGNAL_MARGIN) x the baseline
# of the batches around it. Measured as min_loss / baseline (100-step tests, 1e-7..10). Healthy,
# must stay ok: bench.suggestion's 30 stored curves (5 task/models x AdamW, SGD x 3 seeds)
# 0.159..0.854; bench.sanity (SGD, 5 seeds) MNIST-1D 0.797..0.854, a regression with targets offset
# by +3 0.688..0.918 (AdamW: up to 0.923), breast cancer 0.059..0.171. Broken (shuffled targets or
# zeroed inputs on those two tasks), must be no_signal: 0.977..1.265 (bench.sanity), 0.966 the
# lowest in a trial run with AdamW too and on scikit-learn's diabetes. The threshold 0.95 sits
# between 0.923 and 0.966. A model that learns less than that in a range test is refused although
# healthy: an MLP on MNIST-1D made binary (7/3) measured 0.95..1.00, one on diabetes up to 1.17.
SIGNAL_MARGIN = 0.05


def diagnose(curve: Curve, f: Features | None, *, start_lr: float, end_lr: float,
             min_descent: float, declared: bool = False) -> Diagnosis:
    loss = np.asarray(curve.raw_losses)
    finite = np.isfinite(loss)
    if not finite.any() or not finite[0]:
        return Diagnosis("non_finite", "the loss is NaN/inf already at start_lr="
                         f"{start_lr:g}: check the data (NaN/inf inputs or targets), the loss "
                         "function and layers that can produce NaN (log, sqrt, division).")
    gaps = _gaps(loss)
    if gaps:
        return Diagnosis("non_finite", f"{gaps} NaN/inf losses between finite ones (gaps in the curve) "
                         "at LRs where training is still stable: the model or data produce NaN "
                         "sporadically; inspect the batches and layers (log, sqrt, division, "
                         "uninitialised buffers) and the loss.")
    last = float(loss[finite][-1])
    if curve.stop == "non_finite" and last <= 2 * abs(_start(loss)):
        at = curve.lrs[int(np.nonzero(finite)[0][-1]) + 1]
        return Diagnosis("non_finite", f"the loss turned NaN/inf at lr={at:.3g} and stayed so, with no "
                         f"rise before it (last finite loss {last:.3g}, starting loss {_start(loss):.3g}): "
                         "a diverging loss grows first, so this is numerics in the model or loss (0/0, "
                         "log(0), sqrt of a negative, overflow in a custom layer), not the LR limit; or, "
                         "rarely, one step large enough to overflow the weights at once (then lower end_lr).")
    if not curve.params_changed:
        return Diagnosis("flat", "no parameter changed during the test: all parameters frozen "
                         "(requires_grad=False), not passed to the optimizer, or zero gradients.")
    if f is None:
        return Diagnosis("diverges_immediately", "fewer than 5 finite losses before the sweep "
                         f"stopped: start_lr={start_lr:g} is already too high, or the model/loss "
                         "is broken.")
    span = math.log10(end_lr / start_lr)
    first = math.log10(start_lr)
    drop = (f.start_loss - f.min_loss) / abs(f.start_loss) if f.start_loss else 0.0
    if f.log_lr_edge is not None and f.log_lr_edge < first + 0.15 * span and drop < min_descent:
        return Diagnosis("diverges_immediately", "the loss rises from the first steps: "
                         f"start_lr={start_lr:g} is already too high, or a bug (wrong loss, "
                         "unnormalised inputs, targets of the wrong scale).")
    if drop < min_descent and f.log_lr_edge is None:
        return Diagnosis("flat", f"the loss moved less than {min_descent:.0%} over the whole sweep "
                         "and never diverged: frozen parameters, constant labels, or a loss that "
                         "does not depend on the output.")
    if drop < min_descent:
        return Diagnosis("no_descent", f"the loss never fell more than {min_descent:.0%} below its "
                         "start before diverging: labels shuffled or misaligned with the inputs, "
                         "targets of the wrong kind for the loss, or a model too weak to learn.")
    if f.baseline is not None and not f.min_loss < (1 - SIGNAL_MARGIN) * f.baseline:
        what = ("the baseline the task declared" if declared else "the loss of the best constant "
                "predictor on the same batches (label frequencies, or the target mean)")
        data = ("check that the labels are aligned with the inputs (not shuffled or misordered), that "
                "the inputs are not all equal (zeroed or constant after a loading or normalisation "
                "bug), and that augmentation does not destroy the signal.")
        # shuffled targets measured up to 1.51x the baseline (fitting noise); far above it, the
        # model did not even learn the constant
        why = ("The model learned the targets' prior and nothing from the inputs: " + data
               if f.min_loss < 2 * f.baseline else "The loss never came down even to that: the model "
               "did not learn within the test (badly scaled outputs or initialisation, too few "
               "num_iter) or the loss does not fit the targets; else " + data)
        return Diagnosis("no_signal", f"the lowest loss {f.min_loss:.4g} is not {SIGNAL_MARGIN:.0%} below "
                         f"{f.baseline:.4g}, {what}. {why}")
    if f.log_lr_edge is None:
        return Diagnosis("no_divergence", f"the loss did not diverge up to end_lr={end_lr:g}: "
                         "raise end_lr (or num_iter) until the curve turns up, so that max_lr "
                         "can be read off it.")
    if f.log_lr_descent is not None and f.log_lr_descent < first + 0.1 * span:
        return Diagnosis("starts_descending", "the loss falls steeply from the very first step, "
                         f"so the too-small-LR plateau is missing: lower start_lr={start_lr:g}.")
    return Diagnosis("ok", "three regions: plateau, descent, divergence.")


# The rule, calibrated against grid searches over the 1-cycle max_lr (bench/suggestion.py):
# decades below the divergence edge, for adaptive (Adam-family, "betas") and for SGD-type optimizers.
EDGE_MARGIN = {"adaptive": 1.2, "sgd": 0.4}
LR_DIVISOR = 4.0  # suggestion.lr = max_lr / LR_DIVISOR (a CLR base_lr inside Smith's max/3..max/10)


def optimizer_family(optimizer: torch.optim.Optimizer) -> str:
    return "adaptive" if "betas" in optimizer.defaults else "sgd"


def suggest(f: Features, family: str) -> float:
    """The 1-cycle max_lr for one curve.

    The divergence edge is the first LR past the loss minimum at which the lag-free (centred)
    smoothed loss is back above its starting value: sharp (the loss blows up exponentially) and
    stable across seeds and loss scales, unlike the minimum (it sits in a flat valley) or the
    steepest slope (it moves with noise and with the loss's scale, as on MSE). 1-cycle trains best
    a fixed distance below that edge: 1.2 decades for Adam-family optimizers, whose per-weight step
    is ~lr whatever the gradient, 0.4 decades for SGD with momentum (grid searches on four
    task/model pairs, bench/suggestion.py).
    """
    return 10 ** (f.log_lr_edge - EDGE_MARGIN[family])


def range_test(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
               batches: Iterable, *, start_lr: float = 1e-7, end_lr: float = 10.0,
               num_iter: int = 100, step_mode: str = "exp", smooth: float = 0.98,
               diverge_factor: float = 4.0, step_fn: StepFn | None = None, repeats: int = 1,
               seed: int | None = None, min_descent: float = 0.05,
               baseline: float | bool | str | None = None) -> RangeTestResult:
    """Run the LR range test and read it.

    batches: any iterable of (inputs, targets), cycled when shorter than num_iter; pass a
    shuffling loader when repeats > 1 so that each repeat sees other batches.
    step_fn(model, optimizer, loss_fn, batch) -> loss replaces `default_step` for custom steps
    (gradient accumulation, AMP with a GradScaler, closures).
    repeats: run the sweep this many times from the same starting state (seeded `seed + r`);
    the suggestion is the median and `suggestion.spread` the std of log10(max_lr).
    baseline: the loss a model reaches by predicting a constant, which the curve's lowest loss
    must undercut by SIGNAL_MARGIN (else "no_signal"). None (auto): when loss_fn is one that
    `constant_baseline` knows and batches are (inputs, targets), the best constant predictor is
    fitted to the targets of all the batches the test consumed and its loss on each of them is the
    baseline of that step (`result.baseline`: its loss on all of them); else not checked. A number:
    the task's declared baseline (a loss >= 0 whose 0 is perfect), for every step. False or "off":
    not checked.
    Model and optimizer state (parameters, buffers, lr, momentum buffers, train/eval mode) are
    exactly as before the call when it returns or raises.
    """
    positive("start_lr", start_lr)
    positive("end_lr", end_lr)
    require(end_lr > start_lr, "end_lr", f"> start_lr={start_lr}", end_lr)
    positive_int("num_iter", num_iter)
    require(num_iter >= 10, "num_iter", "to be at least 10", num_iter)
    one_of("step_mode", step_mode, ("exp", "linear"))
    in_range("smooth", smooth, 0.0, 1.0, closed="[)")
    in_range("diverge_factor", diverge_factor, 1.0, math.inf, closed="()")
    positive_int("repeats", repeats)
    in_range("min_descent", min_descent, 0.0, 1.0, closed="[)")
    off = baseline is False or (isinstance(baseline, str) and baseline == "off")
    declared = isinstance(baseline, Real) and not isinstance(baseline, bool)
    require(baseline is None or off or (declared and math.isfinite(baseline) and baseline >= 0), "baseline",
            "to be None (auto), a non-negative finite loss (declared), or False/'off'", baseline)
    step_fn = step_fn or default_step
    settings = dict(start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, step_mode=step_mode,
                    smooth=smooth, diverge_factor=diverge_factor, repeats=repeats, seed=seed,
                    baseline=baseline)
    targets = [] if baseline is None and _constant_fit(loss_fn) is not None else None

    model_state = copy.deepcopy(model.state_dict())
    optim_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    devices = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
    curves = []
    try:
        for r in range(repeats):
            with torch.random.fork_rng(devices=devices):
                if seed is not None:
                    torch.manual_seed(seed + r)
                curve = _sweep(model, optimizer, loss_fn, batches, step_fn, start_lr=start_lr,
                               end_lr=end_lr, num_iter=num_iter, step_mode=step_mode,
                               smooth=smooth, diverge_factor=diverge_factor, targets=targets)
            now = model.state_dict()
            curve.params_changed = any(not torch.equal(now[k], v) for k, v in model_state.items()
                                       if v.is_floating_point())
            curves.append(curve)
            model.load_state_dict(model_state)
            optimizer.load_state_dict(copy.deepcopy(optim_state))
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        model.train(was_training)

    if declared:
        baseline = float(baseline)
        for c in curves:
            c.baselines = [baseline] * len(c.raw_losses)
    elif targets and all(t is not None for t in targets):
        per_step = iter(batch_baselines(loss_fn, targets))
        for c in curves:
            c.baselines = [next(per_step) for _ in c.raw_losses]
        baseline = constant_baseline(loss_fn, targets)
    else:  # off, a loss it does not know, or batches of another structure: only a declared one
        baseline = None
    feats = [features(c) for c in curves]
    diagnoses = [diagnose(c, f, start_lr=start_lr, end_lr=end_lr, min_descent=min_descent,
                          declared=declared) for c, f in zip(curves, feats)]
    bad = [d for d in diagnoses if d.status != "ok"]
    suggestion = None
    if not bad:
        family = optimizer_family(optimizer)
        max_lrs = [suggest(f, family) for f in feats]
        logs = np.log10(max_lrs)
        max_lr = float(10 ** np.median(logs))
        descent = float(10 ** np.median([f.log_lr_descent for f in feats]))
        edge = float(10 ** np.median([f.log_lr_edge for f in feats]))
        suggestion = Suggestion(lr=max_lr / LR_DIVISOR, max_lr=max_lr, spread=float(np.std(logs)),
                                max_lrs=max_lrs, bounds=(min(descent, max_lr), max(edge, max_lr)))
    diagnosis = bad[0] if bad else diagnoses[0]
    if bad and len(curves) > 1:
        diagnosis = Diagnosis(bad[0].status, f"{len(bad)} of {len(curves)} repeats: {bad[0].message}")
    first = curves[0]
    finite = [(lr, s) for lr, s in zip(first.lrs, first.smoothed) if math.isfinite(s)]
    return RangeTestResult(lrs=[lr for lr, _ in finite], losses=[s for _, s in finite],
                           raw_lrs=first.lrs, raw_losses=first.raw_losses, suggestion=suggestion,
                           diagnosis=diagnosis, features=feats[0], curves=curves, settings=settings,
                           baseline=baseline)
