"""Experiment tracking behind a small protocol; MLflow with an embedded SQLite store by default."""

from __future__ import annotations

from tuneforge.config.schema import TrackingConfig
from tuneforge.tracking.base import NullTracker, Tracker, artifact_root, tracking_uri

__all__ = ["NullTracker", "Tracker", "open_tracker"]


def open_tracker(config: TrackingConfig, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Tracker:
    if not config.enabled:
        return NullTracker()
    from tuneforge.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(tracking_uri(config), artifact_root(config), config.experiment or experiment, run_name,
                         tags or {})
