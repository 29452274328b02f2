"""Tasks (data, models, loss, metric) and the training workflow; knows torch and, for the Ray Tune
trainable, Ray's report/checkpoint API. Never Optuna or MLflow.

`optimizer_and_schedule(workflow, model, steps_per_epoch)` is the helper a loop of your own
(`Task(train_fn=...)`) or a LightningModule trains with."""

from .workflow import optimizer_and_schedule

__all__ = ["optimizer_and_schedule"]
