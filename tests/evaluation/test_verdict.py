"""The one-line verdict and the learned-nothing warnings, on hand-made test sections."""

from __future__ import annotations

from tuneforge.evaluation.verdict import verdict


def section(fine, baselines, diffs, spread=None):
    test = {"finetuned": {"f1": fine}, "baselines": {k: {"f1": v} for k, v in baselines.items()},
            "finetuned_minus_baseline": {k: {"f1": d, "f1_ci": ci} for k, (d, ci) in diffs.items()}}
    if spread:
        test["prediction_spread"] = spread
    return test


def test_better_worse_and_indistinguishable_against_the_best_baseline():
    test = section(0.80, {"majority": 0.30, "probe": 0.70}, {"majority": (0.5, [0.4, 0.6]), "probe": (0.1, [0.02, 0.2])})
    result = verdict(test, "f1", True, "majority", "try more")
    assert result["status"] == "better" and result["baseline"] == "probe"
    assert result["line"] == "better than the best baseline (probe): f1 +0.1000 [+0.0200, +0.2000]"
    assert result["warnings"] == [] and not result["learned_nothing"]
    test = section(0.70, {"majority": 0.30, "probe": 0.72}, {"majority": (0.4, [0.3, 0.5]), "probe": (-0.02, [-0.1, 0.05])})
    assert verdict(test, "f1", True, "majority", "")["status"] == "not distinguishable"
    test = section(0.50, {"majority": 0.30, "probe": 0.72}, {"majority": (0.2, [0.1, 0.3]), "probe": (-0.22, [-0.3, -0.1])})
    assert verdict(test, "f1", True, "majority", "")["line"].startswith("worse than the best baseline (probe)")


def test_lower_is_better_metrics():
    # perplexity: the fine-tuned model is lower than the base model by 3 [2, 4]: better
    test = section(9.0, {"zero_shot": 12.0}, {"zero_shot": (-3.0, [-4.0, -2.0])})
    assert verdict(test, "f1", False, "zero_shot", "")["status"] == "better"
    test = section(13.0, {"zero_shot": 12.0}, {"zero_shot": (1.0, [0.5, 1.5])})
    result = verdict(test, "f1", False, "zero_shot", "try X")
    assert result["status"] == "worse" and result["learned_nothing"]


def test_learned_nothing_not_better_than_the_floor_or_one_class_for_everything():
    test = section(0.26, {"majority": 0.26, "probe": 0.44}, {"majority": (0.0, [0.0, 0.0]), "probe": (-0.18, [-0.3, -0.1])},
                   spread={"top_label": "negative", "top_share": 1.0, "true_share": 0.65})
    result = verdict(test, "f1", True, "majority", "try train.class_weights=balanced")
    assert result["learned_nothing"] and len(result["warnings"]) == 2
    assert result["warnings"][0] == ("the fine-tuned model is not measurably better than the majority baseline (f1 "
                                     "0.2600 vs 0.2600): it learned nothing useful; try train.class_weights=balanced")
    assert result["warnings"][1].startswith("the fine-tuned model predicts 'negative' for 100% of the test split (true "
                                            "share 65%): it collapsed to one class")
    # a split that really is 97% one class: predicting it 97% of the time is not a collapse
    fine = section(0.9, {"majority": 0.5}, {"majority": (0.4, [0.3, 0.5])},
                   spread={"top_label": "a", "top_share": 0.97, "true_share": 0.97})
    assert verdict(fine, "f1", True, "majority", "")["warnings"] == []


def test_no_baseline():
    result = verdict({"finetuned": {"f1": 0.5}, "baselines": {}}, "f1", True, "majority", "")
    assert result["status"] == "no baseline" and result["warnings"] == []
