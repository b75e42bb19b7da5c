"""What a person sees of a run: the truncation warning (console and report), the live display's fallback lines."""

from __future__ import annotations

from tuneforge.config import load_config
from tuneforge.data.prepare import truncation_warning
from tuneforge.pipelines.finetune import finetune

from conftest import tiny_config


def test_truncation_warning_names_the_length_that_fits():
    stats = {"min": 50, "mean": 300.0, "p50": 280.0, "p95": 412.0, "max": 900, "truncated": 95, "truncated_pct": 100.0}
    assert truncation_warning(stats, 128) == ("data.max_length 128 truncates 100% of the training examples (longest "
                                              "900 tokens); data.max_length=412 would keep 95% whole, at about 3.2x "
                                              "the tokens per example")
    assert truncation_warning({**stats, "truncated_pct": 4.0}, 128) is None


def test_a_run_that_truncates_says_so_in_the_console_and_on_top_of_the_report(tiny_bert, tiny_csv, tmp_path):
    lines: list[str] = []
    config = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 1}, evaluation={"baselines": ["majority"]}),
                         ["data.max_length=8"])
    finetune(config, output=tmp_path / "run", log=lines.append)
    warning = next(line for line in lines if line.startswith("warning: data.max_length 8 truncates 100% of the "
                                                             "training examples"))
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.index(warning.removeprefix("warning: ").split(";")[0]) < page.index("<h2>")
    # the report names and rounds the best validation metric, and shows leakage as a table, not raw JSON
    import re

    assert re.search(r"best validation macro_f1</td><td>\d\.\d{4}</td>", page)
    assert "id='leakage'" in page and "{&quot;" not in page


def test_model_card_and_portable_base(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    import json

    from tuneforge.models.assets import base_path

    config = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 2}, evaluation={"baselines": ["majority"]}))
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    fine = result.metrics["test"]["finetuned"]
    assert f"base_model: {tiny_bert}" in card and "library_name: peft" in card
    assert f"| macro_f1 | {fine['macro_f1']:.4f} [{fine['macro_f1_ci'][0]:.4f}, {fine['macro_f1_ci'][1]:.4f}]" in card
    assert f"**Verdict:** {result.metrics['verdict']['line']}" in card and f"tuneforge predict {result.run_dir}" in card
    assert "More Information Needed" not in card  # peft's empty template is gone
    meta = json.loads((tmp_path / "run" / "model" / "tuneforge.json").read_text())
    assert meta["base"] == {"name": tiny_bert, "source": "local"}
    # the recorded path is gone on another machine: the base is found again by its name (here: the same folder,
    # copied where the name points)
    moved = dict(meta, base_model=str(tmp_path / "not-here"), base={"name": "minilm", "source": "offline"})
    from tuneforge.models.assets import resolve_model

    assert base_path(moved) == resolve_model("minilm").path
    assert base_path(meta) == meta["base_model"]


def test_runs_compare_puts_runs_in_columns_with_intervals_and_show_takes_a_folder(tiny_bert, tiny_csv, tmp_path):
    import subprocess
    import sys

    results = []
    for name, epochs in (("a", 1), ("b", 3)):
        config = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": epochs},
                                         evaluation={"baselines": ["majority"]}))
        results.append(finetune(config, output=tmp_path / name, log=lambda _: None))

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "tuneforge.cli", "runs", *args], capture_output=True, text=True,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    compared = cli("compare", "a", "b")
    header, *rows = [line for line in compared.splitlines() if line.strip() and not set(line) <= set("━╇─┼ ")]
    assert header.replace("┃", " ").split() == ["a", "b"] and max(len(line) for line in compared.splitlines()) <= 100
    rows = [row.replace("│", " ") for row in rows]
    macro = next(row for row in rows if row.split()[0] == "macro_f1")
    fine = results[1].metrics["test"]["finetuned"]
    assert f"{fine['macro_f1']:.4f} [{fine['macro_f1_ci'][0]:.4f}, {fine['macro_f1_ci'][1]:.4f}]" in macro
    assert any(row.split()[0] == "train.epochs" for row in rows)  # the parameter that differs
    shown = cli("show", str(tmp_path / "b"))
    assert "macro_f1" in shown and "method.name" in shown and "--all" in shown
    assert len(shown.splitlines()) < 30  # the headline, not ~140 raw rows


def run_cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_init_writes_a_valid_commented_starter_for_every_task(tmp_path):
    import yaml

    from tuneforge.tasks.registry import available_tasks

    for task in available_tasks():
        done = run_cli("init", "--task", task, "--output", str(tmp_path / f"{task}.yaml"))
        assert done.returncode == 0, done.stderr
        text = (tmp_path / f"{task}.yaml").read_text()
        assert "learning_rate: auto  # Peak learning rate." in text and text.count("  # ") >= 10
        assert load_config(tmp_path / f"{task}.yaml").model.task == task == yaml.safe_load(text)["model"]["task"]
    again = run_cli("init", "--output", str(tmp_path / "causal-lm.yaml"))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_conventions_version_and_debug_anywhere_config_show_without_a_file(tmp_path):
    from tuneforge import __version__

    assert run_cli("config", "show", "--version").stdout.strip() == f"tuneforge {__version__}"
    shown = run_cli("config", "show")
    assert shown.returncode == 0 and "r: 8" in shown.stdout and "learning_rate: 0.002" in shown.stdout
    missing = run_cli("config", "validate", str(tmp_path / "nope.yaml"), "--debug")
    assert missing.returncode != 0 and "Traceback" in missing.stderr  # --debug after the arguments still counts


def test_ctrl_c_prints_the_command_that_resumes(tiny_bert, tiny_csv, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, tiny_csv, train={"epochs": 200, "early_stopping": None})))
    run = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "train", str(path), "train.seed=3", "--output",
                            str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a parallel test
    # worker may ignore SIGINT, and an ignored signal stays ignored in its children
    deadline = time.time() + 120
    while not list((tmp_path / "run").glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert run.poll() is None and time.time() < deadline
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"interrupted; continue with: tuneforge train {path} train.seed=3 "
                                            f"--output {tmp_path / 'run'} --resume")
