"""The precision a run computes in, recorded with its model so that every reader reproduces its outputs.

Training runs under autocast (``train.precision``, ``auto`` decided by a probe of this machine). The run's test
predictions are computed in that same precision and ``model/tuneforge.json`` records it (``precision``), so
``predict``, ``generate``, ``export`` and the server compute in it too unless they are told otherwise
(``--precision``). A run folder written before the field existed computed in fp32.

How close a reader's outputs come to the run's own predictions.csv depends on the precision: in fp32 only the order
of summation can differ; bf16 keeps 8 bits of mantissa (each rounding is off by up to 2^-9, ~0.2%) and fp16 11 bits,
so a different batch composition (other padding lengths, other kernels) moves a probability by up to about a
hundredth in bf16. ``TOLERANCE`` states the largest absolute probability difference accepted per precision.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

PRECISIONS = ("fp32", "bf16", "fp16")
TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 2e-3}
_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16"}


def recorded_precision(meta: dict[str, Any], override: str | None = None) -> str:
    """The precision a reader computes in: ``override`` when given, else what the run recorded (fp32 for runs
    written before it was recorded)."""
    from tuneforge.errors import UserError

    precision = override or meta.get("precision") or "fp32"
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def autocast(precision: str, device_type: str = "cpu") -> Iterator[None]:
    """Compute in ``precision`` on ``device_type`` (cpu/cuda): autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        yield
        return
    import torch

    with torch.autocast(device_type=device_type, dtype=getattr(torch, _DTYPE_NAMES[precision])):
        yield


def compute_in(model: Any, precision: str) -> Any:
    """Make every forward of ``model`` run in ``precision``: the outer module's (a peft wrapper computes virtual
    tokens there) and the transformers model's inside it (which ``generate`` calls directly). The weights stay as
    they are. Idempotent; ``fp32`` removes an earlier wrapping."""
    for module in _forward_owners(model):
        original = module.__dict__.pop("_tuneforge_forward", None)
        if original is not None:
            module.forward = original
        if precision != "fp32":
            module._tuneforge_forward = module.forward
            module.forward = _autocast_forward(module.forward, precision, module)
    model._tuneforge_precision = precision
    return model


def precision_of(model: Any) -> str:
    """The precision ``compute_in`` set on ``model`` (fp32 when none was)."""
    return getattr(model, "_tuneforge_precision", "fp32")


def without_trainer_autocast(model: Any) -> Any:
    """The model as trained, without the autocast wrapper that accelerate puts on its forward for mixed precision
    (it covers the outer forward only, so a peft model's ``generate`` escaped it)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=False)


def _forward_owners(model: Any) -> list[Any]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return [model] if inner is model else [model, inner]


def _autocast_forward(forward: Any, precision: str, module: Any) -> Any:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        device = next(module.parameters()).device.type
        with autocast(precision, device):
            return forward(*args, **kwargs)

    return run
