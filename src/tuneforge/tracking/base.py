"""The Tracker protocol the pipelines talk to, and how one is opened from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from tuneforge.config.schema import TrackingConfig


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_artifacts(self, folder: Path, names: list[str]) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_artifacts(self, folder: Path, names: list[str]) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


def tracking_uri(config: TrackingConfig) -> str:
    if config.uri:
        return config.uri
    folder = Path(config.dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # several search workers on one machine share this file: wait for SQLite's write lock (up to 60 s) instead of
    # failing a trial with "database is locked" after the driver's default 5 s
    return f"sqlite:///{folder / 'mlflow.db'}?timeout=60"


def artifact_root(config: TrackingConfig) -> str | None:
    """Artifacts of the embedded store live beside it (never in the current directory)."""
    return None if config.uri else (Path(config.dir).expanduser().resolve() / "artifacts").as_uri()


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": value}; lists become strings."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
