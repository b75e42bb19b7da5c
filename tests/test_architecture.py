"""The shape of the code, checked by tools rather than hope: the import layers of ../shared/ARCHITECTURE.md (and no
import cycles) by import-linter, light entry points that never load torch, modules and functions of a readable
size, and a public API whose every name resolves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "tuneforge"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def test_import_layers_and_no_cycles():
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("argv", [["config", "validate", "examples/bbc.yaml"], ["train", "--help"],
                                  ["config", "show", "examples/bbc.yaml"], ["config", "keys"], ["--help"],
                                  ["runs", "list", "--tracking-dir", "{tmp}/mlflow"], ["config", "show"],
                                  ["init", "--output", "{tmp}/starter.yaml"], ["--version"]])
def test_light_commands_never_import_torch(argv, tmp_path):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    script = ("import sys, runpy; sys.argv = ['tuneforge', *sys.argv[1:]]\n"
              "try:\n    from tuneforge.cli import main; code = main(sys.argv[1:])\n"
              "except SystemExit as exit:\n    code = exit.code\n"
              "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules)\n"
              "print('HEAVY', heavy, code)")
    done = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "HEAVY [] 0"


def test_modules_and_functions_stay_readable():
    too_long = []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}: {node.name}() {size} lines")
    assert not too_long, too_long


def test_public_api_names_resolve():
    import tuneforge

    for name in tuneforge.__all__:
        assert getattr(tuneforge, name) is not None, name
    for name in ("tune", "export_run", "load_generator", "finetune", "load_predictor"):
        assert callable(getattr(tuneforge, name)), name
    with pytest.raises(AttributeError):
        tuneforge.no_such_name  # noqa: B018


def test_only_tasks_know_task_names():
    """Nothing outside tasks/ branches on a task's name: the layers below are handed a task's spec (its facts)."""
    from tuneforge.tasks.registry import available_tasks

    allowed = {SOURCE / "config" / "schema.py",  # the config's list of task names (a registry test keeps it equal)
               SOURCE / "tasks" / "run_folder.py"}  # run folders written before the task was recorded
    names = set(available_tasks())
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path in allowed or path.is_relative_to(SOURCE / "tasks"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_tests_mirror_the_source_folders():
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    packages = {p.name for p in SOURCE.iterdir() if (p / "__init__.py").exists()}
    assert folders and folders <= packages, folders - packages


def test_every_task_step_resolves():
    from tuneforge.tasks.registry import all_specs
    from tuneforge.tasks.spec import STEPS, resolve

    for spec in all_specs():
        for step in (*STEPS, "report"):
            assert callable(resolve(getattr(spec, step))), (spec.name, step)
