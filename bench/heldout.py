"""Held-out tasks for bench/search_quality.py: none of them is a task or model lrtune's rules were
calibrated on (bench/suggestion.py's grids), and none reaches its ceiling within the benchmark's
10-epoch budget. Each is a user task (`"bench.heldout:<name>"`), all data made here, nothing
downloaded. Four domains (1-D signals, tabular, images, token sequences), cross-entropy and MSE,
with and without normalisation layers:

| task            | domain         | loss | normalisation | model                               |
|-----------------|----------------|------|---------------|-------------------------------------|
| cnn1d_plain     | 1-D signals    | CE   | none          | MNIST-1D, 3 conv + ReLU, linear head |
| mlp_bn          | 1-D signals    | CE   | BatchNorm     | MNIST-1D, 3-layer MLP               |
| tanh_deep       | tabular        | MSE  | none          | 6-layer tanh MLP, teacher-student   |
| friedman_ln     | tabular        | MSE  | LayerNorm     | Friedman #1, 3-layer MLP            |
| digits_small_bn | images (8x8)   | CE   | BatchNorm     | 400 of scikit-learn's digits, CNN   |
| tokens_ln       | token sequences| CE   | LayerNorm     | embedding + conv + pooling          |
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainables.tasks import Task, _mnist1d_arrays, accuracy, r2

MODEL = "net"  # each task has one model, under this name


def _split(x, y, n_train: int, seed: int):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, va = order[:n_train], order[n_train:]
    return (x[tr], y[tr]), (x[va], y[va])


# ---------------------------------------------------------------- 1-D signals (MNIST-1D)

def _mnist1d():
    x, y, xv, yv = _mnist1d_arrays(42)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    i = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return (f(x), i(y)), (f(xv), i(yv))


class PlainCNN1d(nn.Module):
    """A 1-D CNN without normalisation layers (the family whose range test suggests too low)."""

    def __init__(self, c: int = 24):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, c, 5, padding=2), nn.ReLU(),
            nn.Conv1d(c, c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(c, c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(c * 10, 10))

    def forward(self, x):
        return self.net(x.unsqueeze(1))


def cnn1d_plain() -> Task:
    train, val = _mnist1d()
    return Task("cnn1d_plain", train, val, models={MODEL: PlainCNN1d},
                loss_fn=F.cross_entropy, metric=accuracy)


def _bn_mlp(inputs: int, hidden: int, outputs: int, depth: int) -> nn.Sequential:
    layers, width = [], inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def mlp_bn() -> Task:
    train, val = _mnist1d()
    return Task("mlp_bn", train, val, models={MODEL: lambda: _bn_mlp(40, 128, 10, 3)},
                loss_fn=F.cross_entropy, metric=accuracy)


# ---------------------------------------------------------------- tabular regression

def tanh_deep(n_train: int = 3000, n_val: int = 1000, dim: int = 16) -> Task:
    """A deep tanh student (6 hidden layers, no normalisation) of a 2-layer tanh teacher."""
    g = torch.Generator().manual_seed(7)
    w1 = torch.randn(dim, 24, generator=g) * (2.0 / dim**0.5)
    w2 = torch.randn(24, 1, generator=g) / 24**0.5
    x = torch.randn(n_train + n_val, dim, generator=g)
    y = torch.tanh(x @ w1) @ w2 * 2.0 + 0.1 * torch.randn(n_train + n_val, 1, generator=g)

    def model():
        layers, width = [], dim
        for _ in range(6):
            layers += [nn.Linear(width, 48), nn.Tanh()]
            width = 48
        return nn.Sequential(*layers, nn.Linear(width, 1))

    return Task("tanh_deep", (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), models={MODEL: model},
                loss_fn=F.mse_loss, metric=r2, metric_name="r2")


def friedman_ln(n: int = 4000, n_train: int = 3000) -> Task:
    """Friedman #1 (scikit-learn's generator: 5 informative of 10 features, noise 1.0), targets
    standardised; an MLP with LayerNorm."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n, n_features=10, noise=1.0, random_state=3)
    x = torch.tensor(x, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
    y = (y - y.mean()) / y.std()

    def model():
        layers, width = [], 10
        for _ in range(3):
            layers += [nn.Linear(width, 64), nn.LayerNorm(64), nn.GELU()]
            width = 64
        return nn.Sequential(*layers, nn.Linear(width, 1))

    train, val = _split(x, y, n_train, seed=3)
    return Task("friedman_ln", train, val, models={MODEL: model}, loss_fn=F.mse_loss, metric=r2, metric_name="r2")


# ---------------------------------------------------------------- images

class SmallBNCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 10))

    def forward(self, x):
        return self.net(x.view(-1, 1, 8, 8))


def digits_small_bn(n_train: int = 400) -> Task:
    """scikit-learn's 8x8 digits with pixel noise (std 0.25 of the pixel range), 400 training
    images, the other 1397 for validation."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    g = torch.Generator().manual_seed(11)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    x = x + 0.25 * torch.randn(x.shape, generator=g)
    train, val = _split(x, torch.tensor(y, dtype=torch.long), n_train, seed=11)
    return Task("digits_small_bn", train, val, models={MODEL: SmallBNCNN}, loss_fn=F.cross_entropy, metric=accuracy)


# ---------------------------------------------------------------- token sequences

class TokenNet(nn.Module):
    def __init__(self, vocab: int, classes: int, d: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.conv = nn.Conv1d(d, d, 5, padding=2)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(2 * d, classes)

    def forward(self, tokens):
        h = self.conv(self.embed(tokens).transpose(1, 2)).transpose(1, 2)
        h = F.gelu(self.norm(h))
        return self.head(torch.cat([h.mean(1), h.amax(1)], dim=1))


def tokens_ln(n: int = 5000, n_train: int = 4000, length: int = 32, vocab: int = 24) -> Task:
    """Sequences of random tokens; the label is which of 4 two-token motifs ("a b" adjacent)
    occurs most often (ties to the lowest), a local-pattern counting task."""
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, vocab, (n, length), generator=g)
    motifs = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    for _ in range(3):  # plant a few motifs so that counts differ
        pos = torch.randint(0, length - 1, (n,), generator=g)
        which = torch.randint(0, 4, (n,), generator=g)
        tokens[torch.arange(n), pos] = motifs[which, 0]
        tokens[torch.arange(n), pos + 1] = motifs[which, 1]
    pairs = torch.stack([tokens[:, :-1], tokens[:, 1:]], dim=-1)  # n, length-1, 2
    counts = torch.stack([(pairs == m).all(-1).sum(1) for m in motifs], dim=1)
    y = counts.argmax(1)
    train, val = _split(tokens, y, n_train, seed=5)
    return Task("tokens_ln", train, val, models={MODEL: lambda: TokenNet(vocab, 4)},
                loss_fn=F.cross_entropy, metric=accuracy)


TASKS = ("cnn1d_plain", "mlp_bn", "tanh_deep", "friedman_ln", "digits_small_bn", "tokens_ln")
