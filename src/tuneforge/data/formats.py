"""Generative dataset formats, detected from a record's keys and parsed into one internal conversation.

alpaca (instruction/input/output), sharegpt (conversations of from/value), OpenAI messages (role/content),
prompt/completion and raw text all become an :class:`Example`: a list of ``{"role", "content"}`` messages
(system/user/assistant, ending with an assistant turn) or, for raw text, one document. ``data.columns`` maps
a format's keys to the user's column names; ``data.roles`` maps role names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tuneforge.data.sources import Record
from tuneforge.errors import DataError

ROLE_ALIASES = {"user": "user", "human": "user", "question": "user", "prompter": "user",
                "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                "chatgpt": "assistant", "answer": "assistant", "system": "system"}

# format -> (required keys, optional keys), in the names used when data.columns maps nothing
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alpaca": (("instruction", "output"), ("input", "system")),
    "sharegpt": (("conversations",), ("system",)),
    "messages": (("messages",), ()),
    "prompt-completion": (("prompt", "completion"), ("system",)),
    "text": (("text",), ()),
}


@dataclass
class Example:
    messages: list[dict[str, str]]  # empty for raw text
    where: str
    text: str | None = None  # raw text (continued pretraining)

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Everything before the last assistant turn: what a model is asked at test time."""
        return self.messages[:-1]

    @property
    def reference(self) -> str:
        return self.messages[-1]["content"] if self.messages else (self.text or "")


def detect(fields: dict[str, Any], columns: dict[str, str]) -> str:
    """The format whose required keys (after column mapping) a record has."""
    keys = set(fields)
    if {"chosen", "rejected"} <= keys:
        raise DataError("records with chosen/rejected are preference pairs: train them with model.task=dpo (or "
                        "reward-model, kto, orpo); this task needs sft data (messages, alpaca, sharegpt, "
                        "prompt/completion or text)")
    for fmt in ("messages", "sharegpt", "alpaca", "prompt-completion"):
        if all(columns.get(key, key) in keys for key in KEYS[fmt][0]):
            return fmt
    if columns.get("text", "text") in keys and "label" not in keys:
        return "text"
    return "labelled"


def parse_examples(records: list[Record], fmt: str, columns: dict[str, str], roles: dict[str, str],
                   system_prompt: str | None = None) -> tuple[list[Example], str]:
    """Parse every record; a record of the wrong shape stops with the format expected, the keys found and
    where it is."""
    if fmt == "auto":
        fmt = detect(records[0].fields, columns)
        if fmt == "labelled":
            found = ", ".join(map(str, records[0].fields))
            raise DataError(f"{records[0].where}: cannot tell the generative format from the keys ({found}); "
                            f"set data.dataset_format (alpaca | sharegpt | messages | prompt-completion | text) "
                            f"and data.columns")
    if fmt not in PARSERS:
        raise DataError(f"data.dataset_format {fmt!r} is not a generative format "
                        f"(use one of {', '.join(PARSERS)})")
    role_map = {**ROLE_ALIASES, **{k.lower(): v for k, v in roles.items()}}
    parse = PARSERS[fmt]
    examples = []
    for record in records:
        _check_keys(record, fmt, columns)
        example = parse(record, columns, role_map)
        if system_prompt and example.messages and example.messages[0]["role"] != "system":
            example.messages.insert(0, {"role": "system", "content": system_prompt})
        examples.append(example)
    return examples, fmt


def _check_keys(record: Record, fmt: str, columns: dict[str, str]) -> None:
    required, optional = KEYS[fmt]
    missing = [columns.get(key, key) for key in required if columns.get(key, key) not in record.fields]
    if missing:
        expected = ", ".join(columns.get(k, k) for k in required)
        extra = f" (optional: {', '.join(columns.get(k, k) for k in optional)})" if optional else ""
        found = ", ".join(map(str, record.fields)) or "none"
        raise DataError(f"{record.where}: format {fmt} expects keys {expected}{extra}; found {found} "
                        f"(set data.columns to map them, or data.dataset_format)")


def _text(value: Any, where: str, key: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (list, dict)):
        raise DataError(f"{where}: field {key!r} should be text, got a {type(value).__name__}")
    return str(value)


def _alpaca(record: Record, columns: dict[str, str], roles: dict[str, str]) -> Example:
    get = lambda key: _text(record.fields.get(columns.get(key, key)), record.where, key)  # noqa: E731
    user = get("instruction")
    if get("input").strip():
        user = f"{user}\n\n{get('input')}"
    messages = [{"role": "system", "content": get("system")}] if get("system").strip() else []
    return Example(messages + [{"role": "user", "content": user}, {"role": "assistant", "content": get("output")}],
                   record.where)


def _prompt_completion(record: Record, columns: dict[str, str], roles: dict[str, str]) -> Example:
    prompt = record.fields[columns.get("prompt", "prompt")]
    completion = record.fields[columns.get("completion", "completion")]
    system = _text(record.fields.get(columns.get("system", "system")), record.where, "system")
    head = [{"role": "system", "content": system}] if system.strip() else []
    if isinstance(prompt, list):  # TRL's conversational prompt/completion: lists of messages
        turns = _turns(prompt + (completion if isinstance(completion, list) else
                                 [{"role": "assistant", "content": completion}]), record, columns, roles)
        return Example(head + turns, record.where)
    return Example(head + [{"role": "user", "content": _text(prompt, record.where, "prompt")},
                           {"role": "assistant", "content": _text(completion, record.where, "completion")}],
                   record.where)


def _conversation(key: str) -> Callable[[Record, dict[str, str], dict[str, str]], Example]:
    def parse(record: Record, columns: dict[str, str], roles: dict[str, str]) -> Example:
        turns = record.fields[columns.get(key, key)]
        if not isinstance(turns, list):
            raise DataError(f"{record.where}: field {columns.get(key, key)!r} should be a list of turns, got "
                            f"{type(turns).__name__}")
        system = _text(record.fields.get(columns.get("system", "system")), record.where, "system")
        head = [{"role": "system", "content": system}] if system.strip() else []
        return Example(head + _turns(turns, record, columns, roles), record.where)

    return parse


def _turns(turns: list[Any], record: Record, columns: dict[str, str], roles: dict[str, str]) -> list[dict[str, str]]:
    """sharegpt's from/value and OpenAI's role/content turns -> messages; the last turn must be the assistant's."""
    role_key, content_key = columns.get("role"), columns.get("content")
    messages = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise DataError(f"{record.where}: turn {number} should be an object with role/content (or from/value)")
        role = turn.get(role_key) if role_key else turn.get("role", turn.get("from"))
        content = turn.get(content_key) if content_key else turn.get("content", turn.get("value"))
        if role is None or content is None:
            raise DataError(f"{record.where}: turn {number} has keys {', '.join(map(str, turn))}; expected "
                            f"role/content or from/value (set data.columns.role and data.columns.content)")
        canonical = roles.get(str(role).lower())
        if canonical is None:
            raise DataError(f"{record.where}: turn {number} has role {role!r}; map it with data.roles, "
                            f"e.g. {{{role}: assistant}}")
        messages.append({"role": canonical, "content": _text(content, record.where, "content")})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # trailing user turns have no answer to learn
    return messages


def _raw_text(record: Record, columns: dict[str, str], roles: dict[str, str]) -> Example:
    return Example([], record.where, text=_text(record.fields.get(columns.get("text", "text")), record.where, "text"))


PARSERS: dict[str, Callable[[Record, dict[str, str], dict[str, str]], Example]] = {
    "alpaca": _alpaca,
    "sharegpt": _conversation("conversations"),
    "messages": _conversation("messages"),
    "prompt-completion": _prompt_completion,
    "text": _raw_text,
}
