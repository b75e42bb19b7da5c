"""Traffic to replay against a served run (a drift drill, a shadow test): the run's own test split, or rows of any
data file, sent to ``POST /v1/classify`` one request per text, and labels sent back as feedback."""

from __future__ import annotations

import csv
import json
import random
import urllib.request
from pathlib import Path
from typing import Any


def run_split(run_dir: str | Path, split: str = "test") -> list[tuple[str, str]]:
    """(text, label) of a split of the run's data, rebuilt from its config (same seed: the same rows)."""
    from tuneforge.config.loader import load_config
    from tuneforge.data.prepare import prepare_data
    from tuneforge.monitor.reference import run_folder

    root, _, _ = run_folder(run_dir)
    config = load_config(root / "config.yaml")
    data = prepare_data(config.data, config.train.seed)
    return [(row.text or "", str(row.label)) for row in data.splits[split]]


def table_rows(path: str, text_column: str = "text", label_column: str = "label") -> list[tuple[str, str]]:
    """(text, label) of a CSV file or an ``offline:`` dataset that is one (rows without text skipped)."""
    from tuneforge.packages import resolve_data_path

    with open(resolve_data_path(path), newline="", encoding="utf-8", errors="replace") as handle:
        return [(row[text_column], row[label_column]) for row in csv.DictReader(handle) if row[text_column].strip()]


def shuffled(rows: list[Any], seed: int, count: int | None = None) -> list[Any]:
    picked = list(rows)
    random.Random(seed).shuffle(picked)
    return picked[:count] if count else picked


def post(url: str, path: str, body: dict[str, Any], key: str | None = None, timeout: float = 120) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def send(url: str, model: str, texts: list[str], key: str | None = None) -> list[dict[str, Any]]:
    """One classify request per text, in order; each result with its log id."""
    return [post(url, "/v1/classify", {"model": model, "input": text}, key)["data"][0] for text in texts]


def send_feedback(url: str, results: list[dict[str, Any]], labels: list[str], key: str | None = None) -> int:
    for result, label in zip(results, labels):
        post(url, "/v1/feedback", {"id": result["id"], "label": label}, key)
    return len(results)
