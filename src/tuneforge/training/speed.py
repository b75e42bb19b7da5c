"""How fast a run trains: real (non-padding) tokens per second, tokens that carry loss per second, the padding
share, and model FLOPs utilisation (MFU) against this device's measured matmul peak.

The FLOPs model (per real token): ``2 N`` forward + ``2 N`` for the activation gradients + ``2 N_trainable`` for the
weight gradients, N the matmul (linear + output head) parameters -- 4 N for LoRA, 6 N for full fine-tuning --
plus attention: ``6 x layers x width x L`` per token of an example of length L (causal; 12 for bidirectional).
Recomputation by gradient checkpointing and skipped LM-head positions are not counted, and a shared prompt prefix
computed once counts once: MFU measures the useful work actually done, tokens/s the examples' real tokens.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

IGNORE = -100


@dataclass
class FlopsModel:
    matmul_params: int
    trainable_matmul_params: int
    layers: int
    attention_width: int
    causal: bool
    backward_matmul_params: int | None = None  # the matmuls gradients flow through (default: all of them)

    def flops(self, real_tokens: int, sum_sq_lengths: int) -> float:
        """Training FLOPs of one batch: ``real_tokens`` tokens in examples whose squared lengths sum to
        ``sum_sq_lengths``. The forward pass, the activation gradients of the matmuls from the first trained one
        on (nothing below it needs a gradient: frozen lower layers run forward only) and the weight gradients."""
        backward = self.matmul_params if self.backward_matmul_params is None else self.backward_matmul_params
        per_token = 2.0 * self.matmul_params + 2.0 * backward + 2.0 * self.trainable_matmul_params
        attention = (6.0 if self.causal else 12.0) * self.layers * self.attention_width * sum_sq_lengths
        return per_token * real_tokens + attention


def flops_model(model: Any, causal: bool) -> FlopsModel:
    """The matmul parameters of ``model`` (peft-wrapped or not; 4-bit linears counted by their shape)."""
    import torch

    total = trainable = backward = 0
    started = False  # modules in registration (forward) order: gradients flow from the first trained one on
    seen: set[int] = set()
    # a BERT-style classifier's last layer computing only the first token (models/first_token.py): its query,
    # attention output and feed-forward run at one position per example, next to nothing per token
    one_position = {id(m) for layer in model.modules() if hasattr(layer, "_full_forward")
                    for name, m in layer.named_modules()
                    if not name.startswith(("attention.self.key", "attention.self.value"))}
    patched = sum(hasattr(layer, "_full_forward") for layer in model.modules())
    for module in model.modules():
        started = started or any(p.requires_grad for p in module.parameters(recurse=False))
        weight = getattr(module, "weight", None)
        if weight is None or id(weight) in seen or not _is_matmul(module) or id(module) in one_position:
            continue
        seen.add(id(weight))
        numel = module.in_features * module.out_features if hasattr(module, "in_features") else weight.numel()
        total += numel
        backward += numel if started else 0
        trainable += numel if isinstance(weight, torch.nn.Parameter) and weight.requires_grad else 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and id(getattr(head, "weight", None)) not in seen:  # a head that is not an nn.Linear
        total += head.weight.numel()
        backward += head.weight.numel()
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0) or 0)
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", None)
    head_dim = getattr(text, "head_dim", None)
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
    width = int(heads * head_dim) if heads and head_dim else hidden
    return FlopsModel(total, trainable, layers - patched, width, causal, backward)


def _is_matmul(module: Any) -> bool:
    import torch

    if isinstance(module, torch.nn.Linear):
        return True
    name = type(module).__name__  # bitsandbytes Linear4bit/Linear8bitLt subclass nn.Linear; Conv1D (GPT-2) does not
    return name == "Conv1D"


@functools.lru_cache(maxsize=4)
def matmul_peak(dtype_name: str = "float32", device: str = "cpu", seconds: float = 0.5) -> float:
    """This device's matmul throughput in FLOP/s for ``dtype_name`` (float32, bfloat16, float16): a timed loop of
    square ``torch.mm`` (2048 on CUDA, 1024 on CPU; 2 n^3 FLOPs each), measured once per process."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = 2048 if device.startswith("cuda") else 1024
    if not device.startswith("cuda") and dtype != torch.float32 and not cpu_fast(dtype_name):
        n = 256  # a dtype without hardware support can be 100x slower: keep the probe short
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    group = 8 if device.startswith("cuda") else 1  # matmuls per timed group (a CUDA sync per group)
    torch.mm(a, b)
    sync()
    # the fastest group over the window: a peak, not an average, so that another process busy for part of the
    # window does not lower it (an average then let a run's MFU pass 100%)
    best, started = float("inf"), time.perf_counter()
    while time.perf_counter() - started < seconds or best == float("inf"):
        begin = time.perf_counter()
        for _ in range(group):
            torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - begin)
    return 2.0 * n ** 3 * group / best


PROBE_FILE = "cpu-probe.json"


@functools.lru_cache(maxsize=4)
def cpu_fast(dtype_name: str) -> bool:
    """Whether this CPU runs ``dtype_name`` matmuls at least 1.3x faster than float32 (AMX / AVX512-BF16 / FP16
    hardware); without it, low-precision autocast on the CPU is a slowdown (here, AVX2 only: ~100x).

    Decided once per machine: the answer is kept in the cache folder under the CPU model and torch version, so a
    busy moment cannot make one run of a series choose differently (measured: 2 of 17 identical runs did)."""
    import json

    import torch

    from tuneforge.io import atomic_write_json, cache_dir

    key = f"{cpu_model()} | torch {torch.__version__} | {dtype_name}"
    path = cache_dir() / PROBE_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), dict) and isinstance(known[key].get("fast"), bool):
        return known[key]["fast"]
    speedup = _matmul_speedup(getattr(torch, dtype_name))
    known[key] = {"fast": speedup >= 1.3, "speedup": round(speedup, 2), "measured": time.strftime("%Y-%m-%d %H:%M")}
    try:
        atomic_write_json(path, known)
    except OSError:  # a read-only cache: decide again next time
        pass
    return known[key]["fast"]


def _matmul_speedup(dtype: Any) -> float:
    """fp32 time / ``dtype`` time of a 256x256 matmul, each the best of 5 rounds (a busy core slows some rounds,
    rarely all)."""
    import torch

    n, reps = 256, 8
    best = {}
    for kind in (torch.float32, dtype):
        a, b = torch.randn(n, n).to(kind), torch.randn(n, n).to(kind)
        torch.mm(a, b)
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            rounds.append(time.perf_counter() - started)
        best[kind] = min(rounds)
    return best[torch.float32] / best[dtype]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else the machine type."""
    import platform

    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def batch_stats(inputs: dict[str, Any], causal: bool) -> tuple[int, int, int, int, int]:
    """(real tokens, tokens carrying loss, positions computed with padding, sum of squared example lengths,
    non-padding positions computed) of one batch. Packed rows carry ``tf_lengths`` (each example's length,
    0-padded) from the collator, padded batches an attention mask; a shared-prefix batch computes fewer positions
    than its examples hold (``tf_real``, ``tf_attention``)."""
    import torch

    input_ids = inputs["input_ids"]
    lengths = inputs.get("tf_lengths")
    mask = inputs.get("attention_mask")
    if lengths is None and mask is not None and mask.dim() == 2:
        lengths = mask.sum(dim=1)
    elif lengths is None and inputs.get("position_ids") is not None:  # padding-free rows: positions restart at 0
        lengths = torch.cat([_segments(row) for row in inputs["position_ids"]])
    elif lengths is None:
        lengths = torch.full((input_ids.shape[0],), input_ids.shape[1])
    lengths = lengths.flatten().long()
    labels = inputs.get("labels")
    if labels is None or not causal or labels.dim() < 2:
        loss_tokens = int(input_ids.shape[0] if labels is None or labels.dim() < 2 else (labels != IGNORE).sum())
    else:
        loss_tokens = int((labels[:, 1:] != IGNORE).sum())
    work = int(lengths.sum())
    real = int(inputs["tf_real"]) if "tf_real" in inputs else work
    squares = int(inputs["tf_attention"]) if "tf_attention" in inputs else int((lengths ** 2).sum())
    return real, loss_tokens, int(input_ids.numel()), squares, work


def _segments(positions: Any) -> Any:
    import torch

    starts = torch.nonzero(positions == 0).flatten().tolist() + [positions.numel()]
    return torch.tensor([end - start for start, end in zip(starts, starts[1:])])


@dataclass
class SpeedMeter:
    """Counts what every training step computed and turns a window of steps into rates for the log."""

    flops: FlopsModel | None
    peak_flops: float
    causal: bool
    window: dict[str, float] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)
    steps: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # batch_stats of every batch
    _mark: float | None = None
    _paused: float = 0.0

    def add(self, inputs: dict[str, Any]) -> None:
        if self._mark is None:
            self._mark = time.perf_counter()
        real, loss, computed, sq, work = batch_stats(inputs, self.causal)
        self.steps.append((real, loss, computed, sq, work))
        flops = self.flops.flops(work, sq) if self.flops else 0.0
        for bucket in (self.window, self.total):
            for key, value in (("real", real), ("loss", loss), ("computed", computed), ("work", work),
                               ("flops", flops)):
                bucket[key] = bucket.get(key, 0) + value

    def pause(self, seconds: float) -> None:
        """Time spent outside training (validation) inside the current window."""
        self._paused += seconds

    def rates(self) -> dict[str, float]:
        """Rates over the steps since the last call (for the training log), then a new window starts."""
        if self._mark is None or not self.window.get("computed"):
            return {}
        now = time.perf_counter()
        seconds = max(now - self._mark - self._paused, 1e-9)
        self.total["seconds"] = self.total.get("seconds", 0.0) + seconds
        out = _rates(self.window, seconds, self.peak_flops)
        self.window, self._mark, self._paused = {}, now, 0.0
        return out

    def summary(self) -> dict[str, float]:
        """The whole run's figures (training time only, validation excluded)."""
        self.rates()
        seconds = self.total.get("seconds", 0.0)
        if not seconds:
            return {}
        return {**_rates(self.total, seconds, self.peak_flops), "real_tokens": int(self.total["real"]),
                "loss_tokens": int(self.total["loss"]), "measured_seconds": round(seconds, 2),
                "peak_flops": round(self.peak_flops / 1e9, 1)}


def _rates(counts: dict[str, float], seconds: float, peak: float) -> dict[str, float]:
    out = {"tokens_per_s": round(counts["real"] / seconds, 1), "loss_tokens_per_s": round(counts["loss"] / seconds, 1),
           "padding_share": round(1 - counts["work"] / counts["computed"], 4) if counts["computed"] else 0.0}
    if counts["work"] < counts["real"]:  # positions a shared prefix did not compute again
        out["shared_share"] = round(1 - counts["work"] / counts["real"], 4)
    if peak and counts.get("flops"):
        out["mfu"] = round(counts["flops"] / seconds / peak, 4)
    return out
