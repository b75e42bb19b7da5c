"""Experiment tracking behind a small protocol; MLflow with an embedded SQLite store by default."""

from tuneforge.tracking.base import NullTracker, Tracker, open_tracker

__all__ = ["NullTracker", "Tracker", "open_tracker"]
