"""What data.augment needs of models, built here for the data step: the back-translation round trip (a generative
run folder or any local/hub/offline model, prompted when it is a decoder, read as the source when it is an
encoder-decoder) and the label-preservation filter (a linear probe on the frozen base model, or a classification
run's predictor)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneforge.data.augment import AugmentTools
from tuneforge.errors import ConfigError

INSTRUCTION = "Translate this {source} text into {target}. Reply with the translation only.\n\n{text}"


def augment_tools(config: Any, tokenizer: Any, resolved: Any) -> AugmentTools | None:
    """The translator and label filter ``config.data.augment`` asks for (models load only when asked)."""
    settings = config.data.augment
    if settings is None:
        return None
    translate = RoundTrip(settings.back_translation) if "back_translation" in settings.operations else None
    keep: Callable[[list[Any]], Callable[[list[str]], list[str]]] | None = None
    if settings.keep_label == "probe":
        keep = lambda rows: probe_predictor(rows, config, tokenizer, resolved)  # noqa: E731
    elif settings.keep_label != "none":
        keep = lambda rows: run_predictor(settings.keep_label)  # noqa: E731
    return AugmentTools(translate, keep)


class RoundTrip:
    """texts -> the pivot language -> back (greedy), each direction batched with progress."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.forth = load_translator(settings.model, settings)
        self.back = self.forth if settings.back_model in (None, settings.model) else \
            load_translator(settings.back_model, settings)

    def __call__(self, texts: list[str]) -> list[str]:
        s = self.settings
        pivot = self.forth.translate(texts, s.language, s.pivot)
        return self.back.translate(pivot, s.pivot, s.language)


@dataclass
class Translator:
    generator: Any  # tasks.generator.Generator
    prompt: str  # with {text}, {source}, {target}

    def translate(self, texts: list[str], source: str, target: str) -> list[str]:
        prompts = [self.prompt.format(text=text, source=source, target=target) for text in texts]
        return [first_paragraph(out["output"]) for out in self.generator.generate(prompts)]


def load_translator(name: str, settings: Any) -> Translator:
    """A run folder's model (its template and stop tokens) or a base model (its own chat template), greedy."""
    from transformers import AutoConfig, AutoTokenizer

    from tuneforge.models.assets import resolve_model
    from tuneforge.models.loading import load_generative
    from tuneforge.models.run_model import is_run_folder
    from tuneforge.tasks.generator import generator_for, load_generator_from_meta
    from tuneforge.tasks.run_folder import read_model_meta
    from tuneforge.tasks.spec import TASKS

    decoding = {"max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size, "do_sample": False}
    if is_run_folder(Path(name)):
        model_dir, meta = read_model_meta(name)
        if not TASKS[meta.get("task", "")].generates:
            raise ConfigError(f"data.augment.back_translation.model: {name} is a {meta.get('task')} run; give a "
                              f"run that generates text (causal-lm, seq2seq) or a translation model")
        generator = load_generator_from_meta(model_dir, meta, **decoding)
    else:
        resolved = resolve_model(name)
        encoder_decoder = bool(getattr(AutoConfig.from_pretrained(resolved.path), "is_encoder_decoder", False))
        auto_class = "AutoModelForSeq2SeqLM" if encoder_decoder else "AutoModelForCausalLM"
        task = next(spec for spec in TASKS.values() if spec.generates and spec.auto_class == auto_class)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        generator = generator_for(load_generative(resolved, task), tokenizer, {}, **decoding)
    prompt = settings.prompt
    if prompt == "auto":
        prompt = "{text}" if generator.encoder_decoder else INSTRUCTION
    return Translator(generator, prompt)


def first_paragraph(text: str) -> str:
    """A translation as a model wrote it, without what it added after a blank line or around it in quotes."""
    lines = text.strip().split("\n\n")[0].strip()
    return lines.strip('"“”«» ').strip()


def probe_predictor(rows: list[Any], config: Any, tokenizer: Any, resolved: Any) -> Callable[[list[str]], list[str]]:
    """A logistic regression on the frozen base model's embeddings of the original training rows."""
    from sklearn.linear_model import LogisticRegression

    from tuneforge.evaluation.baselines import embed
    from tuneforge.models.loading import load_encoder

    encoder = load_encoder(resolved, config.model.revision, config.model.trust_remote_code)
    max_length = config.data.max_length
    features = embed(encoder, tokenizer, [row.text for row in rows], max_length, description="label filter: probe")
    probe = LogisticRegression(max_iter=2000, random_state=config.train.seed).fit(features,
                                                                                  [str(r.label) for r in rows])

    def predict(texts: list[str]) -> list[str]:
        return [str(x) for x in probe.predict(embed(encoder, tokenizer, texts, max_length,
                                                    description="label filter"))]
    return predict


def run_predictor(run: str) -> Callable[[list[str]], list[str]]:
    """A classification run's predictor (its labels), for the label filter."""
    from tuneforge.tasks.spec import TASKS
    from tuneforge.tasks.run_folder import read_model_meta

    model_dir, meta = read_model_meta(run)
    spec = TASKS.get(meta.get("task", ""))
    if spec is None or not spec.labelled_head or spec.per_token_head:
        raise ConfigError(f"data.augment.keep_label: {run} is a {meta.get('task')} run; give a classification run "
                          f"folder, probe or none")
    predictor = spec.call("predictor", model_dir, meta)

    def predict(texts: list[str]) -> list[str]:
        return [out["label"] for out in predictor.predict(texts)]
    return predict
