"""The data step of the preference tasks: records -> pairs (or unpaired answers, or prompts) -> cleaned, split on the
prompt -> rendered with the chat template the parent SFT run trained with -> the rows TRL's trainer of the task reads.

Prompts are rendered as the SFT model saw them (the template up to the assistant's turn); an answer is the rest of
the rendered conversation, ending with the template's end-of-turn token. A reward model reads the whole
conversation cut at ``data.max_length`` (the prompt and the start of the answer kept); a policy's answers are cut
there by TRL (``keep_start``); a record whose prompt alone fills ``max_length`` is dropped and counted, and every
cut is counted in data_report.json.
"""

from __future__ import annotations

from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.data.chat import ChatFormatter
from tuneforge.data.preference import Preference, PreferenceData, prepare_preferences
from tuneforge.tasks.spec import Prepared

PAIRS = ("preference",)
PROMPTS = ("prompt-only", "preference", "unpaired-preference")
ACCEPTS = {"reward-model": PAIRS, "dpo": PAIRS, "orpo": PAIRS, "kto": ("unpaired-preference", "preference"),
           "grpo": PROMPTS, "ppo": PROMPTS}


def prepare(config: RunConfig, tokenizer: Any, resolved: Any) -> Prepared:
    from tuneforge.models.run_model import parent_meta

    task = config.model.task
    data = prepare_preferences(config.data, config.train.seed, ACCEPTS[task])
    parent = parent_meta(resolved.path)
    formatter = ChatFormatter(tokenizer, _template(config.data.template, parent))
    _drop_long_prompts(data, formatter, config.data.max_length)
    rows = {split: build_rows(task, items, formatter, tokenizer, config.data.max_length)
            for split, items in data.splits.items()}
    truncated = {split: sum(r.pop("_truncated", False) for r in part) for split, part in rows.items()}
    data.report.update(model={"name": resolved.name, "path": resolved.path, "source": resolved.source},
                       template=formatter.template_name, truncated_to_max_length=truncated)
    warnings = [f"{n} {split} rows were longer than data.max_length={config.data.max_length} and were cut"
                for split, n in truncated.items() if n]
    meta = {"template": formatter.template_name, "stop_token_ids": formatter.stop_token_ids,
            "dataset_format": data.format, "system_prompt": parent.get("system_prompt"),
            "stop_strings": list(config.evaluation.generation.stop_strings),
            "parents": parents(config, resolved)}
    if task == "reward-model":
        meta.update(auto_class="AutoModelForSequenceClassification", num_labels=1, bos=formatter.prepend_bos)
    from datasets import Dataset

    train, validation = (Dataset.from_list(rows[s]) if rows[s] else None for s in ("train", "validation"))
    return Prepared(train, validation, [], data.report, _summary(task, data), data, meta=meta,
                    training={"parents": meta["parents"]}, warnings=warnings,
                    extra={"formatter": formatter, "rows": rows, "resolved": resolved})


def _drop_long_prompts(data: PreferenceData, formatter: ChatFormatter, max_length: int) -> None:
    """A prompt that fills ``max_length`` alone leaves no answer to learn or score: dropped and counted."""
    dropped = data.report["cleaning"]["dropped"]
    for split, items in data.splits.items():
        kept = [item for item in items if len(formatter.prompt_ids(item.prompt)) < max_length]
        if len(kept) < len(items):
            key = "prompt_longer_than_max_length"
            dropped[key] = dropped.get(key, 0) + len(items) - len(kept)
            data.report["cleaning"]["dropped_total"] += len(items) - len(kept)
            data.report["splits"][split].update(rows=len(kept), prompts=len({item.key for item in kept}))
            data.splits[split] = kept
    data.report["rows_kept"] = sum(map(len, data.splits.values()))
    if not data.splits["train"]:
        from tuneforge.errors import DataError

        raise DataError(f"every training prompt is longer than data.max_length={max_length}; raise it")


def parents(config: RunConfig, resolved: Any) -> dict[str, str]:
    """The runs this stage was built from: the policy's (or scorer's) starting run, its reward run, its judge."""
    found = {"model": resolved.name} if resolved.source == "run" else {}
    if config.preference.reward_run and config.model.task in ("ppo", "grpo"):
        found["reward"] = config.preference.reward_run
    if config.preference.judge_run and config.model.task != "reward-model":
        found["judge"] = config.preference.judge_run
    return found


def _template(setting: str, parent: dict[str, Any]) -> str:
    """The data.template set, else the one the parent run trained with (its tokenizer's own is 'auto' again)."""
    if setting != "auto" or not parent.get("template"):
        return setting
    return "auto" if parent["template"] == "tokenizer" else parent["template"]


def build_rows(task: str, items: list[Preference], formatter: ChatFormatter, tokenizer: Any,
               max_length: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item in items:
        prompt = formatter.render(item.prompt, add_generation_prompt=True)
        if task in ("grpo", "ppo"):
            ids = formatter.prompt_ids(item.prompt)
            row: dict[str, Any] = {"prompt": prompt, "_truncated": len(ids) > max_length}
            if task == "ppo":
                row = {"input_ids": ids[-max_length:], "_truncated": row["_truncated"]}
            rows.append(row)
        elif task == "reward-model":
            texts = [conversation(formatter, item.prompt, text) for text in (item.chosen, item.rejected)]
            (chosen, cut_c), (rejected, cut_r) = (scored_ids(tokenizer, t, formatter.prepend_bos, max_length)
                                                  for t in texts)
            rows.append({"chosen_ids": chosen, "rejected_ids": rejected, "text_chosen": texts[0],
                         "text_rejected": texts[1], "_truncated": cut_c or cut_r})
        elif task == "kto":
            rows.extend(_unpaired(item, prompt, formatter, tokenizer, max_length))
        else:
            chosen, rejected = answer(formatter, item.prompt, item.chosen), answer(formatter, item.prompt, item.rejected)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                         "_truncated": _too_long(tokenizer, prompt, max(chosen, rejected, key=len), max_length)})
    return rows


def _unpaired(item: Preference, prompt: str, formatter: ChatFormatter, tokenizer: Any,
              max_length: int) -> list[dict[str, Any]]:
    """KTO's rows: a completion marked desirable or not; a pair gives both of its answers."""
    pairs = [(item.chosen, True), (item.rejected, False)] if item.rejected is not None else [(item.chosen,
                                                                                               bool(item.label))]
    rows = []
    for text, label in pairs:
        completion = answer(formatter, item.prompt, text)
        rows.append({"prompt": prompt, "completion": completion, "label": label,
                     "_truncated": _too_long(tokenizer, prompt, completion, max_length)})
    return rows


def answer(formatter: ChatFormatter, prompt: list[dict[str, str]], text: str | None) -> str:
    """The assistant's turn as the template writes it after ``prompt``, through its end-of-turn token."""
    before = formatter.render(prompt, add_generation_prompt=True)
    full = formatter.render([*prompt, {"role": "assistant", "content": text or ""}])
    return full[len(before):].rstrip() if full.startswith(before) else (text or "")


def conversation(formatter: ChatFormatter, prompt: list[dict[str, str]], text: str | None) -> str:
    """What a reward model reads: the prompt and the answer, rendered as one conversation."""
    return formatter.render([*prompt, {"role": "assistant", "content": text or ""}]).rstrip()


def scored_ids(tokenizer: Any, text: str, bos: bool, max_length: int) -> tuple[list[int], bool]:
    """A reward model's tokens of a conversation, cut at ``max_length`` (the prompt and the start of the answer are
    kept: the score is read at the last token kept)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if bos:
        ids = [tokenizer.bos_token_id, *ids]
    return ids[:max_length], len(ids) > max_length


def _too_long(tokenizer: Any, prompt: str, completion: str, max_length: int) -> bool:
    return len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]) > max_length


def _summary(task: str, data: PreferenceData) -> str:
    sizes = ", ".join(f"{name} {len(part)}" for name, part in data.splits.items())
    dropped = data.report["cleaning"]["dropped_total"]
    return (f"data: {data.report['source']['rows_read']} {data.format} records -> {sizes} ({task}; split on the "
            f"prompt, {dropped} dropped: see data_report.json)")
