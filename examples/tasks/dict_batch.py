"""A model that takes a dict and computes its own loss, as a Hugging Face model does
(`model(**batch).loss`): a tiny bag-of-embeddings classifier over token sequences. The label says
whether token 1 occurs more often than token 2; batches are dicts of input_ids, attention_mask and
labels collated by a DataLoader.

    lrtune sweep examples/tasks/dict_batch.yaml      # task: "examples.tasks.dict_batch:tokens"
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainables.tasks import Task


@dataclass
class Output:
    loss: torch.Tensor | None
    logits: torch.Tensor


class BagClassifier(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, input_ids, attention_mask, labels=None) -> Output:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        logits = self.head(pooled)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return Output(loss, logits)


class Tokens(Dataset):
    def __init__(self, n: int, seed: int, length: int = 24, vocab: int = 20):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)
        lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
        self.mask = (torch.arange(length) < lengths[:, None]).long()
        counted = self.ids * self.mask + (1 - self.mask) * -1
        self.labels = ((counted == 1).sum(1) > (counted == 2).sum(1)).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


@torch.no_grad()
def evaluate(model, val_batches) -> dict:
    correct = total = 0
    loss_sum = 0.0
    for batch in val_batches:
        out = model(**batch)
        n = len(batch["labels"])
        loss_sum += out.loss.item() * n
        correct += (out.logits.argmax(1) == batch["labels"]).sum().item()
        total += n
    return {"val_loss": loss_sum / total, "accuracy": correct / total}


def tokens() -> Task:
    train, val = Tokens(2000, seed=0), Tokens(500, seed=1)
    return Task(
        "tokens", models={"bag": BagClassifier},
        train_loader=lambda batch_size, seed, epoch: DataLoader(
            train, batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(1000 * seed + epoch)),
        val_loader=lambda batch_size: DataLoader(val, batch_size),
        loss=lambda model, batch: model(**batch).loss, evaluate=evaluate, metric_name="accuracy")
