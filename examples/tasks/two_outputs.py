"""A model with two outputs and a loss of its own: digit logits and a parity logit (odd/even), trained
on the sum of both cross-entropies; the sweep config adds gradient clipping and accumulation.

    lrtune sweep examples/tasks/two_outputs.yaml     # task: "examples.tasks.two_outputs:digits_parity"
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.tasks import Task, digits


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU())
        self.digit, self.parity = nn.Linear(128, 10), nn.Linear(128, 1)

    def forward(self, x):
        h = self.body(x)
        return self.digit(h), self.parity(h).squeeze(1)


def digit_and_parity_loss(outputs, targets) -> torch.Tensor:
    logits, parity = outputs
    return (nn.functional.cross_entropy(logits, targets)
            + nn.functional.binary_cross_entropy_with_logits(parity, (targets % 2).float()))


def digit_accuracy(outputs, targets) -> float:
    return (outputs[0].argmax(1) == targets).float().mean().item()


def digits_parity() -> Task:
    d = digits()
    return Task("digits_parity", d.train, d.val, models={"two_heads": TwoHeads},
                loss_fn=digit_and_parity_loss, metric=digit_accuracy, metric_name="accuracy")
