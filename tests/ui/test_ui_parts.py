"""The UI's plain parts, without a browser: the form generated from the schema round-trips every start (defaults,
each task's init template, each preset) to a config the CLI accepts; paths outside the workspace are refused in
one line; progress and curves are read from a run's console and train_log.jsonl; logins; and the CLI does not
import Gradio until ``tuneforge ui`` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.config import load_config
from tuneforge.errors import UserError
from tuneforge.ui import form
from tuneforge.ui.jobs import curves, progress, progress_line
from tuneforge.ui.server import read_logins
from tuneforge.ui.workspace import Workspace


def test_every_start_round_trips_through_the_form_to_a_valid_config(tmp_path):
    fields = form.form_fields()
    keys = [f.key for f in fields]
    assert {"name", "model.name", "data.path", "method.name", "method.r", "train.epochs"} <= set(keys)
    assert len(keys) == len(set(keys))
    options = form.start_options([])
    assert len([o for o in options if o.startswith("init: ")]) >= 5 and any(o.startswith("preset: ") for o in options)
    for option in options[1:]:
        config = form.start_config(option, Workspace(tmp_path))
        values, other = form.form_values(config, fields)
        back = form.config_from_form(values, other, fields)
        assert load_config(back).model_dump() == load_config(config).model_dump(), option


def test_form_values_are_read_like_overrides_and_defaults_are_left_out():
    fields = form.form_fields()
    values, _ = form.form_values({}, fields)
    values.update({"name": "t", "model.name": "minilm", "data.path": "d.csv", "train.epochs": "2",
                   "train.learning_rate": "3e-4", "method.name": "freeze", "method.r": "99"})
    config = form.config_from_form(values, "hpo: {space: {train.seed: {type: int, low: 1, high: 3}}}", fields)
    assert config["train"] == {"epochs": 2, "learning_rate": "3e-4"}  # as train.learning_rate=3e-4 reads (YAML 1.1)
    assert load_config(config).train.learning_rate == 3e-4
    assert config["method"] == {"name": "freeze"}  # r is a LoRA key: not read for freeze
    assert config["hpo"]["space"]["train.seed"]["high"] == 3
    with pytest.raises(UserError, match="other settings line 1: not valid YAML"):
        form.config_from_form(values, "hpo: [", fields)


def test_paths_outside_the_workspace_are_refused(tmp_path):
    workspace = Workspace(tmp_path)
    (tmp_path / "data" / "a.csv").write_text("text,label\nx,y\n")
    assert workspace.inside("data/a.csv") == tmp_path / "data" / "a.csv"
    assert workspace.data_files() == ["data/a.csv"]
    for bad in ("/etc/passwd", "../outside.csv", "data/../../x"):
        with pytest.raises(UserError, match="is outside the workspace"):
            workspace.inside(bad, "data.path")
    with pytest.raises(UserError, match="model.name '/opt/model' is outside"):
        workspace.check_config_paths({"model": {"name": "/opt/model"}, "data": {"path": "offline:bbc-news"}})
    workspace.check_config_paths({"model": {"name": "org/hub-model"}, "data": {"path": "offline:bbc-news"}})


def test_progress_and_curves_come_from_the_console_and_the_log(tmp_path):
    console = ("run folder: runs/a\nstep  2/33 | epoch  0.18 | loss 1.0972 | lr 1.50e-02 | 5,872 tok/s | ETA 12s\n"
               "step 11/33 | epoch  1.00 | validation loss 1.0995 | macro_f1 0.1667\n")
    facts = progress(console)
    assert facts == {"step": 11, "total": 33, "epoch": 1.0, "eta": ""}
    assert progress(console.splitlines()[1])["eta"] == "12s"
    assert progress_line(facts, "running") == "running: step 11/33 (33%), epoch 1.00"
    (tmp_path / "config.yaml").write_text("train: {early_stopping: {metric: accuracy}}\n")
    rows = [{"step": 2, "loss": 1.1}, {"step": 4, "loss": float("nan")},
            {"step": 11, "eval_loss": 1.0, "eval_macro_f1": 0.2, "eval_accuracy": 0.5}]
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 12, "lo')
    loss, valid = curves(tmp_path)
    assert [(p["step"], p["series"]) for p in loss] == [(2, "training loss"), (11, "validation loss")]
    assert valid == [{"step": 11, "value": 0.5, "series": "validation accuracy"}]


def test_logins_are_user_password_lines(tmp_path):
    good = tmp_path / "logins"
    good.write_text("# who may use the UI\nana:s3cret:with-colon\n\nbo:pw\n")
    assert read_logins(good) == [("ana", "s3cret:with-colon"), ("bo", "pw")]
    (tmp_path / "bad").write_text("ana\n")
    with pytest.raises(UserError, match="bad:1: expected user:password"):
        read_logins(tmp_path / "bad")


def test_the_cli_imports_gradio_only_for_the_ui_command():
    script = ("import sys\nfrom tuneforge.cli import build_parser\n"
              "build_parser().parse_args(['ui', '--port', '1'])\nprint('gradio' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
