"""The reference a run is watched against: its own validation split, rebuilt from the run's config (same data, same
seed, so the same rows), embedded, and predicted by the run's model; its training split's words are the vocabulary.
Built once and kept in ``<run>/monitor/reference.npz`` (a new model in the folder builds it again)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.monitor.drift import oov_share, words



def watched_tasks() -> list[str]:
    from tuneforge.tasks.registry import all_specs

    return [spec.name for spec in all_specs() if spec.monitored]


@dataclass
class Reference:
    embeddings: Any  # float32 (n, d)
    input_words: Any  # int (n,)
    confidences: Any  # float (n,)
    predictions: dict[str, int]  # predicted label -> count
    labels: list[str]
    vocabulary: set[str]
    oov_share: float  # of the validation texts against the training vocabulary
    accuracy: float  # of the model on the validation split
    rows: int
    embedder: str


def run_folder(run_dir: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """The run folder, its model folder and its tuneforge.json; only a task the monitor knows how to watch."""
    from tuneforge.tasks.run_folder import read_model_meta, task_of

    model_dir, meta = read_model_meta(run_dir)
    if task_of(meta) not in watched_tasks():
        raise UserError(f"{run_dir}: a {task_of(meta)} run; monitoring and retraining watch "
                        f"{', '.join(watched_tasks())} runs for now")
    return model_dir.parent, model_dir, meta


def load_reference(run_dir: str | Path, predictor: Any = None, embedder: Any = None, log: Any = print) -> Reference:
    """The cached reference of the run, else built now (the predictor and embedder are loaded when not given)."""
    import numpy as np

    root, model_dir, meta = run_folder(run_dir)
    cache, stamp = root / "monitor" / "reference.npz", _model_stamp(model_dir)
    if cache.exists():
        stored = np.load(cache, allow_pickle=False)
        info = json.loads(str(stored["info"]))
        if info["model_stamp"] == stamp:
            return _from_arrays(stored, info)
    log(f"building the drift reference of {root.name} from its validation split (once)")
    reference, info = _build(root, model_dir, meta, predictor, embedder)
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(f".reference.{os.getpid()}.tmp.npz")  # two processes may build it at once
        np.savez(tmp, embeddings=reference.embeddings, input_words=reference.input_words,
                 confidences=reference.confidences, info=np.array(json.dumps({**info, "model_stamp": stamp})))
        tmp.replace(cache)
    except OSError as exc:  # a read-only run folder: the reference is used, just not kept
        log(f"warning: could not keep the reference in {cache} ({exc.strerror}); it is built again next time")
    return reference


def _model_stamp(model_dir: Path) -> str:
    weights = sorted(model_dir.glob("*.safetensors"))
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)


def _build(root: Path, model_dir: Path, meta: dict[str, Any], predictor: Any,
           embedder: Any) -> tuple[Reference, dict[str, Any]]:
    import numpy as np

    from tuneforge.config.loader import load_config
    from tuneforge.data.prepare import prepare_data
    from tuneforge.monitor.embed import Embedder
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import task_of

    config = load_config(root / "config.yaml")
    data = prepare_data(config.data, config.train.seed)
    texts, truth = data.texts("validation"), [str(row.label) for row in data.splits["validation"]]
    if not texts:
        raise UserError(f"{root}: the run has no validation split (data.split.validation: 0); the monitor needs one "
                        "as its reference")
    predictor = predictor or task_spec(task_of(meta)).call("predictor", model_dir, meta, None)
    embedder = embedder or Embedder()
    predicted = predictor.predict(texts)
    vocabulary = {word for text in data.texts("train") for word in words(text)}
    info = {"predictions": dict(Counter(p["label"] for p in predicted)), "labels": list(meta["labels"]),
            "vocabulary": sorted(vocabulary), "oov_share": oov_share(texts, vocabulary),
            "accuracy": float(np.mean([p["label"] == t for p, t in zip(predicted, truth)])), "rows": len(texts),
            "embedder": embedder.name}
    arrays = {"embeddings": embedder.embed(texts), "input_words": np.array([len(t.split()) for t in texts]),
              "confidences": np.array([max(p["probabilities"].values()) for p in predicted])}
    return _from_arrays(arrays, info), info


def _from_arrays(arrays: Any, info: dict[str, Any]) -> Reference:
    return Reference(embeddings=arrays["embeddings"], input_words=arrays["input_words"],
                     confidences=arrays["confidences"], predictions=info["predictions"], labels=info["labels"],
                     vocabulary=set(info["vocabulary"]), oov_share=info["oov_share"], accuracy=info["accuracy"],
                     rows=info["rows"], embedder=info["embedder"])
