"""Retraining: dataset snapshots, the networks, training, evaluation and the model registry."""
