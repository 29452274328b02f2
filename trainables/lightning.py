"""A LightningModule tuned as it is (the optional extra `lrtune[lightning]`).

lrtune's optimizer and schedule replace the module's `configure_optimizers` (the schedule steps
once per optimizer step); the module's own `training_step`, `validation_step` and what it logs stay
its own, as do its dataloaders (or the task's `datamodule(batch_size)`, or the task's loaders). The
workflow's `grad_clip`, `accumulate` and AMP become the Trainer's `gradient_clip_val`,
`accumulate_grad_batches` and `precision`. A callback reports once per epoch, after validation,
with the metrics the module logged (`trainer.callback_metrics`); the checkpoint is Lightning's own
(`trainer.save_checkpoint`), and a restored trial continues with `fit(ckpt_path=...)`.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch

from .data import seed_everything
from .workflow import amp_dtype, optimizer_and_schedule

try:
    import lightning.pytorch as pl
except ImportError:  # the older distribution name
    import pytorch_lightning as pl


def data_of(task, module, batch_size: int, seed: int) -> dict:
    """The keyword arguments of `Trainer.fit` that give the module its data: the task's
    `datamodule(batch_size)`, the task's loaders, or nothing (the module's own dataloaders)."""
    if task.datamodule is not None:
        return dict(datamodule=task.datamodule(batch_size))
    if task.train_loader is not None:
        return dict(train_dataloaders=task.train_batches(batch_size, seed, 0),
                    val_dataloaders=task.val_batches(batch_size))
    return {}


class _Report(pl.Callback):
    def __init__(self, report):
        self.report = report

    def on_train_epoch_end(self, trainer, module):
        metrics = {k: v for k, v in trainer.callback_metrics.items()}
        group = trainer.optimizers[0].param_groups[0]
        metrics.update(epoch=trainer.current_epoch + 1, lr=group["lr"],
                       momentum=group["betas"][0] if "betas" in group else group.get("momentum", 0.0))
        self.report(metrics, state=lambda: _checkpoint(trainer))


def _checkpoint(trainer) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "lightning.ckpt"
        trainer.save_checkpoint(path)
        return dict(lightning=path.read_bytes())


def fit(task, workflow: dict, report):
    """Train `workflow` with the task's LightningModule and Lightning's Trainer; returns the trained
    module as a fresh instance with the trained weights (the one trained holds lrtune's optimizer
    and schedule and the Trainer, which a saved model should not carry)."""
    device = report.device
    seed_everything(int(workflow.get("seed", 0)))
    module = task.models[workflow["model"]]()
    optimizer, scheduler = optimizer_and_schedule(workflow, module, report.steps_per_epoch)
    module.configure_optimizers = lambda: dict(optimizer=optimizer,
                                               lr_scheduler=dict(scheduler=scheduler, interval="step"))
    amp = amp_dtype(device) if workflow.get("amp", True) else None
    precision = "32-true" if amp is None else "bf16-mixed" if amp == torch.bfloat16 else "16-mixed"
    accumulate = int(workflow.get("accumulate") or 1)
    data = data_of(task, module, int(workflow["batch_size"]), int(workflow.get("seed", 0)))
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [q.level for q in quiet]
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as d:
        # Lightning's banners (devices, tips) and advice on worker counts are for the user's own runs.
        warnings.filterwarnings("ignore", module=r"lightning\..*|pytorch_lightning\..*")
        for q in quiet:
            q.setLevel(logging.WARNING)
        try:
            trainer = pl.Trainer(
                max_epochs=int(workflow["epochs"]), accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=1, precision=precision, gradient_clip_val=workflow.get("grad_clip"),
                accumulate_grad_batches=accumulate, limit_train_batches=report.steps_per_epoch * accumulate,
                callbacks=[_Report(report)], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0)
            ckpt = None
            restored = report.restored
            if restored is not None:
                ckpt = Path(d) / "restored.ckpt"
                ckpt.write_bytes(restored["lightning"])
            trainer.fit(module, ckpt_path=ckpt, **data)
        finally:
            for q, level in zip(quiet, levels):
                q.setLevel(level)
    trained = task.models[workflow["model"]]()
    trained.load_state_dict(module.state_dict())
    return trained
