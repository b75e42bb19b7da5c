"""Atomic file writes: a partial file is never left where a finished one is expected."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # what open() would give (0644 under the usual umask), not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask alone must set one)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, strict_json(data, indent=2) + "\n")


def strict_json(data: Any, indent: int | None = None) -> str:
    """JSON that every parser accepts: a NaN or infinite number is written as null (never a bare ``NaN``)."""
    return json.dumps(finite(data), indent=indent, ensure_ascii=False, default=_jsonable, allow_nan=False)


def finite(value: Any) -> Any:
    """``value`` with every NaN/inf float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, paths: everything else is a bug and raises."""
    if hasattr(value, "tolist"):
        return finite(value.tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line and flush it, so a killed run keeps every line written before."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(strict_json(record) + "\n")
        handle.flush()


def cache_dir() -> Path:
    """Where tuneforge keeps what it builds once (converted data sets, composed models): $TUNEFORGE_CACHE, else
    ~/.cache/tuneforge."""
    return Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A run's train_log.jsonl (one JSON object per line); empty when there is none yet."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
