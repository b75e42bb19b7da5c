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

    @property
    def encoder_decoder(self) -> bool:
        return self.formatter is None

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        if self.formatter is not None:
            return self.formatter.prompt_ids(messages)
        source = "\n\n".join(m["content"] for m in messages if m["role"] != "system")
        return self.tokenizer(source, truncation=True, max_length=512)["input_ids"]

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
    from transformers import AutoTokenizer

    import transformers

    from tuneforge.data.chat import ChatFormatter
    from tuneforge.tasks.spec import TASKS

    auto = getattr(transformers, TASKS[meta["task"]].auto_class)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    from tuneforge.methods.trained import load_trained


    model = load_trained(model_dir, meta, auto, precision)
    formatter = None
    if not model.config.is_encoder_decoder:  # a decoder reads its prompts through the run's chat template
        formatter = ChatFormatter(tokenizer, meta.get("template") if meta.get("template") != "tokenizer" else "auto")
    stop = meta.get("stop_token_ids") or [tokenizer.sep_token_id if tokenizer.sep_token_id is not None
                                          else tokenizer.eos_token_id]
    config = GenerationConfig(**{k: v for k, v in decoding.items() if v is not None})
    return Generator(model.eval(), tokenizer, formatter, stop, config)
