"""A shared encoder with one classification head per task. The heads' logits sit side by side in one vector (task
t's classes at its offset); an example's logits outside its own task are masked, so the cross-entropy over the
whole vector is its task's cross-entropy, and argmax and the Trainer's metrics work on global class ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

MASKED = -1e4
META = "multitask.json"


class MultiHeadClassifier(torch.nn.Module):
    def __init__(self, encoder: Any, heads: dict[str, int], dropout: float = 0.1):
        super().__init__()
        self.encoder, self.config = encoder, encoder.config
        hidden = encoder.config.hidden_size
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden, size) for name, size in heads.items()})
        self.dropout = torch.nn.Dropout(dropout)
        sizes = list(heads.values())
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        mask = torch.zeros(len(sizes), sum(sizes), dtype=torch.bool)
        for task, (offset, size) in enumerate(zip(offsets, sizes)):
            mask[task, offset:offset + size] = True
        self.register_buffer("task_mask", mask, persistent=False)
        self.offsets = dict(zip(heads, offsets))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor,
                labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0]
        pooled = self.dropout(pooled)
        logits = torch.cat([head(pooled) for head in self.heads.values()], dim=-1).float()
        logits = logits.masked_fill(~self.task_mask[task_ids], MASKED)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save(self, folder: Path, tokenizer: Any, tasks: list[dict[str, Any]], max_length: int) -> None:
        """The encoder as a Hugging Face folder, the heads as safetensors, and what each head means."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder / "encoder")
        tokenizer.save_pretrained(folder / "encoder")
        save_file({k: v.contiguous() for k, v in self.heads.state_dict().items()}, str(folder / "heads.safetensors"))
        (folder / META).write_text(json.dumps({"tasks": tasks, "max_length": max_length}, indent=2), encoding="utf-8")


class Collator:
    """Pads a batch of encoded rows (``input_ids``, ``labels`` as global class ids, ``task_ids``)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([{"input_ids": r["input_ids"]} for r in rows], return_tensors="pt")
        batch["labels"] = torch.tensor([r["labels"] for r in rows])
        batch["task_ids"] = torch.tensor([r["task_ids"] for r in rows])
        return dict(batch)


class MultitaskPredictor:
    """``predict(texts, task)``: that task's label and probabilities per text, from a saved multi-task model."""

    def __init__(self, folder: str | Path):
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        self.tasks = {task["name"]: task["labels"] for task in meta["tasks"]}
        self.max_length = meta["max_length"]
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "encoder"))
        model = MultiHeadClassifier(AutoModel.from_pretrained(str(folder / "encoder")),
                                    {name: len(labels) for name, labels in self.tasks.items()})
        model.heads.load_state_dict(load_file(str(folder / "heads.safetensors")))
        self.model = model.eval()

    def predict(self, texts: list[str], task: str, batch_size: int = 64) -> list[dict[str, Any]]:
        if task not in self.tasks:
            from tuneforge.errors import UserError

            raise UserError(f"task {task!r}: this model's tasks are {', '.join(self.tasks)}")
        index, labels = list(self.tasks).index(task), self.tasks[task]
        offset = self.model.offsets[task]
        results = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[start:start + batch_size], truncation=True, max_length=self.max_length,
                                       padding=True, return_tensors="pt")
                ids = torch.full((len(batch["input_ids"]),), index)
                logits = self.model(batch["input_ids"], batch["attention_mask"], ids).logits
                probs = torch.softmax(logits[:, offset:offset + len(labels)], dim=-1)
                results += [{"label": labels[int(p.argmax())],
                             "probabilities": {label: round(float(x), 6) for label, x in zip(labels, p)}}
                            for p in probs]
        return results
