from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuneforge.config import dump_config, load_config, parse_overrides
from tuneforge.config.loader import PRESETS
from tuneforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "x", "model": {"name": "minilm"}, "data": {"path": "a.csv"}}


def with_(**sections):
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def test_defaults_and_method_class():
    config = load_config(with_(method={"name": "lora", "r": 4}))
    assert config.method.r == 4 and config.method.alpha == 16
    assert config.train.early_stopping.metric == "macro_f1"
    assert yaml.safe_load(dump_config(config))["method"]["r"] == 4  # the concrete method is serialised


def test_overrides_nest_and_parse_scalars():
    assert parse_overrides(["train.epochs=1", "method.r=4", "model.name=abc", "train.early_stopping=null"]) == {
        "train": {"epochs": 1, "early_stopping": None}, "method": {"r": 4}, "model": {"name": "abc"}}
    config = load_config(BASE, ["train.epochs=1", "method.r=4", "train.learning_rate=1e-4"])
    assert (config.train.epochs, config.method.r, config.train.learning_rate) == (1, 4, 1e-4)


@pytest.mark.parametrize("sections, expected", [
    ({"method": {"name": "lorax"}}, "method: unknown method 'lorax' (allowed: adapter, freeze, full, ia3, lora, prefix, prompt, qlora)"),
    ({"method": {"name": "lora", "rank": 3}}, "method.rank: unknown key for method 'lora' (allowed: name, r,"),
    ({"train": {"epocs": 3}}, "train.epocs: unknown key (allowed here: epochs, batch_size"),
    ({"train": {"lr_scheduler": "foo"}},
     "train.lr_scheduler: Input should be 'linear', 'cosine', 'constant' or 'constant_with_warmup' (got 'foo')"),
    ({"data": {"split": {"train": 0.5}}}, "data.split: train + validation + test must sum to 1, got 0.8"),
    ({"method": {"name": "lora", "r": 0}}, "method.r: Input should be greater than or equal to 1"),
    ({"train": {"eval_strategy": "steps"}}, "eval_strategy 'steps' needs eval_steps"),
])
def test_invalid_config_names_field_and_allowed_values(sections, expected):
    with pytest.raises(ConfigError) as info:
        load_config(with_(**sections))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_required_field():
    with pytest.raises(ConfigError, match="data: required field is missing"):
        load_config({"name": "x", "model": {"name": "m"}})


def test_switching_method_by_override_drops_the_old_methods_options():
    config = load_config(with_(method={"name": "lora", "r": 4}), ["method.name=freeze", "method.layers=1"])
    assert config.method.name == "freeze" and config.method.layers == 1
    assert load_config(with_(method={"name": "lora", "r": 4}), ["method.alpha=4"]).method.r == 4


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        parse_overrides(["train.epochs"])


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: {name: minilm\ndata: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(path)


def test_relative_data_path_is_relative_to_the_config(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "data.csv").write_text("text,label\n")
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump({**BASE, "data": {"path": "data.csv"}}))
    assert load_config(path).data.path == str(folder / "data.csv")


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    if path.name == "monitor.yaml":  # the monitor's windows and alert rules, not a run config
        from tuneforge.config.monitor import load_monitor_config

        assert load_monitor_config(path).rules
        return
    load_config(path)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], capture_output=True, text=True)


def test_cli_invalid_config_one_line_exit_2(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(with_(method={"name": "lora", "r": "big"})))
    result = run_cli("config", "validate", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "method.r" in result.stderr
    debug = run_cli("--debug", "config", "validate", str(path))
    assert "Traceback" in debug.stderr


def test_cli_config_show_and_override(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(BASE))
    result = run_cli("config", "show", str(path), "train.epochs=7")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["train"]["epochs"] == 7
    assert run_cli("config", "validate", str(path)).returncode == 0


def test_help_lists_config_keys_with_descriptions():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    assert "train.learning_rate (float | 'auto', default auto): Peak learning rate. auto: " in result.stdout
    assert "train.precision ('auto' | 'fp32' | 'bf16' | 'fp16', default auto)" in result.stdout
    assert "method.r (int, default 8): LoRA rank." in result.stdout
