"""Start the UI: Gradio offline (no analytics, no fonts or scripts from the internet, its upload cache inside the
workspace), bound to 127.0.0.1 unless told otherwise, with an optional login; the jobs it started are stopped when
it stops."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def read_logins(auth_file: str | Path | None) -> list[tuple[str, str]]:
    """``user:password`` per line (blank lines and # comments skipped)."""
    if auth_file is None:
        return []
    path = Path(auth_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the login file ({exc.strerror})") from None
    logins = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise UserError(f"{path}:{number}: expected user:password")
        logins.append((user, password))
    if not logins:
        raise UserError(f"{path}: no logins in the file (one user:password per line)")
    return logins


def offline_gradio(workspace: Any) -> None:
    """Before Gradio is imported: no analytics or version checks, and its file cache inside the workspace."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.state / "gradio")


def launch(workspace_dir: str, host: str = "127.0.0.1", port: int = 7860, auth_file: str | None = None,
           ready: Any = print) -> int:
    """Serve the UI until SIGINT/SIGTERM; then stop the runs and servers it started."""
    from tuneforge.ui.jobs import Jobs
    from tuneforge.ui.workspace import Workspace

    workspace = Workspace(workspace_dir)
    logins = read_logins(auth_file)
    if host not in LOOPBACK and not logins:
        ready(f"warning: the UI is bound to {host} without a login: anyone who can reach it can start runs in "
              f"{workspace.root} (--auth-file F with user:password lines)")
    offline_gradio(workspace)
    os.chdir(workspace.root)  # relative paths mean what they mean to the commands it starts there
    from tuneforge.ui.app import CSS, build_app
    from tuneforge.ui.shared import Context

    import gradio as gr

    context = Context(workspace, Jobs(workspace))
    app = build_app(context)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app.launch(server_name=host, server_port=port, auth=logins or None, allowed_paths=[str(workspace.root)],
                   footer_links=[], run_history=False, ssr_mode=False, enable_monitoring=False, mcp_server=False,
                   pwa=False, show_error=False, quiet=True, prevent_thread_lock=True, theme=gr.themes.Default(),
                   css=CSS, favicon_path=None)
        ready(f"tuneforge ui: http://{host}:{port} (workspace {workspace.root}); Ctrl-C stops it and the runs it "
              f"started")
        while not stop.wait(0.5):
            pass
    finally:
        context.jobs.stop_all()
        app.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
