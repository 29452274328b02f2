"""Range tests that seed the search (design.md, "Seeding rules").

Before the trials, one range test per (optimizer, weight decay) runs as a Ray task with the trials'
resources, so that on a cluster they spread over the nodes. Their results become one
`OptimizerPrior` per optimizer: the LR band the search explores and the normalized weight decay
around the decay whose curve allowed the largest LR. `search.py` turns priors into spaces.

The rules, in numbers (each is tested against a fabricated result in tests/tuning/test_seeding.py):
- The LR band is a prior with bounds, not a point: the peak LR (1-cycle and CLR `max_lr`) is
  searched between the LRs the curve supports — where its descent has begun and its divergence
  edge (Smith's CLR bounds, `Suggestion.bounds`) — and within RULE_ERROR decades of the
  suggestion, the worst error the suggestion rule has shown; never wider than the blind range.
  The other schedules' LRs move with it: the SGDR peak is `max_lr / 2` (it sits at its peak
  longer than 1-cycle does), a constant LR `lr` (= max_lr / 4). The search extends the band when
  its best trials sit at an edge (tuning/search.py, `Bands`).
- The chosen decay: among the tests of one optimizer, those whose max_lr is within
  `max(DECAY_TIE, spread)` decades of the largest max_lr; of these, the largest decay (a decay that
  costs no LR is free regularization).
- Weight decay is searched as λ_norm (Loshchilov & Hutter), log-uniform one decade around the
  chosen decay's λ_norm = wd / sqrt(b / (B·T)), and converted back with `normalized_weight_decay`.
  When the chosen decay is 0, the band sits one decade below the smallest non-zero decay tested;
  when only 0 was tested, the decay stays 0.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
import torch

from trainables.tasks import load_task, where
from trainables.trainable import device_for, place
from trainables.workflow import task_range_test

from . import stores
from .config import SweepConfig

# Decades: the worst |log10(suggested max_lr / grid-best max_lr)| that bench/suggestion.py has
# measured for one seed's range test, over its calibration tasks and bench/heldout.py's six held-out
# ones (bench/results/suggestion*.json; tests/tuning/test_seeding.py checks both against it): 1.615,
# SGD on digits_small_bn, where the rule suggests too high (as on both BatchNorm models there). On
# the calibration tasks alone it was 0.97 (mnist1d/cnn, AdamW, too low).
RULE_ERROR = 1.62
BLIND_LR = (1e-5, 1.0)  # the blind search's LR range (tuning/search.py): no band is wider
DECAY_BAND = 1.0  # decades
DECAY_TIE = 0.1  # decades of max_lr within which decays count as equally good
SGDR_PEAK = 0.5  # SGDR's peak LR, as a fraction of the range test's max_lr


class SeedingRefused(RuntimeError):
    """A range test refused to suggest (diagnosis not ok) and the config says stop."""

    def __init__(self, refused: list[RangeTestOutcome]):
        self.refused = refused
        lines = [f"{o.optimizer} weight_decay={o.weight_decay:g}: {o.status}: {o.message}" for o in refused]
        super().__init__("range test refused, no trial was started (the insurance check):\n  "
                         + "\n  ".join(lines) + "\nFix the model or data, or set "
                         "range_test.on_refusal: blind to search them blind.")


class RangeTestFailed(RuntimeError):
    """The task's code raised in a range test: no trial was started (a trial would raise too)."""

    def __init__(self, failed: list[RangeTestOutcome]):
        self.failed = failed
        lines = [f"{o.optimizer} weight_decay={o.weight_decay:g}: {o.message}" for o in failed]
        super().__init__("the task's code raised in the range tests, no trial was started:\n  "
                         + "\n  ".join(lines))


@dataclass(frozen=True)
class RangeTestOutcome:
    optimizer: str
    weight_decay: float
    status: str
    message: str
    lr: float | None
    max_lr: float | None
    spread: float | None
    lrs: list[float]
    raw_losses: list[float | None]
    seconds: float  # the test itself, in its Ray task
    result: object = field(repr=False, default=None)  # the RangeTestResult, for its plot
    bounds: tuple[float, float] | None = None  # Suggestion.bounds: descent begun .. divergence edge

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class OptimizerPrior:
    optimizer: str
    max_lr: float
    lr: float
    spread: float
    weight_decay: float  # the decay chosen from the tests
    lambda_norm: float  # its normalized value (0 for no decay)
    lambda_band: tuple[float, float] | None  # log-uniform λ_norm range; None: decay fixed at 0
    decay_scale: float  # sqrt(b / (B·T)): weight_decay = lambda_norm * decay_scale
    # the peak LR's band (max_lr's): the curve's bounds within RULE_ERROR of max_lr, inside BLIND_LR
    lr_band: tuple[float, float] | None = None

    @property
    def shifts(self) -> tuple[float, float]:
        """The band as decades relative to max_lr (lo <= 0 <= hi), what the search samples."""
        lo, hi = self.lr_band or lr_band(self.max_lr, None)
        return math.log10(lo / self.max_lr), math.log10(hi / self.max_lr)

    @property
    def sgdr_peak(self) -> float:
        return self.max_lr * SGDR_PEAK

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> OptimizerPrior:
        return cls(**dict(d, lambda_band=tuple(d["lambda_band"]) if d["lambda_band"] else None,
                          lr_band=tuple(d["lr_band"]) if d.get("lr_band") else None))


def lr_band(max_lr: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """The peak LR's search band: within RULE_ERROR decades of the suggestion, inside the curve's
    bounds when it has them, inside the blind range; always containing the suggestion."""
    err = 10 ** RULE_ERROR
    lo, hi = max_lr / err, max_lr * err
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    lo, hi = max(lo, BLIND_LR[0]), min(hi, BLIND_LR[1])
    return min(lo, max_lr), max(hi, max_lr)


def _range_test_task(settings: dict, optimizer: str, weight_decay: float) -> dict:
    """One range test, in a Ray task (or inline). Its plot is drawn by the driver's logging thread
    while the trials run, as the trials' own plots are."""
    t0 = time.perf_counter()
    torch.set_num_threads(settings["threads"])
    device = device_for(settings)
    try:
        task = place(load_task(settings["task"], settings["data_dir"]), device)
        result = task_range_test(task, settings["model"], optimizer, weight_decay,
                                 batch_size=settings["batch_size"], start_lr=settings["start_lr"],
                                 end_lr=settings["end_lr"], num_iter=settings["num_iter"],
                                 repeats=settings["repeats"], seed=settings["seed"], device=device,
                                 workflow=settings["workflow"])
    except Exception as e:  # noqa: BLE001 - the task's code: reported by the sweep, not a Ray traceback
        return dict(optimizer=optimizer, weight_decay=weight_decay, status="error",
                    message=f"{type(e).__name__}: {str(e)[:2000]}{where(e)}", lr=None, max_lr=None, spread=None,
                    lrs=[], raw_losses=[], seconds=time.perf_counter() - t0, result=None)
    s = result.suggestion
    return dict(optimizer=optimizer, weight_decay=weight_decay, status=result.diagnosis.status,
                message=result.diagnosis.message, lr=s and s.lr, max_lr=s and s.max_lr,
                spread=s and s.spread, bounds=s and s.bounds, lrs=list(result.raw_lrs),
                raw_losses=[v if math.isfinite(v) else None for v in result.raw_losses],
                seconds=time.perf_counter() - t0, result=result)


def range_test_settings(cfg: SweepConfig, model: str) -> dict:
    """What a range test runs with: the sweep's task and model, and its step as the trials take it
    (accumulate, grad_clip: the first value of a searched list; decay groups; AMP)."""
    rt = cfg.range_test
    workflow = dict(accumulate=first(cfg.accumulate), grad_clip=first(cfg.grad_clip),
                    decay_norm_and_bias=cfg.decay_norm_and_bias, amp=cfg.amp)
    return dict(task=cfg.task, data_dir=cfg.data_dir, model=model, batch_size=cfg.batch_size,
                start_lr=rt.start_lr, end_lr=rt.end_lr, num_iter=rt.num_iter, repeats=rt.repeats,
                seed=cfg.seed, threads=cfg.threads_per_trial, gpu=cfg.resources.gpu, workflow=workflow)


def first(value):
    """A fixed setting, or the first of a searched list (what the range tests use)."""
    return value[0] if isinstance(value, list) else value


def run_range_tests(cfg: SweepConfig, model: str, on_done=None) -> list[RangeTestOutcome]:
    """All (optimizer x weight decay) range tests of a sweep, in parallel as Ray tasks, in that
    order. on_done(outcome, finished so far, all): called as each test finishes."""
    remote = ray.remote(num_cpus=cfg.resources.cpu, num_gpus=cfg.resources.gpu, max_retries=1)(_range_test_task)
    s = range_test_settings(cfg, model)
    refs = [remote.remote(s, opt, wd) for opt in cfg.optimizers for wd in cfg.range_test.weight_decays]
    outcomes, waiting = {}, list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        outcomes[done[0]] = RangeTestOutcome(**ray.get(done[0]))
        if on_done is not None:
            on_done(outcomes[done[0]], len(outcomes), len(refs))
    return [outcomes[r] for r in refs]


def describe_outcome(o: RangeTestOutcome, finished: int, total: int) -> str:
    """One line for a range test as it finishes."""
    found = f"max_lr {o.max_lr:.3g}, lr {o.lr:.3g}" if o.ok else (o.message.splitlines() or [""])[0][:160]
    return f"range test {finished}/{total}: {o.optimizer} weight_decay={o.weight_decay:g}: {o.status}, {found} ({o.seconds:.1f} s)"


def priors(outcomes: list[RangeTestOutcome], cfg: SweepConfig, train_size: int) -> dict[str, OptimizerPrior]:
    """The seeding rules (module docstring): one prior per optimizer whose tests suggested.

    The insurance check: when no test is ok, the model or data are suspect and `SeedingRefused`
    is raised (unless `range_test.on_refusal` is "blind"). When some test is ok, the model and
    data learn under that optimizer and decay, so a refusal says something about the other
    optimizer (SGD on a plain deep net may not descend within the test's steps), not a bug: an
    optimizer with no usable test gets no prior and its trials use the blind space (`describe`
    says so); "stop_any" stops on any refusal instead."""
    failed = [o for o in outcomes if o.status == "error"]
    if failed:
        raise RangeTestFailed(failed)
    refused = [o for o in outcomes if not o.ok]
    policy = cfg.range_test.on_refusal
    if refused and (policy == "stop_any" or (policy == "stop" and len(refused) == len(outcomes))):
        raise SeedingRefused(refused)
    scale = decay_scale(cfg, train_size)
    out = {}
    for optimizer in cfg.optimizers:
        ok = [o for o in outcomes if o.optimizer == optimizer and o.ok]
        if ok:
            out[optimizer] = _prior(optimizer, ok, [o.weight_decay for o in outcomes
                                                   if o.optimizer == optimizer], scale)
    return out


PRIORS_FILE = "lrtune-priors.json"  # in the sweep's folder under storage_path, beside Tune's state


def save_priors(folder: str | Path, priors: dict[str, OptimizerPrior]) -> None:
    """Keep what the range tests gave the search in the sweep's folder (written whole or not at
    all), where `--resume` finds it with Tune's experiment state: a resumed sweep never runs its
    range tests again, nor reads them back from the tracking store."""
    stores.write_atomically(str(Path(folder, PRIORS_FILE)),
                            json.dumps({k: v.to_dict() for k, v in priors.items()}, indent=1))


def load_priors(folder: str | Path) -> dict[str, OptimizerPrior] | None:
    """The priors `save_priors` kept in the sweep's folder; None when it kept none (a new sweep,
    or one stopped in its range tests)."""
    path = Path(folder, PRIORS_FILE)
    if not path.is_file():
        return None
    return {k: OptimizerPrior.from_dict(v) for k, v in json.loads(path.read_text()).items()}


def decay_scale(cfg: SweepConfig, train_size: int) -> float:
    """sqrt(b / (B·T)): weight_decay = λ_norm · decay_scale (Loshchilov & Hutter's normalized decay),
    b the effective batch of one optimizer step (batch_size x accumulate micro-batches)."""
    return math.sqrt(cfg.batch_size * first(cfg.accumulate) / (train_size * cfg.epochs))


def _prior(optimizer: str, ok: list[RangeTestOutcome], tested: list[float], scale: float) -> OptimizerPrior:
    best = max(o.max_lr for o in ok)
    tie = max(DECAY_TIE, max(o.spread or 0.0 for o in ok))
    chosen = max((o for o in ok if math.log10(o.max_lr) >= math.log10(best) - tie),
                 key=lambda o: o.weight_decay)
    nonzero = sorted(w for w in tested if w > 0)
    if chosen.weight_decay > 0:
        centre = chosen.weight_decay / scale
    elif nonzero:
        centre = nonzero[0] / scale / 10
    else:
        centre = None
    half = 10 ** (DECAY_BAND / 2)
    return OptimizerPrior(optimizer=optimizer, max_lr=chosen.max_lr, lr=chosen.lr,
                         spread=chosen.spread or 0.0, weight_decay=chosen.weight_decay,
                         lambda_norm=chosen.weight_decay / scale,
                         lambda_band=None if centre is None else (centre / half, centre * half),
                         decay_scale=scale, lr_band=lr_band(chosen.max_lr, chosen.bounds))


def describe(outcomes: list[RangeTestOutcome], priors: dict[str, OptimizerPrior]) -> str:
    """The range tests and the priors they gave, as printed before the trials start."""
    lines = ["range tests (the search is seeded from these):",
             f"  {'optimizer':9}  {'decay':>7}  {'status':20}  {'max_lr':>8}  {'lr':>8}  {'spread':>6}  {'s':>5}"]
    for o in outcomes:
        num = (f"{o.max_lr:8.3g}  {o.lr:8.3g}  {o.spread or 0:6.2f}" if o.ok else f"{'-':>8}  {'-':>8}  {'-':>6}")
        lines.append(f"  {o.optimizer:9}  {o.weight_decay:7g}  {o.status:20}  {num}  {o.seconds:5.1f}")
    for opt, s in priors.items():
        band = ("decay fixed at 0" if s.lambda_band is None else
                f"lambda_norm {s.lambda_band[0]:.3g}..{s.lambda_band[1]:.3g} "
                f"(weight_decay {s.lambda_band[0] * s.decay_scale:.3g}..{s.lambda_band[1] * s.decay_scale:.3g})")
        lo, hi = s.lr_band or lr_band(s.max_lr, None)
        lines.append(f"  prior {opt}: max_lr {s.max_lr:.3g}, searched {lo:.3g}..{hi:.3g}; chosen decay "
                     f"{s.weight_decay:g}; {band}")
    for opt in sorted({o.optimizer for o in outcomes} - set(priors)):
        lines.append(f"  {opt}: no usable range test, searched blind (the other optimizers' tests show "
                     f"the model and data learn; range_test.on_refusal: stop_any stops instead)"
                     if priors else f"  {opt}: no usable range test, searched blind (range_test.on_refusal: blind)")
    return "\n".join(lines)
