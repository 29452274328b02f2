"""Batches of any structure: moved to a device, grouped into optimizer steps, and the RNGs a
training run (and its DataLoader workers) draws from, seeded and checkpointed.

A batch is whatever a task's data yields: a tensor, a tuple/list/dict of them (nested), a
namedtuple or dataclass, or any object with a `.to(device)` method (e.g. Hugging Face's
`BatchEncoding`). Nothing here knows what is inside; the task's loss does.
"""

from __future__ import annotations

import dataclasses
import random
from itertools import islice
from typing import Any, Iterable, Iterator

import numpy as np
import torch


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """`batch` with every tensor in it on `device` (same structure); other leaves as they are."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return type(batch)((k, to_device(v, device, non_blocking)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: to_device(getattr(batch, f.name), device, non_blocking)
                                             for f in dataclasses.fields(batch) if f.init})
    if callable(getattr(batch, "to", None)):
        return batch.to(device)
    return batch


def grouped(batches: Iterable, size: int, limit: int | None = None) -> Iterator[list]:
    """Consecutive micro-batches in lists of `size` (one list per optimizer step), at most `limit`
    lists; a last incomplete group is dropped so that every step sees the same effective batch."""
    it = iter(batches)
    for _ in range(limit) if limit is not None else iter(int, 1):
        group = list(islice(it, size))
        if len(group) < size:
            return
        yield group


def seed_everything(seed: int) -> None:
    """Python's `random`, NumPy's global RNG and torch's (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global RNGs' states, for a checkpoint (CUDA's too where it is in use)."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_worker(worker_id: int) -> None:
    """A DataLoader `worker_init_fn`: NumPy seeded from the worker's torch seed (torch seeds each
    worker's torch and `random` from the loader's base seed, but not NumPy), as torch's
    reproducibility notes recommend."""
    np.random.seed(torch.initial_seed() % 2**32)


def seeded_workers(loader: Iterable) -> Iterable:
    """A torch DataLoader with worker processes gets `seed_worker` unless it has an init function of
    its own; its base seed is drawn from torch's global RNG, which the run seeds and checkpoints."""
    if isinstance(loader, torch.utils.data.DataLoader) and loader.num_workers > 0 and loader.worker_init_fn is None:
        loader.worker_init_fn = seed_worker
    return loader
