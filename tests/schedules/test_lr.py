import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR

from schedules import at_cycle_end, constant, cyclic, one_cycle, sgdr, sgdr_plans, sgdr_total_steps


def _opt(kind="sgd", lr=0.1):
    p = [torch.nn.Parameter(torch.zeros(2))]
    if kind == "adamw":
        return torch.optim.AdamW(p, lr=lr)
    return torch.optim.SGD(p, lr=lr, momentum=0.9)


def _lrs(build, steps, lr=0.1):
    opt = _opt(lr=lr)
    return [lr for lr, _ in _trace(opt, build(opt), steps)]


def _trace(opt, sched, steps):
    """(lr, momentum-or-beta1) after 0..steps-1 scheduler steps, read as the optimizer uses them."""
    out = []
    for _ in range(steps):
        g = opt.param_groups[0]
        out.append((g["lr"], g["betas"][0] if "betas" in g else g["momentum"]))
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_one_cycle_equals_torch_step_by_step(kind, strategy):
    ours_opt, ref_opt = _opt(kind), _opt(kind)
    ours = one_cycle(ours_opt, max_lr=0.4, total_steps=97, anneal_strategy=strategy)
    ref = OneCycleLR(ref_opt, max_lr=0.4, total_steps=97, pct_start=0.25, div_factor=25.0,
                     final_div_factor=1e4, anneal_strategy=strategy, base_momentum=0.85,
                     max_momentum=0.95)
    assert _trace(ours_opt, ours, 97) == _trace(ref_opt, ref, 97)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_one_cycle_hand_computed_points(kind):
    opt = _opt(kind)
    total, max_lr = 100, 0.5
    trace = _trace(opt, one_cycle(opt, max_lr, total), total)
    peak = round(0.25 * total) - 1  # torch's phase boundary: step pct_start*total - 1
    assert trace[0] == pytest.approx((max_lr / 25, 0.95))
    assert trace[peak] == pytest.approx((max_lr, 0.85))
    assert trace[-1] == pytest.approx((max_lr / 25 / 1e4, 0.95))
    mid = peak // 2  # halfway up a cosine: arithmetic mean of start and peak
    lo, hi = max_lr / 25, max_lr
    pct = mid / peak
    assert trace[mid][0] == pytest.approx(hi + (lo - hi) / 2 * (math.cos(math.pi * pct) + 1))


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_cyclic_equals_torch_step_by_step(mode, kind):
    ours_opt, ref_opt = _opt(kind), _opt(kind)
    ours = cyclic(ours_opt, 0.01, 0.1, step_size_up=7, mode=mode, gamma=0.99)
    ref = CyclicLR(ref_opt, 0.01, 0.1, step_size_up=7, mode=mode, gamma=0.99, cycle_momentum=False)
    assert _trace(ours_opt, ours, 60) == _trace(ref_opt, ref, 60)


def test_cyclic_cycle_momentum_matches_torch():
    ours_opt, ref_opt = _opt("adamw"), _opt("adamw")
    ours = cyclic(ours_opt, 0.01, 0.1, step_size_up=5, cycle_momentum=True)
    ref = CyclicLR(ref_opt, 0.01, 0.1, step_size_up=5, base_momentum=0.85, max_momentum=0.95)
    assert _trace(ours_opt, ours, 30) == _trace(ref_opt, ref, 30)


def test_cyclic_hand_computed_points():
    base, top, up, gamma = 0.01, 0.11, 5, 0.9
    tri = _lrs(lambda o: cyclic(o, base, top, up), 4 * up + 1)
    assert tri[0] == pytest.approx(base) and tri[up] == pytest.approx(top)
    assert tri[2 * up] == pytest.approx(base) and tri[3 * up] == pytest.approx(top)
    assert tri[2] == pytest.approx(base + (top - base) * 2 / up)
    tri2 = _lrs(lambda o: cyclic(o, base, top, up, mode="triangular2"), 5 * up + 1)
    assert tri2[up] == pytest.approx(top)
    assert tri2[3 * up] == pytest.approx(base + (top - base) / 2)  # amplitude halves each cycle
    assert tri2[5 * up] == pytest.approx(base + (top - base) / 4)
    exp = _lrs(lambda o: cyclic(o, base, top, up, mode="exp_range", gamma=gamma), 4 * up)
    for t in (0, 3, up, 2 * up + 1, 3 * up):
        x = abs(t / up - 2 * math.floor(1 + t / (2 * up)) + 1)
        assert exp[t] == pytest.approx(base + (top - base) * max(0.0, 1 - x) * gamma**t)


@pytest.mark.parametrize("T_0,T_mult,eta_min", [(10, 1, 0.0), (7, 2, 1e-3), (5, 3, 0.0)])
def test_sgdr_equals_torch_step_by_step(T_0, T_mult, eta_min):
    ours_opt, ref_opt = _opt(), _opt()
    ours = sgdr(ours_opt, T_0, T_mult, eta_min)
    ref = CosineAnnealingWarmRestarts(ref_opt, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    assert _trace(ours_opt, ours, 120) == _trace(ref_opt, ref, 120)


def test_sgdr_hand_computed_restarts():
    peak, eta_min = 0.1, 0.001
    lrs = _lrs(lambda o: sgdr(o, 10, 2, eta_min), 71, lr=peak)
    for restart in (0, 10, 30, 70):  # 10, 10+20, 10+20+40
        assert lrs[restart] == pytest.approx(peak)
    assert lrs[5] == pytest.approx(eta_min + (peak - eta_min) / 2)  # half-way down the first cycle
    assert lrs[20] == pytest.approx(eta_min + (peak - eta_min) / 2)  # half-way down the second
    assert lrs[9] == pytest.approx(eta_min + (peak - eta_min) * (1 + math.cos(math.pi * 9 / 10)) / 2)
    assert sgdr_total_steps(10, 2, 3) == 70


def test_sgdr_warmup_then_restarts():
    peak, w = 0.1, 4
    lrs = _lrs(lambda o: sgdr(o, 10, 1, 0.0, warmup_steps=w), w + 21, lr=peak)
    assert lrs[:w + 1] == pytest.approx([peak * (1 + i * (w - 1) / w) / w for i in range(w)] + [peak])
    assert lrs[w + 5] == pytest.approx(peak / 2)
    assert lrs[w + 10] == pytest.approx(peak) and lrs[w + 20] == pytest.approx(peak)


def test_constant_keeps_lr():
    assert _lrs(constant, 20, lr=0.03) == [0.03] * 20


_BUILDERS = {
    "one_cycle": lambda o: one_cycle(o, 0.3, 50),
    "cyclic": lambda o: cyclic(o, 0.01, 0.1, 4, mode="triangular2", cycle_momentum=True),
    "cyclic_exp": lambda o: cyclic(o, 0.01, 0.1, 4, mode="exp_range", gamma=0.95),
    "sgdr": lambda o: sgdr(o, 6, 2, 1e-4),
    "sgdr_warmup": lambda o: sgdr(o, 6, 2, 1e-4, warmup_steps=3),
    "constant": constant,
}


@pytest.mark.parametrize("name", sorted(_BUILDERS))
@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_state_dict_resume_equals_run_through(name, kind):
    build = _BUILDERS[name]
    opt = _opt(kind)
    through = _trace(opt, build(opt), 40)

    opt1 = _opt(kind)
    s1 = build(opt1)
    first = _trace(opt1, s1, 17)
    saved_sched, saved_opt = s1.state_dict(), opt1.state_dict()
    opt2 = _opt(kind)
    s2 = build(opt2)
    opt2.load_state_dict(saved_opt)
    s2.load_state_dict(saved_sched)
    assert first + _trace(opt2, s2, 23) == through


@pytest.mark.parametrize("call,message", [
    (lambda o: sgdr(o, -1), "Expected T_0 to be a positive integer, but got -1"),
    (lambda o: sgdr(o, 10, T_mult=0), "Expected T_mult to be a positive integer, but got 0"),
    (lambda o: sgdr(o, 10, eta_min=0.5), "Expected eta_min < the optimizer's lr=0.1, but got 0.5"),
    (lambda o: one_cycle(o, 0.1, 100, pct_start=1.5), "Expected pct_start in (0.0, 1.0), but got 1.5"),
    (lambda o: one_cycle(o, -0.1, 100), "Expected max_lr to be a positive finite number, but got -0.1"),
    (lambda o: one_cycle(o, 0.1, 0), "Expected total_steps to be a positive integer, but got 0"),
    (lambda o: one_cycle(o, 0.1, 4), "Expected total_steps > 1/pct_start = 4 (the warm-up needs at least two steps), but got 4"),
    (lambda o: one_cycle(o, 0.1, 10, base_momentum=0.99),
     "Expected base_momentum <= max_momentum=0.95, but got 0.99"),
    (lambda o: cyclic(o, 0.2, 0.1, 5), "Expected base_lr < max_lr=0.1, but got 0.2"),
    (lambda o: cyclic(o, 0.01, 0.1, 5, mode="cosine"),
     "Expected mode to be one of 'triangular', 'triangular2', 'exp_range', but got 'cosine'"),
    (lambda o: cyclic(o, 0.01, 0.1, 2.5), "Expected step_size_up to be a positive integer, but got 2.5"),
])
def test_argument_errors_name_argument_rule_and_value(call, message):
    with pytest.raises(ValueError) as e:
        call(_opt())
    assert str(e.value) == message


def test_cycle_momentum_needs_momentum_or_betas():
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="Expected optimizer to have 'momentum' or 'betas'.*Adagrad"):
        one_cycle(opt, 0.1, 10)
    one_cycle(opt, 0.1, 10, cycle_momentum=False)


def test_sgdr_plans_end_exactly_at_the_budget():
    plans = sgdr_plans(800, T_mults=(1, 2, 3), max_restarts=5)
    assert (800, 1, 1, 0) in plans and (160, 1, 5, 0) in plans and (200, 3, 2, 0) in plans
    assert all(sgdr_total_steps(T_0, T_mult, n) == 800 and w == 0 for T_0, T_mult, n, w in plans)
    assert not [p for p in plans if p[1] == 2]  # 3, 7 and 15 periods do not divide 800
    assert [p for p in plans if p[2] == 1] == [(800, 1, 1, 0)]  # a single cycle is listed once
    # a warm-up takes up the remainder: 20 epochs = 2 + 6 + 12; 7 periods would need 6 of warm-up
    warm = sgdr_plans(20, T_mults=(1, 2), max_warmup=2)
    assert (6, 2, 2, 2) in warm and not [p for p in warm if p[1] == 2 and p[2] > 2]
    assert all(w + sgdr_total_steps(T_0, T_mult, n) == 20 and w <= 2 for T_0, T_mult, n, w in warm)
    lrs = _lrs(lambda o: sgdr(o, 6, 2, warmup_steps=2), 21)
    assert max(lrs[:2]) < 0.1 and lrs[2] == pytest.approx(0.1) and lrs[8] == pytest.approx(0.1)
    lrs = _lrs(lambda o: sgdr(o, 200, 3), 801)
    assert lrs[200] == pytest.approx(0.1) and lrs[799] < 1e-5  # last step at the minimum


@pytest.mark.parametrize("name,params,total", [
    ("sgdr", dict(T_0=7), 35), ("sgdr", dict(T_0=5, T_mult=2), 35),
    ("sgdr", dict(T_0=6, T_mult=2, warmup_steps=3), 21), ("cyclic", dict(step_size_up=4), 40),
    ("one_cycle", {}, 30), ("constant", {}, 12)])
def test_cycle_ends_are_where_the_lr_is_at_its_cycle_minimum(name, params, total):
    """Read off torch's own LR trace: a cycle ends after step s when the LR of step s-1 was the
    lowest of its cycle, i.e. the next LR jumps back up (sgdr), is back at base_lr (cyclic), or the
    run is over (one_cycle); constant has no cycle, every step is a fair point."""
    from trainables.workflow import build_schedule

    opt = _opt(lr=0.1)
    p = dict(params, max_lr=0.1, base_lr=0.01, eta_min=0.0)
    steps = total if name == "one_cycle" else total + 1  # one more step shows the restart
    lrs = [lr for lr, _ in _trace(opt, build_schedule(name, opt, steps, **p), steps)]
    if name == "sgdr":
        expected = {s for s in range(1, total) if lrs[s] > lrs[s - 1] and s > params.get("warmup_steps", 0)}
        expected.add(total)
    elif name == "cyclic":
        expected = {s for s in range(1, total + 1) if math.isclose(lrs[s], 0.01)}
    elif name == "one_cycle":
        assert lrs[-1] == min(lrs)  # its last step is its lowest LR
        expected = {total}
    else:
        expected = set(range(1, total + 1))
    got = {s for s in range(-1, total + 3) if at_cycle_end(name, s, total, **p)}
    assert got == expected
