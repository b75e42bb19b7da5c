"""Causal language modelling: instruction tuning of a decoder (chat data) or continued pretraining on raw text,
scored by generation metrics and perplexity against the base model zero-shot and few-shot."""

from tuneforge.tasks.spec import TaskSpec, register, steps

GENERATIVE_STEPS = {**steps("tuneforge.tasks.generative"),
                    "predictor": "tuneforge.tasks.generator:load_generator_from_meta"}
GENERATIVE_SHOWN = ("rougeL", "bleu", "chrf", "meteor", "exact_match", "ended_rate", "perplexity")

register(TaskSpec(
    augments=True,
    name="causal-lm",
    description="instruction tuning of a decoder, or continued pretraining on raw text",
    baselines=("zero_shot", "few_shot"),
    selection=("loss",),
    headline=("rougeL", "perplexity"),  # raw text (continued pretraining) has perplexity only
    shown=GENERATIVE_SHOWN,
    auto_class="AutoModelForCausalLM",
    next_token_loss=True,
    generates=True,
    inputs=("text",),
    peft_task_type="CAUSAL_LM",
    head_modules=(),
    per_token_head=False,
    vocabulary_head=True,
    head_size=None,
    windows=False,
    labelled_head=False,
    report="tuneforge.evaluation.report_generative:generative_parts",
    architectures=("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"),
    needs="a decoder with a language-model head (e.g. ...ForCausalLM)",
    **GENERATIVE_STEPS,
    variant_outputs="tuneforge.tasks.variants:generative_outputs",
    variant_figures="tuneforge.tasks.variants:generative_figures",
    starter=("smollm2-135m", "offline:chatterbot", "chat data (messages, sharegpt, alpaca, prompt/completion) or "
                                                   "raw text"),
))
