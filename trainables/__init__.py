"""Tasks (data, models, loss, metric) and the training workflow; knows torch and, for the Ray Tune
trainable, Ray's report/checkpoint API. Never Optuna or MLflow."""
