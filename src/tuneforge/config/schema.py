"""The run config schema. Each field is documented once; the descriptions feed ``--help``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SerializeAsAny, field_validator, model_validator

from tuneforge.config.augment import AugmentConfig
from tuneforge.config.distributed import DistributedConfig
from tuneforge.config.slices import SlicesConfig


class Section(BaseModel):
    """A config section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Task = Literal["sequence-classification", "token-classification", "question-answering", "causal-lm", "seq2seq",
               "reward-model", "dpo", "kto", "orpo", "grpo", "ppo"]
DatasetFormat = Literal["auto", "labelled", "alpaca", "sharegpt", "messages", "prompt-completion", "text",
                        "preference", "unpaired-preference", "prompt-only"]


class ModelConfig(Section):
    name: str = Field(
        description="Base model: a local folder, a .gguf file, an offline short name (minilm, smollm2-135m), "
        "a Hugging Face hub id, or a tuneforge run folder (its trained model, merged: how stages chain, e.g. "
        "sft -> dpo)."
    )
    task: Task = Field("sequence-classification", description="What the model learns to do: sequence-classification, "
                       "token-classification (NER: BIO tags per word), question-answering (extractive: the "
                       "answer's span in a context), "
                       "causal-lm (instruction tuning of a decoder, or continued pretraining on raw text) or "
                       "seq2seq (an encoder-decoder; two encoder names joined by '+' build one, e.g. minilm+minilm); "
                       "preference stages: reward-model (a scorer trained on chosen/rejected pairs), dpo, kto, orpo, "
                       "grpo, ppo (a policy tuned from model.name, usually an SFT run folder; see preference).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when loading from the hub.")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the hub.")


class SplitConfig(Section):
    train: float = Field(0.7, gt=0, lt=1, description="Share of rows for training.")
    validation: float = Field(0.15, ge=0, lt=1, description="Share of rows for validation (model selection).")
    test: float = Field(0.15, gt=0, lt=1, description="Share of rows for the held-out test, read once at the end.")
    stratify: bool = Field(True, description="Keep class proportions equal across splits.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1, got {total:g}")
        return self


class CleanConfig(Section):
    normalize_unicode: bool = Field(True, description="Unicode NFC normalization and mojibake repair (ftfy).")
    strip_control: bool = Field(True, description="Remove control and zero-width characters.")
    collapse_whitespace: bool = Field(True, description="Collapse runs of whitespace and trim.")
    drop_empty: bool = Field(True, description="Drop rows whose text is empty after cleaning.")
    dedup_exact: bool = Field(True, description="Drop exact duplicate texts (after cleaning).")
    dedup_near: bool = Field(True, description="Drop near duplicates (same words ignoring case/punctuation, "
                             "or MinHash Jaccard similarity above near_threshold).")
    near_threshold: float = Field(0.9, gt=0, le=1, description="Jaccard similarity of word 3-grams above which "
                                  "two texts are near duplicates.")


class DataConfig(Section):
    path: str = Field(description="csv | json | jsonl | parquet file, a folder of <label>/*.txt, or a saved "
                      "Hugging Face dataset (save_to_disk folder).")
    format: Literal["auto", "csv", "json", "jsonl", "parquet", "folder", "hf"] = Field(
        "auto", description="File format; auto detects it from the path.")
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field("label", description="Column holding the label.")
    hf_split: str | None = Field(None, description="Which split of a saved DatasetDict to read (default: all).")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/validation/test proportions.")
    max_length: int = Field(128, ge=8, le=32768, description="Maximum tokens per example (longer ones are truncated).")
    doc_stride: int = Field(32, ge=0, description="Question answering: a context longer than max_length is read in "
                            "overlapping windows (each with the question); consecutive windows share this many tokens. "
                            "Must be below max_length / 3.")
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Cleaning steps, each counted in data_report.json.")
    augment: AugmentConfig | None = Field(
        None, description="Augmented copies of the training split (classification, token classification: only "
        "span-keeping operations; causal-lm and seq2seq: the prompts), made after the split and the leakage check: "
        "validation and test are never augmented; null: none.")
    on_bad_rows: Literal["error", "skip"] = Field(
        "error", description="A malformed row: stop with its file and line (error) or drop and count it (skip).")
    dataset_format: DatasetFormat = Field(
        "auto", description="How records are laid out: labelled (text + label), alpaca (instruction/input/output), "
        "sharegpt (conversations of from/value), messages (OpenAI role/content), prompt-completion, or text (raw "
        "documents for continued pretraining); auto detects it from the first record's keys.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map the format's keys to your column names, e.g. {instruction: question, "
        "output: answer} or {messages: dialog, role: speaker, content: text}; question answering: {question: q, "
        "context: passage, answers: ..., answer: ..., answer_start: ..., id: ...}.")
    roles: dict[str, str] = Field(
        default_factory=dict, description="Map role names in your data to user/assistant/system, e.g. {bot: assistant}.")
    template: str = Field(
        "auto", description="Chat template: auto (the tokenizer's own, else chatml when its tokens exist, else plain), "
        "or a named one: chatml | plain | alpaca.")
    system_prompt: str | None = Field(None, description="A system message put before every conversation that has none.")
    loss_on: Literal["completion", "all"] = Field(
        "completion", description="Train on the assistant/completion tokens only (default) or on every token.")
    packing: bool | None = Field(
        None, description="Pack short examples into full rows with per-example attention (default: on for causal-lm).")
    pack_by: Literal["batch", "dataset"] = Field(
        "batch", description="batch: each step's train.batch_size examples are packed into as few rows (of at most "
        "max_length) as hold them, so batch_size still counts examples and the optimizer sees the same batches as "
        "without packing; dataset: the whole split is packed into rows of max_length once and batch_size counts "
        "rows (fewer, fuller steps).")
    share_prefix: bool = Field(
        True, description="With pack_by: batch, compute the prompt prefix that every example of a batch starts "
        "with (a fixed system prompt, the template's opening) once per row instead of once per example; each "
        "example attends to it as if alone (same loss and gradients). Needs sdpa attention (the default); with another "
        "attention implementation the batch is packed without sharing.")
    max_rows: int | None = Field(None, ge=10, description="Use at most this many rows (a seeded stratified sample).")
    min_examples_per_class: int = Field(
        0, ge=0, description="Drop classes with fewer examples (counted); 0 keeps all and errors if one cannot be split.")


class MethodConfig(Section):
    """Base of every method's config; the registry maps ``name`` to the concrete class."""

    name: str = Field(description="Fine-tuning method: full | freeze | lora | qlora | adapter | prefix | prompt | ia3.")


class EarlyStoppingConfig(Section):
    metric: str = Field(
        "macro_f1", description="Validation metric that selects the best checkpoint and drives early stopping "
        "(sequence-classification: macro_f1, accuracy, weighted_f1 or loss; token-classification: entity_f1; "
        "question-answering: f1 or exact_match (SQuAD); generative tasks: loss). Default: the task's first.")
    patience: int = Field(2, ge=1, description="Evaluations without improvement before training stops.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


class TrainConfig(Section):
    epochs: float = Field(3, gt=0, description="Passes over the training data.")
    batch_size: int = Field(16, ge=1, description="Examples per device per step.")
    eval_batch_size: int | None = Field(None, ge=1, description="Batch size for evaluation (default: 2 x batch_size).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps whose gradients add up before an update.")
    learning_rate: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] = Field(
        "auto", description="Peak learning rate. auto: the method's usual rate for the task (a new task head needs "
        "more than a language-model head): lora/qlora 2e-3 or 2e-4, full 3e-5 or 2e-5, freeze 1e-4 or 2e-5, "
        "adapter 1e-3 or 2e-4, ia3 3e-3, prefix 1e-2, prompt 3e-2 (config show prints the value used).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warm-up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, description="Seed for data order, initialisation and the adapter (set before it is created).")
    eval_strategy: Literal["epoch", "steps"] = Field("epoch", description="Validate every epoch or every eval_steps.")
    eval_steps: int | None = Field(None, ge=1, description="Validate every N optimizer steps (eval_strategy: steps).")
    early_stopping: EarlyStoppingConfig | None = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping on validation; null disables it.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the best one is always kept).")
    logging_steps: int = Field(10, ge=1, description="Log training loss every N steps.")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute dtype of the forward/backward pass (autocast; master weights and optimizer "
        "states stay fp32). auto: bf16 on GPUs that support it (else fp16), and on CPUs whose bf16 matmul is "
        "measurably faster than fp32 (AMX/AVX512-BF16); fp32 otherwise.")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="Recompute activations in the backward pass (~1/3 more compute, far less activation "
        "memory). auto: on only when the memory estimate says the run would not fit without it.")
    group_by_length: bool | None = Field(
        None, description="Batch examples of similar length together (less padding). Default: on for unpacked "
        "generative runs and token classification, off for sequence classification and QA.")
    class_weights: Literal["auto", "none", "balanced"] | dict[str, float] = Field(
        "auto", description="Weighted loss for imbalanced labels (sequence classification). balanced: each class "
        "weighs n / (classes x its count) in the training split; a mapping gives weights by label (others 1); "
        "auto: balanced when the largest class has at least 3 times the examples of the smallest, else none.")

    _auto_learning_rate: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _steps_need_eval_steps(self) -> TrainConfig:
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("eval_strategy 'steps' needs eval_steps (e.g. train.eval_steps=100)")
        return self


class GenerationConfig(Section):
    max_new_tokens: int = Field(64, ge=1, description="Most tokens generated per answer.")
    do_sample: bool = Field(False, description="Sample (temperature/top_p/top_k) instead of greedy or beam search.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature (do_sample).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass (do_sample).")
    top_k: int = Field(50, ge=0, description="Sample among the k most likely tokens (do_sample; 0 = all).")
    num_beams: int = Field(1, ge=1, description="Beam search width (1 = greedy when not sampling).")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalty on repeated tokens (1 = none).")
    stop_strings: list[str] = Field(default_factory=list, description="Stop generating when one of these appears.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together.")
    seed: int = Field(0, description="Seed for sampling.")


class EvaluationConfig(Section):
    baselines: list[str] | None = Field(
        None, description="Baselines scored on the same test split (default: majority + linear_probe for "
        "classification; memorization (each word's most frequent training tag) for token-classification; "
        "sliding_window (the context sentence sharing the most words with the question) for question-answering; "
        "the base model zero_shot + few_shot for causal-lm; copy_input (the prompt as the answer) for "
        "seq2seq; chance and length (the longer answer wins) for reward-model; sft (the model it started from) for "
        "dpo, kto, orpo, grpo, ppo).")
    few_shot_k: int = Field(3, ge=1, description="Training examples put in the prompt of the few_shot baseline.")
    max_test_examples: int | None = Field(
        200, ge=1, description="Generative tasks: generate for at most this many test prompts (a seeded sample; "
        "perplexity uses the whole test split). null = all.")
    samples_in_report: int = Field(12, ge=0, description="Sample prompts shown in report.html with each model's output.")
    max_answer_length: int = Field(30, ge=1, description="Question answering: the longest answer span predicted, in tokens.")
    n_best: int = Field(20, ge=1, description="Question answering: start and end candidates (top-k logits per window) "
                        "searched for the best span.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Decoding for generative tasks.")
    bootstrap_samples: int = Field(1000, ge=100, description="Bootstrap resamples for confidence intervals.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the intervals.")
    slices: SlicesConfig | None = Field(
        None, description="Per-slice test metrics with intervals for the fine-tuned model and each baseline, the worst "
        "slice flagged when its interval excludes the overall figure; fairness figures for sensitive columns "
        "(sequence classification); null: none.")


class PreferenceConfig(Section):
    """Preference tuning and RLHF (tasks reward-model, dpo, kto, orpo, grpo, ppo); TRL's trainers with these settings."""

    beta: float = Field(0.1, ge=0, description="Strength of the pull to the reference (dpo, kto, grpo: KL weight, 0: none; "
                        "orpo: the odds-ratio weight, TRL's lambda).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="dpo's loss: sigmoid (DPO), ipo (IPO: a squared loss that does not saturate), hinge "
        "(SLiC).")
    reward_run: str | None = Field(
        None, description="A reward-model run folder that scores the policy's samples (ppo: required; grpo: one of "
        "its rewards).")
    reward_functions: list[str] = Field(
        default_factory=list, description="grpo: Python reward functions as 'module:function' (module importable or a "
        ".py file path), each called as f(prompts, completions, **columns) -> list of floats.")
    judge_run: str | None = Field(
        None, description="A reward-model run folder that did not train the policy: it judges the tuned model "
        "against model.name (the SFT baseline) on held-out prompts (win rate, mean reward). null: no judged "
        "figures (KL, length and the implicit reward accuracy are still reported).")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="Most tokens per sampled answer (ppo and grpo rollouts, "
                                "the judged evaluation); generation is the slow part of ppo/grpo on a CPU.")
    num_generations: int = Field(4, ge=2, description="grpo: answers sampled per prompt (the group whose rewards are "
                                 "compared).")
    kl_coef: float = Field(0.05, ge=0, description="ppo: the KL penalty to the reference in the reward.")
    max_prompts: int = Field(64, ge=1, description="Held-out test prompts the judged evaluation generates for.")

    @model_validator(mode="after")
    def _judge_held_out(self) -> PreferenceConfig:
        from pathlib import Path

        if self.judge_run and self.reward_run and Path(self.judge_run).resolve() == Path(self.reward_run).resolve():
            raise ValueError("judge_run is the reward_run that trains the policy: a policy tuned on a reward model "
                             "learns to please it, so judge with another reward-model run (trained on held-out pairs)")
        return self


class TrackingConfig(Section):
    enabled: bool = Field(True, description="Record the run (parameters, metrics per step, artifacts) in MLflow.")
    uri: str | None = Field(None, description="MLflow tracking server URI (http://...); default: an embedded SQLite "
                            "store in tracking.dir, no server needed.")
    dir: str = Field("runs/mlflow", description="Folder of the embedded store: mlflow.db and artifacts/.")
    experiment: str | None = Field(None, description="MLflow experiment (default: the run name).")
    extra: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="Also report to these (opt-in; they must be installed).")


class ParamSpace(Section):
    type: Literal["float", "int", "categorical"] = Field(description="Kind of parameter.")
    low: float | None = Field(None, description="Lower bound (float/int).")
    high: float | None = Field(None, description="Upper bound (float/int).")
    log: bool = Field(False, description="Sample on a log scale (float/int).")
    step: float | None = Field(None, description="Spacing of values (float/int); needed for grid search.")
    choices: list[Any] | None = Field(None, description="Values to choose from (categorical).")

    @model_validator(mode="after")
    def _complete(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        return self


class Objective(Section):
    metric: str = Field(
        "macro_f1", description="A validation metric of the task (sequence-classification: macro_f1, accuracy, "
        "weighted_f1, loss; token-classification: entity_f1, loss; question-answering: f1, exact_match, loss; "
        "generative tasks: loss) or a cost: trainable_params, train_seconds. Default: the task's first.")
    direction: Literal["maximize", "minimize"] = Field(
        "maximize", description="Whether larger is better (default: minimize for loss and the costs).")


class HpoConfig(Section):
    algorithm: Literal["grid", "random", "bayesian", "gp", "evolutionary"] = Field(
        "bayesian", description="grid | random | bayesian (TPE) | gp (Gaussian-process Bayesian optimization: "
        "for small budgets over a few numeric parameters) | evolutionary (CMA-ES; NSGA-II when several objectives).")
    space: dict[str, ParamSpace] = Field(description="Search space: dotted config path -> parameter, e.g. "
                                         "train.learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true}.")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1,
                                        description="What to optimize; several make a multi-objective search.")
    pruner: Literal["none", "median", "hyperband"] = Field(
        "median", description="Stop weak trials early from their validation scores (single objective only).")
    prune_after: float = Field(0.25, ge=0, lt=1, description="Share of a trial's training steps before the pruner "
                               "may stop it (never at its first validation): early scores say little about the end.")
    prune_until: float = Field(0.5, gt=0, le=1, description="Share of a trial's training steps after which it is not "
                               "pruned any more: late in a trial a stop saves little, and a noisy score there would "
                               "waste a nearly finished run.")
    n_trials: int = Field(20, ge=1, description="Finished trials the study aims for (resumed studies count theirs).")
    timeout: float | None = Field(None, gt=0, description="Stop starting trials after this many seconds.")
    max_steps: int | None = Field(None, ge=1, description="Training-step budget of the study: trials (pruned and "
                                  "failed ones count the steps they ran) stop being started once it is spent, and "
                                  "a trial still running when it runs out stops there, recorded as pruned. With "
                                  "several workers, another worker's running trial counts once it finishes.")
    seed: int = Field(0, description="Sampler seed.")
    storage: str | None = Field(None, description="Optuna storage URL (e.g. postgresql://...); default a SQLite "
                                "file in the study folder.")
    study_name: str | None = Field(None, description="Study name (default: the run name).")
    retrain_best: bool = Field(False, description="Retrain best.yaml from scratch before the test evaluation.")
    heartbeat_seconds: int = Field(30, ge=1, description="Trial heartbeat; a trial silent for 2x this (a killed "
                                   "worker) is marked failed when a worker starts.")

    @model_validator(mode="after")
    def _consistent(self) -> HpoConfig:
        if self.prune_until <= self.prune_after:
            raise ValueError(f"hpo.prune_until ({self.prune_until}) must be above hpo.prune_after ({self.prune_after})")
        if self.algorithm == "gp" and self.pruner != "none":
            raise ValueError("hpo.algorithm gp learns only from finished trials, so it proposes a pruned point "
                             "again and again: use pruner: none with gp, or algorithm: bayesian (TPE) with pruning")
        if len(self.objectives) > 1 and self.pruner != "none":
            raise ValueError("pruning needs a single objective; set hpo.pruner: none")
        if self.objectives[0].metric in ("trainable_params", "train_seconds"):
            raise ValueError("the first objective must be a validation metric of the task, not a cost")
        if self.algorithm == "grid":
            bad = [k for k, p in self.space.items() if p.type != "categorical" and p.step is None]
            if bad:
                raise ValueError(f"grid search needs choices or a step for every parameter: {', '.join(bad)}")
        return self


class MultitaskTask(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="The task's name (its head's name).")
    data: dict[str, Any] = Field(default_factory=dict, description="This task's data: keys of the data section "
                                 "(path, text_column, label_column, max_rows ...) over the run's own.")
    weight: float = Field(1.0, gt=0, description="Its share of every training epoch, relative to the others' "
                          "(sampled with repetition when the share is larger than its data).")


class MultitaskConfig(Section):
    tasks: list[MultitaskTask] = Field(min_length=2, description="The classification datasets trained together, "
                                       "one head each on the shared encoder (tuneforge multitask).")

    @model_validator(mode="after")
    def _distinct(self) -> MultitaskConfig:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"multitask.tasks: names must differ (got {', '.join(names)})")
        return self


def _check_augment(settings: AugmentConfig, spec: Any) -> None:
    """The augmentation a task can take: every operation for labelled texts; for tagged words only the operations
    that keep entity spans aligned, and no label filter (labels are per word)."""
    if not spec.augments:
        raise ValueError(f"data.augment: task {spec.name} has no augmentation yet (sequence classification, token "
                         f"classification and the generative tasks have); remove it")
    if spec.generates and settings.keep_label != "none":
        raise ValueError(f"data.augment.keep_label: task {spec.name} has no labels to preserve; set it to none")
    if spec.per_token_head:
        unaligned = [op for op in settings.operations if op not in ("synonym", "insert", "swap", "delete")]
        if unaligned or settings.keep_label != "none":
            raise ValueError(f"data.augment: task {spec.name} takes only synonym, insert, swap and delete (they keep "
                             f"entity spans aligned) and keep_label none; remove "
                             f"{', '.join(unaligned) or 'keep_label'}")


class RunConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name (used in the run folder name).")
    model: ModelConfig = Field(description="The base model and task.")
    data: DataConfig = Field(description="Where the data is and how to prepare it.")
    method: SerializeAsAny[MethodConfig] = Field(default_factory=lambda: MethodConfig(name="lora"), validate_default=True,
                                                 description="Fine-tuning method (default: lora, its defaults).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training loop settings.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Test-time evaluation.")
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig,
                                         description="Preference tuning and RLHF stages (reward-model, dpo, ppo ...).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Experiment tracking.")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig,
                                           description="How train --nproc N spreads the run over processes.")
    hpo: HpoConfig | None = Field(None, description="Hyperparameter search (used by tuneforge tune).")
    multitask: MultitaskConfig | None = Field(None, description="Several classification datasets, one head each "
                                              "(used by tuneforge multitask).")
    output_dir: str | None = Field(None, description="Run folder (default: runs/<name>-<timestamp>).")

    @model_validator(mode="after")
    def _task_defaults(self) -> RunConfig:
        from tuneforge.tasks.registry import task_spec

        task = self.model.task
        spec = task_spec(task)
        if self.evaluation.baselines is None:
            self.evaluation.baselines = list(spec.baselines)
        wrong = [b for b in self.evaluation.baselines if b not in spec.baselines]
        if wrong:
            raise ValueError(f"evaluation.baselines: {', '.join(wrong)} do not apply to task {task} "
                             f"(allowed: {', '.join(spec.baselines) or 'none'})")
        early = self.train.early_stopping
        if early is not None:
            early.metric = _selection_metric(early, spec, "train.early_stopping.metric")
        if self.train.learning_rate == "auto":
            from tuneforge.methods.registry import spec_for

            head, generative = spec_for(self.method.name).learning_rates
            self.train.learning_rate = generative if spec.vocabulary_head else head
            self.train._auto_learning_rate = True  # a search that changes the method decides it again
        if self.data.augment is not None:
            _check_augment(self.data.augment, spec)
        if self.evaluation.slices is not None and not spec.slices:
            raise ValueError(f"evaluation.slices: task {task} has no per-slice evaluation yet (sequence classification "
                             f"has); remove it")
        if self.train.class_weights not in ("auto", "none") and not spec.class_weighted:
            raise ValueError(f"train.class_weights: task {task} has no class-weighted loss (sequence classification "
                             f"has); remove it or set it to none")
        if task == "ppo" and not self.preference.reward_run:
            raise ValueError("preference.reward_run: ppo needs a reward-model run folder to score its answers (train "
                             "one with model.task=reward-model)")
        if task == "grpo" and not (self.preference.reward_run or self.preference.reward_functions):
            raise ValueError("preference: grpo needs a reward: set reward_run (a reward-model run folder) and/or "
                             "reward_functions ('module:function')")
        if task == "grpo" and self.train.batch_size % self.preference.num_generations:
            raise ValueError(f"train.batch_size: {self.train.batch_size} must be a multiple of "
                             f"preference.num_generations ({self.preference.num_generations}): each prompt's answers "
                             f"are one group of a batch")
        for n, objective in enumerate(self.hpo.objectives if self.hpo else []):
            _objective_for_task(objective, spec, f"hpo.objectives.{n}.metric")
        if spec.windows and 3 * self.data.doc_stride >= self.data.max_length:
            raise ValueError(f"data.doc_stride: {self.data.doc_stride} leaves no room in a window of data.max_length "
                             f"{self.data.max_length} for the question and new context; use doc_stride below "
                             f"max_length / 3 (at most {(self.data.max_length - 1) // 3})")
        return self

    @field_validator("method", mode="before")
    @classmethod
    def _concrete_method(cls, value: Any) -> Any:
        from tuneforge.methods.registry import validate_method

        if isinstance(value, MethodConfig):
            value = value.model_dump()
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping with a 'name' key, e.g. {name: lora, r: 8}")
        return validate_method({"name": "lora", **value})


def _selection_metric(section: BaseModel, spec: Any, where: str) -> str:
    """A validation metric the task computes: the one set, or the task's first when none was set."""
    metric = section.metric  # type: ignore[attr-defined]
    if metric in spec.selection:
        return metric
    if "metric" in section.model_fields_set:
        raise ValueError(f"{where}: {spec.name} runs compute {', '.join(spec.selection)} on validation, not "
                         f"{metric!r} (set it to {spec.selection[0]})")
    return spec.selection[0]


def _objective_for_task(objective: Objective, spec: Any, where: str) -> None:
    from tuneforge.tasks.registry import COSTS, direction

    if objective.metric not in COSTS:
        objective.metric = _selection_metric(objective, spec, where)
    if "direction" not in objective.model_fields_set:
        objective.direction = direction(objective.metric)  # type: ignore[assignment]
