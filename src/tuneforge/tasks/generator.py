"""A generative run's model as a :class:`Generator`: its chat template and stop tokens, answers to prompts in
batches, or a conversation streamed token by token (what generate, chat and the server call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneforge.config.schema import GenerationConfig


@dataclass
class Generator:
    model: Any
    tokenizer: Any
    formatter: Any  # ChatFormatter, or None for seq2seq
    stop_ids: list[int]
    config: GenerationConfig = field(default_factory=GenerationConfig)
    system_prompt: str | None = None  # the system message the run trained with, put before a conversation without one
    encoder_decoder: bool = False  # else a decoder: with a chat template (formatter), or continuing raw text

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """A chat run's template (with the run's system prompt when the conversation has none); the text itself for a
        seq2seq source or a raw-text run (continued pretraining, which continues what it is given)."""
        if self.formatter is not None:
            return self.formatter.prompt_ids(self.with_system(messages))
        source = "\n\n".join(m["content"] for m in messages if m["role"] != "system")
        return self.tokenizer(source, truncation=True, max_length=512)["input_ids"]

    def with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """``messages`` with the run's system prompt in front when they have none (as every training example had)."""
        if self.system_prompt and self.formatter is not None and not any(m["role"] == "system" for m in messages):
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def generate(self, prompts: list[str], system: str | None = None) -> list[dict[str, Any]]:
        from tuneforge.evaluation.generation import generate

        head = [{"role": "system", "content": system}] if system else []
        ids = [self.prompt_ids(head + [{"role": "user", "content": p}]) for p in prompts]
        out = generate(self.model, self.tokenizer, ids, self.config, self.stop_ids, self.encoder_decoder)
        return [{"prompt": p, "output": g.text, "ended": g.ended, "new_tokens": g.new_tokens}
                for p, g in zip(prompts, out)]

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        """The assistant's answer to a conversation, piece by piece as tokens arrive."""
        from threading import Thread

        import torch
        from transformers import TextIteratorStreamer

        ids = torch.tensor([self.prompt_ids(messages)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=not self.encoder_decoder, skip_special_tokens=True)
        c = self.config
        options = dict(max_new_tokens=c.max_new_tokens, do_sample=c.do_sample, num_beams=1,
                       eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id or self.stop_ids[0],
                       repetition_penalty=c.repetition_penalty)
        if c.do_sample:
            options.update(temperature=c.temperature, top_p=c.top_p, top_k=c.top_k)
        thread = Thread(target=self.model.generate, kwargs=dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                                streamer=streamer, **options))
        thread.start()
        yield from streamer
        thread.join()


def load_generator_from_meta(model_dir: Path, meta: dict[str, Any], precision: str | None = None,
                             **decoding: Any) -> Generator:
    """A generative run's model folder and its ``tuneforge.json`` as a :class:`Generator`."""
    import transformers
    from transformers import AutoTokenizer

    from tuneforge.methods.trained import load_trained
    from tuneforge.tasks.spec import TASKS

    auto = getattr(transformers, TASKS[meta["task"]].auto_class)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return generator_for(load_trained(model_dir, meta, auto, precision), tokenizer, meta, **decoding)


def generator_for(model: Any, tokenizer: Any, meta: dict[str, Any], **decoding: Any) -> Generator:
    """A loaded model as a run's :class:`Generator`: the run's template, stop tokens, stop strings and system prompt
    (from its ``tuneforge.json``; a base model's own template when ``meta`` is empty), ``decoding`` over them."""
    from tuneforge.data.chat import ChatFormatter

    formatter = None
    template = meta.get("template", "auto")  # a raw-text run recorded none: it continues text, no template
    if not model.config.is_encoder_decoder and template is not None:  # a chat decoder reads its prompts templated
        formatter = ChatFormatter(tokenizer, "auto" if template == "tokenizer" else template)
    stop = meta.get("stop_token_ids") or (formatter.stop_token_ids if formatter is not None and not meta else None) \
        or [tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id]
    decoding = {"stop_strings": meta.get("stop_strings") or [], **{k: v for k, v in decoding.items() if v is not None}}
    return Generator(model.eval(), tokenizer, formatter, stop, GenerationConfig(**decoding), meta.get("system_prompt"),
                     bool(model.config.is_encoder_decoder))
