"""``tuneforge generate`` and ``tuneforge chat``: use a trained generative run (its chat template, its stop
tokens), answering prompts in batches or holding a conversation with streamed tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from tuneforge.errors import UserError
from tuneforge.tasks.generator import Generator


def load_generator(run_dir: str | Path, precision: str | None = None, **decoding: Any) -> Generator:
    """Load ``RUN_DIR/model``: a peft adapter on its base model, or a full model, with the run's template, computing
    in the run's precision unless ``precision`` says otherwise."""
    from tuneforge.tasks.generator import load_generator_from_meta
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import loading, read_model_meta, task_of

    model_dir, meta = read_model_meta(run_dir)
    if not task_spec(task_of(meta)).generates:
        raise UserError(f"{run_dir}: a {task_of(meta)} run labels text; use tuneforge predict")
    with loading(model_dir):
        return load_generator_from_meta(model_dir, meta, precision, **decoding)


def _stdout(text: str) -> None:
    print(text, end="", flush=True)


def chat_loop(generator: Generator, read: Callable[[str], str] = input, write: Callable[[str], None] = _stdout,
              system: str | None = None) -> list[dict[str, str]]:
    """Keep the conversation; /exit, /quit or end of input (Ctrl-D) stops; /reset starts over (and says so); an empty
    line is ignored."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            break
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            turns = sum(1 for m in messages if m["role"] == "user")
            messages = messages[:1] if system else []
            write(f"(conversation cleared: {turns} exchange{'s' * (turns != 1)} forgotten"
                  f"{'; the system message stays' if system else ''})\n")
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
