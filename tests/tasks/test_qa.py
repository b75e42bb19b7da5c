"""Extractive question answering: SQuAD-style loading (both answer layouts, column mapping, nested SQuAD JSON),
answer-offset repair and bad rows, the split by context, window features and their labels, span post-processing,
SQuAD exact match / F1, the sliding-window baseline, and a tiny end-to-end LoRA run that must beat it."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from conftest import CONTEXT_FILLER as FILLER, make_records, tiny_config, write_jsonl
from tuneforge.config import load_config
from tuneforge.config.schema import DataConfig
from tuneforge.data.qa import load_examples, prepare_qa
from tuneforge.data.qa_features import Features, build_features
from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluation.metrics import bootstrap_indices
from tuneforge.evaluation.qa_metrics import exact_match, paired_qa_difference, qa_metrics, score_answers, \
    sliding_window_baseline, token_f1
from tuneforge.evaluation.qa_postprocess import best_spans

CONTEXT = "The cat sat on the mat. Paris is the capital of France."


def test_both_answer_layouts_column_mapping_and_nested_squad(tmp_path):
    start = CONTEXT.index("Paris")
    hf = write_jsonl(tmp_path / "hf.jsonl", [{"question": "Capital?", "context": CONTEXT,
                                             "answers": {"text": ["Paris", "Paris"], "answer_start": [start, start]}}])
    flat = tmp_path / "flat.csv"
    with open(flat, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerows([["q", "passage", "answer", "answer_start"], ["Where?", CONTEXT, "the mat", "15"]])
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([{"q": "Who sat?", "passage": CONTEXT, "gold": [{"text": "cat", "answer_start": 4}]}]))
    nested = tmp_path / "squad.json"
    qas = [{"id": "a1", "question": "Capital?", "answers": [{"text": "France", "answer_start": CONTEXT.index("France")}]}]
    nested.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT,
                                                                                            "qas": qas}]}]}))

    (example,), _ = load_examples(DataConfig(path=str(hf)))
    assert (example.question, example.answers, example.starts) == ("Capital?", ["Paris", "Paris"], [start, start])
    (example,), _ = load_examples(DataConfig(path=str(flat), columns={"question": "q", "context": "passage"}))
    assert (example.question, example.answers, example.starts, example.where) == ("Where?", ["the mat"], [15],
                                                                                  f"{flat}:2")
    (example,), _ = load_examples(DataConfig(path=str(listed), columns={"question": "q", "context": "passage",
                                                                        "answers": "gold"}))
    assert (example.answers, example.starts) == (["cat"], [4])
    (example,), _ = load_examples(DataConfig(path=str(nested)))
    assert (example.id, example.answers, example.context) == ("a1", ["France"], CONTEXT)
    with pytest.raises(DataError, match=r"hf.jsonl:1: question answering needs fields 'question', 'passage'.*"
                                        r"set data.columns"):
        load_examples(DataConfig(path=str(hf), columns={"context": "passage"}))


def test_answer_offsets_repaired_or_rows_dropped_and_counted(tmp_path):
    twice = "the dog and the dog again."
    records = [
        {"question": "ok?", "context": CONTEXT, "answers": {"text": ["cat"], "answer_start": [4]}},
        {"question": "moved?", "context": CONTEXT, "answers": {"text": ["Paris"], "answer_start": [3]}},  # repaired
        {"question": "which dog?", "context": twice, "answers": {"text": ["dog"], "answer_start": [1]}},  # ambiguous
        {"question": "absent?", "context": CONTEXT, "answers": {"text": ["Rome"], "answer_start": [0]}},
        {"question": "", "context": CONTEXT, "answers": {"text": ["cat"], "answer_start": [4]}},
        {"question": "no start?", "context": CONTEXT, "answers": {"text": ["France"], "answer_start": ["x"]}},
    ]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    with pytest.raises(DataError) as info:
        load_examples(DataConfig(path=str(path)))
    message = str(info.value)
    assert message.startswith(f"{path}:3: field 'answers.answer_start': the answer 'dog' is not at character 1")
    assert "occurs 2 times" in message and message.endswith("; fix the row, or set data.on_bad_rows=skip to drop "
                                                            "and count it") and "\n" not in message
    examples, facts = load_examples(DataConfig(path=str(path), on_bad_rows="skip"))
    assert [e.question for e in examples] == ["ok?", "moved?"] and examples[1].starts == [CONTEXT.index("Paris")]
    assert facts["repaired"] == 1
    assert facts["dropped"] == {"answer_not_in_context": 2, "empty_field": 1, "bad_answer": 1}
    assert any("'x' is not a character offset" in line for line in facts["bad"])


def test_questions_on_one_context_never_cross_splits(tmp_path):
    records = make_records(60, questions_per_context=3)
    records.append(dict(records[0]))  # an exact duplicate: dropped and counted
    data = prepare_qa(DataConfig(path=str(write_jsonl(tmp_path / "qa.jsonl", records))), seed=0)
    contexts = {name: {e.context for e in part} for name, part in data.splits.items()}
    assert not (contexts["train"] & contexts["test"]) and not (contexts["train"] & contexts["validation"])
    assert not (contexts["validation"] & contexts["test"])
    assert all(len(part) % 3 == 0 for part in data.splits.values())  # every context keeps its 3 questions
    report = data.report
    assert report["rows_kept"] + report["cleaning"]["dropped_total"] == report["source"]["rows_read"] == 181
    assert report["cleaning"]["dropped"] == {"exact_duplicate": 1}
    assert set(report["leakage"]["overlapping_contexts"].values()) == {0}
    assert sum(part["contexts"] for part in report["splits"].values()) == 60


def test_window_labels_map_back_to_the_answer(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rng = random.Random(0)
    long_context = " ".join(rng.choices(FILLER, k=60)) + " the code is 271 today " + " ".join(rng.choices(FILLER, k=60))
    short_context = "Music played. The city is lima now."
    answers = [(long_context.index("271"), "271"), (short_context.index("lima"), "lima")]
    features = build_features(tokenizer, ["What is the code?", "What is the city?"], [long_context, short_context],
                              max_length=32, stride=8, answers=answers)
    windows = [w for w, example in enumerate(features.example) if example == 0]
    assert len(windows) >= 4 and features.example.count(1) == 1  # the long context overflows, the short does not
    for w, example in enumerate(features.example):
        context, (start, text) = (long_context, short_context)[example], answers[example]
        item, offsets = features.inputs[w], features.offsets[w]
        s, e = item["start_positions"], item["end_positions"]
        spans = [span for span in offsets if span is not None]
        holds = spans[0][0] <= start and spans[-1][1] >= start + len(text)
        if holds:
            assert context[offsets[s][0]:offsets[e][1]] == text
        else:
            assert (s, e) == (0, 0) and item["input_ids"][0] == tokenizer.cls_token_id
    assert 0 < features.unanswerable_windows() < len(windows)
    first, second = features.offsets[windows[0]], features.offsets[windows[1]]
    shared = [span for span in first if span is not None][-8:]
    assert [span for span in second if span is not None][:8] == shared  # consecutive windows share stride tokens
    long_question = " ".join(["why"] * 40) + "?"
    cut = build_features(tokenizer, [long_question], [short_context], max_length=32, stride=8)
    assert cut.questions_truncated == 1 and all(len(item["input_ids"]) <= 32 for item in cut.inputs)


def test_post_processing_picks_the_best_valid_span_across_windows():
    context = "red green blue black white"
    q = [None, None, None]
    features = Features(inputs=[{}, {}, {}], example=[0, 0, 1],
                        offsets=[q + [(0, 3), (4, 9), (10, 14), None], q + [(10, 14), (15, 20), (21, 26), None],
                                 q + [(0, 3), None, None, None]])
    start, end = np.zeros((3, 7)), np.zeros((3, 7))
    start[0, 1] = end[0, 1] = 10  # a question token: never an answer
    start[0, 5], end[0, 3] = 5, 5  # end before start: invalid
    start[0, 3], end[0, 5] = -10, -10  # (so blue alone and red alone score low)
    start[0, 4], end[0, 4] = 2, 2  # "green", 4
    start[1, 4], end[1, 5] = 3, 3  # "black white", 6, two tokens
    best = best_spans(start, end, features, [context, context, "no windows"], n_best=5, max_answer_length=30)
    assert best[0]["text"] == "black white" and best[0]["score"] == 6 and best[0]["start"] == 15
    assert best[1]["text"] == "red" and best[2] == {"text": "", "score": None, "start": -1, "end": -1}
    assert best_spans(start, end, features, [context, context, ""], 5, max_answer_length=1)[0]["text"] == "green"


def test_squad_normalisation_scores_and_intervals():
    assert exact_match("The Cat.", "cat") == 1.0 and exact_match("a  cat!", "the cat") == 1.0
    assert exact_match("cats", "cat") == 0.0
    assert token_f1("the black cat", "black dog") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0
    em, f1 = score_answers(["Paris", "in Paris today"], [["paris", "France"], ["Rome", "Paris"]])
    assert em.tolist() == [1.0, 0.0] and f1.tolist() == pytest.approx([1.0, 0.5])
    indices = bootstrap_indices(2, 200, seed=0)
    figures = qa_metrics(em, f1, indices)
    assert figures["exact_match"] == 0.5 and figures["f1"] == 0.75 and figures["n"] == 2
    assert figures["f1_ci"][0] <= 0.75 <= figures["f1_ci"][1]
    same = paired_qa_difference((em, f1), (em, f1), indices)
    assert same == {"exact_match": 0.0, "exact_match_ci": [0.0, 0.0], "f1": 0.0, "f1_ci": [0.0, 0.0]}
    assert sliding_window_baseline(["What is the capital of France?"], [CONTEXT]) == ["Paris is the capital of France."]


def test_config_rules_for_question_answering():
    base = {"name": "x", "model": {"name": "minilm", "task": "question-answering"}, "data": {"path": "a.jsonl"}}
    config = load_config(base)
    assert config.train.early_stopping.metric == "f1" and config.evaluation.baselines == ["sliding_window"]
    with pytest.raises(ConfigError, match="data.doc_stride: 50 leaves no room.*at most 42"):
        load_config({**base, "data": {"path": "a.jsonl", "doc_stride": 50}})
    with pytest.raises(ConfigError, match="question-answering runs compute f1, exact_match, loss on validation"):
        load_config({**base, "train": {"early_stopping": {"metric": "macro_f1"}}})
    with pytest.raises(ConfigError, match="majority do not apply to task question-answering"):
        load_config({**base, "evaluation": {"baselines": ["majority"]}})


def test_prompt_tuning_refuses_question_answering_and_names_the_methods_that_apply():
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from tuneforge.methods.registry import apply_method, validate_method
    from tuneforge.tasks.registry import task_spec

    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match=r"'prompt' does not apply to task 'question-answering': its virtual tokens "
                                         r"shift .* \(methods that do: adapter, freeze, full, ia3, lora, prefix, "
                                         r"qlora\)"):
        apply_method(model, validate_method({"name": "prompt"}), task_spec("question-answering"))


@pytest.fixture(scope="module")
def qa_run(tiny_bert, tmp_path_factory):
    from tuneforge.pipelines.finetune import finetune

    root = tmp_path_factory.mktemp("qa-run")
    path = write_jsonl(root / "qa.jsonl", make_records(200))
    config = tiny_config(tiny_bert, path, tracking={"enabled": False},
                         train={"epochs": 10, "batch_size": 16, "logging_steps": 5,
                                "early_stopping": {"metric": "f1", "patience": 5}},
                         method={"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"})
    config["model"]["task"] = "question-answering"
    config["data"].update(max_length=64, doc_stride=16)
    return finetune(load_config(config), output=root / "run", log=lambda _: None)


def test_tiny_qa_run_beats_the_sliding_window_baseline(qa_run):
    metrics, run_dir = qa_run.metrics, qa_run.run_dir
    assert metrics["task"] == "question-answering"
    test = metrics["test"]
    fine, base = test["finetuned"], test["baselines"]["sliding_window"]
    assert fine["n"] == base["n"] >= 20
    assert fine["f1"] > base["f1"] + 0.2, (fine, base)
    difference = test["finetuned_minus_baseline"]["sliding_window"]
    assert difference["f1"] == pytest.approx(fine["f1"] - base["f1"], abs=2e-4) and difference["f1_ci"][0] > 0
    for figures in (fine, base, difference):
        for name in ("exact_match", "f1"):
            low, high = figures[f"{name}_ci"]
            assert low <= figures[name] <= high
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert losses[-1] < 0.5 * losses[0], losses
    assert metrics["validation"]["best_metric"] is not None
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == fine["n"]
    assert {"question", "context_id", "context_snippet", "gold", "predicted", "baselines"} <= set(rows[0])
    assert np.mean([r["f1"] for r in rows]) == pytest.approx(fine["f1"], abs=1e-4)
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["windows"]["train"]["windows"] >= report["windows"]["train"]["questions"]
    page = (run_dir / "report.html").read_text()
    assert "id='samples'" in page and f"{fine['f1']:.4f}" in page and "sliding_window" in page


def test_saved_qa_model_reloads_with_the_same_answers_and_predict_cli(qa_run, capsys):
    from safetensors import safe_open

    from tuneforge.cli import main
    from tuneforge.pipelines.predict import load_predictor

    run_dir = qa_run.run_dir
    with safe_open(str(run_dir / "model" / "adapter_model.safetensors"), "pt") as weights:
        assert any("qa_outputs" in key for key in weights.keys())  # the span head trained and saved with the adapter
    config = load_config(run_dir / "config.yaml")
    data = prepare_qa(config.data, config.train.seed)
    test = data.splits["test"]
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    predictor = load_predictor(run_dir)
    answers = predictor.answer([e.question for e in test], [e.context for e in test])
    assert [a["text"] for a in answers] == [r["predicted"] for r in rows]
    assert main(["predict", str(run_dir), "--question", test[0].question, "--context", test[0].context]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["answer"] == rows[0]["predicted"]
    assert main(["predict", str(run_dir), "--text", "hello"]) == 2
    assert "answers --question with --context" in capsys.readouterr().err
