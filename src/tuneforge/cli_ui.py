"""``tuneforge ui``: the web UI (Gradio, imported only when the command runs). Thin: parse, start, return."""

from __future__ import annotations

from typing import Any


def add_ui_parser(sub: Any) -> None:
    ui = sub.add_parser("ui", help="a web UI: configure, launch and watch runs, compare them, chat with a served run")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ui.add_argument("--workspace", default=".", help="the folder the UI reads and writes: configs/, data/, runs/ "
                    "(default: the current folder); nothing outside it is read or written")
    ui.add_argument("--auth-file", help="a login: user:password lines (advised with --host other than 127.0.0.1)")


def ui(args: Any) -> int:
    import importlib.util

    from tuneforge.errors import UserError

    if importlib.util.find_spec("gradio") is None:
        raise UserError("tuneforge ui needs Gradio: pip install 'tuneforge[ui]'")
    from tuneforge.ui.server import launch

    return launch(args.workspace, args.host, args.port, args.auth_file)


UI_COMMANDS = {"ui": ui}
