"""``tuneforge continual``: one classifier taught a sequence of datasets that share its labels (domain-incremental),
each stage a run started from the previous stage's run folder, with replay of earlier stages' training rows and/or
EWC. After every stage its model is scored on every stage's test split: the accuracy matrix ``R[i][j]`` (after
stage i, on stage j's test split), the average accuracy of the last model, backward transfer
(``mean_j<T R[T][j] - R[j][j]``) and each stage's forgetting (``max_i<T R[i][j] - R[T][j]``), with bootstrap
intervals over each test split."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.errors import UserError
from tuneforge.io import atomic_write_json
from tuneforge.pipelines.retrain import config_on_rows, ewc_callback, write_rows

BOOTSTRAP = 1000


def continual(config: RunConfig, stages: list[str], output: str | Path, replay: float = 0.0, ewc: float = 0.0,
              start_from: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``config`` through ``stages`` (data paths, in order); ``start_from``: a trained run is stage 0 (its own
    data), the stages follow it. Writes ``continual.json`` and ``continual.html`` into ``output``."""
    from tuneforge.config.loader import load_config

    if replay < 0 or ewc < 0:
        raise UserError("--replay and --ewc must be >= 0")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    datas = _stage_data(config, stages, start_from)
    runs: list[Path] = [Path(start_from)] if start_from else []
    seen: list[tuple[str, str]] = list(datas[0]["train"]) if start_from else []
    for index in range(len(runs), len(datas)):
        data = datas[index]
        rows = [(t, label, "stage") for t, label in data["train"]]
        replayed = random.Random(index).sample(seen, min(len(seen), round(replay * len(rows))))
        rows += [(t, label, "replay") for t, label in replayed]
        stage_dir = output / f"stage-{index}"
        write_rows(output / f"stage-{index}-data.csv", rows)
        log(f"stage {index}: {data['name']}: {len(data['train'])} rows + {len(replayed)} replayed")
        stage_config = load_config(config_on_rows(config, f"{config.name}-stage-{index}", runs[-1] if runs else None,
                                                  output / f"stage-{index}-data.csv", stage_dir))
        callbacks = [ewc_callback(runs[-1], seen, datas[0]["labels"], config.data.max_length, ewc, 200, index)] \
            if ewc > 0 and runs else []
        from tuneforge.pipelines.finetune import finetune

        runs.append(finetune(stage_config, output=stage_dir, log=log, callbacks=callbacks).run_dir)
        seen += data["train"]
    result = {"stages": [d["name"] for d in datas], "runs": [str(r) for r in runs], "replay": replay, "ewc": ewc,
              **score_matrix(runs, datas)}
    atomic_write_json(output / "continual.json", result)
    from tuneforge.evaluation.continual_report import write_continual_report

    write_continual_report(result, output / "continual.html")
    return result


def _stage_data(config: RunConfig, stages: list[str], start_from: str | Path | None) -> list[dict[str, Any]]:
    """Each stage's splits (prepared as a run would: cleaned, split with the run's seed); all must share labels."""
    from tuneforge.config.loader import load_config
    from tuneforge.data.prepare import prepare_data

    sources = []  # (name, data section, seed): a trained run's data is split with its own seed, as it was
    if start_from is not None:
        first = load_config(Path(start_from) / "config.yaml")
        sources.append((str(first.data.path), first.data, first.train.seed))
    sources += [(path, config.data.model_copy(update={"path": path}), config.train.seed) for path in stages]
    if len(sources) < 2:
        raise UserError("continual learning needs at least two stages (--stage DATA, or --from RUN and a --stage)")
    datas = []
    for name, data_config, seed in sources:
        prepared = prepare_data(data_config, seed)
        if not prepared.splits["test"] or not prepared.splits["train"]:
            raise UserError(f"--stage {name}: no rows in its train or test split ({len(prepared.splits['train'])} "
                            f"and {len(prepared.splits['test'])}); give the stage more data")
        datas.append({"name": name, "labels": prepared.labels, **{
            split: [(row.text or "", str(row.label)) for row in prepared.splits[split]] for split in ("train", "test")}})
    for data in datas[1:]:
        if data["labels"] != datas[0]["labels"]:
            raise UserError(f"--stage {data['name']}: labels {', '.join(data['labels'])} differ from the first "
                            f"stage's ({', '.join(datas[0]['labels'])}); continual stages share one label set")
    return datas


def score_matrix(runs: list[Path], datas: list[dict[str, Any]]) -> dict[str, Any]:
    """R[i][j] with intervals; average accuracy, backward transfer and forgetting of the last model."""
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import read_model_meta, task_of

    labels = datas[0]["labels"]
    correct: list[list[np.ndarray]] = []  # correct[i][j]: 0/1 per test row of stage j, model after stage i
    for run in runs:
        model_dir, meta = read_model_meta(run)
        predictor = task_spec(task_of(meta)).call("predictor", model_dir, meta, None)
        correct.append([np.array([p["label"] == truth for p, (_, truth) in
                                  zip(predictor.predict([t for t, _ in d["test"]]), d["test"])], dtype=float)
                        for d in datas])
    rng = np.random.default_rng(0)
    resamples = [rng.integers(0, len(d["test"]), size=(BOOTSTRAP, len(d["test"]))) for d in datas]
    boot = [[c[idx].mean(axis=1) for c, idx in zip(row, resamples)] for row in correct]  # [i][j] -> (BOOTSTRAP,)
    last, count = len(runs) - 1, len(runs)

    def figure(samples: np.ndarray, point: float) -> dict[str, Any]:
        return {"value": round(float(point), 4), "ci": [round(float(np.percentile(samples, q)), 4) for q in (2.5, 97.5)]}

    matrix = [[figure(boot[i][j], correct[i][j].mean()) for j in range(count)] for i in range(count)]
    average = figure(np.mean([boot[last][j] for j in range(count)], axis=0),
                     np.mean([correct[last][j].mean() for j in range(count)]))
    earlier = range(last)
    bwt = figure(np.mean([boot[last][j] - boot[j][j] for j in earlier], axis=0),
                 np.mean([correct[last][j].mean() - correct[j][j].mean() for j in earlier]))
    forgetting = [figure(np.max([boot[i][j] for i in range(j, last)], axis=0) - boot[last][j],
                         max(correct[i][j].mean() for i in range(j, last)) - correct[last][j].mean()) for j in earlier]
    return {"labels": labels, "test_rows": [len(d["test"]) for d in datas], "accuracy_matrix": matrix,
            "average_accuracy": average, "backward_transfer": bwt, "forgetting": forgetting}
