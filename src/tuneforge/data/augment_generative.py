"""Augmentation for generative data: copies of a training conversation whose prompts (the user turns) are changed by
one operation, the reference answers left as they are (with ``targets``, the assistant turns and raw documents are
changed too)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

from tuneforge.data.augment import Augmented, Translate, augment_text, within_ratio


def augment_examples(examples: list[Any], operations: list[str], copies: int, rate: float, seed: int,
                     targets: bool = False, translate: Translate | None = None,
                     max_length_ratio: float = 1.5) -> Augmented:
    """``copies`` augmented copies of every example (``formats.Example``), each by one of ``operations`` (seeded);
    a copy is kept when one of its changed turns differs from the source (and, for a round trip, every changed turn
    stays within ``max_length_ratio`` of its length)."""
    rng = random.Random(seed)
    plan = [(example, k, operations[(k + rng.randrange(len(operations))) % len(operations)])
            for example in examples for k in range(copies)]
    wanted = {text for example, _, op in plan if op == "back_translation" for text in _changed_texts(example, targets)}
    trips = dict(zip(sorted(wanted), translate(sorted(wanted)))) if wanted and translate else {}
    result = Augmented(rows=list(examples), made=Counter(), unchanged=Counter())
    for example, k, operation in plan:
        def change(text: str) -> str:
            return " ".join(trips.get(text, text).split()) if operation == "back_translation" \
                else augment_text(text, operation, rate, rng)

        copy, pairs = _changed(example, targets, change)
        if not pairs or all(" ".join(a.split()) == b for a, b in pairs):
            result.unchanged[operation] += 1
        elif operation == "back_translation" and not all(within_ratio(a, b, max_length_ratio) for a, b in pairs):
            result.rejected.setdefault("length_ratio", Counter())[operation] += 1
        else:
            result.rows.append(replace(copy, where=f"{example.where}#aug{k + 1}-{operation}"))
            result.made[operation] += 1
            if len(result.samples) < 8:
                result.samples.append({"operation": operation, "source": pairs[0][0], "augmented": pairs[0][1]})
    return result


def _changed_texts(example: Any, targets: bool) -> list[str]:
    texts = [m["content"] for m in example.messages if m["role"] == "user" or (targets and m["role"] == "assistant")]
    return texts + ([example.text] if targets and example.text else [])


def _changed(example: Any, targets: bool, change: Any) -> tuple[Any, list[tuple[str, str]]]:
    """A copy of ``example`` with its prompts (and with ``targets`` its answers or raw text) changed; the (before,
    after) pairs."""
    pairs: list[tuple[str, str]] = []
    messages = []
    for message in example.messages:
        if message["role"] == "user" or (targets and message["role"] == "assistant"):
            after = change(message["content"])
            pairs.append((message["content"], after))
            message = {**message, "content": after}
        messages.append(message)
    text = example.text
    if targets and text:
        text = change(text)
        pairs.append((example.text, text))
    return replace(example, messages=messages, text=text), pairs
