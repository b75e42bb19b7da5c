"""Generative data: formats, chat templates and loss masking, the template lint, packing, perplexity."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.data.chat import IGNORE, ChatFormatter, encode_examples, encode_text, end_token_untrained
from tuneforge.data.formats import Example, parse_examples
from tuneforge.data.packing import PackedCollator, pack, padding_share
from tuneforge.data.sources import Record, load_records
from tuneforge.errors import DataError

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour.\n\nOne word."},
                {"role": "assistant", "content": "Blue."}]


@pytest.fixture(scope="module")
def tokenizer(smollm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_path)


@pytest.mark.parametrize("fmt, record, columns, roles", [
    ("alpaca", {"instruction": "Name a colour.", "input": "One word.", "output": "Blue.", "system": "Be brief."}, {}, {}),
    ("sharegpt", {"system": "Be brief.", "conversations": [{"from": "human", "value": "Name a colour.\n\nOne word."},
                                                         {"from": "gpt", "value": "Blue."}]}, {}, {}),
    ("messages", {"messages": CONVERSATION}, {}, {}),
    ("prompt-completion", {"prompt": "Name a colour.\n\nOne word.", "completion": "Blue.", "system": "Be brief."}, {}, {}),
    ("prompt-completion", {"prompt": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Name a colour.\n\nOne word."}],
                           "completion": [{"role": "assistant", "content": "Blue."}]}, {}, {}),
    ("alpaca", {"q": "Name a colour.", "ctx": "One word.", "a": "Blue.", "sys": "Be brief."},
     {"instruction": "q", "input": "ctx", "output": "a", "system": "sys"}, {}),
    ("messages", {"dialog": [{"speaker": "narrator", "text": "Be brief."}, {"speaker": "me", "text":
                  "Name a colour.\n\nOne word."}, {"speaker": "bot", "text": "Blue."}]},
     {"messages": "dialog", "role": "speaker", "content": "text"}, {"narrator": "system", "me": "user"}),
])
def test_every_format_parses_to_the_same_conversation(fmt, record, columns, roles):
    for asked in (fmt, "auto"):
        examples, detected = parse_examples([Record(record, "x.jsonl:1")], asked, columns, roles)
        assert detected == fmt
        assert examples[0].messages == CONVERSATION


def test_a_format_mismatch_names_the_format_keys_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "answer": "d"}\n')
    records, _, _ = load_records(path)
    with pytest.raises(DataError) as error:
        parse_examples(records, "auto", {}, {})
    message = str(error.value)
    assert f"{path}:2" in message and "alpaca" in message and "instruction, output" in message and "answer" in message
    with pytest.raises(DataError, match="role 'robot'.*data.roles"):
        parse_examples([Record({"messages": [{"role": "robot", "content": "x"}]}, "f:1")], "messages", {}, {})
    with pytest.raises(DataError, match="preference pairs"):
        parse_examples([Record({"prompt": "p", "chosen": "a", "rejected": "b"}, "f:1")], "auto", {}, {})


def test_labels_keep_only_the_answers_and_their_end_token(tokenizer):
    formatter = ChatFormatter(tokenizer)
    assert formatter.template_name == "tokenizer" and tokenizer.convert_ids_to_tokens(formatter.end_token_id) == "<|im_end|>"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]
    item = formatter.encode(messages, max_length=512)
    assert tokenizer.decode(item.input_ids) == formatter.render(messages)
    learned = [token for token, label in zip(item.input_ids, item.labels) if label != IGNORE]
    assert tokenizer.decode(learned) == "Hello there.<|im_end|>\nSee you.<|im_end|>\n"
    assert all(label in (IGNORE, token) for token, label in zip(item.input_ids, item.labels))
    # at inference the prompt ends exactly where the first answer's labels start
    prompt = formatter.prompt_ids(messages[:1])
    assert item.input_ids[:len(prompt)] == prompt and item.labels[len(prompt)] == item.input_ids[len(prompt)]
    assert all(label == IGNORE for label in item.labels[:len(prompt)])
    everything = formatter.encode(messages, max_length=512, loss_on="all")
    assert everything.labels[1:] == everything.input_ids[1:]


def test_named_template_on_a_tokenizer_without_one(minilm_path):
    from transformers import AutoTokenizer

    bert = AutoTokenizer.from_pretrained(minilm_path)
    formatter = ChatFormatter(bert)
    assert formatter.template_name == "plain" and formatter.end_token_id == bert.sep_token_id
    items, lint = encode_examples(formatter, [Example(CONVERSATION, "x:1")], 64, "completion")
    learned = [t for t, label in zip(items[0].input_ids, items[0].labels) if label != IGNORE]
    assert bert.decode(learned) == "blue. [SEP]" and lint.end_token_learned == 1


def test_lint_catches_a_template_without_an_end_token(tokenizer):
    from copy import deepcopy

    broken = deepcopy(tokenizer)
    broken.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" \
                           "{% if add_generation_prompt %}assistant: {% endif %}"
    with pytest.raises(DataError, match="never learn to stop"):
        encode_examples(ChatFormatter(broken), [Example(CONVERSATION, "x:1")], 64, "completion")


def test_lint_counts_truncation(tokenizer):
    long = [{"role": "user", "content": "word " * 10}, {"role": "assistant", "content": "ok " * 40}]
    examples = [Example(CONVERSATION, "a:1"), Example(long, "a:2")]
    items, lint = encode_examples(ChatFormatter(tokenizer), examples, 60, "completion")
    report = lint.as_dict()
    assert report["truncated"] == 1 and report["truncated_pct"] == 50.0 and report["end_token_in_labels"] == 1
    assert len(items) == 2 and "longer than data.max_length=60" in report["warnings"][0]
    too_short, lint = encode_examples(ChatFormatter(tokenizer), [Example(long, "a:2")], 30, "completion")
    assert too_short == [] and lint.dropped_no_target == 1  # the answer was cut off entirely: counted


def test_untrained_end_token_is_detected(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert not end_token_untrained(model, 2)
    with torch.no_grad():
        model.get_input_embeddings().weight[2] = 0
    assert end_token_untrained(model, 2)


def test_packed_examples_see_only_themselves(tiny_llama, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    formatter = ChatFormatter(tokenizer)
    examples = [formatter.encode([{"role": "user", "content": q}, {"role": "assistant", "content": a}], 128)
                for q, a in (("What is two plus two?", "Four."), ("Hi", "Hello, how are you today?"),
                             ("Name a fruit", "Apple"))]
    rows = pack(examples, row_length=256)
    assert len(rows) == 1 and len(rows[0].input_ids) == sum(len(e.input_ids) for e in examples)
    batch = PackedCollator(pad_id=0)([vars(rows[0])])
    assert "attention_mask" not in batch
    assert batch["tf_lengths"].tolist() == [[len(e.input_ids) for e in examples]]
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k not in ("labels", "tf_lengths")}).logits[0]
        start = 0
        for example in examples:  # a row keeps its examples in their original order
            alone = model(input_ids=torch.tensor([example.input_ids])).logits[0]
            torch.testing.assert_close(packed[start:start + len(example.input_ids)], alone, atol=1e-5, rtol=1e-4)
            start += len(example.input_ids)
    assert rows[0].labels[0] == IGNORE and all(example.labels[0] == IGNORE for example in examples)


def test_packing_fills_rows_and_cuts_padding():
    from tuneforge.data.chat import Encoded

    lengths = [100, 60, 50, 40, 30, 20, 10, 5]
    examples = [Encoded(list(range(n)), list(range(n))) for n in lengths]
    rows = pack(examples, row_length=128)
    assert sorted(len(r.input_ids) for r in rows) == [70, 120, 125]  # best fit: 100+20+5 | 60+50+10 | 40+30
    assert all(len(r.input_ids) <= 128 for r in rows)
    assert sum(len(r.input_ids) for r in rows) == sum(lengths)
    assert padding_share(lengths, 4) == round(1 - sum(lengths) / (100 * 4 + 30 * 4), 4)


def test_raw_text_is_cut_into_blocks(tokenizer):
    blocks = encode_text(tokenizer, "one two three " * 50, block=32)
    assert all(len(b.input_ids) <= 32 for b in blocks) and blocks[-1].input_ids[-1] == tokenizer.eos_token_id
    assert sum(len(b.input_ids) for b in blocks) == len(tokenizer("one two three " * 50)["input_ids"]) + 1


def test_perplexity_matches_a_hand_computation(tiny_llama, tokenizer):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.evaluation.generation import sequence_nll
    from tuneforge.evaluation.metrics import bootstrap_indices
    from tuneforge.evaluation.text_metrics import perplexity

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    formatter = ChatFormatter(tokenizer)
    examples = [formatter.encode([{"role": "user", "content": q}, {"role": "assistant", "content": a}], 128)
                for q, a in (("Hi", "Hello there, friend."), ("What is two plus two?", "Four."))]
    sums, counts = sequence_nll(model, examples, batch_size=2)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([example.input_ids])).logits[0], dim=-1)
            for position in range(1, len(example.input_ids)):
                if example.labels[position] != IGNORE:
                    total -= float(log_probs[position - 1, example.labels[position]])
                    tokens += 1
    assert counts.sum() == tokens and sums.sum() == pytest.approx(total, rel=1e-4)
    result = perplexity(sums, counts, bootstrap_indices(2, 100), 0.95)
    assert result["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-3)
    assert np.isfinite(result["perplexity_ci"]).all()


def test_generative_data_is_split_by_prompt_without_leakage(tmp_path):
    from tuneforge.config.schema import DataConfig
    from tuneforge.data.generative import prepare_generative

    rows = [{"instruction": f"Question {i % 60}?", "output": f"Answer {i}."} for i in range(90)]
    rows.append({"instruction": "   ", "output": "nothing asked"})
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows))
    data = prepare_generative(DataConfig(path=str(path)), seed=1)
    prompts = {name: {e.prompt_messages[-1]["content"] for e in part} for name, part in data.splits.items()}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["train"] & prompts["validation"])
    dropped = data.report["cleaning"]["dropped"]
    assert dropped["empty_text"] == 1 and data.format == "alpaca"
    assert data.report["rows_kept"] + data.report["cleaning"]["dropped_total"] == 91
