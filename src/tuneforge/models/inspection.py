"""Parameter counts: total, trainable, percent, and trainable parameters per module type."""

from __future__ import annotations

from collections import Counter
from typing import Any


def count_parameters(model: Any) -> dict[str, Any]:
    owner: dict[int, str] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            owner[id(parameter)] = type(module).__name__
    total = trainable = 0
    by_type: Counter[str] = Counter()
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
            by_type[owner.get(id(parameter), "?")] += parameter.numel()
    return {"total": total, "trainable": trainable,
            "trainable_pct": round(100.0 * trainable / total, 4) if total else 0.0,
            "trainable_by_module_type": dict(by_type.most_common())}


def parameter_line(params: dict[str, Any], method: str) -> str:
    """The parameter report printed at the start of a run."""
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in list(params["trainable_by_module_type"].items())[:4])
    return (f"parameters: {params['trainable']:,} trainable of {params['total']:,} ({params['trainable_pct']:.2f}%) "
            f"with method {method}" + (f"; trainable by module type: {kinds}" if kinds else ""))
