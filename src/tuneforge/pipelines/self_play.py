"""``tuneforge pairs``: preference pairs from a chat corpus by the self-play rule of SPIN (Chen et al., 2024,
"Self-Play Fine-Tuning Converts Weak Language Models to Strong Language Models"): for each prompt of the corpus, the
corpus's own (human-written) answer is **chosen** and the SFT model's greedy answer to the same prompt is
**rejected**. Real pairs offline, from any chat data, without a judge: a reward model trained on them learns what
separates the corpus's answers from the model's, and DPO moves the model towards the corpus's side.

One pair per distinct prompt (its first answer in the file); a pair whose two answers are equal is dropped and
counted; every record read is kept or counted."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from tuneforge.errors import UserError


def self_play_pairs(sft_run: str | Path, data_path: str, output: str | Path, max_prompts: int | None = None,
                    seed: int = 0, max_new_tokens: int = 32, precision: str | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``{prompt, chosen, rejected, source}`` JSONL to ``output`` and return what was kept and dropped."""
    from tuneforge.data.formats import parse_examples
    from tuneforge.data.sources import load_records
    from tuneforge.evaluation.generation import generate
    from tuneforge.pipelines.generate import load_generator

    records, _, bad = load_records(data_path, "auto", "error", None)
    examples, fmt = parse_examples(records, "auto", {}, {}, None)
    if not any(e.messages for e in examples):
        raise UserError(f"{data_path}: {fmt} data has no conversations; self-play pairs need chat data (messages, "
                        "sharegpt, alpaca or prompt/completion)")
    first: dict[str, Any] = {}
    for example in examples:
        if example.messages and example.reference.strip():
            first.setdefault(json.dumps(example.prompt_messages, sort_keys=True), example)
    prompts = sorted(first)
    if max_prompts and len(prompts) > max_prompts:
        prompts = sorted(random.Random(seed).sample(prompts, max_prompts))
    log(f"self-play pairs: {len(prompts)} prompts of {len(examples)} examples in {data_path}; {sft_run} answers each")
    generator = load_generator(sft_run, precision=precision, max_new_tokens=max_new_tokens, do_sample=False)
    ids = [generator.prompt_ids(first[p].prompt_messages) for p in prompts]
    answers = generate(generator.model, generator.tokenizer, ids, generator.config, generator.stop_ids,
                       description="self-play answers")
    lines, equal = [], 0
    for key, answer in zip(prompts, answers):
        example = first[key]
        if answer.text.strip() == example.reference.strip():
            equal += 1
            continue
        lines.append(json.dumps({"prompt": example.prompt_messages, "chosen": example.reference.strip(),
                                 "rejected": answer.text.strip(), "source": example.where}, ensure_ascii=False))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    facts = {"records": len(records) + len(bad), "malformed": len(bad), "prompts": len(first), "sampled": len(prompts),
             "pairs": len(lines), "dropped_equal_answers": equal, "output": str(output)}
    log(f"wrote {len(lines)} pairs to {output} ({equal} dropped: the model gave the corpus's own answer)")
    return facts
