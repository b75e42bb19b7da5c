"""The models and TRL trainers of the preference tasks.

Each task hands the engine TRL's config class with the task's own fields and a factory for TRL's trainer; the engine
fills in the rest from the run config (schedule, precision from tuneforge's rule, never TRL's bf16 default,
checkpoints, resume, callbacks). The method (LoRA, full, ...) is applied by tuneforge's registry before the trainer
sees the model, so TRL never applies its own. The reference is never loaded by name (that fails offline): with an
adapter it is the policy with the adapter disabled, otherwise a frozen copy of the starting policy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError, UserError
from tuneforge.tasks.spec import Prepared, TrainerParts


def load_reward_model(resolved: Any, prepared: Prepared, config: RunConfig, tokenizer: Any) -> Any:
    """The base with a fresh one-output head (the reward): a sequence classifier with num_labels=1."""
    from tuneforge.methods.registry import load_kwargs
    from tuneforge.models.loading import load_classifier

    return load_classifier(resolved, ["reward"], tokenizer, config.model.revision, config.model.trust_remote_code,
                           **load_kwargs(config.method))


def load_policy(resolved: Any, prepared: Prepared, config: RunConfig, tokenizer: Any) -> Any:
    from tuneforge.methods.registry import load_kwargs
    from tuneforge.models.loading import load_generative
    from tuneforge.tasks.registry import task_spec

    return load_generative(resolved, task_spec(config.model.task), config.model.revision,
                           config.model.trust_remote_code, **load_kwargs(config.method))


def reward_parts(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig) -> TrainerParts:
    from trl import RewardConfig, RewardTrainer

    fields = {"max_length": None, "disable_dropout": True, "dataset_num_proc": None}
    return TrainerParts(arguments=RewardConfig, argument_fields=fields, trainer=RewardTrainer)


def policy_parts(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig) -> TrainerParts:
    task = config.model.task
    return {"dpo": _dpo, "kto": _kto, "orpo": _orpo, "grpo": _grpo, "ppo": _ppo}[task](model, tokenizer, config)


def adapted(model: Any) -> bool:
    """Whether the method left the base frozen behind an adapter (then the reference is the adapter switched off)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def frozen_copy(model: Any) -> Any | None:
    """The starting policy as the reference: None under an adapter (TRL disables it), else a frozen deep copy."""
    if adapted(model):
        return None
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def _dpo(model: Any, tokenizer: Any, config: RunConfig) -> TrainerParts:
    from trl import DPOConfig, DPOTrainer

    p = config.preference
    fields = {"beta": p.beta, "loss_type": [p.loss_type], "max_length": config.data.max_length,
              "truncation_mode": "keep_start", "disable_dropout": True, "dataset_num_proc": None}
    reference = frozen_copy(model)
    return TrainerParts(arguments=DPOConfig, argument_fields=fields,
                        trainer=lambda **kw: DPOTrainer(ref_model=reference, **kw))


def _kto(model: Any, tokenizer: Any, config: RunConfig) -> TrainerParts:
    from trl import KTOConfig, KTOTrainer

    # KTO's KL term pairs each answer with its batch neighbours' prompts: its batches keep their order
    fields = {"beta": config.preference.beta, "max_length": config.data.max_length, "disable_dropout": True,
              "dataset_num_proc": None, "train_sampling_strategy": "sequential"}
    reference = frozen_copy(model)
    return TrainerParts(arguments=KTOConfig, argument_fields=fields,
                        trainer=lambda **kw: KTOTrainer(ref_model=reference, **kw))


def _orpo(model: Any, tokenizer: Any, config: RunConfig) -> TrainerParts:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    fields = {"beta": config.preference.beta, "max_length": config.data.max_length, "disable_dropout": True,
              "max_completion_length": config.data.max_length // 2, "dataset_num_proc": None}
    return TrainerParts(arguments=ORPOConfig, argument_fields=fields, trainer=ORPOTrainer)


def _grpo(model: Any, tokenizer: Any, config: RunConfig) -> TrainerParts:
    from trl import GRPOConfig, GRPOTrainer

    p = config.preference
    rewards: list[Any] = [reward_function(name) for name in p.reward_functions]
    processing: list[Any] = [None] * len(rewards)
    if p.reward_run:
        scorer, scorer_tokenizer = load_reward_run(p.reward_run)
        rewards.insert(0, scorer)
        processing.insert(0, scorer_tokenizer)
    sampling = config.evaluation.generation  # rollouts sample as the run's generation settings say
    fields = {"beta": p.beta, "num_generations": p.num_generations, "max_completion_length": p.max_new_tokens,
              "disable_dropout": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
              "top_k": sampling.top_k, "log_completions": False}
    return TrainerParts(arguments=GRPOConfig, argument_fields=fields,
                        trainer=lambda **kw: GRPOTrainer(reward_funcs=rewards, reward_processing_classes=processing,
                                                         **kw))


def _ppo(model: Any, tokenizer: Any, config: RunConfig) -> TrainerParts:
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    p = config.preference
    reward, _ = load_reward_run(p.reward_run or "")
    value = copy.deepcopy(reward)  # the critic starts from the reward model (as TRL's examples do) and trains
    reward.requires_grad_(False)
    fields = {"kl_coef": p.kl_coef, "response_length": p.max_new_tokens,
              "temperature": config.evaluation.generation.temperature,
              "stop_token_id": tokenizer.eos_token_id, "num_ppo_epochs": 1, "num_mini_batches": 1,
              "total_episodes": None, "local_rollout_forward_batch_size": config.train.batch_size,
              "num_sample_generations": 0, "missing_eos_penalty": 1.0}
    reference = frozen_copy(model)

    def build(model: Any, args: Any, train_dataset: Any, eval_dataset: Any, processing_class: Any,
              callbacks: list[Any]) -> Any:
        from transformers import DataCollatorWithPadding

        return _length_logging(PPOTrainer)(
            args=args, processing_class=processing_class, model=model, ref_model=reference, reward_model=reward,
            value_model=value, train_dataset=train_dataset, eval_dataset=eval_dataset, callbacks=callbacks,
            data_collator=DataCollatorWithPadding(processing_class))

    return TrainerParts(arguments=PPOConfig, argument_fields=fields, trainer=build,
                        trained_model=lambda trainer: trainer.policy_model, resumable=False)


def _length_logging(ppo_trainer: type) -> type:
    """TRL's PPO trainer that also logs ``response_length`` with each step's objective/kl: the mean number of tokens
    of the step's rollouts, up to and including the stop token, padding excluded. TRL's loop keeps its rollouts to
    itself, and they all pass through its module's ``batch_generation``: that function is wrapped while this trainer
    trains (its sample generations would pass through it too; the wiring above turns them off)."""
    import sys

    loop = sys.modules[ppo_trainer.__module__]

    class LengthLoggingPPOTrainer(ppo_trainer):
        def train(self) -> None:
            generate = loop.batch_generation
            self._response_lengths: list[int] = []

            def recorded(model: Any, queries: Any, *args: Any, **kwargs: Any) -> Any:
                query_responses, logits = generate(model, queries, *args, **kwargs)
                lengths = response_lengths(query_responses[:, queries.shape[1]:], self.stop_token_id,
                                           self.processing_class.pad_token_id)
                self._response_lengths.extend(self.accelerator.gather(lengths).tolist())
                return query_responses, logits

            loop.batch_generation = recorded
            try:
                super().train()
            finally:
                loop.batch_generation = generate

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            lengths = getattr(self, "_response_lengths", None)
            if lengths and "objective/kl" in logs:  # a step's record: the rollouts since the last one
                logs = {**logs, "response_length": sum(lengths) / len(lengths)}
                lengths.clear()
            super().log(logs, start_time)

    return LengthLoggingPPOTrainer


def response_lengths(responses: Any, stop_token_id: int | None, pad_token_id: int) -> Any:
    """Each generated response's tokens: up to and including its first stop token, else up to its padding (the stop
    token counts even where it is also the pad token, as it is when a tokenizer pads with its eos)."""
    import torch
    from trl.experimental.utils import first_true_indices

    stops = responses == stop_token_id if stop_token_id is not None else torch.zeros_like(responses, dtype=torch.bool)
    return torch.minimum(first_true_indices(stops) + 1, first_true_indices((responses == pad_token_id) & ~stops))


def load_reward_run(folder: str, precision: str | None = None) -> tuple[Any, Any]:
    """A reward-model run's scorer (adapter merged) and tokenizer, computing in the run's precision (or
    ``precision``)."""
    import transformers
    from transformers import AutoTokenizer

    from tuneforge.methods.trained import load_trained
    from tuneforge.tasks.run_folder import loading, read_model_meta, task_of

    model_dir, meta = read_model_meta(folder)
    if task_of(meta) != "reward-model":
        raise UserError(f"{folder}: a {task_of(meta)} run, not a reward-model run (preference.reward_run and "
                        f"judge_run take a run trained with model.task=reward-model)")
    with loading(model_dir):
        model = load_trained(model_dir, meta, transformers.AutoModelForSequenceClassification, precision, num_labels=1)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def reward_function(name: str) -> Any:
    """``module:function`` (a module on the path, or a .py file) -> the function."""
    import importlib
    import importlib.util

    module_name, _, function = name.rpartition(":")
    if not module_name or not function:
        raise ConfigError(f"preference.reward_functions: {name!r} is not 'module:function'")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if spec is None or spec.loader is None or not Path(module_name).exists():
                raise FileNotFoundError(module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        found = getattr(module, function)
    except (ImportError, FileNotFoundError, AttributeError) as exc:
        raise ConfigError(f"preference.reward_functions: cannot load {name!r} ({type(exc).__name__}: {exc})") from None
    return found
