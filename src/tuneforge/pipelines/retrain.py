"""``tuneforge retrain``: the retraining loop. Labelled feedback from the prediction log becomes new data; the run
is trained further on it (the run folder is the new run's base model) with replay of its old training rows; then the
old and the new model are both scored on the old test split and on held-out new data, with paired bootstrap
intervals, so forgetting is measured. The new model is promoted only when it is not worse on the old test split
within that interval."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from tuneforge.errors import UserError
from tuneforge.io import atomic_write_json, atomic_write_text

MIN_ROWS_PER_LABEL = 5  # the new run splits its rows again (validation, test): each label must reach each split


def retrain(run_dir: str | Path, feedback: str | Path, output: str | Path, model: str | None = None,
            replay: float = 1.0, new_test_share: float = 0.3, overrides: list[str] | None = None, seed: int = 0,
            ewc: float = 0.0, ewc_samples: int = 200, log: Callable[[str], None] = print) -> dict[str, Any]:
    from tuneforge.config.loader import load_config
    from tuneforge.data.prepare import prepare_data
    from tuneforge.monitor.reference import run_folder
    from tuneforge.pipelines.finetune import finetune

    if replay < 0 or ewc < 0 or not 0 < new_test_share < 1:
        raise UserError("--replay and --ewc must be >= 0 and --new-test-share between 0 and 1")
    root, _, meta = run_folder(run_dir)
    old_config = load_config(root / "config.yaml")
    new_rows, counts = labelled_feedback(feedback, model or root.resolve().name, list(meta["labels"]))
    old = prepare_data(old_config.data, old_config.train.seed)
    old_test_texts = {row.text for row in old.splits["test"]}
    counts["in_old_test_split"] = sum(text in old_test_texts for text, _ in new_rows)  # the yardstick stays unseen
    new_rows = [(text, label) for text, label in new_rows if text not in old_test_texts]
    new_train, new_test = _split(new_rows, new_test_share, seed)
    old_train = [(row.text or "", str(row.label)) for row in old.splits["train"]]
    replayed = random.Random(seed).sample(old_train, min(len(old_train), round(replay * len(new_train))))
    _check_trainable(new_train, new_test, replayed, list(meta["labels"]))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    data_file = output.parent / f"{output.name}-data.csv"
    write_rows(data_file, [(t, label, "feedback") for t, label in new_train] +
               [(t, label, "replay") for t, label in replayed])
    log(f"retraining {root.name}: {len(new_train)} labelled feedback rows + {len(replayed)} replayed training rows; "
        f"{len(new_test)} feedback rows held out")
    settings = config_on_rows(old_config, f"{old_config.name}-retrained", root, data_file, output)
    settings["data"]["augment"] = None  # the feedback as it came
    config = load_config(settings, overrides or [])
    callbacks = [ewc_callback(root, old_train, list(meta["labels"]), old_config.data.max_length, ewc, ewc_samples,
                              seed)] if ewc > 0 else []
    result = finetune(config, output=output, log=log, callbacks=callbacks)
    comparison = compare(root, result.run_dir, old.splits["test"], new_test)
    promoted = comparison["old_test"]["new_minus_old"]["accuracy_ci"][1] >= 0
    summary = {"old_run": str(root), "new_run": str(result.run_dir), "promoted": promoted,
               "why": "not worse on the old test split within its interval" if promoted else
               "worse on the old test split (the interval of new - old is below 0): kept the old model",
               "feedback": counts, "trained_on": {"feedback": len(new_train), "replay": len(replayed)},
               "ewc": {"strength": ewc, "fisher_examples": min(ewc_samples, len(old_train)),
                       "penalty_at_end": round(callbacks[0].penalty_at_end, 6)} if callbacks else None,
               "new_data_held_out": len(new_test),
               "forgetting": comparison["old_test"]["forgetting"],
               "new_data_gain": comparison["new_data"]["new_minus_old"]}
    record = {"summary": summary, "comparison": comparison, "replay": replay, "new_test_share": new_test_share}
    atomic_write_json(result.run_dir / "retrain.json", record)
    return record


def _check_trainable(new_train: list[tuple[str, str]], new_test: list[tuple[str, str]],
                     replayed: list[tuple[str, str]], labels: list[str]) -> None:
    """Before any training: new data held out to score on, and every label of the run in the training rows (the
    new run keeps the run's head, so a label with no rows would change its size)."""
    if not new_test:
        raise UserError("retrain: no labelled feedback is left to hold out (raise --new-test-share or give more "
                        "feedback)")
    present = Counter(label for _, label in new_train + replayed)
    missing = [label for label in labels if present[label] < MIN_ROWS_PER_LABEL]
    if missing:
        raise UserError(f"retrain: fewer than {MIN_ROWS_PER_LABEL} training rows of {', '.join(missing)} (feedback plus "
                        f"replay); give feedback for every label or replay old rows (--replay 1)")


def ewc_callback(root: Path, old_train: list[tuple[str, str]], labels: list[str], max_length: int, strength: float,
                 samples: int, seed: int) -> Any:
    """EWC anchored on the run's weights, its Fisher information estimated on a sample of its old training rows."""
    from transformers import AutoTokenizer

    from tuneforge.training.ewc import EwcCallback

    picked = random.Random(seed + 1).sample(old_train, min(samples, len(old_train)))
    tokenizer = AutoTokenizer.from_pretrained(str(root / "model"))
    return EwcCallback(tokenizer, [t for t, _ in picked], [labels.index(label) for _, label in picked], max_length,
                       strength)


def labelled_feedback(target: str | Path, model: str, labels: list[str]) -> tuple[list[tuple[str, str]],
                                                                                  dict[str, int]]:
    """(text, label) of every request with a label, one per text (its latest label); what was left out counted."""
    from tuneforge.monitor.log import open_log

    prediction_log = open_log(target)
    try:  # in the order the labels came, so that a text labelled twice keeps its latest label
        rows = sorted((row for row in prediction_log.rows(model) if row.get("label") is not None),
                      key=lambda row: row["feedback_ts"] or 0.0)
    finally:
        prediction_log.close()
    without_text = sum(row["input_text"] is None for row in rows)
    unknown = Counter(row["label"] for row in rows if row["label"] not in labels)
    if unknown:
        raise UserError(f"{target}: feedback labels the run does not have: {', '.join(sorted(unknown))} (its labels: "
                        f"{', '.join(labels)}); retrain keeps the run's labels; train a new run for new classes")
    latest = {row["input_text"]: row["label"] for row in rows if row["input_text"] is not None}
    if len(latest) < 10:
        raise UserError(f"{target}: {len(latest)} labelled requests with text for {model!r}; retrain needs at least "
                        f"10 (POST /v1/feedback; serve without --no-log-text keeps the texts)")
    counts = {"labelled": len(rows), "used": len(latest), "repeated_texts": len(rows) - without_text - len(latest),
              "without_text": without_text}
    return sorted(latest.items()), counts


def _split(rows: list[tuple[str, str]], test_share: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Held-out new data, stratified by label (each label keeps at least one training row)."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    train, test = [], []
    rng = random.Random(seed)
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        cut = min(len(group) - 1, round(test_share * len(group)))
        test += group[:cut]
        train += group[cut:]
    return train, test


def write_rows(path: Path, rows: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label", "origin"])
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def config_on_rows(config: Any, name: str, start: Path | None, data_file: Path, output: Path) -> dict[str, Any]:
    """A run's settings on rows written by :func:`write_rows` (split again 80/10/10 for its own validation), from
    the run folder ``start`` when given (retrain, a continual stage), into ``output``."""
    data = config.model_dump(mode="json")
    data["name"] = name
    if start is not None:
        data["model"]["name"] = str(Path(start).resolve())
    data["data"].update(path=str(data_file.resolve()), format="csv", text_column="text", label_column="label",
                        max_rows=None, split={"train": 0.8, "validation": 0.1, "test": 0.1, "stratify": True})
    data["output_dir"], data["hpo"] = str(output), None
    return data


def compare(old_run: Path, new_run: Path, old_test: list[Any], new_test: list[tuple[str, str]]) -> dict[str, Any]:
    """Both models on the old test split and on the held-out new data: each model's figures and new - old (paired
    bootstrap); forgetting = old - new on the old test split."""
    from tuneforge.evaluation.metrics import bootstrap_indices, classification_metrics, paired_difference
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import read_model_meta, task_of

    predictors = {}
    for name, folder in (("old", old_run), ("new", new_run)):
        model_dir, meta = read_model_meta(folder)
        predictors[name] = (task_spec(task_of(meta)).call("predictor", model_dir, meta, None), meta["labels"])
    labels = predictors["old"][1]
    out = {}
    for part, rows in (("old_test", [(r.text or "", str(r.label)) for r in old_test]), ("new_data", new_test)):
        texts, truth = [t for t, _ in rows], [labels.index(label) for _, label in rows]
        predicted = {name: [labels.index(p["label"]) for p in predictor.predict(texts)]
                     for name, (predictor, _) in predictors.items()}
        indices = bootstrap_indices(len(rows), 1000, seed=0)
        figures = {name: _headline(classification_metrics(truth, predicted[name], labels, indices))
                   for name in predicted}
        difference = paired_difference(truth, predicted["new"], predicted["old"], len(labels), indices)
        out[part] = {"n": len(rows), **figures, "new_minus_old": _headline(difference)}
    gap = out["old_test"]["new_minus_old"]
    out["old_test"]["forgetting"] = {"accuracy": -gap["accuracy"],
                                     "accuracy_ci": [-gap["accuracy_ci"][1], -gap["accuracy_ci"][0]]}
    return out


def _headline(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: figures[key] for key in ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci")}
