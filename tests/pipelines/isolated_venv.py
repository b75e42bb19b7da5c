"""A cloud SDK in a virtual environment of its own, built once and kept under ~/.cache/tuneforge, so that its pins
(SkyPilot's click<8.2 and uvicorn<0.36, the Azure and Google SDKs' trees) never touch the project's environment.

``venv_python("skypilot", "skypilot==0.14.1")`` returns that environment's python, building it on first use (a file
lock keeps two test processes from building it at once); when pip cannot reach the package index the calling test is
skipped with pip's own last lines as the reason."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))
# pip's words when it reached no index; a pin that does not exist lists the versions there are, and fails the test
UNREACHABLE = ("(from versions: none)", "NewConnectionError", "Max retries exceeded", "Temporary failure in name "
               "resolution", "Network is unreachable", "ConnectTimeout", "ReadTimeout", "ProxyError", "SSLError")


def venv_python(name: str, requirement: str) -> Path:
    """The python of ``CACHE/<name>-venv/<version>``, with ``requirement`` (``package==version``) installed in it."""
    version = requirement.split("==", 1)[1]
    folder = CACHE / f"{name}-venv" / version
    python = folder / "bin" / "python"
    ready = folder / ".ready"
    if ready.exists():
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            _build(folder, requirement)
    return python


def _build(folder: Path, requirement: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # a build that died half-way leaves no .ready: start again
    start = time.monotonic()
    subprocess.run([_base_python(), "-m", "venv", str(folder)], check=True, capture_output=True)
    done = subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", requirement], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        if any(marker in line for line in tail for marker in UNREACHABLE):
            pytest.skip(f"pip could not install {requirement} (package index unreachable?): {' | '.join(tail)}")
        raise RuntimeError(f"pip install {requirement} failed:\n" + "\n".join(tail))
    (folder / ".ready").write_text(json.dumps({"requirement": requirement,
                                               "build_seconds": round(time.monotonic() - start, 1)}))


def _base_python() -> str:
    """The interpreter this virtual environment was made from (a venv made from a venv's python is fine too)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def run_in(python: Path, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``script`` with the isolated python, away from the project's environment variables that point at it."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), "-c", script, *args], capture_output=True, text=True, timeout=timeout, env=env)
