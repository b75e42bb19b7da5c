"""Per-slice evaluation and group fairness: slices defined from a split's rows, a planted weak slice flagged and a
uniform one not, fairness figures equal to fairlearn's on a hand-checked example, and a run that writes them."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from conftest import make_rows, tiny_config
from tuneforge.config.expression import evaluate, parse_expression
from tuneforge.config.loader import load_config
from tuneforge.config.schema import SlicesConfig
from tuneforge.data.slicing import check_slice_columns, define_slices, length_slices
from tuneforge.data.sources import Row
from tuneforge.errors import ConfigError, DataError, UserError
from tuneforge.evaluation.fairness import group_fairness, rates_by_group
from tuneforge.evaluation.metrics import scalar_scores
from tuneforge.evaluation.slices import slice_figures, tracked, warnings


def test_expressions_allow_comparisons_only_and_read_numbers_written_as_text():
    tree = parse_expression("label == 'sport' and words < 5 and age >= 30 and region not in ('north', 'east')", "w")
    row = {"label": "sport", "words": 3, "age": 41, "region": "south"}
    assert evaluate(tree, row) and not evaluate(tree, {**row, "age": 29}) and not evaluate(tree, {**row, "words": 9})
    assert not evaluate(parse_expression("age > 30", "w"), {"age": "n/a"})  # text against a number: not in it
    for bad in ("__import__('os')", "text.lower() == 'x'", "label[0] == 's'", "words +"):
        with pytest.raises(ConfigError):
            parse_expression(bad, "w")
    with pytest.raises(Exception, match="evaluation.slices.where|not allowed"):
        SlicesConfig(where={"evil": "open('x')"})


def _rows(n: int, seed: int = 0) -> list[Row]:
    rng = random.Random(seed)
    return [Row(" ".join(["w"] * rng.randint(1, 30)), rng.choice("abcd"), f"d.csv:{i + 2}",
                {"desk": "B" if i % 10 < 3 else "A", "batch": rng.choice("xy"), "age": str(rng.randint(18, 70))})
            for i in range(n)]


def test_slices_by_column_label_length_and_expression():
    rows = _rows(200)
    settings = SlicesConfig(columns=["desk"], length_buckets=[10, 20], where={"old_b": "age >= 50 and desk == 'B'"})
    slices = {s.name: s for s in define_slices(rows, settings)}
    assert set(slices) == {"desk=A", "desk=B", "label=a", "label=b", "label=c", "label=d", "words < 10",
                           "words 10-19", "words >= 20", "old_b"}
    assert len(slices["desk=A"].rows) + len(slices["desk=B"].rows) == 200
    assert sum(len(slices[n].rows) for n in ("words < 10", "words 10-19", "words >= 20")) == 200
    assert all(rows[i].columns["desk"] == "B" and int(rows[i].columns["age"]) >= 50 for i in slices["old_b"].rows)
    auto = length_slices([len(r.text.split()) for r in rows], "auto")
    assert len(auto) == 3 and all(len(s.rows) > 40 for s in auto)  # terciles
    with pytest.raises(DataError, match="no column 'gender' for evaluation.slices.sensitive"):
        check_slice_columns(rows, SlicesConfig(sensitive=["gender"]), "d.csv", list("abcd"))
    with pytest.raises(DataError, match="where.x: salary is not a column"):
        check_slice_columns(rows, SlicesConfig(where={"x": "salary > 3"}), "d.csv", list("abcd"))


def _planted(n: int = 800, seed: int = 0):
    """A model right 90% of the time, except on desk B, whose true labels were shuffled: a real weak spot."""
    rng = np.random.default_rng(seed)
    rows = _rows(n, seed)
    y_pred = rng.integers(0, 4, n)
    y_true = np.where(rng.random(n) < 0.9, y_pred, rng.integers(0, 4, n))
    weak = np.asarray([r.columns["desk"] == "B" for r in rows])
    y_true[weak] = rng.permutation(y_true[weak])
    return rows, y_true, y_pred


def test_a_planted_weak_slice_is_flagged_and_a_uniform_one_is_not():
    rows, y_true, y_pred = _planted()
    majority = np.full_like(y_true, np.bincount(y_true).argmax())
    predictions = {"finetuned": y_pred, "majority": majority}

    def score(model, positions, indices):
        return scalar_scores(y_true[positions], predictions[model][positions], 4, indices, ("macro_f1", "accuracy"))

    overall = scalar_scores(y_true, y_pred, 4, np.zeros((1, len(y_true)), dtype=int), ("macro_f1", "accuracy"))
    settings = SlicesConfig(columns=["desk", "batch"], length_buckets=None)
    figures = slice_figures(define_slices(rows, settings), list(predictions), score, overall, "macro_f1", "accuracy",
                            300, 0.95, 0, 10)
    by_name = {row["name"]: row for row in figures["slices"]}
    assert figures["worst"] == {"name": "desk=B", "gap": by_name["desk=B"]["gap"], "judged_by": "macro_f1",
                                "flagged": True}
    assert figures["flagged"] == ["desk=B"] and by_name["desk=B"]["gap"] < -0.3
    for uniform in ("batch=x", "batch=y", "desk=A"):
        low, high = by_name[uniform]["models"]["finetuned"]["macro_f1_ci"]
        assert not by_name[uniform]["below_overall"] and low < high
    assert by_name["label=a"]["judged_by"] == "accuracy" and "majority" in by_name["desk=B"]["models"]
    assert warnings(figures)[0].startswith("slice 'desk=B' (")
    assert tracked({"slices": figures})["slice/desk_B/macro_f1"] == by_name["desk=B"]["models"]["finetuned"]["macro_f1"]


def test_fairness_figures_equal_fairlearn_on_a_hand_checked_example():
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    # group a: truth 1 1 0 0, predicted 1 0 1 0 -> selection 0.5, TPR 0.5, FPR 0.5
    # group b: truth 1 1 0 0 0 0, predicted 1 1 1 1 0 0 -> selection 4/6, TPR 1.0, FPR 0.5
    truth = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0])
    chosen = np.array([1, 0, 1, 0, 1, 1, 1, 1, 0, 0])
    groups = ["a"] * 4 + ["b"] * 6
    figures = group_fairness(truth, chosen, groups, ["no", "yes"], "yes", 200, 0.95, 0)
    a, b = figures["per_label"]["yes"]["by_group"]["a"], figures["per_label"]["yes"]["by_group"]["b"]
    assert (a["selection_rate"], a["true_positive_rate"], a["false_positive_rate"]) == (0.5, 0.5, 0.5)
    assert (b["selection_rate"], b["true_positive_rate"], b["false_positive_rate"]) == (0.6667, 1.0, 0.5)
    assert figures["demographic_parity_difference"] == round(4 / 6 - 0.5, 4) == \
        round(demographic_parity_difference(truth, chosen, sensitive_features=groups), 4)
    assert figures["equalized_odds_difference"] == 0.5 == equalized_odds_difference(truth, chosen,
                                                                                     sensitive_features=groups)
    low, high = figures["demographic_parity_difference_ci"]
    assert 0 <= low <= figures["demographic_parity_difference"] <= high <= 1
    assert figures["groups"] == {"a": 4, "b": 6}
    # the vectorised resamples follow fairlearn's definitions on every resample, groups without positives included
    rng = np.random.default_rng(3)
    resamples = rng.integers(0, 10, size=(40, 10))
    boot = rates_by_group(truth, chosen, np.asarray(groups, dtype=object), resamples)
    for k, idx in enumerate(resamples):
        g = np.asarray(groups)[idx]
        if len(set(g)) == 2:
            assert boot["demographic_parity_difference"][k] == pytest.approx(
                demographic_parity_difference(truth[idx], chosen[idx], sensitive_features=g))
            assert boot["equalized_odds_difference"][k] == pytest.approx(
                equalized_odds_difference(truth[idx], chosen[idx], sensitive_features=g))


def test_slices_are_refused_for_a_task_without_them(tmp_path):
    with pytest.raises(UserError, match="evaluation.slices: task token-classification has no per-slice"):
        load_config({"name": "x", "model": {"name": "minilm", "task": "token-classification"},
                     "data": {"path": "d.conll"}, "evaluation": {"slices": {"by_label": True}}})


def _desk_csv(path, seed=0):
    """The tiny topic rows with a desk column; desk B's labels shuffled (every split), a batch column at random."""
    rng = random.Random(seed)
    rows = make_rows(per_class=100, seed=seed)
    for i, row in enumerate(rows):
        row["desk"] = "B" if i % 4 == 0 else "A"
        row["batch"] = rng.choice("xy")
        row["gender"] = rng.choice(["f", "m"])
    weak = [r for r in rows if r["desk"] == "B"]
    labels = [r["label"] for r in weak]
    rng.shuffle(labels)
    for row, label in zip(weak, labels):
        row["label"] = label
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "desk", "batch", "gender"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_run_flags_the_planted_slice_in_metrics_report_and_tracking(tiny_bert, tmp_path):
    from tuneforge.pipelines.finetune import finetune
    from tuneforge.tracking.query import get_run

    data = _desk_csv(tmp_path / "desks.csv")
    raw = tiny_config(tiny_bert, data, evaluation={"baselines": ["majority"], "slices": {
        "columns": ["desk", "batch"], "sensitive": ["gender"], "where": {"b_sport": "desk == 'B' and label == 'sport'"}}})
    raw["data"]["split"] = {"train": 0.6, "validation": 0.1, "test": 0.3}
    config = load_config(raw)
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    test = json.loads((result.run_dir / "metrics.json").read_text())["test"]
    by_name = {row["name"]: row for row in test["slices"]["slices"]}
    assert "desk=B" in test["slices"]["flagged"]  # (a label the tiny model learned badly may be flagged too)
    columns = [row for row in test["slices"]["slices"] if row["kind"] in ("column", "sensitive")]
    assert min(columns, key=lambda row: row["gap"])["name"] == "desk=B"
    assert not by_name["batch=x"]["below_overall"] and not by_name["batch=y"]["below_overall"]
    assert by_name["desk=A"]["models"]["finetuned"]["macro_f1"] > 0.8 > by_name["desk=B"]["models"]["finetuned"]["macro_f1"]
    assert set(by_name["desk=B"]["models"]) == {"finetuned", "majority"} and by_name["b_sport"]["kind"] == "where"
    fairness = test["fairness"]["gender"]
    assert set(fairness) == {"finetuned", "majority"} and fairness["majority"]["demographic_parity_difference"] == 0
    assert fairness["finetuned"]["groups"]["f"] + fairness["finetuned"]["groups"]["m"] == test["finetuned"]["n"]
    page = (result.run_dir / "report.html").read_text()
    assert "id='slices'" in page and "Group fairness: gender" in page and "desk=B" in page
    verdict = json.loads((result.run_dir / "metrics.json").read_text())["verdict"]
    assert any("slice 'desk=B'" in line for line in verdict["weak_slices"])
    run = get_run(config.tracking, result.tracking_run_id)
    assert run.data.metrics["slice/desk_B/macro_f1"] == by_name["desk=B"]["models"]["finetuned"]["macro_f1"]
