"""The steps of a generative run (causal-lm and seq2seq; their specs are in causal_lm.py and seq2seq.py):

data (records -> format -> conversations -> clean -> split) -> tokenize (chat template, loss on the answers,
lint) -> pack -> the model -> train (validation loss) -> the test split (read once) against the base model
zero-shot and few-shot, or copying the input (generative_eval.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.data.chat import ChatFormatter, Encoded, encode_examples, encode_text, end_token_untrained
from tuneforge.data.formats import Example
from tuneforge.data.generative import GenerativeData, prepare_generative
from tuneforge.data.prefix_sharing import SharedPrefixCollator
from tuneforge.data.packing import (BatchPackingCollator, PackedCollator, PaddedCollator, batch_packing_padding, pack,
                                    padding_share)
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.spec import Prepared, TrainerParts


def prepare(config: RunConfig, tokenizer: Any, resolved: Any) -> Prepared:
    seq2seq = config.model.task == "seq2seq"
    from tuneforge.tasks.augment_tools import augment_tools

    data = prepare_generative(config.data, config.train.seed, augment_tools(config, tokenizer, resolved))
    if data.raw_text and seq2seq:
        raise DataError("raw text (continued pretraining) trains a causal-lm; set model.task=causal-lm")
    formatter = None if (seq2seq or data.raw_text) else ChatFormatter(tokenizer, config.data.template)
    encoded, lint = _encode(data, formatter, tokenizer, config)
    packing = _packing(config)
    train_set, eval_set, tokens = _batches(encoded, packing, config)
    data.report.update(model={"name": resolved.name, "path": resolved.path, "source": resolved.source},
                       template_lint=lint, tokens=tokens)
    meta = {"template": formatter.template_name if formatter else None,
            "stop_token_ids": formatter.stop_token_ids if formatter else None, "dataset_format": data.format,
            # what generation (generate, chat, serve) applies unless told otherwise: as in training
            "system_prompt": config.data.system_prompt if formatter else None,
            "stop_strings": list(config.evaluation.generation.stop_strings)}
    return Prepared(train_set, eval_set, [], data.report, _summary(data, lint, tokens), data, meta=meta,
                    training={"padding_share": tokens["padding_share"]},
                    tracked={"padding_share": tokens["padding_share"]}, warnings=lint["warnings"],
                    extra={"formatter": formatter, "encoded": encoded, "packing": packing})


def load_model(resolved: Any, prepared: Prepared, config: RunConfig, tokenizer: Any) -> Any:
    """The base model; a chat template's end token that looks untrained in it is a warning (the model may never
    learn to stop)."""
    from tuneforge.methods.registry import load_kwargs
    from tuneforge.models.loading import load_generative

    model = load_generative(resolved, _spec(config), config.model.revision, config.model.trust_remote_code,
                            **load_kwargs(config.method))
    formatter, lint = prepared.extra["formatter"], prepared.report["template_lint"]
    if formatter is not None and end_token_untrained(model, formatter.end_token_id):
        lint["end_token_untrained"] = True
        lint["warnings"].append(f"the end token {lint['end_token']} looks untrained in the base model (its "
                                f"embedding is ~0 or the mean): train its embedding (full, or lora with "
                                f"modules_to_save: [embed_tokens, lm_head]) or the model may never stop")
    return model


def trainer_parts(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig) -> TrainerParts:
    """Padded batches, or packed rows (per batch, sharing the prompt prefix where the attention takes a 4-D mask);
    an encoder-decoder's loss is a plain mean per batch."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if not prepared.extra["packing"]:
        collator: Any = PaddedCollator(pad)
    elif config.data.pack_by == "batch" and config.data.share_prefix and _masks_4d(model):
        collator = SharedPrefixCollator(pad, config.data.max_length)
    elif config.data.pack_by == "batch":
        collator = BatchPackingCollator(pad, config.data.max_length)
    else:
        collator = PackedCollator(pad)
    return TrainerParts(collator=collator, exact_token_loss=config.model.task != "seq2seq",
                        group_by_length=not prepared.extra["packing"])  # packed rows are full already


def evaluate(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig, run_dir: Path,
             resolved: Any) -> dict[str, Any]:
    return _evaluate_test(model, tokenizer, prepared.extra["formatter"], prepared.data, prepared.extra["encoded"],
                          config, run_dir, resolved)


def _evaluate_test(model: Any, tokenizer: Any, formatter: ChatFormatter | None, data: GenerativeData,
                   encoded: dict[str, Any], config: RunConfig, run_dir: Path, resolved: Any) -> dict[str, Any]:
    """The test split against the baselines; the base model computes in the fine-tuned model's precision."""
    from tuneforge.models.loading import load_generative
    from tuneforge.models.precision import compute_in, precision_of
    from tuneforge.tasks.generative_eval import TestSet, evaluate_generative, sample_for_generation

    sampled = sample_for_generation(data.splits["test"], config.evaluation.max_test_examples, config.train.seed)
    test = TestSet(sampled, _prompts(sampled, formatter, tokenizer, config), encoded["test"],
                   _prompts(_kept(data.splits["test"], encoded["test_kept"]), formatter, tokenizer, config)
                   if config.model.task == "seq2seq" else None)
    base_loader = lambda: compute_in(load_generative(resolved, _spec(config), config.model.revision,  # noqa: E731
                                                     config.model.trust_remote_code), precision_of(model))
    return evaluate_generative(model, base_loader, tokenizer, formatter, data, test, config, run_dir)


def _packing(config: RunConfig) -> bool:
    """On by default for causal-lm; never for seq2seq or methods that prepend virtual tokens to each row."""
    from tuneforge.methods.registry import spec_for

    packs = spec_for(config.method.name).packs
    if config.data.packing and config.model.task == "seq2seq":
        raise ConfigError("data.packing applies to decoder-only models; set data.packing=false for seq2seq")
    if config.data.packing and not packs:
        raise ConfigError(f"method {config.method.name} prepends virtual tokens to every row, so examples cannot "
                          f"share one; set data.packing=false")
    return config.data.packing if config.data.packing is not None else (config.model.task == "causal-lm" and packs)


def _masks_4d(model: Any) -> bool:
    """Whether the model's attention takes a custom boolean 4-D mask (sdpa does; flash attention does not)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", "sdpa") == "sdpa"


def _encode(data: GenerativeData, formatter: ChatFormatter | None, tokenizer: Any,
            config: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Token ids and labels per split; for chat data, the template lint over every example."""
    max_length = config.data.max_length
    encoded: dict[str, Any] = {}
    lint: dict[str, Any] = {"warnings": []}
    for split, examples in data.splits.items():
        if data.raw_text:
            items = [block for e in examples for block in encode_text(tokenizer, e.text or "", max_length)]
            kept = list(range(len(examples)))
        elif formatter is None:  # seq2seq
            items = [_seq2seq_item(tokenizer, e, max_length) for e in examples]
            kept = list(range(len(examples)))
        else:
            items, report = encode_examples(formatter, examples, max_length, config.data.loss_on)
            kept = report.kept
            if split == "train":
                lint = report.as_dict()
        encoded[split], encoded[f"{split}_kept"] = items, kept
    if not encoded["train"]:
        raise DataError("no training example is left after tokenization (see data_report.json template_lint)")
    return encoded, lint


def _seq2seq_item(tokenizer: Any, example: Example, max_length: int) -> Encoded:
    from tuneforge.tasks.generative_eval import _source_text

    source = tokenizer(_source_text(example), truncation=True, max_length=max_length)["input_ids"]
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    target = tokenizer(example.reference, add_special_tokens=False)["input_ids"][: max_length - 1] + [end]
    return Encoded(source, target, truncated=len(source) >= max_length)


def _batches(encoded: dict[str, Any], packing: bool, config: RunConfig) -> tuple[list, list, dict[str, Any]]:
    """Training and validation items (packed rows or single examples) and the padding they cost."""
    lengths = [len(item.input_ids) for item in encoded["train"]]
    batch_size = config.train.batch_size
    unpacked = padding_share(lengths, batch_size)
    tokens = {"train_tokens": sum(lengths), "train_label_tokens": sum(sum(l != -100 for l in item.labels)
                                                                      for item in encoded["train"]),
              "examples": len(lengths), "padding_share_unpacked": unpacked, "packing": packing}
    as_dict = lambda items: [{"input_ids": i.input_ids, "labels": i.labels} for i in items]  # noqa: E731
    if not packing:
        tokens["padding_share"] = unpacked
        return as_dict(encoded["train"]), as_dict(encoded["validation"]), tokens
    if config.data.pack_by == "batch":  # the collator packs each batch of examples
        tokens.update(pack_by="batch", padding_share=batch_packing_padding(lengths, batch_size, config.data.max_length,
                                                                           config.train.seed))
        return as_dict(encoded["train"]), as_dict(encoded["validation"]), tokens
    rows = pack(encoded["train"], config.data.max_length)
    validation = pack(encoded["validation"], config.data.max_length)
    tokens.update(pack_by="dataset", rows=len(rows),
                  padding_share=padding_share([len(r.input_ids) for r in rows], batch_size))
    as_rows = lambda items: [vars(r) for r in items]  # noqa: E731
    return as_rows(rows), as_rows(validation), tokens


def test_prompts(prepared: Prepared, tokenizer: Any, config: RunConfig) -> dict[str, Any]:
    """How the test split is put to a model: ``prompts`` (examples -> prompt ids), the encoder inputs of every test
    example (seq2seq, for perplexity) and the stop token ids."""
    formatter, encoded, data = prepared.extra["formatter"], prepared.extra["encoded"], prepared.data
    seq2seq = config.model.task == "seq2seq"
    return {"prompts": lambda examples: _prompts(examples, formatter, tokenizer, config),
            "encoder_inputs": _prompts(_kept(data.splits["test"], encoded["test_kept"]), formatter, tokenizer, config)
            if seq2seq else None,
            "stop": formatter.stop_token_ids if formatter else [tokenizer.sep_token_id or tokenizer.eos_token_id]}


def _prompts(examples: list[Example], formatter: ChatFormatter | None, tokenizer: Any,
             config: RunConfig) -> list[list[int]]:
    if formatter is not None:
        return [formatter.prompt_ids(e.prompt_messages) for e in examples]
    return [_seq2seq_item(tokenizer, e, config.data.max_length).input_ids for e in examples]


def _kept(examples: list[Example], kept: list[int]) -> list[Example]:
    return [examples[i] for i in kept]


def _summary(data: GenerativeData, lint: dict[str, Any], tokens: dict[str, Any]) -> str:
    splits = ", ".join(f"{name} {len(part)}" for name, part in data.splits.items())
    dropped = ", ".join(f"{k} {v}" for k, v in data.report["cleaning"]["dropped"].items()) or "nothing"
    template = f"; template {lint['template']} (end token {lint['end_token']}, in the labels of " \
               f"{lint['end_token_in_labels_pct']}% of examples)" if lint.get("template") else ""
    return (f"data: {data.report['source']['rows_read']} records ({data.format}), kept {splits}; removed: "
            f"{dropped}{template}; padding {100 * tokens['padding_share']:.1f}% "
            f"({'packed' if tokens['packing'] else 'not packed'}; {100 * tokens['padding_share_unpacked']:.1f}% "
            f"without packing)")


def _spec(config: RunConfig) -> Any:
    from tuneforge.tasks.registry import task_spec

    return task_spec(config.model.task)
