"""Activation memory, op by op: the floats autograd keeps per token in each block, the LM head's transients, and
what gradient checkpointing keeps instead (see :mod:`tuneforge.planning.memory` for the accounting)."""

from __future__ import annotations

from typing import Any

from tuneforge.planning.profile import _Block, _LinearInfo, _Profile

_PYTHON_ACTS = {"gelu_new": 4, "gelu_fast": 4, "quick_gelu": 2, "gelu_accurate": 4, "gelu_python": 4}


def _act_cost(act: str) -> int:
    """Tensors (of the intermediate width) an MLP activation keeps: fused kernels keep one, python ones more."""
    return _PYTHON_ACTS.get(act, 1)


_STAGE = {"q": 0, "k": 0, "v": 0, "o": 1, "xq": 2, "xk": 2, "xv": 2, "xo": 2, "gate": 3, "up": 3, "down": 4}


def _first_stage(block: _Block) -> int:
    """Where, in forward order, the first trained part of a block sits (0: attention input ... 4: MLP output)."""
    if block.norms_train:
        return 0
    stages = [_STAGE.get(lin.role, 0) for lin in block.linears if lin.trains or lin.lora_r or lin.adapter or lin.ia3]
    return min(stages, default=0)


class _Tally:
    """Floats kept per token by one block, ``[constant, per key/value position]``, counting a contribution only
    where a gradient reaches it: ``start`` = -1, everything; otherwise only what follows the first trained part
    (``strict`` contributions need a gradient from before their stage: a norm's input)."""

    def __init__(self, start: int) -> None:
        self.start, self.totals = start, [0.0, 0.0]

    def add(self, stage: int, value: float, strict: bool = False, per_position: bool = False) -> None:
        if self.start < stage or (self.start == stage and not strict):
            self.totals[1 if per_position else 0] += value


MASK = 0.25  # a dropout mask: bool (CUDA's fused dropout; tuneforge's FastDropout on CPU)


def _block_cost(block: _Block, profile: _Profile, on_cuda: bool, start: int = -1) -> tuple[float, float]:
    """Floats kept per token by one block: ``(constant, per key/value position)`` -- the second times the
    attended length gives the unfused attention's ``heads x L`` terms.

    Contributions are tagged with their stage in forward order (0 attention input and core, 1 attention output,
    2 cross-attention, 3 MLP input and activation, 4 MLP output). ``start`` = -1: gradient flows in from below,
    everything counts; otherwise the block is the first that trains and only what follows its first trained part
    does (``strict`` contributions need a gradient from before their stage: a norm's input)."""
    tally = _Tally(start)
    by_role: dict[str, list[_LinearInfo]] = {}
    for linear in block.linears:
        by_role.setdefault(linear.role, []).append(linear)
    h = block.hidden or (by_role["q"][0].d_in if "q" in by_role else profile.hidden)
    _norm_cost(tally, block, profile, h, has_cross=any(role.startswith("x") for role in by_role))
    saved_inputs: set[str] = set()  # groups of linears whose (shared) input is kept anyway
    fallback = "q" not in by_role
    if fallback:
        # a layout not recognised (fused qkv projection, ...): Korthikanti et al. (2022)'s count for a GPT block,
        # 17 h values per token + (softmax, dropout mask, dropped probabilities) per head and position; the
        # method's extras are added below. Approximate: not checked against a measurement.
        tally.add(0, 17 * h)
        if not _fused(profile, on_cuda):
            tally.add(0, block.heads * (2 + MASK), per_position=True)
        by_role = {}
    _attention_cost(tally, block, profile, by_role, on_cuda, saved_inputs)
    _mlp_cost(tally, profile, by_role, saved_inputs)
    _linear_cost(tally, block, saved_inputs, fallback)
    return tally.totals[0], tally.totals[1]


def _width(by_role: dict[str, list[_LinearInfo]], role: str, attr: str = "d_out") -> int:
    return sum(getattr(x, attr) for x in by_role.get(role, []))


def _fused(profile: _Profile, on_cuda: bool) -> bool:
    return profile.fused_attention and (profile.attention_dropout == 0 or on_cuda)


def _norm_cost(tally: _Tally, block: _Block, profile: _Profile, h: int, has_cross: bool) -> None:
    """Norms keep their inputs (the residual stream); an RMSNorm also keeps the normalized tensor when its weight
    trains. Pre-LN (Llama, T5): before attention, cross-attention and the MLP; post-LN (BERT): after each
    sub-layer."""
    pre_ln = profile.family != "bert"
    norm_stages = ([0, 2, 3] if has_cross else [0, 3]) if pre_ln else ([1, 2, 4] if has_cross else [1, 4])
    for index in range(block.norms):
        stage = norm_stages[min(index, len(norm_stages) - 1)]
        tally.add(stage, h, strict=pre_ln)
        if block.norm_kind == "rms" and block.norms_train:
            tally.add(stage, h)
        # hidden-state dropout at the end of each sub-layer (BERT, T5): its mask
        if profile.hidden_dropout > 0 and profile.family in ("bert", "t5"):
            tally.add({0: 1, 2: 2, 3: 4}.get(stage, stage), h * MASK)


def _attention_cost(tally: _Tally, block: _Block, profile: _Profile, by_role: dict[str, list[_LinearInfo]],
                    on_cuda: bool, saved_inputs: set[str]) -> None:
    """Self- and cross-attention: fused SDPA keeps q, k, v, the output and a log-sum-exp per head; the unfused path
    the softmax per position (and with dropout its mask and the dropped probabilities)."""
    fused = _fused(profile, on_cuda)
    for prefix, stage in (("", 0), ("x", 2)):
        d_q, d_k, d_v = (_width(by_role, prefix + r) for r in ("q", "k", "v"))
        if not d_q:
            continue
        if fused:  # q, k, v, output, log-sum-exp per head
            tally.add(stage, 2 * d_q + d_k + d_v + block.heads)
            saved_inputs.add(prefix + "o")  # the o projection's input is the kept output
        else:  # q, k, v + softmax (+ dropout mask and dropped probabilities); eager GQA repeats k and v
            repeat = not profile.fused_attention
            tally.add(stage, d_q + (d_q if repeat and d_k < d_q else d_k) + (d_q if repeat and d_v < d_q else d_v))
            tally.add(stage, block.heads * (1 + ((1 + MASK) if profile.attention_dropout > 0 else 0)),
                      per_position=True)


def _mlp_cost(tally: _Tally, profile: _Profile, by_role: dict[str, list[_LinearInfo]], saved_inputs: set[str]) -> None:
    i = _width(by_role, "down", "d_in") or _width(by_role, "up")
    act = _act_cost(profile.act)
    if "gate" in by_role:  # act(gate) * up: the gate, its activation (unless the activation kept it), the up output
        tally.add(3, i * (act + (0 if profile.act in ("relu",) else 1) + 1))
    elif i:
        tally.add(3, i * act)
        if profile.family == "t5" and profile.hidden_dropout > 0:  # dropout inside the feed-forward block, before wo
            tally.add(3, i * MASK)
        elif profile.act in ("relu",):
            saved_inputs.add("down")  # the kept ReLU result is the down projection's input


_GROUPS = {"q": "qkv", "k": "qkv", "v": "qkv", "gate": "mlp", "up": "mlp", "o": "o", "down": "down",
           "xq": "xq", "xk": "xkv", "xv": "xkv", "xo": "xo"}


def _linear_cost(tally: _Tally, block: _Block, saved_inputs: set[str], fallback: bool) -> None:
    """Linear layers keep their input when the weight trains; LoRA, adapter and IA3 extras."""
    for linear in block.linears:
        stage = _STAGE.get(linear.role, 0)
        group = _GROUPS.get(linear.role, linear.path)
        if (linear.trains or (linear.lora_r and linear.lora_dropout == 0) or linear.ia3 == "in") and not fallback:
            if group not in saved_inputs and group != "xkv":  # cross k/v read the encoder output: counted once
                tally.add(stage, linear.d_in)
                saved_inputs.add(group)
        if linear.lora_r:
            tally.add(stage, linear.lora_r)
            if linear.lora_dropout > 0:
                tally.add(stage, linear.d_in * (1 + MASK))  # the dropped input (kept by lora_A) and the mask
        if linear.adapter:
            tally.add(stage, linear.d_out + linear.adapter * (1 if linear.adapter_act in ("relu", "tanh") else 2))
        if linear.ia3 == "out":
            tally.add(stage, linear.d_out)


def _kv_floats(block: _Block, profile: _Profile, mask: float) -> float:
    """Floats per token the key/value path of a block keeps: k and v, the input of q/k/v when it is kept, LoRA's
    extras on k and v."""
    qkv = [lin for lin in block.linears if lin.role in ("q", "k", "v")]
    floats = float(sum(lin.d_out for lin in qkv if lin.role != "q"))
    if any(lin.trains or (lin.lora_r and lin.lora_dropout == 0) or lin.ia3 == "in" for lin in qkv):
        floats += block.hidden or profile.hidden
    for lin in qkv:
        if lin.role != "q" and lin.lora_r:
            floats += lin.lora_r + (lin.d_in * (1 + mask) if lin.lora_dropout > 0 else 0)
    return floats


def _activation_bytes(profile: _Profile, batch: int, length: int, checkpointing: bool,
                      on_cuda: bool) -> dict[str, Any]:
    """Saved activations and the LM head's transient at the start of the backward pass, in bytes."""
    length_eff = length + profile.prompt_tokens
    tokens = batch * length_eff
    mask = 0.25
    floats = profile.param_bytes
    started = profile.embeddings_train
    per_block: list[float] = []
    inputs = 0.0
    for block in profile.blocks:
        start = -1 if started else _first_stage(block)  # the first trained block: from its first trained part
        started = started or block.trainable
        if not started:
            per_block.append(0.0)
            continue
        constant, per_position = _block_cost(block, profile, on_cuda, start)
        keys = length_eff + profile.prefix_tokens
        if profile.first_token and block is profile.blocks[-1]:
            # the last layer computes only the first token (tuneforge.models.first_token): keys and values (and
            # the input they share) at every position, the rest at one
            kv = _kv_floats(block, profile, mask)
            per_block.append((kv * length_eff + (constant - kv) + per_position * keys) * batch * floats)
        else:
            per_block.append((constant + per_position * keys) * tokens * floats)
        inputs += block.hidden * tokens * floats
    # around the blocks: embeddings (BERT/T5 LayerNorm + dropout), the encoder output read by cross-attention
    extra = 0.0
    h = profile.hidden
    if profile.embeddings_train and profile.family in ("bert", "t5"):
        stacks = len({block.stack for block in profile.blocks}) or 1  # each stack embeds its own input
        extra += stacks * ((h if profile.family == "bert" else 0) + (h * mask if profile.hidden_dropout > 0 else 0))
    if any(lin.role in ("xk", "xv") and (lin.trains or lin.lora_r) for b in profile.blocks for lin in b.linears):
        extra += h
    head_transient = 0.0
    if profile.vocabulary_head:
        if profile.final_norm:
            extra += h * (2 if profile.final_norm == "rms" and profile.lm_head_trains else 1)
            if profile.family == "t5" and profile.hidden_dropout > 0:
                extra += h * mask
        extra += h * profile.head_hidden_ops
        extra += h if profile.lm_head_trains else 0
        extra += profile.vocab  # the log-softmax kept by the loss (float32)
        head_transient = 2.0 * profile.vocab * tokens * 4  # its gradient and the logits' gradient
    elif profile.per_token_head:  # a head on every token: its input, and BERT's dropout before it
        extra += h * (1 + (mask if profile.hidden_dropout > 0 and profile.family == "bert" else 0))
        extra += h if profile.family != "bert" else 0  # a decoder's final norm
    elif profile.family != "bert":
        extra += 2 * h  # a decoder classifies from every position: the final norm's input and the score's input
    extra_bytes = extra * tokens * floats
    if checkpointing:
        saved = inputs + (max(per_block) if per_block else 0.0) + extra_bytes
    else:
        saved = sum(per_block) + extra_bytes
    return {"saved": int(saved), "head_transient": int(head_transient), "tokens": tokens,
            "per_block_bytes": int(max(per_block) if per_block else 0), "blocks_with_activations":
            sum(1 for b in per_block if b), "outside_blocks_bytes": int(extra_bytes)}


# ---------------------------------------------------------------------------------------------- the estimate
