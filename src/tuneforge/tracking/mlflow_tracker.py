"""MLflow tracking through its client API (no global active run, so trials in one process do not collide)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.tracking.base import flatten


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside an embedded SQLite store while it is opened: search workers starting together
    otherwise run MLflow's schema migration at once ("duplicate column name") and fail their trials."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri[len("sqlite:///"):].split("?")[0] + ".lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MlflowTracker:
    def __init__(self, uri: str, artifact_location: str | None, experiment: str, run_name: str,
                 tags: dict[str, str]):
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # mlflow sets INFO on import; its table set-up chatter is not ours
            logging.getLogger(name).setLevel(logging.WARNING)
        with store_lock(uri):  # the first open of an embedded store migrates its tables: one process at a time
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location and
                                                              f"{artifact_location}/{experiment}")
            except Exception:  # another worker created it first
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        else:
            experiment_id = found.experiment_id
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        self.run_id: str | None = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifacts(self, folder: Path, names: list[str]) -> None:
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
