"""Question-answering features, transformers' standard recipe: a fast tokenizer reads each (question, context)
pair with ``truncation="only_second"``, so a context longer than ``max_length`` becomes several windows
(``return_overflowing_tokens``) that share ``stride`` tokens, each with the whole question; the offset mapping
ties every context token to its characters.

A window's label is the answer's first and last token; a window that does not hold the whole answer points both
at the CLS token (0). For prediction, each window keeps its example and the character offsets of its context
tokens (None for the question and special tokens), so any span of tokens maps back to the context's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.errors import UserError

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Offsets = list[tuple[int, int] | None]


@dataclass
class Features:
    inputs: list[dict[str, Any]]  # model inputs per window (with start/end_positions when labelled)
    example: list[int]  # which example each window belongs to
    offsets: list[Offsets]  # per window and token: (start, end) characters in the context, None outside it
    questions_truncated: int = 0

    def unanswerable_windows(self) -> int:
        """Labelled windows that do not hold the answer (their label is the CLS token)."""
        return sum(1 for item in self.inputs if item.get("start_positions") == 0)


def question_budget(tokenizer: Any, max_length: int, stride: int) -> int:
    """Most question tokens a window takes: what is left must hold more context than the shared stride."""
    return max_length - tokenizer.num_special_tokens_to_add(pair=True) - 2 * stride


def fit_questions(tokenizer: Any, questions: list[str], budget: int) -> tuple[list[str], int]:
    """Questions longer than ``budget`` tokens are cut at a token boundary (a window must fit the question and
    some context); returns them and how many were cut."""
    if budget < 1:
        raise UserError("no room for the question in a window: raise data.max_length or lower data.doc_stride")
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    fitted, cut = [], 0
    for question, ids, offsets in zip(questions, encoded["input_ids"], encoded["offset_mapping"]):
        cut += len(ids) > budget
        keep = budget
        while len(ids) > budget and keep > 0:  # a word cut in two can tokenize longer: shorten until it fits
            question = question[:offsets[keep - 1][1]]
            ids = tokenizer(question, add_special_tokens=False)["input_ids"]
            keep -= 1
        fitted.append(question)
    return fitted, cut


def answer_tokens(offsets: Offsets, start_char: int, end_char: int) -> tuple[int, int]:
    """First and last token of the characters [start_char, end_char) in a window; (0, 0) (CLS) when the window
    does not hold all of them."""
    inside = [i for i, span in enumerate(offsets) if span is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return 0, 0
    first = max(i for i in inside if offsets[i][0] <= start_char)
    last = min(i for i in inside if offsets[i][1] >= end_char)
    return first, last


def build_features(tokenizer: Any, questions: list[str], contexts: list[str], max_length: int, stride: int,
                   answers: list[tuple[int, str]] | None = None) -> Features:
    """Windows for each (question, context); with ``answers`` ((start character, text) per example), labelled
    with ``start_positions`` / ``end_positions``."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"question answering needs a fast tokenizer (its offset mapping ties tokens to characters); "
                        f"{type(tokenizer).__name__} is not one: use a model that ships tokenizer.json")
    if not questions:
        return Features([], [], [])
    questions, cut = fit_questions(tokenizer, questions, question_budget(tokenizer, max_length, stride))
    encoded = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
    features = Features([], [], [], cut)
    for window, example in enumerate(encoded["overflow_to_sample_mapping"]):
        sequence = encoded.sequence_ids(window)
        offsets = [tuple(span) if part == 1 else None
                   for span, part in zip(encoded["offset_mapping"][window], sequence)]
        item = {key: encoded[key][window] for key in MODEL_INPUTS if key in encoded}
        if answers is not None:
            start, text = answers[example]
            item["start_positions"], item["end_positions"] = answer_tokens(offsets, start, start + len(text))
        features.inputs.append(item)
        features.example.append(example)
        features.offsets.append(offsets)
    return features
