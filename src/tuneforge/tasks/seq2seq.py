"""Sequence to sequence: an encoder-decoder writes the answer to a source text, scored by generation metrics and
perplexity against copying the input."""

from tuneforge.tasks.causal_lm import GENERATIVE_SHOWN, GENERATIVE_STEPS
from tuneforge.tasks.spec import TaskSpec, register

register(TaskSpec(
    augments=True,
    name="seq2seq",
    description="an encoder-decoder writes a target text from a source text",
    baselines=("copy_input",),
    selection=("loss",),
    headline=("rougeL", "perplexity"),
    shown=GENERATIVE_SHOWN,
    auto_class="AutoModelForSeq2SeqLM",
    next_token_loss=False,
    generates=True,
    inputs=("text",),
    peft_task_type="SEQ_2_SEQ_LM",
    head_modules=(),
    per_token_head=False,
    vocabulary_head=True,
    head_size=None,
    windows=False,
    labelled_head=False,
    report="tuneforge.evaluation.report_generative:generative_parts",
    **GENERATIVE_STEPS,
    variant_outputs="tuneforge.tasks.variants:generative_outputs",
    variant_figures="tuneforge.tasks.variants:generative_figures",
    starter=("minilm+minilm", "data/pairs.jsonl", "prompt/completion pairs (or alpaca) in jsonl"),
))
