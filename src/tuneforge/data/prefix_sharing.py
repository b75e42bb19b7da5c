"""Shared-prefix packing: the prompt prefix that every example of a batch starts with (a fixed system prompt and
the template's opening tokens: 24 of SmolLM2's ~60-token chatterbot examples) is computed once per row instead of
once per example.

A row is ``[prefix] + suffix_1 + suffix_2 + ...`` with a 4-D attention mask: each suffix attends causally to
itself and to the prefix, never to another suffix; its position ids continue after the prefix, as if the example
were alone. Logits, loss and gradients are those of the examples computed separately (tested), because the
prefix carries no loss (every label in it, and the label of the first token after it, is -100: nothing is
predicted from inside it) and its hidden states are the same for every example of the row. The saving is
``(examples per row - 1) x prefix`` tokens of every layer's work.
"""

from __future__ import annotations

import os
from typing import Any

from tuneforge.data.chat import IGNORE
from tuneforge.data.packing import BatchPackingCollator, PackedRow, pack_balanced

MIN_PREFIX = 8  # fewer shared tokens are not worth a custom mask


def shared_prefix(items: list[dict[str, Any]]) -> int:
    """Length of the longest token prefix common to every example that carries no loss and predicts nothing (the
    label right after it is -100 too), leaving each example at least one token of its own."""
    if len(items) < 2:
        return 0
    common = len(os.path.commonprefix([item["input_ids"] for item in items]))
    common = min(common, min(len(item["input_ids"]) for item in items) - 1)
    for item in items:
        labels = item["labels"]
        free = next((i for i, label in enumerate(labels[:common + 1]) if label != IGNORE), common + 1)
        common = min(common, free - 1)
    return max(common, 0)


class SharedPrefixCollator:
    """A batch of single examples -> rows of ``[shared prefix] + suffixes`` (balanced, at most ``row_length``
    tokens) with the 4-D mask described above; a batch without a shared prefix of :data:`MIN_PREFIX` tokens is
    packed as :class:`BatchPackingCollator` does."""

    def __init__(self, pad_id: int, row_length: int):
        self.pad_id, self.row_length = pad_id, row_length
        self.plain = BatchPackingCollator(pad_id, row_length)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        prefix = shared_prefix(items)
        if prefix < MIN_PREFIX:
            return self.plain(items)
        head = {"input_ids": items[0]["input_ids"][:prefix], "labels": [IGNORE] * prefix}
        suffixes = [{"input_ids": item["input_ids"][prefix:], "labels": item["labels"][prefix:]} for item in items]
        rows = pack_balanced(suffixes, self.row_length - prefix)
        return self._tensors(head, rows, prefix, real=sum(len(item["input_ids"]) for item in items))

    def _tensors(self, head: dict[str, Any], rows: list[PackedRow], prefix: int, real: int) -> dict[str, Any]:
        import torch

        width = prefix + max(len(row.input_ids) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segments = torch.full((len(rows), width), -1, dtype=torch.long)  # -1 prefix, 0.. suffixes, pad: its own
        attention_sq = 0
        for r, row in enumerate(rows):
            size = prefix + len(row.input_ids)
            ids[r, :size] = torch.tensor(head["input_ids"] + row.input_ids)
            labels[r, :size] = torch.tensor(head["labels"] + row.labels)
            segment, start = 0, prefix
            for offset, position in enumerate(row.position_ids + [0]):
                index = prefix + offset
                if position == 0 and index > start:  # one suffix ends at index
                    segments[r, start:index] = segment
                    attention_sq += (prefix + index - start) ** 2 - prefix ** 2
                    segment, start = segment + 1, index
            positions[r, :prefix] = torch.arange(prefix)
            positions[r, prefix:size] = torch.tensor(row.position_ids) + prefix
            positions[r, size:] = torch.arange(width - size)
            segments[r, size:] = 10 ** 6  # the padding tail attends to itself only
            attention_sq += prefix ** 2
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same = segments[:, :, None] == segments[:, None, :]
        to_prefix = (segments[:, None, :] == -1) & (segments[:, :, None] < 10 ** 6)
        mask = (same | to_prefix) & causal
        computed = [prefix * len(rows) + sum(len(row.input_ids) for row in rows)]
        return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask[:, None],
                "use_cache": False, "tf_lengths": torch.tensor(computed), "tf_real": torch.tensor(real),
                "tf_attention": torch.tensor(attention_sq)}
