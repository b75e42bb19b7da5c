"""Preference data: pairs ``{prompt, chosen, rejected}``, KTO's unpaired ``{prompt, completion, label}`` and prompts
alone (PPO, GRPO), in TRL's names. Each is read into a :class:`Preference` (the prompt as messages, the answers as
text), cleaned, deduplicated and split on the prompt: every pair of one prompt lands in one split, so no prompt is
seen in training and judged at test time. Every record is kept or counted as dropped.

Prompts and answers are text or OpenAI message lists; without a ``prompt`` key, ``chosen`` and ``rejected`` are whole
conversations whose shared turns are the prompt (TRL's implicit prompt).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tuneforge.config.schema import CleanConfig, DataConfig
from tuneforge.data.formats import ROLE_ALIASES
from tuneforge.data.formats import _text as field_text
from tuneforge.data.generative import clean_turn
from tuneforge.data.sources import Record, load_records
from tuneforge.data.splitting import SPLITS
from tuneforge.errors import DataError

# format -> (required keys, optional keys)
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "preference": (("chosen", "rejected"), ("prompt", "system")),
    "unpaired-preference": (("prompt", "completion", "label"), ("system",)),
    "prompt-only": (("prompt",), ("system",)),
}
TRUE = {"true", "1", "yes", "good", "desirable", "chosen"}
FALSE = {"false", "0", "no", "bad", "undesirable", "rejected"}


@dataclass
class Preference:
    prompt: list[dict[str, str]]  # the conversation so far, ending with the user's turn
    chosen: str | None  # the preferred answer (KTO: the completion); None for a prompt alone
    rejected: str | None  # the answer liked less (pairs only)
    where: str
    label: bool | None = None  # KTO: whether ``chosen`` is desirable

    @property
    def key(self) -> str:
        """The prompt as one string: what the split and the leakage check group on."""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)


@dataclass
class PreferenceData:
    splits: dict[str, list[Preference]]
    format: str
    report: dict[str, Any]

    @property
    def pairs(self) -> bool:
        return self.format == "preference"


CONVERSATION_KEYS = ("conversations", "messages")  # LLaMA-Factory's and OpenAI's names for the turns so far


def detect(fields: dict[str, Any], columns: dict[str, str]) -> str:
    keys = set(fields)
    if "prompt" not in columns and "prompt" not in keys and keys & set(CONVERSATION_KEYS):
        keys.add("prompt")  # the conversation is the prompt (pairs), or the prompt and its completion (KTO)
        if "label" in keys and "completion" not in keys:
            keys.add("completion")
    for fmt in ("preference", "unpaired-preference", "prompt-only"):
        if all(columns.get(key, key) in keys for key in KEYS[fmt][0]):
            return fmt
    raise DataError(f"cannot tell the preference format from the keys ({', '.join(map(str, fields))}); expected "
                    f"prompt/chosen/rejected (pairs), prompt/completion/label (KTO) or prompt (PPO, GRPO): map "
                    f"yours with data.columns, or set data.dataset_format")


def prepare_preferences(config: DataConfig, seed: int, accepted: tuple[str, ...]) -> PreferenceData:
    """Read, parse, clean, deduplicate, sample and split. ``accepted``: the formats the task trains on (pairs also
    give KTO its unpaired rows and PPO/GRPO their prompts)."""
    records, file_format, bad = load_records(config.path, config.format, config.on_bad_rows, config.hf_split)
    fmt = detect(records[0].fields, config.columns) if config.dataset_format == "auto" else config.dataset_format
    if fmt not in KEYS:
        raise DataError(f"data.dataset_format {fmt!r} is not preference data; use preference, unpaired-preference "
                        f"or prompt-only (or auto)")
    if fmt not in accepted:
        raise DataError(f"{records[0].where}: this task trains on {' or '.join(accepted)} data, not {fmt} "
                        f"(keys {', '.join(map(str, records[0].fields))}); see README 'Preference tuning'")
    roles = {**ROLE_ALIASES, **{k.lower(): v for k, v in config.roles.items()}}
    dropped: Counter[str] = Counter({"malformed_row": len(bad)} if bad else {})
    modified: Counter[str] = Counter()
    kept: list[Preference] = []
    seen: set[str] = set()
    for record in records:
        item = parse(record, fmt, config.columns, roles)
        modified.update(_clean(item, config.clean))
        reason = _unusable(item, seen, config.clean.dedup_exact)
        if reason:
            dropped[reason] += 1
            continue
        kept.append(item)
    if config.max_rows and len(kept) > config.max_rows:
        dropped["not_sampled (data.max_rows)"] = len(kept) - config.max_rows
        kept = random.Random(seed).sample(kept, config.max_rows)
    splits = split_by_prompt(kept, (config.split.train, config.split.validation, config.split.test), seed)
    if not splits["train"]:
        raise DataError(f"{config.path}: no usable record is left for training (see data_report.json cleaning)")
    rows_read = len(records) + len(bad)
    assert rows_read == sum(map(len, splits.values())) + sum(dropped.values()), "every record is kept or counted"
    report = {
        "source": {"path": str(config.path), "format": file_format, "dataset_format": fmt, "rows_read": rows_read},
        "cleaning": {"modified": dict(modified), "dropped": dict(dropped), "dropped_total": sum(dropped.values()),
                     "examples": {"malformed_row": bad[:5]} if bad else {}},
        "rows_kept": sum(map(len, splits.values())),
        "splits": {name: {"rows": len(part), "prompts": len({p.key for p in part})} for name, part in splits.items()},
        "leakage": {"overlapping_prompts": _overlaps(splits)},  # 0 by construction: split on the prompt
        **({"answers": _answer_lengths(splits["train"])} if fmt != "prompt-only" else {}),
    }
    return PreferenceData(splits, fmt, report)


def parse(record: Record, fmt: str, columns: dict[str, str], roles: dict[str, str]) -> Preference:
    get = lambda key: record.fields.get(columns.get(key, key))  # noqa: E731
    turns = next((record.fields[k] for k in CONVERSATION_KEYS if isinstance(record.fields.get(k), list)), None)
    if turns is not None and get("prompt") is None:
        if fmt == "unpaired-preference" and get("completion") is None:  # messages ending with the judged answer
            get = lambda key, plain=get: turns if key == "completion" else plain(key)  # noqa: E731
        else:
            get = lambda key, plain=get: turns if key == "prompt" else plain(key)  # noqa: E731
    implicit = {"prompt"} if turns is not None else set()  # the prompt is the conversation's earlier turns
    missing = [columns.get(k, k) for k in KEYS[fmt][0] if get(k) is None and k not in implicit]
    if missing:
        raise DataError(f"{record.where}: format {fmt} expects keys {', '.join(columns.get(k, k) for k in KEYS[fmt][0])}"
                        f"; {', '.join(missing)} missing (found {', '.join(map(str, record.fields)) or 'none'}); "
                        f"set data.columns to map them")
    system = get("system")
    head = [{"role": "system", "content": _text(system, record, "system")}] if system else []
    if fmt == "prompt-only":
        return Preference(head + _prompt(get("prompt"), record, roles), None, None, record.where)
    if fmt == "unpaired-preference":
        prompt, completion = _split(get("prompt"), get("completion"), record, roles, "completion")
        return Preference(head + prompt, completion, None, record.where, label=_label(get("label"), record))
    prompt, chosen = _split(get("prompt"), get("chosen"), record, roles, "chosen")
    prompt_r, rejected = _split(get("prompt"), get("rejected"), record, roles, "rejected")
    if prompt != prompt_r:
        raise DataError(f"{record.where}: chosen and rejected continue different conversations; without a prompt "
                        f"key they must share every turn but the last (the answer)")
    return Preference(head + prompt, chosen, rejected, record.where)


def _split(prompt: Any, answer: Any, record: Record, roles: dict[str, str],
           key: str) -> tuple[list[dict[str, str]], str]:
    """(prompt messages, answer text): an answer given as messages is its last (assistant) turn; without a prompt,
    the turns before it are the prompt."""
    if isinstance(answer, dict):  # one message (LLaMA-Factory: {"from": "gpt", "value": ...})
        answer = [answer]
    if isinstance(answer, list):
        turns = _messages(answer, record, roles, key)
        if not turns or turns[-1]["role"] != "assistant":
            raise DataError(f"{record.where}: field {key!r} should end with an assistant turn")
        prefix, text = turns[:-1], turns[-1]["content"]
    else:
        prefix, text = [], _text(answer, record, key)
    if prompt is not None:
        return _prompt(prompt, record, roles) + prefix, text
    if not prefix:
        raise DataError(f"{record.where}: no prompt (give a prompt key, or {key} as a conversation whose earlier "
                        f"turns are the prompt)")
    return prefix, text


def _prompt(value: Any, record: Record, roles: dict[str, str]) -> list[dict[str, str]]:
    if isinstance(value, list):
        return _messages(value, record, roles, "prompt")
    return [{"role": "user", "content": _text(value, record, "prompt")}]


def _messages(turns: list[Any], record: Record, roles: dict[str, str], key: str) -> list[dict[str, str]]:
    out = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise DataError(f"{record.where}: {key} turn {number} should be an object with role and content")
        name, content = turn.get("role", turn.get("from")), turn.get("content", turn.get("value"))
        if name is None or content is None:
            raise DataError(f"{record.where}: {key} turn {number} has keys {', '.join(map(str, turn))}; expected "
                            f"role/content (or from/value)")
        role = roles.get(str(name).lower())
        if role is None:
            raise DataError(f"{record.where}: {key} turn {number} has role {name!r}; map it with data.roles")
        out.append({"role": role, "content": _text(content, record, key)})
    return out


def _text(value: Any, record: Record, key: str) -> str:
    return field_text(value, record.where, key)


def _label(value: Any, record: Record) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise DataError(f"{record.where}: label {value!r} is not true/false (desirable or not); use true or false")


def _clean(item: Preference, config: CleanConfig) -> list[str]:
    """As for chat data: unicode repaired, control characters removed, blanks collapsed, line breaks kept."""
    changed: list[str] = []
    for message in item.prompt:
        message["content"] = clean_turn(message["content"], config, changed)
    item.chosen = clean_turn(item.chosen, config, changed) if item.chosen is not None else None
    item.rejected = clean_turn(item.rejected, config, changed) if item.rejected is not None else None
    return sorted(set(changed))


def _unusable(item: Preference, seen: set[str], dedup: bool) -> str | None:
    """Why a record cannot train (empty prompt or answer, a pair whose answers are the same, a duplicate)."""
    if not any(m["content"].strip() for m in item.prompt):
        return "empty_prompt"
    if (item.chosen is not None and not item.chosen.strip()) or (item.rejected is not None
                                                                 and not item.rejected.strip()):
        return "empty_answer"
    if item.rejected is not None and item.chosen == item.rejected:
        return "chosen_equals_rejected"
    identity = f"{item.key}\x00{item.chosen}\x00{item.rejected}\x00{item.label}"
    if dedup and identity in seen:
        return "duplicate"
    seen.add(identity)
    return None


def split_by_prompt(items: list[Preference], shares: tuple[float, float, float],
                    seed: int) -> dict[str, list[Preference]]:
    """Train/validation/test by prompt: the prompts are ordered by a seeded hash and cut by the shares of pairs, so
    all pairs of one prompt share a split."""
    groups: dict[str, list[Preference]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}\x00{k}".encode()).hexdigest())
    total, cuts = len(items), (shares[0], shares[0] + shares[1])
    splits: dict[str, list[Preference]] = {name: [] for name in SPLITS}
    done = 0
    for key in order:
        position = done / max(total, 1)
        name = "train" if position < cuts[0] else "validation" if position < cuts[1] and shares[1] else "test"
        splits[name].extend(groups[key])
        done += len(groups[key])
    if not splits["test"] and len(splits["train"]) > 1:  # tiny data: the last prompt group is the test
        last = splits["train"][-1].key
        splits["test"] = [p for p in splits["train"] if p.key == last]
        splits["train"] = [p for p in splits["train"] if p.key != last]
    return splits


def _overlaps(splits: dict[str, list[Preference]]) -> dict[str, int]:
    keys = {name: {p.key for p in part} for name, part in splits.items()}
    return {f"{a}-{b}": len(keys[a] & keys[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}


def _answer_lengths(items: list[Preference]) -> dict[str, float]:
    """Mean words of chosen and rejected answers: a preference for length shows here (and the length baseline)."""
    chosen = [len(p.chosen.split()) for p in items if p.chosen is not None and p.label is not False]
    rejected = [len(p.rejected.split()) for p in items if p.rejected is not None]
    mean = lambda xs: round(sum(xs) / len(xs), 2) if xs else 0.0  # noqa: E731
    return {"chosen_words_mean": mean(chosen), "rejected_words_mean": mean(rejected)}
