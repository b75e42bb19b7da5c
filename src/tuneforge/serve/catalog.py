"""What a server serves: run folders loaded as named models. Generative LoRA runs that share a base model (and a
precision) share one copy of it, each run an adapter on it; the base itself is served too, under the name it was
given in the runs' config. Every other run is loaded on its own, through its task's predictor."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tuneforge.errors import UserError


@dataclass
class Served:
    """One model name: a generative run (``generator`` for its template, stops and system prompt, ``engine`` for
    batched generation, ``adapter`` on a shared base) or a labelling run (``predictor``)."""

    name: str
    task: Any  # the TaskSpec
    source: str  # the run folder, or "base of ..." for a shared base
    generator: Any = None
    engine: Any = None
    adapter: str | None = None
    predictor: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one predictor call at a time
    waiting: int = 0  # labelling requests queued for this model (the event loop's count)

    @property
    def kind(self) -> str:
        return "generate" if self.generator is not None else self.task.name


@dataclass
class Catalog:
    models: dict[str, Served]
    engines: list[Any]

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def model_name(run_dir: Path) -> str:
    """A run is served under its folder's name (``runs/chat-a`` -> ``chat-a``)."""
    run_dir = Path(run_dir)
    return (run_dir.parent if run_dir.name == "model" else run_dir).resolve().name


def load_catalog(run_dirs: list[str | Path], precision: str | None = None, max_batch: int = 8,
                 max_wait: float = 0.01, max_queue: int = 64,
                 on_batch: Callable[[str, int], None] = lambda engine, size: None) -> Catalog:
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import loading, read_model_meta, task_of

    runs: dict[str, tuple[Path, dict[str, Any], Any]] = {}
    for run_dir in run_dirs:
        model_dir, meta = read_model_meta(run_dir)
        name = model_name(Path(run_dir))
        if name in runs:
            raise UserError(f"{run_dir}: a second model named {name!r}; serve runs from folders with different names")
        runs[name] = (model_dir, meta, task_spec(task_of(meta)))
    shared = _shared_bases(runs)
    models: dict[str, Served] = {}
    engines: list[Any] = []
    options = dict(max_batch=max_batch, max_wait=max_wait, max_queue=max_queue)
    for (base, run_precision), names in shared.items():
        with loading(runs[names[0]][0]):
            served, engine = _shared(base, run_precision, {n: runs[n] for n in names}, precision, options, on_batch)
        base_name = _base_name(runs[names[0]][0], base)
        if base_name in runs or base_name in models:
            base_name = f"{base_name}-base"
        models.update(served)
        models[base_name] = Served(base_name, served[names[0]].task, f"base of {', '.join(names)}",
                                   generator=_base_generator(engine.model, served[names[0]].generator), engine=engine)
        engines.append(engine)
    for name, (model_dir, meta, task) in runs.items():
        if name in models:
            continue
        with loading(model_dir):
            predictor = task.call("predictor", model_dir, meta, precision)  # a generative task's is its Generator
        if task.generates:
            from tuneforge.serve.engine import GenerationEngine

            engine = GenerationEngine(name, predictor.model, predictor.tokenizer, predictor.encoder_decoder,
                                      on_batch=lambda size, n=name: on_batch(n, size), **options)
            engines.append(engine)
            models[name] = Served(name, task, str(model_dir.parent), generator=predictor, engine=engine)
        else:
            models[name] = Served(name, task, str(model_dir.parent), predictor=predictor)
    return Catalog(models, engines)


def _shared_bases(runs: dict[str, tuple[Path, dict[str, Any], Any]]) -> dict[tuple[str, str], list[str]]:
    """Generative LoRA runs grouped by (base model, precision): each group is served from one copy of its base."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, (model_dir, meta, task) in runs.items():
        dora = bool((meta.get("method_config") or {}).get("use_dora"))  # peft mixes no DoRA adapters in a batch
        adapter = (model_dir / "adapter_config.json").exists()
        if task.generates and meta.get("method") == "lora" and not dora and adapter:
            from tuneforge.models.assets import base_path

            groups.setdefault((base_path(meta), meta.get("precision") or "fp32"), []).append(name)
    return groups


def _shared(base: str, run_precision: str, runs: dict[str, tuple[Path, dict[str, Any], Any]],
            precision: str | None, options: dict[str, Any],
            on_batch: Callable[[str, int], None]) -> tuple[dict[str, Served], Any]:
    import transformers
    from transformers import AutoTokenizer

    from tuneforge.methods.trained import load_adapters
    from tuneforge.serve.engine import GenerationEngine
    from tuneforge.tasks.generator import generator_for

    first_dir, _, task = next(iter(runs.values()))
    auto = getattr(transformers, task.auto_class)
    model = load_adapters(base, auto, {name: run[0] for name, run in runs.items()}, precision or run_precision)
    tokenizer = AutoTokenizer.from_pretrained(str(first_dir))
    label = f"{Path(base).name}+{len(runs)} adapters"
    engine = GenerationEngine(label, model, tokenizer, model.config.is_encoder_decoder, multi_adapter=True,
                              on_batch=lambda size: on_batch(label, size), **options)
    served = {name: Served(name, run_task, str(model_dir.parent), adapter=name,
                           generator=generator_for(model, AutoTokenizer.from_pretrained(str(model_dir)), meta),
                           engine=engine)
              for name, (model_dir, meta, run_task) in runs.items()}
    return served, engine


def _base_generator(model: Any, adapted: Any) -> Any:
    """The shared base served as itself: its tokenizer's own chat template and stop tokens."""
    from tuneforge.tasks.generator import generator_for

    return generator_for(model, adapted.tokenizer, {})


def _base_name(model_dir: Path, base: str) -> str:
    """The name the runs gave their base (``model.name`` in config.yaml: a hub id, a short name), else its folder."""
    config = model_dir.parent / "config.yaml"
    try:
        name = yaml.safe_load(config.read_text(encoding="utf-8"))["model"]["name"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        name = base
    return Path(str(name)).name if Path(str(name)).is_absolute() else str(name)
