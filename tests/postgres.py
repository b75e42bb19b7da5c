"""A real PostgreSQL server for tests: initdb in a temporary folder, started on a free localhost port."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Iterator


def pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a URL postgresql://postgres@127.0.0.1:PORT/tuneforge; stops and removes the server afterwards."""
    bin_dir = pg_bin()
    assert bin_dir, "PostgreSQL is not installed (scripts/ensure-postgres.sh installs it)"
    root = tempfile.mkdtemp(prefix="tuneforge-pg-", dir="/tmp")
    os.chmod(root, 0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: use the package's postgres user
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    run(f"{bin_dir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
        f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off", "start")
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "tuneforge")
        yield f"postgresql://postgres@127.0.0.1:{port}/tuneforge"
    finally:
        subprocess.run([*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
