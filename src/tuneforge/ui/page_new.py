"""The New-run page: the form generated from the config schema, a start (defaults, a ``tuneforge init`` template,
a preset, a workspace config), the data picker with its preview and data report, Validate and Estimate (the CLI's
own commands, their lines shown as they print them), the YAML shown and downloadable, and Launch."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.errors import UserError
from tuneforge.tasks.starter import SHOWN
from tuneforge.ui import form
from tuneforge.ui.jobs import launch_args, new_run_dir, run_cli, study_dir
from tuneforge.ui.preview import data_report, preview
from tuneforge.ui.shared import Context, error_line, frame, guarded


def _primary(key: str) -> bool:
    """The keys ``tuneforge init`` writes (and the data columns): shown open; the rest under "more settings"."""
    section, _, rest = key.partition(".")
    if not rest:
        return True
    head = rest.split(".")[0]
    return head in SHOWN.get(section, ()) or key in ("data.text_column", "data.label_column", "data.dataset_format")


def elem_id(key: str) -> str:
    return "field-" + key.replace(".", "-")


def _widget(field: form.FormField, value: Any) -> Any:
    label, visible = field.key, not field.methods or form.DEFAULT_METHOD in field.methods
    if field.kind == "bool":
        return gr.Checkbox(value=bool(value), label=label, info=field.help, elem_id=elem_id(field.key),
                           visible=visible)
    if field.kind == "choice":
        return gr.Dropdown(choices=list(field.choices), value=value, label=label, info=field.help,
                           elem_id=elem_id(field.key), visible=visible, allow_custom_value=False)
    return gr.Textbox(value=value, label=label, info=field.help, elem_id=elem_id(field.key), visible=visible,
                      lines=1, max_lines=3)


def _grid(fields: list[form.FormField], values: dict[str, Any], columns: int = 3) -> dict[str, Any]:
    widgets = {}
    for start in range(0, len(fields), columns):
        with gr.Row():
            widgets.update({f.key: _widget(f, values[f.key]) for f in fields[start:start + columns]})
    return widgets


def _section_widgets(ctx: Context, section: str, values: dict[str, Any]) -> dict[str, Any]:
    fields = [f for f in ctx.fields if f.section == section]
    widgets = _grid([f for f in fields if _primary(f.key)], values)
    rest = [f for f in fields if not _primary(f.key)]
    if rest:
        with gr.Accordion(f"more {section} settings", open=False):
            widgets.update(_grid(rest, values))
    return widgets


def build(ctx: Context) -> dict[str, Any]:
    """The page; returns its launch buttons, to be wired to the watch page (``wire_launch``) once that exists."""
    values, _ = form.form_values({}, ctx.fields)
    widgets: dict[str, Any] = {}
    with gr.Row():
        start = gr.Dropdown(form.start_options(ctx.workspace.config_files()), value=form.DEFAULTS,
                            label="start from", info="the defaults, a tuneforge init template, a preset or a config "
                            "in the workspace", elem_id="new-start", scale=3)
        widgets["name"] = _widget(ctx.fields[0], values["name"])
    with gr.Accordion("model and task", open=True):
        widgets.update(_section_widgets(ctx, "model", values))
    with gr.Accordion("data", open=True):
        data_outputs = _data_block(ctx)
        widgets.update(_section_widgets(ctx, "data", values))
    for section in ("method", "train", "evaluation", "tracking"):
        with gr.Accordion(section, open=section in ("method", "train")):
            widgets.update(_section_widgets(ctx, section, values))
    other = gr.Code(value="", language="yaml", label="other settings (YAML: sections the form leaves out, e.g. hpo, "
                    "preference, distributed, data.augment)", interactive=True, lines=3, elem_id="new-other")
    with gr.Row():
        validate = gr.Button("Validate", elem_id="new-validate")
        estimate = gr.Button("Estimate memory and time", elem_id="new-estimate")
        launch = gr.Button("Launch training", variant="primary", elem_id="new-launch")
        search = gr.Button("Launch search (tune)", elem_id="new-tune")
    status = gr.Markdown("", elem_id="new-status")
    estimate_out = gr.Code(label="estimate", language=None, interactive=False, visible=False, show_line_numbers=False,
                           elem_id="new-estimate-out")
    with gr.Row():
        yaml_view = gr.Code(label="config YAML", language="yaml", interactive=False, elem_id="new-yaml", scale=4)
        download = gr.DownloadButton("Download YAML", visible=False, elem_id="new-download", scale=1)
    keys = [f.key for f in ctx.fields]
    inputs = [widgets[k] for k in keys] + [other]
    _wire_start(ctx, start, widgets, other, status, keys)
    _wire_data(ctx, widgets, data_outputs, inputs, keys)
    saved = [status, yaml_view, download]
    validate.click(guarded(3)(lambda *v: _validate(ctx, keys, v)), inputs, saved)
    estimate.click(guarded(4)(lambda *v: _estimate(ctx, keys, v)), inputs, [*saved, estimate_out])
    def refresh() -> tuple[Any, Any]:  # configs saved and files added since the page was built
        return (gr.update(choices=form.start_options(ctx.workspace.config_files())),
                gr.update(choices=ctx.workspace.data_files()))

    return {"launch": launch, "search": search, "inputs": inputs, "saved": saved, "keys": keys, "refresh": refresh,
            "refreshed": [start, data_outputs["picker"]]}


def wire_launch(ctx: Context, page: dict[str, Any], tabs: Any, watch: dict[str, Any]) -> None:
    """Launch starts the run and shows it on the watch page."""
    launched = [*page["saved"], tabs, watch["timer"], watch["jobs"]]
    for button, command in ((page["launch"], "train"), (page["search"], "tune")):
        button.click(guarded(6)(lambda *v, command=command: _launch(ctx, page["keys"], v, command)), page["inputs"],
                     launched)


def _data_block(ctx: Context) -> dict[str, Any]:
    with gr.Row():
        picker = gr.Dropdown(ctx.workspace.data_files(), value=None, label="data file in the workspace",
                             info="sets data.path; or type a path, or offline:<name>", elem_id="data-picker", scale=3)
        upload = gr.UploadButton("Upload a data file", file_count="single", elem_id="data-upload", scale=1, size="md")
        preview_button = gr.Button("Preview", elem_id="data-preview-button", scale=1, size="md")
        report_button = gr.Button("Data report", elem_id="data-report-button", scale=1, size="md")
    facts = gr.Markdown("", elem_id="data-facts")
    sample = gr.Dataframe(label="first rows", visible=False, interactive=False, elem_id="data-sample",
                          max_height=240)
    summary = gr.Markdown("", elem_id="data-summary")
    report = gr.JSON(label="data report (data_report.json as a run would write it)", visible=False,
                     elem_id="data-report", max_height=300)
    return {"picker": picker, "upload": upload, "preview": preview_button, "report_button": report_button,
            "facts": facts, "sample": sample, "summary": summary, "report": report}


def _wire_start(ctx: Context, start: Any, widgets: dict[str, Any], other: Any, status: Any, keys: list[str]) -> None:
    def load(option: str) -> list[Any]:
        try:
            config = form.start_config(option, ctx.workspace)
        except Exception as exc:  # noqa: BLE001 - a workspace YAML that does not read: its one line
            return [gr.skip()] * (len(keys) + 1) + [error_line(exc)]
        values, rest = form.form_values(config, ctx.fields)
        method = values["method.name"]
        updates = [gr.update(value=values[f.key], visible=not f.methods or method in f.methods) for f in ctx.fields]
        return updates + [rest, f"started from {option}"]

    start.change(load, [start], [widgets[k] for k in keys] + [other, status])
    method_fields = [f for f in ctx.fields if f.methods]

    def switch(method: str) -> list[Any]:
        return [gr.update(visible=method in f.methods, value=form.field_value(f, f.default_for(method)))
                for f in method_fields]

    widgets["method.name"].input(switch, [widgets["method.name"]], [widgets[f.key] for f in method_fields])


def _wire_data(ctx: Context, widgets: dict[str, Any], parts: dict[str, Any], inputs: list[Any],
               keys: list[str]) -> None:
    path_box = widgets["data.path"]
    shown = [parts["facts"], parts["sample"]]

    @guarded(2)
    def show(path: str, label_column: str, columns: str) -> tuple[Any, Any]:
        mapping = form.parse_value(form.FormField("data.columns", "text", ""), columns) or {}
        facts = preview(ctx.workspace, path, label_column or "label", mapping if isinstance(mapping, dict) else {})
        sample = facts.pop("sample")
        lines = [f"- **{key}**: {_inline(value)}" for key, value in facts.items()]
        table = frame(list(sample[0]) if sample else [], [list(row.values()) for row in sample])
        return "\n".join(lines), gr.update(value=table, visible=bool(sample))

    preview_inputs = [path_box, widgets["data.label_column"], widgets["data.columns"]]
    parts["preview"].click(show, preview_inputs, shown)

    def picked(relative: str | None, label_column: str, columns: str) -> tuple[Any, ...]:
        if not relative:
            return gr.skip(), gr.skip(), gr.skip()
        return (relative, *show(relative, label_column, columns))

    parts["picker"].input(picked, [parts["picker"], *preview_inputs[1:]], [path_box, *shown])

    @guarded(4, status_at=1)
    def uploaded(file: str, label_column: str, columns: str) -> tuple[Any, ...]:
        source = Path(file)
        target = _free_name(ctx.workspace.data / source.name, source)
        shutil.copyfile(source, target)
        relative = ctx.workspace.relative(target)
        return (relative, *show(relative, label_column, columns),
                gr.update(choices=ctx.workspace.data_files(), value=relative))

    parts["upload"].upload(uploaded, [parts["upload"], *preview_inputs[1:]], [path_box, *shown, parts["picker"]])

    @guarded(2)
    def report(*values: Any) -> tuple[Any, Any]:
        from tuneforge.config import load_config

        _, path, _ = _save(ctx, keys, values)
        summary, data = data_report(load_config(ctx.workspace.relative(path)))  # the UI works in the workspace
        return summary, gr.update(value=data, visible=True)

    parts["report_button"].click(report, inputs, [parts["summary"], parts["report"]])


def _free_name(target: Path, source: Path) -> Path:
    """``target``, or ``<stem>-2<suffix>`` ... when another file has that name (the same file is copied over)."""
    number = 1
    candidate = target
    while candidate.exists() and candidate.read_bytes() != source.read_bytes():
        number += 1
        candidate = target.with_name(f"{target.stem}-{number}{target.suffix}")
    return candidate


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _config(ctx: Context, keys: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    """The form's config, its paths checked to be inside the workspace."""
    config = form.config_from_form(dict(zip(keys, values[:-1])), values[-1] or "", ctx.fields)
    ctx.workspace.check_config_paths(config)
    return config


def _save(ctx: Context, keys: list[str], values: tuple[Any, ...]) -> tuple[dict[str, Any], Path, str]:
    """Write the form's config to configs/<name>.yaml (checked there by the CLI itself, so its errors read as in a
    terminal); returns it, its file and its text."""
    config = _config(ctx, keys, values)
    name = str(config.get("name") or "").strip()
    if not name:
        raise UserError("name: required field is missing (the run's name, e.g. my-topics)")
    if not re.fullmatch(form.NAME_PATTERN, name):
        raise UserError(f"name {name!r}: letters, digits, '_', '.' and '-', starting with a letter or digit")
    text = form.to_yaml(config)
    path = ctx.workspace.inside(Path("configs") / f"{name}.yaml", "config file")
    path.write_text(text, encoding="utf-8")
    return config, path, text


def _validate(ctx: Context, keys: list[str], values: tuple[Any, ...]) -> tuple[Any, ...]:
    _, path, text = _save(ctx, keys, values)
    _, line = run_cli(ctx.workspace, "config", "validate", ctx.workspace.relative(path))
    return line, text, gr.update(value=str(path), visible=True)


def _estimate(ctx: Context, keys: list[str], values: tuple[Any, ...]) -> tuple[Any, ...]:
    _, path, text = _save(ctx, keys, values)
    code, output = run_cli(ctx.workspace, "estimate", ctx.workspace.relative(path))
    status = "estimate: see below" if code == 0 else output
    return (status, text, gr.update(value=str(path), visible=True),
            gr.update(value=output if code == 0 else "", visible=code == 0))


def _launch(ctx: Context, keys: list[str], values: tuple[Any, ...], command: str) -> tuple[Any, ...]:
    config, path, text = _save(ctx, keys, values)
    code, line = run_cli(ctx.workspace, "config", "validate", ctx.workspace.relative(path))
    if code != 0:
        return line, text, gr.update(value=str(path), visible=True), gr.skip(), gr.skip(), gr.skip()
    if command == "tune" and not config.get("hpo"):
        raise UserError("a search needs an hpo: section (space, objectives, n_trials): add it under other settings")
    run_dir = new_run_dir(ctx.workspace, config) if command == "train" else study_dir(ctx.workspace, config)
    job = ctx.jobs.start(command, launch_args(command, ctx.workspace.relative(path), ctx.workspace.relative(run_dir)),
                         run_dir=run_dir)
    return (f"started `tuneforge {command}` as {job.id}: watch it in Launch and watch", text,
            gr.update(value=str(path), visible=True), gr.Tabs(selected="watch"), gr.Timer(active=True),
            gr.update(choices=list(ctx.jobs.jobs), value=job.id))
