"""Chat templates, loss masking and the template lint.

A conversation is rendered with the tokenizer's own chat template (or a named one) and tokenized segment by
segment, so that the labels keep exactly the assistant turns (each with its end-of-turn token: the model
learns to stop) and mask everything else with -100. The lint renders every example before training and
counts what would go wrong: no end token, end token cut off by truncation, an untrained end token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.formats import Example
from tuneforge.errors import DataError

IGNORE = -100

TEMPLATES = {
    "chatml": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "plain": "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
             "{% elif m['role'] == 'user' %}### User:\n{{ m['content'] }}\n\n"
             "{% else %}### Assistant:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}### Assistant:\n{% endif %}",
    "alpaca": "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
              "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n\n"
              "{% else %}### Response:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}### Response:\n{% endif %}",
}
_PROBE = "Zqxj answer 7"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


@dataclass
class LintReport:
    template: str
    end_token: str | None
    examples: int = 0
    end_token_learned: int = 0  # examples whose labels contain the end token
    truncated: int = 0
    dropped_no_target: int = 0
    end_token_untrained: bool = False
    warnings: list[str] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # indices of the examples that were encoded

    def as_dict(self) -> dict[str, Any]:
        n = max(self.examples, 1)
        return {"template": self.template, "end_token": self.end_token, "examples": self.examples,
                "end_token_in_labels": self.end_token_learned,
                "end_token_in_labels_pct": round(100 * self.end_token_learned / n, 2),
                "truncated": self.truncated, "truncated_pct": round(100 * self.truncated / n, 2),
                "dropped_no_target": self.dropped_no_target, "end_token_untrained": self.end_token_untrained,
                "warnings": self.warnings}


class ChatFormatter:
    """Renders conversations for one tokenizer and template; knows the token that ends an assistant turn."""

    def __init__(self, tokenizer: Any, template: str = "auto"):
        self.tokenizer = tokenizer
        self.template_name = self._choose(template)
        self.template = tokenizer.chat_template if self.template_name == "tokenizer" else TEMPLATES[self.template_name]
        self.end_token_id = self._end_token()
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        bos = tokenizer.bos_token_id
        self.prepend_bos = bos is not None and probe[:1] == [bos] and bos not in tokenizer("a", add_special_tokens=False)["input_ids"]

    def _choose(self, template: str) -> str:
        if template == "auto":
            if getattr(self.tokenizer, "chat_template", None):
                return "tokenizer"
            vocab = self.tokenizer.get_vocab()
            return "chatml" if "<|im_end|>" in vocab and "<|im_start|>" in vocab else "plain"
        if template not in TEMPLATES:
            raise DataError(f"data.template {template!r} is unknown (auto | {' | '.join(TEMPLATES)})")
        if template == "chatml" and "<|im_end|>" not in self.tokenizer.get_vocab():
            raise DataError("data.template chatml needs <|im_start|>/<|im_end|> tokens, which this tokenizer lacks; "
                            "use data.template=plain")
        return template

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        eos = self.tokenizer.eos_token or self.tokenizer.sep_token or ""
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, eos_token=eos)
        return text if isinstance(text, str) else text[0]

    def _end_token(self) -> int | None:
        """The first special token the template puts after an assistant's words."""
        rendered = self.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}])
        suffix = rendered.split(_PROBE, 1)[1] if _PROBE in rendered else ""
        special = set(self.tokenizer.all_special_ids) | {
            i for i, t in getattr(self.tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
        for token_id in self.tokenizer(suffix, add_special_tokens=False)["input_ids"]:
            if token_id in special:
                return int(token_id)
        return None

    @property
    def stop_token_ids(self) -> list[int]:
        ids = [self.end_token_id, self.tokenizer.eos_token_id]
        return sorted({int(i) for i in ids if i is not None})

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a prompt ending where the assistant's answer starts (for generation)."""
        ids = self._ids(self.render(messages, add_generation_prompt=True))
        return ([self.tokenizer.bos_token_id] + ids) if self.prepend_bos else ids

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def segments(self, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
        """The rendered conversation cut into (text, is_assistant_turn) pieces, from prefix renders."""
        full = self.render(messages)
        pieces, position = [], 0
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(self.render(messages[:index], add_generation_prompt=True))
            end = len(self.render(messages[:index + 1]))
            if not (position <= start <= end <= len(full)):
                raise DataError("the chat template does not render conversations incrementally, so assistant turns "
                                "cannot be located; set data.loss_on=all or data.template=chatml|plain")
            pieces += [(full[position:start], False), (full[start:end], True)]
            position = end
        pieces.append((full[position:], False))
        return [(text, learn) for text, learn in pieces if text]

    def encode(self, messages: list[dict[str, str]], max_length: int, loss_on: str = "completion") -> Encoded:
        ids: list[int] = [self.tokenizer.bos_token_id] if self.prepend_bos else []
        labels: list[int] = [IGNORE] * len(ids)
        for text, learn in self.segments(messages):
            piece = self._ids(text)
            ids += piece
            labels += piece if (learn or loss_on == "all") else [IGNORE] * len(piece)
        truncated = len(ids) > max_length
        ids, labels = ids[:max_length], labels[:max_length]
        if labels:
            labels[0] = IGNORE  # nothing predicts the first token (and packing must not learn across examples)
        return Encoded(ids, labels, truncated)


def encode_text(tokenizer: Any, text: str, block: int) -> list[Encoded]:
    """A raw document for continued pretraining: its tokens plus EOS, cut into blocks of at most ``block``."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    blocks = []
    for start in range(0, len(ids), block):
        piece = ids[start:start + block]
        if len(piece) > 1:
            blocks.append(Encoded(piece, [IGNORE] + piece[1:]))
    return blocks


def encode_examples(formatter: ChatFormatter, examples: list[Example], max_length: int,
                    loss_on: str) -> tuple[list[Encoded], LintReport]:
    """Encode every example and lint the result. Raises when the template cannot teach the model to stop."""
    report = LintReport(template=formatter.template_name, end_token=None)
    tokenizer = formatter.tokenizer
    if formatter.end_token_id is None:
        raise DataError(f"template {formatter.template_name}: an assistant turn does not end with an end-of-turn "
                        f"or EOS token, so the model would never learn to stop; use a template that ends turns "
                        f"with one (data.template=chatml|plain)")
    report.end_token = tokenizer.convert_ids_to_tokens(formatter.end_token_id)
    encoded = []
    for index, example in enumerate(examples):
        item = formatter.encode(example.messages, max_length, loss_on)
        report.examples += 1
        report.truncated += item.truncated
        if all(label == IGNORE for label in item.labels):
            report.dropped_no_target += 1
            continue
        report.end_token_learned += formatter.end_token_id in item.labels
        report.kept.append(index)
        encoded.append(item)
    if report.truncated:
        report.warnings.append(f"{report.truncated} of {report.examples} examples "
                               f"({100 * report.truncated / max(report.examples, 1):.1f}%) are longer than "
                               f"data.max_length={max_length} and were cut (their end token is lost)")
    return encoded, report


def end_token_untrained(model: Any, token_id: int) -> bool:
    """Unsloth's check: a token whose input embedding is (near) zero or equal to the mean embedding was never
    trained, so the base model cannot produce it until fine-tuning teaches it."""
    import torch

    weights = model.get_input_embeddings().weight.detach().float()
    if token_id >= weights.shape[0]:
        return True
    row = weights[token_id]
    median = weights.norm(dim=1).median()
    return bool(row.norm() < 0.05 * median or torch.allclose(row, weights.mean(dim=0), atol=1e-6))
