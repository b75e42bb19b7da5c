"""Predict a fine-tuning run's peak memory (and its compute) from the run config alone, before any weight loads.

How the prediction is made
--------------------------
1. **Structure, exactly.** The model is built from its ``config.json`` on PyTorch's ``meta`` device (shapes, no
   storage: ~1 s even for a 70B model) and the run's method is applied to it (``full``, ``freeze``, ``lora``,
   ``qlora`` -- as LoRA, the quantization is accounted for separately --, ``adapter``, ``ia3``, ``prefix``,
   ``prompt``; any registered method whose ``apply`` works on meta tensors). Parameter counts (total, trainable,
   added by the method) are then exact, and so is the list of Linear layers with their shapes, which of them
   train, which carry LoRA (rank, dropout), bottleneck adapters or IA3 vectors.

2. **Bytes per part** (``Estimate.parts``), for a run on ``device``:

   * ``weights``: the base model's parameters: 4 bytes each (generative tasks load float32; a classifier loads in
     its checkpoint's dtype, which transformers 5 picks with ``dtype="auto"``). QLoRA: each quantized Linear weight
     (every Linear except the heads and the output embedding, as transformers' bitsandbytes integration does)
     takes 0.5 byte/param (4-bit) + its constants: fp32 absmax per 64-block (4/64 byte/param) or, double-quantized,
     an 8-bit absmax per 64-block + an fp32 one per 256 of those (1/64 + 4/16384 byte/param); 8-bit: 1 byte/param
     + an fp32 scale per output row. Everything else stays float32.
   * ``adapter``: parameters the method adds (LoRA A/B, bottlenecks, prefixes, copies of the trained head).
   * ``gradients``: one per trainable parameter, in its dtype.
   * ``optimizer``: AdamW's two moments per trainable parameter (8 bytes in float32).
   * ``activations``: what autograd saves in the forward pass for the backward pass, counted op by op for the
     block layouts transformers uses (Llama-style: RMSNorm, SDPA, gated MLP; BERT-style: post-LayerNorm, dropout,
     GELU; T5-style: RMSNorm, relative-bias attention, dropout; an encoder-decoder joined from two BERTs), per
     token ``T = batch_size x max_length`` and per block (see :func:`_block_cost`):

     - the inputs of every norm (the residual stream), and the normalized tensor where the norm's weight trains;
     - attention: fused SDPA (CPU flash kernel without dropout; CUDA flash / memory-efficient kernels also with
       dropout) keeps q, k, v, the output and a log-sum-exp per head: no ``L x L`` term. The unfused path (SDPA
       on CPU with attention dropout > 0, as BERT-style models train; eager attention) keeps the softmax (heads x
       L x L per sequence), and with dropout also its mask and the dropped probabilities: 3 x heads x L per token;
     - the MLP: gated SiLU keeps the gate, its activation and the up projection (3 x intermediate); GELU keeps its
       input (1 x intermediate); python ``gelu_new`` keeps 4 x intermediate;
     - a Linear layer keeps its input only when its own weight trains (full, freeze) -- a frozen base needs only
       the weight to pass gradients on; LoRA keeps its dropout's output and mask (a bool: CUDA's fused dropout,
       tuneforge's FastDropout on CPU) or, without dropout, the input, plus the rank-r hidden; a bottleneck adapter keeps
       its input and its hidden; IA3 keeps the tensor it scales;
     - blocks before the first trainable parameter keep nothing (no gradient flows there);
     - the LM head: the log-softmax of the logits (``T x vocab`` floats, fp32) is kept, and at the start of the
       backward pass its gradient and the logits' gradient exist at once with it: 3 x ``T x vocab`` floats.

     - a BERT-style sequence classifier's last layer computes only the first token (``models/first_token.py``):
       its keys, values and their input at every position, everything else at one;

     With gradient checkpointing each block keeps only its input (``T x hidden``) and one block's activations are
     recomputed at a time: ``blocks x T x hidden + max(block) + head``.
   * ``workspace``: the framework's resident memory after loading, over a baseline taken after the imports
     (:data:`CPU_OVERHEAD`, measured) plus, on CPU, glibc malloc's retention: freed activation blocks stay in the
     heap and the next step's peak lands on top of part of them (:data:`CPU_ALLOCATOR_RETENTION` of the
     activations, fitted on ``benchmarks/memory_estimate.py``); for QLoRA on CPU, the float32 checkpoint's pages
     stay mapped (the unquantized tensors keep the file mapping alive) and count in the resident set although the
     kernel can reclaim them. On CUDA: cuBLAS workspace and allocator slack (:data:`CUDA_OVERHEAD`, not measured
     in this project).

3. **The peak** (``Estimate.total``) is not the sum of the parts: gradients fill in while the activations are
   freed, so ``total = weights + adapter + optimizer + workspace + max(activations, gradients, evaluation)``, where
   evaluation is the logits and log-probabilities of one evaluation batch (``eval_batch_size``) of a language
   model. The optimizer state exists from the first step on, so later steps carry it through the forward pass.

4. **Compute**: ``flops_per_token = 2 N (forward) + 2 N_g (gradients of the activations) + 2 N_t (gradients of the
   trainable weights) + 12 x layers x d_attention x L`` (QK^T and AV, forward and backward), with ``N`` the
   parameters of every matmul (Linear layers, the tied LM head included, embedding lookups excluded), ``N_g`` those
   from the first trained module on (frozen lower layers run forward only) and ``N_t`` the trainable ones: 6 N for
   full fine-tuning, ~4 N for a frozen base. Gradient checkpointing adds one more
   forward pass (2 N + the attention's forward third).

What is measured and what is derived: the per-op accounting is checked against the tensors autograd really saves
on tiny BERT, Llama, T5 and BERT-to-BERT models and on smollm2-135m's real widths (``tests/test_memory.py``:
within 10%), and the totals against the resident memory of real runs (``benchmarks/memory_estimate.py``:
smollm2-135m and MiniLM, full / LoRA / QLoRA / adapter, on CPU: live tensors within 3%, peak RSS with glibc's
retention within 0.85-1.13). Block layouts not recognised (e.g. GPT-2's fused qkv projection) fall back to
Korthikanti et al.'s per-block count (about 15% low on a tiny GPT-2). CUDA figures follow the same model with
CUDA's kernels (bool dropout masks, fused attention with dropout) but have not been measured in this project.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneforge.config.schema import RunConfig

from tuneforge.planning.activations import _activation_bytes
from tuneforge.planning.profile import HEADS, _Profile, _profile, _profile_key  # noqa: F401

MiB = 2**20
# Resident growth over a baseline taken after torch/transformers/peft are imported (estimate() imports them): lazily
# loaded kernels and library pages, allocator arenas. Measured 28-53 MiB over the 8 runs of the benchmark.
CPU_OVERHEAD = 40 * MiB
# glibc keeps freed activation blocks in its heap; the next step's peak lands partly on top of them. Fitted on the
# benchmark (peak RSS with the default allocator minus the peak with MALLOC_MMAP_THRESHOLD_=65536, i.e. live
# tensors only): 0.20-0.68 of the activations, 0.45 minimizes the worst ratio.
CPU_ALLOCATOR_RETENTION = 0.45
CUDA_OVERHEAD = 256 * MiB  # cuBLAS workspace + caching-allocator slack (not measured in this project)
SAFETY_MARGIN = 0.10  # advise() wants the peak below (1 - margin) x available

PART_NAMES = ("weights", "adapter", "gradients", "optimizer", "activations", "workspace")


@dataclass
class Estimate:
    """Predicted memory of one training run. ``parts`` in bytes; ``total`` is the predicted peak."""

    parts: dict[str, int]
    total: int
    trainable_params: int
    total_params: int
    flops_per_token: float
    gradient_checkpointing: bool
    notes: dict[str, str] = field(default_factory=dict)  # part -> how it was counted
    details: dict[str, Any] = field(default_factory=dict)  # tokens, per-block bytes, peak candidates ...
    device: str = "cpu"
    config: Any = field(default=None, repr=False, compare=False)  # the RunConfig, for advise()
    num_labels: int = 2

    def table(self) -> str:
        """A plain-text breakdown: part, MiB, note; the last row is the predicted peak."""
        rows = [(name, f"{self.parts.get(name, 0) / MiB:,.1f}", self.notes.get(name, "")) for name in PART_NAMES]
        rows += [(name, f"{value / MiB:,.1f}", self.notes.get(name, "")) for name, value in self.parts.items()
                 if name not in PART_NAMES]
        rows.append(("total", f"{self.total / MiB:,.1f}", self.notes.get("total", "")))
        width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        lines = [f"{'part':<{width[0]}}  {'MiB':>{width[1]}}  note"]
        lines += [f"{part:<{width[0]}}  {mib:>{width[1]}}  {note}".rstrip() for part, mib, note in rows]
        return "\n".join(lines + ([self.notes["sharding"]] if "sharding" in self.notes else []))


# ----------------------------------------------------------------------------------------------- public functions

def estimate(config: RunConfig, gradient_checkpointing: bool = False, device: str = "cpu", *,
             num_labels: int = 2, processes: int = 1) -> Estimate:
    """Predict the peak memory of training ``config`` on ``device`` ("cpu", "cuda", "cuda:1").

    ``num_labels`` sizes a classification head (sequence or token classification) (the data decides it at run time; it changes little). QLoRA's own
    ``method.gradient_checkpointing`` counts as ``gradient_checkpointing``. ``processes`` > 1: per device, under the
    config's ``distributed.strategy`` (what FSDP / ZeRO shard is divided among them; DDP adds its gradient buckets).
    """
    profile = _profile(_profile_key(config, num_labels))
    checkpointing = bool(gradient_checkpointing or getattr(config.method, "gradient_checkpointing", False))
    return _estimate_from(profile, config, checkpointing, device, num_labels, processes)


def available_memory(device: str = "cpu") -> int:
    """Bytes free for a run: ``psutil.virtual_memory().available`` on CPU (bounded by a cgroup memory limit when
    the process runs in a container that sets one), ``torch.cuda.mem_get_info`` on CUDA."""
    if _is_cuda(device):
        import torch

        index = torch.device(device).index
        free, _ = torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)
        return int(free)
    import psutil

    available = int(psutil.virtual_memory().available)
    limit = _cgroup_headroom()
    return min(available, limit) if limit is not None else available


def advise(estimate: Estimate, available: int) -> list[str]:
    """Nothing when the predicted peak fits in ``available`` with a :data:`SAFETY_MARGIN`; otherwise suggestions,
    in order: gradient checkpointing, the largest batch size that fits, QLoRA -- each with its predicted peak --
    and, when none fits alone, all of them together.

    On CPU, read ``available`` after :func:`estimate` (which imports torch, transformers and peft):
    :data:`CPU_OVERHEAD` is the growth over a post-import baseline."""
    budget = int(available * (1 - SAFETY_MARGIN))
    if estimate.total <= budget:
        return []
    config = estimate.config
    if config is None:  # an Estimate built by hand: no config to re-estimate
        return ["enable gradient checkpointing", "lower train.batch_size", "switch to method qlora (4-bit base)"]

    def again(cfg: Any, checkpointing: bool) -> Estimate:
        return _estimate_from(_profile(_profile_key(cfg, estimate.num_labels)), cfg, checkpointing,
                              estimate.device, estimate.num_labels)

    def verdict(candidate: Estimate) -> str:
        return "fits" if candidate.total <= budget else f"still over the {_mib(budget)} budget"

    gc = estimate.gradient_checkpointing
    suggestions: list[str] = []
    any_fits = False
    if not gc:
        with_gc = again(config, True)
        any_fits |= with_gc.total <= budget
        extra = with_gc.flops_per_token / estimate.flops_per_token - 1
        suggestions.append(f"enable gradient checkpointing: predicted peak {_mib(with_gc.total)} ({verdict(with_gc)}; "
                           f"~{extra:.0%} more compute)")
    batch = config.train.batch_size
    if batch > 1:
        best = next(((size, smaller) for size in range(batch - 1, 0, -1)
                     if (smaller := again(_with(config, train={"batch_size": size}), gc)).total <= budget), None)
        if best:
            size, smaller = best
            any_fits = True
            accumulation = math.ceil(batch / size) * config.train.gradient_accumulation_steps
            suggestions.append(f"lower train.batch_size to {size}: predicted peak {_mib(smaller.total)} (fits); "
                               f"train.gradient_accumulation_steps={accumulation} keeps the effective batch size")
        else:
            one = again(_with(config, train={"batch_size": 1}), gc)
            suggestions.append(f"lower train.batch_size: even batch size 1 needs {_mib(one.total)} "
                               f"(over the {_mib(budget)} budget)")
    qlora = _qlora_version(config) if config.method.name != "qlora" else None
    if qlora is not None:
        with_qlora = again(qlora, gc)
        any_fits |= with_qlora.total <= budget
        suggestions.append(f"switch to method qlora (4-bit NF4 base, double quantization, LoRA r={qlora.method.r}): "
                           f"predicted peak {_mib(with_qlora.total)} ({verdict(with_qlora)})")
    if not any_fits:
        combined = qlora or config
        smallest = again(_with(combined, train={"batch_size": 1}), True)
        suggestions.append(f"none fits alone; all together (gradient checkpointing, batch size 1"
                           f"{', qlora' if qlora is not None else ''}) predict {_mib(smallest.total)} "
                           f"({verdict(smallest)})")
    return suggestions


def seconds_per_epoch(estimate: Estimate, tokens_per_epoch: int, flops_per_second: float) -> float:
    """Predicted training seconds for ``tokens_per_epoch`` tokens at a sustained ``flops_per_second``."""
    if flops_per_second <= 0:
        raise ValueError("flops_per_second must be positive")
    return tokens_per_epoch * estimate.flops_per_token / flops_per_second


def measure_flops_per_second(seconds: float = 1.0) -> float:
    """This machine's fp32 matmul throughput: a timed loop of 1024 x 1024 ``torch.mm`` (2 n^3 FLOPs each)."""
    import torch

    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    count, started = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return 2.0 * n**3 * count / elapsed


SHARDED = {"fsdp": ("weights", "adapter", "gradients", "optimizer"), "deepspeed-zero3": ("weights", "adapter",
           "gradients", "optimizer"), "deepspeed-zero2": ("gradients", "optimizer"), "ddp": ()}


def _shard(parts: dict[str, int], distributed: Any, processes: int, on_cuda: bool) -> dict[str, str]:
    """Per device under the strategy, in place: the parts it shards divided by the processes; DDP's gradient buckets
    (a flat copy of the trainable gradients) added; offloaded optimizer states (and zero3/fsdp weights) off a GPU.
    Returns the notes that say so."""
    if processes <= 1:
        return {}
    strategy = distributed.strategy
    for name in SHARDED[strategy]:
        parts[name] = -(-parts[name] // processes)
    notes = {"sharding": f"{strategy} on {processes} processes: per device"
                         + (f", {', '.join(SHARDED[strategy])} divided by {processes}" if SHARDED[strategy] else "")}
    if strategy == "ddp":
        parts["ddp_buckets"] = parts["gradients"]
        notes["ddp_buckets"] = "DDP's gradient buckets: a flat copy of the trainable gradients"
    if distributed.offload and strategy != "ddp" and on_cuda:
        moved = ["optimizer"] + (["weights"] if strategy in ("fsdp", "deepspeed-zero3") else [])
        for name in moved:
            parts[name] = 0
        notes["sharding"] += f"; {' and '.join(moved)} offloaded to CPU memory"
    return notes


def _estimate_from(profile: _Profile, config: RunConfig, checkpointing: bool, device: str,
                   num_labels: int, processes: int = 1) -> Estimate:
    from tuneforge.config.distributed import effective_batch

    on_cuda = _is_cuda(device)
    batch, length = effective_batch(config.train, processes, config.distributed.keep_effective_batch)[0], \
        config.data.max_length
    act = _activation_bytes(profile, batch, length, checkpointing, on_cuda)
    activations = act["saved"] + act["head_transient"]
    extra = profile.total - profile.total_base
    parts = {
        "weights": profile.weight_bytes,
        "adapter": extra * profile.param_bytes,
        "gradients": profile.trainable * profile.param_bytes,
        "optimizer": profile.trainable * 2 * profile.param_bytes,
        "activations": activations,
    }
    if on_cuda:
        workspace = CUDA_OVERHEAD
        workspace_note = f"cuBLAS workspace and allocator slack ({_mib(CUDA_OVERHEAD)}, not measured here)"
    else:
        retention = int(CPU_ALLOCATOR_RETENTION * activations)
        workspace = CPU_OVERHEAD + retention + profile.mapped_checkpoint
        workspace_note = (f"framework {_mib(CPU_OVERHEAD)} + allocator retention "
                          f"{CPU_ALLOCATOR_RETENTION:.0%} of activations")
        if profile.mapped_checkpoint:
            workspace_note += f" + float32 checkpoint pages kept mapped {_mib(profile.mapped_checkpoint)} (reclaimable)"
    parts["workspace"] = int(workspace)
    sharding = _shard(parts, config.distributed, processes, on_cuda)
    eval_batch = config.train.eval_batch_size or 2 * batch
    evaluation = 0
    if profile.vocabulary_head:
        evaluation = 2 * eval_batch * (length + profile.prompt_tokens) * profile.vocab * 4  # logits + log-probs
    static = parts["weights"] + parts["adapter"] + parts["optimizer"] + parts["workspace"] + parts.get("ddp_buckets", 0)
    candidates = {"activations": activations, "gradients": parts["gradients"], "evaluation": evaluation}
    peak_by = max(candidates, key=candidates.__getitem__)
    total = static + candidates[peak_by]

    blocks = act["blocks_with_activations"]
    precision = {4: "float32", 2: "16-bit"}[profile.param_bytes]
    notes = {
        "weights": (f"{_count(profile.total_base)} params" + (
            f"; {_count(profile.quantized_params)} in quantized Linear weights ({config.method.bits}-bit"
            f"{', double quant' if getattr(config.method, 'double_quant', False) and config.method.bits == 4 else ''}"
            f"), the rest {precision}" if profile.quantized_params else f" x {profile.param_bytes} B ({precision})")),
        "adapter": f"{_count(extra)} params added by method {profile.method}" if extra else "no added params",
        "gradients": f"{profile.param_bytes} B x {_count(profile.trainable)} trainable; fill in as activations free",
        "optimizer": f"AdamW: 2 x {profile.param_bytes} B x trainable",
        "activations": (f"{'checkpointed: block inputs + 1 block' if checkpointing else f'{blocks} blocks'}, "
                        f"B{batch} x L{length + profile.prompt_tokens} = {act['tokens']} tokens"
                        + (f"; LM head {_mib(act['head_transient'] + profile.vocab * act['tokens'] * 4)}"
                           f" (log-probs + 2 gradients, vocab {profile.vocab})" if act["head_transient"] else "")),
        "workspace": workspace_note,
        **sharding,
        "total": f"peak = weights + adapter + optimizer + workspace + max(activations, gradients"
                 f"{', evaluation logits' if evaluation else ''}); now {peak_by}",
    }
    details = {**act, "evaluation_bytes": evaluation, "peak_by": peak_by, "family": profile.family,
               "device": device, "quantized_params": profile.quantized_params,
               "mapped_checkpoint_bytes": profile.mapped_checkpoint, "batch_size": batch, "max_length": length}
    return Estimate(parts=parts, total=int(total), trainable_params=profile.trainable, total_params=profile.total,
                    flops_per_token=_flops_per_token(profile, length, checkpointing), gradient_checkpointing=checkpointing,
                    notes=notes, details=details, device=device, config=config, num_labels=num_labels)


def _flops_per_token(profile: _Profile, length: int, checkpointing: bool) -> float:
    n, n_trainable, n_backward = profile.matmul_params, profile.matmul_trainable, profile.matmul_backward
    attended = length + profile.prompt_tokens + profile.prefix_tokens
    attention_forward = 4.0 * profile.attention_width * attended
    flops = 2.0 * n + 2.0 * n_backward + 2.0 * n_trainable + 3.0 * attention_forward
    if checkpointing:
        flops += 2.0 * n + attention_forward  # the forward pass runs twice
    return flops


# ------------------------------------------------------------------------------------------------------ helpers

def _with(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with some fields of some sections changed (validated again)."""
    data = config.model_dump()
    for section, values in sections.items():
        data[section] = values if section == "method" else {**data[section], **values}
    from tuneforge.config.schema import RunConfig as _RunConfig

    return _RunConfig.model_validate(data)


def _qlora_version(config: RunConfig) -> RunConfig | None:
    method = config.method
    options: dict[str, Any] = {"name": "qlora", "bits": 4, "double_quant": True}
    if method.name == "lora":
        options.update({k: v for k, v in method.model_dump().items() if k != "name"})
    else:
        options.update({"r": 16, "alpha": 32, "target_modules": "all-linear"})
    try:
        return _with(config, method=options)
    except Exception:  # noqa: BLE001 -- qlora not registered or not valid here
        return None


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _cgroup_headroom() -> int | None:
    """Bytes left under the container's memory limit (cgroup v2 or v1), or None when there is no limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 1 << 60:
            return None
        return max(0, int(limit_text) - usage)
    return None


def _mib(value: float) -> str:
    return f"{value / MiB:,.0f} MiB"


def _count(value: int) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value:,}"


__all__ = ["CPU_ALLOCATOR_RETENTION", "CPU_OVERHEAD", "CUDA_OVERHEAD", "Estimate", "SAFETY_MARGIN", "advise",
           "available_memory", "estimate", "measure_flops_per_second", "seconds_per_epoch"]
