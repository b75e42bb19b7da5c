"""Hyperparameter search: a loop of Optuna trials around the same pipeline as ``train``."""
