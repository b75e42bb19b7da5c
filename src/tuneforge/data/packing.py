"""Sequence packing and the collators that batch encoded examples.

Packing puts short examples into rows of ``row_length`` tokens (best-fit decreasing, as TRL's "bfd"). Each
example keeps its own position ids, restarting at 0, and no attention mask is passed: transformers then
detects the packed sequences from the position ids and builds a block-diagonal causal mask (when no KV cache
is used: the collator says so), so no token attends across examples, and the cost of a row is bounded by its length. The first label of every example is
-100, so no loss is learned across an example boundary.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from tuneforge.data.chat import IGNORE, Encoded


@dataclass
class PackedRow:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def pack(examples: list[Encoded], row_length: int) -> list[PackedRow]:
    """Best-fit decreasing: longest example first, into the row with the least room that still fits it."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    rows: list[list[int]] = []  # example indices per row
    room: list[tuple[int, int]] = []  # (free tokens, row index), kept sorted
    for index in order:
        size = len(examples[index].input_ids)
        slot = bisect.bisect_left(room, (size, -1))
        if slot < len(room):
            free, row = room.pop(slot)
        else:
            free, row = row_length, len(rows)
            rows.append([])
        rows[row].append(index)
        bisect.insort(room, (free - size, row))
    packed = []
    for members in rows:
        row = PackedRow([], [], [])
        for index in sorted(members):
            example = examples[index]
            row.input_ids += example.input_ids
            row.labels += example.labels
            row.position_ids += list(range(len(example.input_ids)))
        packed.append(row)
    return packed


def pack_balanced(examples: list[Any], row_length: int) -> list[PackedRow]:
    """One batch into as few rows of at most ``row_length`` as hold it, balanced (longest first, each into the
    least-filled row that still has room), so that padding the rows to the longest costs little."""
    sizes = [len(e["input_ids"]) for e in examples]
    count = max(1, -(-sum(sizes) // row_length))
    rows: list[list[int]] = [[] for _ in range(count)]
    loads = [0] * count
    for index in sorted(range(len(examples)), key=lambda i: -sizes[i]):
        fits = [r for r in range(len(rows)) if loads[r] + sizes[index] <= row_length]
        if not fits:
            rows.append([])
            loads.append(0)
            fits = [len(rows) - 1]
        row = min(fits, key=lambda r: loads[r])
        rows[row].append(index)
        loads[row] += sizes[index]
    packed = []
    for members in rows:
        if members:
            row = PackedRow([], [], [])
            for index in sorted(members):
                row.input_ids += examples[index]["input_ids"]
                row.labels += examples[index]["labels"]
                row.position_ids += list(range(sizes[index]))
            packed.append(row)
    return packed


def padding_share(lengths: list[int], batch_size: int, row_length: int | None = None) -> float:
    """Share of the tokens in padded batches that are padding: batches in the given order, each padded to its
    longest member."""
    total = real = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start:start + batch_size]
        total += max(batch) * len(batch)
        real += sum(batch)
    return round(1 - real / total, 4) if total else 0.0


class PackedCollator:
    """Rows of packed examples -> a batch; the tail of a short row is one more segment of padding (its own
    positions from 0, labels -100), so it never joins an example's attention."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(row["input_ids"]) for row in rows)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
        lengths = [example_lengths(row["position_ids"]) for row in rows]
        for row in rows:
            gap = width - len(row["input_ids"])
            batch["input_ids"].append(row["input_ids"] + [self.pad_id] * gap)
            batch["labels"].append(row["labels"] + [IGNORE] * gap)
            batch["position_ids"].append(row["position_ids"] + list(range(gap)))
        most = max(len(row) for row in lengths)
        # no KV cache: transformers only turns packed position ids into a block-diagonal mask when there is none
        # (models default to use_cache=True even in training, which would let examples attend to each other).
        # tf_lengths (each row's example lengths) is for the speed meter; the trainer drops it before the model.
        return {**{key: torch.tensor(value) for key, value in batch.items()}, "use_cache": False,
                "tf_lengths": torch.tensor([row + [0] * (most - len(row)) for row in lengths])}


def example_lengths(position_ids: list[int]) -> list[int]:
    """Lengths of the examples of a packed row: positions restart at 0 with each one."""
    starts = [i for i, position in enumerate(position_ids) if position == 0] + [len(position_ids)]
    return [end - start for start, end in zip(starts, starts[1:])]


class PaddedCollator:
    """Examples padded to the longest in the batch with an attention mask (packing off, or seq2seq)."""

    def __init__(self, pad_id: int, label_key: str = "labels"):
        self.pad_id, self.label_key = pad_id, label_key

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(item["input_ids"]) for item in items)
        out: dict[str, Any] = {
            "input_ids": torch.tensor([i["input_ids"] + [self.pad_id] * (width - len(i["input_ids"])) for i in items]),
            "attention_mask": torch.tensor([[1] * len(i["input_ids"]) + [0] * (width - len(i["input_ids"]))
                                            for i in items]),
        }
        if "labels" in items[0]:
            label_width = max(len(item["labels"]) for item in items)
            out["labels"] = torch.tensor([i["labels"] + [IGNORE] * (label_width - len(i["labels"])) for i in items])
        return out


class BatchPackingCollator:
    """A batch of single examples -> packed rows (:func:`pack_balanced`): the batch is the same set of examples as
    unpacked, without its padding."""

    def __init__(self, pad_id: int, row_length: int):
        self.rows, self.row_length = PackedCollator(pad_id), row_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.rows([vars(row) for row in pack_balanced(items, self.row_length)])


def batch_packing_padding(lengths: list[int], batch_size: int, row_length: int, seed: int = 0) -> float:
    """Expected padding share of :class:`BatchPackingCollator` over shuffled batches of ``batch_size``."""
    import random

    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    real = computed = 0
    for start in range(0, len(order), batch_size):
        batch = [{"input_ids": [0] * lengths[i], "labels": []} for i in order[start:start + batch_size]]
        rows = pack_balanced(batch, row_length)
        real += sum(len(row.input_ids) for row in rows)
        computed += max(len(row.input_ids) for row in rows) * len(rows)
    return round(1 - real / computed, 4) if computed else 0.0
