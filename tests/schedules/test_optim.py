import math

import pytest
import torch

from schedules import SGDW, normalized_weight_decay


def _param(values):
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def test_sgdw_zero_gradient_decay_is_closed_form():
    lr, wd, steps = 0.1, 0.05, 25
    for momentum in (0.0, 0.9):
        p = _param([1.0, -2.0, 3.0])
        opt = SGDW([p], lr=lr, momentum=momentum, weight_decay=wd)
        for _ in range(steps):
            p.grad = torch.zeros_like(p)
            opt.step()
        # Decoupled: the decay is lr*wd per step, whatever the momentum.
        assert torch.allclose(p.detach(), torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
                              * (1 - lr * wd) ** steps, rtol=1e-12)


def test_sgdw_step_is_decay_then_torch_sgd_on_bare_gradient():
    torch.manual_seed(0)
    grads = [torch.randn(4, dtype=torch.float64) for _ in range(6)]
    lr, wd, mom = 0.05, 0.1, 0.9
    p = _param([0.5, -1.0, 2.0, 0.0])
    q = _param([0.5, -1.0, 2.0, 0.0])
    ours = SGDW([p], lr=lr, momentum=mom, weight_decay=wd, nesterov=True)
    ref = torch.optim.SGD([q], lr=lr, momentum=mom, weight_decay=0.0, nesterov=True)
    for g in grads:
        p.grad, q.grad = g.clone(), g.clone()
        with torch.no_grad():
            q.mul_(1 - lr * wd)  # what AdamW does before its update
        ours.step()
        ref.step()
        assert torch.allclose(p, q, rtol=0, atol=1e-14)
    assert ours.param_groups[0]["weight_decay"] == wd


def test_sgdw_equals_sgd_l2_without_momentum():
    # Plain SGD: p - lr*(g + wd*p) == p*(1 - lr*wd) - lr*g, so the two coincide (the paper's Prop. 1).
    torch.manual_seed(1)
    p, q = _param([1.0, 2.0]), _param([1.0, 2.0])
    a = SGDW([p], lr=0.1, weight_decay=0.01)
    b = torch.optim.SGD([q], lr=0.1, weight_decay=0.01)
    for _ in range(10):
        g = torch.randn(2, dtype=torch.float64)
        p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert torch.allclose(p, q, rtol=0, atol=1e-14)


def test_sgd_l2_with_momentum_decays_through_momentum_sgdw_does_not():
    # With momentum, L2's decay enters the momentum buffer: with zero gradient the weights follow
    # v <- mu*v + wd*p, p <- p - lr*v, whose per-step factor tends to the larger root of
    # z^2 - (1 + mu - lr*wd) z + mu = 0 (~ 1 - lr*wd/(1-mu): ten times SGDW's decay at mu = 0.9).
    lr, wd, mu = 0.001, 0.1, 0.9  # lr*wd << (1-mu)^2, where the 1/(1-mu) approximation holds
    p, q = _param([1.0]), _param([1.0])
    sgdw = SGDW([p], lr=lr, momentum=mu, weight_decay=wd)
    l2 = torch.optim.SGD([q], lr=lr, momentum=mu, weight_decay=wd)
    v, r, ratios = 0.0, 1.0, []
    for _ in range(400):
        p.grad, q.grad = torch.zeros_like(p), torch.zeros_like(q)
        before = q.item()
        sgdw.step()
        l2.step()
        v = mu * v + wd * r
        r = r - lr * v
        ratios.append(q.item() / before)
    assert q.item() == pytest.approx(r, rel=1e-10)
    b = 1 + mu - lr * wd
    root = (b + math.sqrt(b * b - 4 * mu)) / 2
    assert ratios[-1] == pytest.approx(root, rel=1e-9)
    assert p.item() == pytest.approx((1 - lr * wd) ** 400, rel=1e-12)
    assert (1 - ratios[-1]) / (lr * wd) == pytest.approx(1 / (1 - mu), rel=0.02)


def test_normalized_weight_decay_formula():
    assert normalized_weight_decay(0.05, 128, 50000, 200) == pytest.approx(0.05 * math.sqrt(128 / (50000 * 200)))
    assert normalized_weight_decay(0.0, 1, 1, 1) == 0.0
    with pytest.raises(ValueError, match=r"Expected epochs to be a positive integer, but got 0"):
        normalized_weight_decay(0.05, 128, 50000, 0)
    with pytest.raises(ValueError, match=r"Expected lambda_norm to be a non-negative finite number, but got -1"):
        normalized_weight_decay(-1, 128, 50000, 10)


def test_sgdw_argument_errors():
    with pytest.raises(ValueError, match=r"Expected weight_decay to be a non-negative finite number, but got -0.1"):
        SGDW([_param([1.0])], lr=0.1, weight_decay=-0.1)
    with pytest.raises(ValueError, match=r"Expected momentum in \[0.0, 1.0\), but got 1.0"):
        SGDW([_param([1.0])], lr=0.1, momentum=1.0)
