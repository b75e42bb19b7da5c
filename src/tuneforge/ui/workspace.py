"""The UI's workspace: one folder that holds everything the UI reads and writes (configs, data, run folders, the
tracking store, the UI's own job logs). A path from the page that leads outside it is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet", ".pq", ".txt", ".conll", ".bio")
SKIPPED = {"runs", "mlflow", ".tuneforge-ui", "model", "checkpoints", ".git", "__pycache__", ".venv"}
OFFLINE_PREFIX = "offline:"  # a dataset shipped in an installed package (tuneforge.packages), not a user's file


class Workspace:
    """The folder the UI works in; ``inside`` checks every path the page hands over."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise UserError(f"--workspace {root}: not a folder (create it, or give an existing one)")
        for folder in (self.configs, self.data, self.runs, self.state):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def state(self) -> Path:
        """The UI's own files: job logs and records, Gradio's upload cache."""
        return self.root / ".tuneforge-ui"

    @property
    def tracking_dir(self) -> Path:
        """The embedded tracking store that runs started here write (tracking.dir's default, from this folder)."""
        return self.runs / "mlflow"

    def inside(self, path: str | Path, what: str = "path") -> Path:
        """``path`` (relative to the workspace, or absolute) resolved; one line if it leads outside."""
        text = str(path).strip()
        if not text:
            raise UserError(f"{what}: empty; give a file in the workspace {self.root}")
        resolved = (self.root / Path(text).expanduser()).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise UserError(f"{what} {text!r} is outside the workspace {self.root}; the UI only reads and writes "
                            f"files inside it (copy the file there, or start tuneforge ui --workspace elsewhere)")
        return resolved

    def relative(self, path: str | Path) -> str:
        """How a config names a workspace file: relative to the workspace (runs start there)."""
        resolved = Path(path).resolve()
        return str(resolved.relative_to(self.root)) if self.root in resolved.parents else str(resolved)

    def check_config_paths(self, config: dict[str, Any]) -> None:
        """The paths a config names (data, a model folder, the run folder, the tracking store) must be inside."""
        data = (config.get("data") or {}).get("path")
        if isinstance(data, str) and data and not data.startswith(OFFLINE_PREFIX):
            self.inside(data, "data.path")
        model = (config.get("model") or {}).get("name")
        if isinstance(model, str) and _looks_local(model, self.root):
            self.inside(model, "model.name")
        for key, value in (("output_dir", config.get("output_dir")),
                           ("tracking.dir", (config.get("tracking") or {}).get("dir"))):
            if isinstance(value, str) and value:
                self.inside(value, key)

    def data_files(self, limit: int = 200) -> list[str]:
        """Data files under the workspace (not inside run folders, the tracking store or hidden folders)."""
        import os

        found: list[str] = []
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED and not d.startswith("."))
            for name in sorted(files):
                if Path(name).suffix.lower() in DATA_SUFFIXES and len(found) < limit:
                    found.append(str((Path(folder) / name).relative_to(self.root)))
        return found

    def config_files(self) -> list[str]:
        files = sorted(self.configs.glob("*.y*ml")) + sorted(self.root.glob("*.y*ml"))
        return [str(p.relative_to(self.root)) for p in files]

    def run_folders(self) -> dict[str, Path]:
        """Run folders under runs/ (a folder with config.yaml and a training log or metrics), by folder name;
        search trials too. Newest first."""
        folders = [p.parent for p in self.runs.rglob("config.yaml")
                   if (p.parent / "train_log.jsonl").exists() or (p.parent / "metrics.json").exists()]
        folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return {p.name: p for p in folders if "checkpoints" not in p.parts}

    def run_folder(self, name: str) -> Path:
        folders = self.run_folders()
        if name in folders:
            return folders[name]
        folder = self.inside(name, "run folder")
        if not (folder / "config.yaml").exists():
            raise UserError(f"run folder {name!r}: not found in {self.runs} (no config.yaml)")
        return folder


def _looks_local(name: str, root: Path) -> bool:
    """A model name that is a path (a folder to load), not a hub id or an offline short name."""
    return name.startswith(("/", ".", "~")) or (root / name).exists()


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSONL file being appended to (a half-written last line is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
