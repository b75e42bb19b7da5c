"""What the pages share: the UI's context (workspace, jobs, form fields), tables for Gradio, and the guard that
turns an error into the one line the CLI would print (never a traceback in the page)."""

from __future__ import annotations

import functools
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from tuneforge.errors import UserError
from tuneforge.ui.form import FormField, form_fields
from tuneforge.ui.jobs import Jobs
from tuneforge.ui.workspace import Workspace


@dataclass
class Context:
    workspace: Workspace
    jobs: Jobs
    fields: list[FormField] = field(default_factory=form_fields)
    debug: bool = False


def error_line(exc: BaseException, debug: bool = False) -> str:
    """``error: <the CLI's line>``; anything else also one line (its traceback goes to the UI's console)."""
    if isinstance(exc, UserError):
        return f"error: {exc}"
    traceback.print_exception(exc, file=sys.stderr)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"error: {type(exc).__name__}: {first}"


def guarded(outputs: int, status_at: int = 0) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A handler whose error becomes its status output (``error: ...``), the other outputs left as they were."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any) -> Any:
            try:
                return function(*args)
            except Exception as exc:  # noqa: BLE001 - shown as one line in the page
                import gradio as gr

                result = [gr.skip()] * outputs
                result[status_at] = error_line(exc)
                return tuple(result) if outputs > 1 else result[0]

        return run

    return wrap


def frame(headers: list[str], rows: list[list[Any]]) -> Any:
    """A table for gr.Dataframe (column names made unique: a run may be named twice)."""
    import pandas as pd

    seen: dict[str, int] = {}
    unique = []
    for header in headers:
        seen[header] = seen.get(header, 0) + 1
        unique.append(header if seen[header] == 1 else f"{header} ({seen[header]})")
    return pd.DataFrame(rows, columns=unique)


def points(rows: list[dict[str, Any]]) -> Any:
    """Curve points for gr.LinePlot: step, value, series; None for none (a plot first given an empty table draws
    no lines later, in Gradio 6.31's frontend)."""
    if not rows:
        return None
    import pandas as pd

    return pd.DataFrame({"step": pd.Series([r["step"] for r in rows], dtype="int64"),
                         "value": pd.Series([r["value"] for r in rows], dtype="float64"),
                         "series": pd.Series([r["series"] for r in rows], dtype="str")})


def file_link(path: Any, text: str) -> str:
    """A link that opens a workspace file (report.html) in a new tab, through Gradio's file route (the workspace is
    its only allowed folder)."""
    from urllib.parse import quote

    return f'<a href="/gradio_api/file={quote(str(path))}" target="_blank" rel="noopener">{text}</a>'
