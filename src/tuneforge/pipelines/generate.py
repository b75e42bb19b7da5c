"""``tuneforge generate`` and ``tuneforge chat``: use a trained generative run (its chat template, its stop
tokens), answering prompts in batches or holding a conversation with streamed tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tuneforge.config.schema import GenerationConfig
from tuneforge.errors import UserError


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


def load_generator(run_dir: str | Path, precision: str | None = None, **decoding: Any) -> Generator:
    """Load ``RUN_DIR/model``: a peft adapter on its base model, or a full model, with the run's template, computing
    in the run's precision unless ``precision`` says otherwise."""

    model_dir = Path(run_dir) / "model" if (Path(run_dir) / "model").is_dir() else Path(run_dir)
    meta_path = model_dir / "tuneforge.json"
    if not meta_path.exists():
        raise UserError(f"{run_dir}: not a tuneforge run folder (no model/tuneforge.json)")
    meta = json.loads(meta_path.read_text())
    from tuneforge.tasks.registry import task_spec

    if not task_spec(meta["task"]).generates:
        raise UserError(f"{run_dir}: a {meta['task']} run labels text; use tuneforge predict")
    return load_generator_from_meta(model_dir, meta, precision, **decoding)


def load_generator_from_meta(model_dir: Path, meta: dict[str, Any], precision: str | None = None,
                             **decoding: Any) -> Generator:
    """A generative run's model folder and its ``tuneforge.json`` as a :class:`Generator`."""
    from transformers import AutoTokenizer

    import transformers

    from tuneforge.data.chat import ChatFormatter
    from tuneforge.tasks.registry import task_spec

    auto = getattr(transformers, task_spec(meta["task"]).auto_class)
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


def _stdout(text: str) -> None:
    print(text, end="", flush=True)


def chat_loop(generator: Generator, read: Callable[[str], str] = input, write: Callable[[str], None] = _stdout,
              system: str | None = None) -> list[dict[str, str]]:
    """Keep the conversation; an empty line, /exit or end of input stops; /reset starts over."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            break
        if line in ("", "/exit", "/quit"):
            break
        if line == "/reset":
            messages = messages[:1] if system else []
            continue
        messages.append({"role": "user", "content": line})
        write("bot> ")
        answer = "".join(_echo(generator.stream(messages), write)).strip()
        messages.append({"role": "assistant", "content": answer})
    return messages


def _echo(pieces: Iterator[str], write: Callable[[str], None]) -> Iterator[str]:
    for piece in pieces:
        write(piece)
        yield piece
    write("\n")
