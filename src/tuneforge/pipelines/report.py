"""report.html: one self-contained page (plots inlined as PNG data URIs) built from the run folder's files, with
the sections of the run's task.

It reads only artifacts (metrics.json, data_report.json, params.json, train_log.jsonl, config.yaml), so the
numbers on the page are the numbers in the files.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from tuneforge.evaluation.report import augmentation_parts, page
from tuneforge.evaluation.report_slices import slice_parts
from tuneforge.io import read_log
from tuneforge.tasks.run_folder import task_of


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    data_report = json.loads((run_dir / "data_report.json").read_text())
    params = json.loads((run_dir / "params.json").read_text())
    log = read_log(run_dir / "train_log.jsonl")
    config_text = (run_dir / "config.yaml").read_text()
    name = config_text.split("\n", 1)[0].removeprefix("name:").strip()
    from tuneforge.tasks.registry import task_spec

    task = task_spec(task_of(metrics))
    return page(run_dir, name, [f"<h1>tuneforge run: {html.escape(name)}</h1>",
                                 verdict_html(metrics.get("verdict"), data_report.get("warnings", [])),
                                 *task.call("report", run_dir, metrics, data_report, params, log),
                                 augmentation_parts(data_report), *slice_parts(metrics.get("test", {})),
                                 "<h2>Resolved config</h2>", f"<pre>{html.escape(config_text)}</pre>"])


def verdict_html(verdict: dict | None, data_warnings: list[str] = ()) -> str:
    """The run's verdict on top of the page: one line, and a warning box when it learned nothing or the data
    was cut (truncation) or looked damaged."""
    warnings = "".join(f"<p class='warning'>{html.escape(w)}</p>"
                       for w in [*(verdict or {}).get("warnings", []), *(verdict or {}).get("weak_slices", []),
                                 *data_warnings])
    if not verdict:
        return warnings
    return f"<p id='verdict' class='verdict-{verdict['status'].replace(' ', '-')}'><b>Verdict:</b> " \
           f"{html.escape(verdict['line'])}</p>{warnings}"
