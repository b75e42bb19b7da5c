"""Load tokenizers and models for a task from a resolved model."""

from __future__ import annotations

from typing import Any

from tuneforge.models.assets import ResolvedModel
from tuneforge.errors import UserError


def _hub_kwargs(revision: str | None, trust_remote_code: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    return kwargs


def quiet_libraries() -> None:
    """Keep the console for our progress and results: transformers' load reports (a fresh head is expected to be
    'missing'; a trained one is loaded right after) and its weight loading/saving bars, bitsandbytes' note about
    optional CPU kernels, and deprecation chatter from dependencies go to the debug level. Idempotent."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # PPO and ORPO live in trl.experimental (pinned trl)
    for name in ("bitsandbytes", "torchao", "torch.utils._pytree"):  # optional kernels absent; torch.compile notes
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*")


def load_tokenizer(model: ResolvedModel, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model.path, **_hub_kwargs(revision, trust_remote_code))
    except OSError as exc:
        raise UserError(f"model {model.name!r}: cannot load its tokenizer ({str(exc).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_classifier(model: ResolvedModel, labels: list[str], tokenizer: Any, revision: str | None = None,
                    trust_remote_code: bool = False, **load_kwargs: Any) -> Any:
    """A sequence classifier with a fresh head sized from the data; id2label/label2id saved in its config."""
    from transformers import AutoModelForSequenceClassification

    try:
        classifier = AutoModelForSequenceClassification.from_pretrained(
            model.path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, **_hub_kwargs(revision, trust_remote_code),
            **load_kwargs)
    except OSError as exc:
        raise UserError(f"model {model.name!r}: cannot load it ({str(exc).splitlines()[0]})") from None
    if classifier.config.pad_token_id is None:
        classifier.config.pad_token_id = tokenizer.pad_token_id
    from tuneforge.models.first_token import first_token_only

    first_token_only(classifier)  # the last layer computes only the position the head reads
    return classifier


def load_encoder(model: ResolvedModel, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The pretrained backbone without any head (for embeddings)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(model.path, **_hub_kwargs(revision, trust_remote_code))


def load_generative(model: ResolvedModel, task: Any, revision: str | None = None,
                    trust_remote_code: bool = False, **load_kwargs: Any) -> Any:
    """The model of a generative ``task`` (its spec: ``auto_class``; a decoder trains on next tokens), weights in
    float32 (the master copy; training autocasts), or quantized when ``load_kwargs`` say so (QLoRA)."""
    import torch
    import transformers

    auto = getattr(transformers, task.auto_class)
    if task.next_token_loss and "attn_implementation" not in load_kwargs:
        load_kwargs["attn_implementation"] = attention_implementation()
    try:
        return auto.from_pretrained(model.path, dtype=torch.float32, **_hub_kwargs(revision, trust_remote_code),
                                    **load_kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"model {model.name!r}: cannot load it for {task.name} ({task.description}): "
                        f"{str(exc).splitlines()[0]}") from None


def attention_implementation() -> str:
    """FlashAttention 2 on a CUDA GPU where the flash_attn package is installed (packed rows then run as varlen
    sequences, no mask materialised), else PyTorch's scaled_dot_product_attention."""
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_token_classifier(model: ResolvedModel, labels: list[str], revision: str | None = None,
                          trust_remote_code: bool = False, **load_kwargs: Any) -> Any:
    """A token classifier (NER) with a fresh head sized from the tags, id2label/label2id saved."""
    from transformers import AutoModelForTokenClassification

    try:
        return AutoModelForTokenClassification.from_pretrained(
            model.path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, **_hub_kwargs(revision, trust_remote_code),
            **load_kwargs)
    except OSError as exc:
        raise UserError(f"model {model.name!r}: cannot load it ({str(exc).splitlines()[0]})") from None


def load_question_answerer(model: ResolvedModel, revision: str | None = None, trust_remote_code: bool = False,
                           **load_kwargs: Any) -> Any:
    """An extractive QA model: the encoder with a fresh span head (``qa_outputs``: a start and an end logit per
    token)."""
    from transformers import AutoModelForQuestionAnswering

    try:
        return AutoModelForQuestionAnswering.from_pretrained(model.path, **_hub_kwargs(revision, trust_remote_code),
                                                             **load_kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"model {model.name!r}: cannot load it with a question-answering head "
                        f"({str(exc).splitlines()[0]}); use an encoder such as BERT or MiniLM") from None
