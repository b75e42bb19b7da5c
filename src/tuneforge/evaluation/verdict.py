"""The verdict of a run in one line: better, worse or not distinguishable from its best baseline on the test
split (by the paired bootstrap interval of the difference), and a loud warning when it learned nothing: not better
than the task's trivial baseline (majority class, memorization, the base model...), or one class predicted for
nearly everything."""

from __future__ import annotations

from typing import Any

COLLAPSE_SHARE = 0.95  # one label predicted for at least this share of the test split (more than its true share)


def verdict(test: dict[str, Any], headline: str, higher_is_better: bool, floor: str | None,
            hints: str) -> dict[str, Any]:
    """``test``: a run's test section (finetuned, baselines, finetuned_minus_baseline); ``floor``: the trivial
    baseline a model must beat to have learned anything; ``hints``: what to try when it did not."""
    fine = test.get("finetuned", {})
    scored = {name: figures[headline] for name, figures in test.get("baselines", {}).items()
              if isinstance(figures.get(headline), (int, float))}
    result: dict[str, Any] = {"metric": headline, "warnings": []}
    if not scored or not isinstance(fine.get(headline), (int, float)):
        result.update(status="no baseline", line=f"{headline} {_value(fine.get(headline))}: no baseline to compare "
                                                 f"with (evaluation.baselines)")
    else:
        best = (max if higher_is_better else min)(scored, key=scored.get)
        status, difference, interval = compare(test, best, headline, higher_is_better)
        result.update(status=status, baseline=best, difference=difference, interval=interval,
                      line=_line(status, best, headline, difference, interval))
        if floor in scored and compare(test, floor, headline, higher_is_better)[0] != "better":
            result["warnings"].append(f"the fine-tuned model is not measurably better than the {floor} baseline "
                                      f"({headline} {fine[headline]:.4f} vs {scored[floor]:.4f}): it learned "
                                      f"nothing useful; {hints}")
    spread = test.get("prediction_spread")
    if spread and spread["top_share"] >= COLLAPSE_SHARE and spread["top_share"] > spread["true_share"]:
        result["warnings"].append(f"the fine-tuned model predicts {spread['top_label']!r} for "
                                  f"{100 * spread['top_share']:.0f}% of the test split (true share "
                                  f"{100 * spread['true_share']:.0f}%): it collapsed to one class; {hints}")
    result["learned_nothing"] = bool(result["warnings"])
    if test.get("slices"):  # a weak spot the overall figure hides (not a sign of learning nothing)
        from tuneforge.evaluation.slices import warnings as slice_warnings

        result["weak_slices"] = slice_warnings(test["slices"])
    return result


def compare(test: dict[str, Any], baseline: str, headline: str,
            higher_is_better: bool) -> tuple[str, float, list[float] | None]:
    """(better | worse | not distinguishable, fine-tuned minus baseline, its interval) against one baseline."""
    paired = test.get("finetuned_minus_baseline", {}).get(baseline, {})
    difference = paired.get(headline)
    if difference is None:
        difference = test["finetuned"][headline] - test["baselines"][baseline][headline]
    interval = paired.get(f"{headline}_ci")
    sign = 1 if higher_is_better else -1
    if interval is None:  # no paired interval: only a strict difference can be told
        status = "better" if sign * difference > 0 else "worse" if sign * difference < 0 else "not distinguishable"
    elif sign * min(interval, key=lambda v: sign * v) > 0:
        status = "better"
    elif sign * max(interval, key=lambda v: sign * v) < 0:
        status = "worse"
    else:
        status = "not distinguishable"
    return status, difference, list(interval) if interval is not None else None


def _line(status: str, baseline: str, headline: str, difference: float, interval: list[float] | None) -> str:
    shown = f"{headline} {difference:+.4f}" + (f" [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "")
    if status == "not distinguishable":
        return f"not distinguishable from the best baseline ({baseline}): {shown}"
    return f"{status} than the best baseline ({baseline}): {shown}"


def _value(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"
