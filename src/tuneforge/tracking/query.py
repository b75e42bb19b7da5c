"""Read runs back from the tracking store: list, show one, compare several side by side."""

from __future__ import annotations

from typing import Any

from tuneforge.config.schema import TrackingConfig
from tuneforge.errors import UserError
from tuneforge.tracking.base import tracking_uri

COSTS = ("validation_best", "train_seconds", "global_steps")


def headline_columns() -> tuple[str, ...]:
    """The columns of a run list: each task's headline test metric with its baselines', then the costs."""
    from tuneforge.tasks.registry import all_specs

    columns = [f"test_{metric}{suffix}" for spec in all_specs() for metric in spec.headline
               for suffix in ("", *(f"_{b}" for b in spec.baselines))]
    return (*dict.fromkeys(columns), *COSTS)


def _client(config: TrackingConfig) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(config))


def list_runs(config: TrackingConfig, experiment: str | None = None, study: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    client = _client(config)
    experiments = [e.experiment_id for e in client.search_experiments()
                   if experiment is None or e.name == experiment]
    if not experiments:
        return []
    query = f"tags.`tuneforge.study` = '{study}'" if study else ""
    runs = client.search_runs(experiments, filter_string=query, max_results=limit, order_by=["attributes.start_time DESC"])
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    return [_summary(run, names) for run in runs]


def get_run(config: TrackingConfig, key: str) -> Any:
    """A run by id, id prefix, run name (the run folder's name) or run folder path."""
    from pathlib import Path

    client = _client(config)
    experiments = [e.experiment_id for e in client.search_experiments()]
    folder = str(Path(key).resolve()) if Path(key).is_dir() else None
    if experiments:
        runs = client.search_runs(experiments, max_results=5000)
        for run in runs:  # a name or folder first: a short name ("a") may also begin another run's hex id
            if run.info.run_name == key or (folder and run.data.tags.get("tuneforge.run_dir") == folder):
                return run
        for run in runs:
            if run.info.run_id.startswith(key):
                return run
    raise UserError(f"no tracked run {key!r} in {tracking_uri(config)} (see: tuneforge runs list)")


def _summary(run: Any, experiment_names: dict[str, str]) -> dict[str, Any]:
    import datetime

    return {"run_id": run.info.run_id, "name": run.info.run_name, "status": run.info.status,
            "experiment": experiment_names.get(run.info.experiment_id, run.info.experiment_id),
            "started": datetime.datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S"),
            "study": run.data.tags.get("tuneforge.study"), "trial": run.data.tags.get("tuneforge.trial"),
            "metrics": {k: v for k, v in run.data.metrics.items()}, "params": dict(run.data.params),
            "intervals": _intervals(run.data.tags.get("tuneforge.run_dir"))}


def _intervals(run_dir: str | None) -> dict[str, list[float]]:
    """``test_<metric>[_<baseline>]`` -> its bootstrap interval, from the run folder's metrics.json when it is on
    this machine (the tracker keeps values only)."""
    import json
    from pathlib import Path

    try:
        test = json.loads((Path(run_dir) / "metrics.json").read_text())["test"] if run_dir else {}
    except (OSError, ValueError, KeyError):
        return {}
    out: dict[str, list[float]] = {}
    for prefix, figures in (("", test.get("finetuned", {})),
                            *((f"_{name}", f) for name, f in test.get("baselines", {}).items())):
        for key, value in figures.items():
            if key.endswith("_ci") and isinstance(value, list):
                out[f"test_{key[:-3]}{prefix}"] = value
    return out


def compare(config: TrackingConfig, keys: list[str], study: str | None = None) -> list[dict[str, Any]]:
    if study:
        rows = list_runs(config, study=study, limit=1000)
        return sorted(rows, key=lambda r: int(r["trial"] or 0))
    client = _client(config)
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    return [_summary(get_run(config, key), names) for key in keys]


def differing_params(rows: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for r in rows for k in r["params"]})
    return [k for k in keys if len({r["params"].get(k) for r in rows}) > 1]
