"""Preference tuning and RLHF, one task per objective, on TRL's trainers (1.12):

- ``reward-model``: a sequence scorer trained on chosen/rejected pairs (RewardTrainer), scored by pairwise accuracy
  and margin on the test pairs against chance and a longer-answer-wins baseline;
- ``dpo`` (loss sigmoid | ipo | hinge), ``kto``, ``orpo``: a policy tuned on pairs (KTO: unpaired good/bad answers);
- ``grpo``: a policy tuned on its own sampled answers, rewarded by a reward-model run and/or Python functions;
- ``ppo``: a policy with a value head, rewarded by a reward-model run, held near its reference by a KL penalty.

A policy starts from ``model.name`` (usually an SFT run folder, merged) which is also its reference and the baseline
of its evaluation: on held-out prompts both answer, a reward model that did not train the policy judges them (win
rate, mean reward), and KL to the reference, answer length and the implicit reward's accuracy are reported.
The steps live in preference_data.py (data), preference_train.py (models, trainers) and preference_eval.py (test).
"""

from tuneforge.tasks.spec import TaskSpec, register

DATA = "tuneforge.tasks.preference_data"
TRAIN = "tuneforge.tasks.preference_train"
EVAL = "tuneforge.tasks.preference_eval"
POLICY_SHOWN = ("win_rate", "mean_reward", "kl", "answer_words", "implicit_accuracy")

register(TaskSpec(
    name="reward-model",
    description="a scorer of answers trained on preference pairs (chosen over rejected)",
    baselines=("chance", "length"),
    selection=("accuracy", "loss"),
    headline=("pairwise_accuracy",),
    shown=("pairwise_accuracy", "mean_margin"),
    auto_class="AutoModelForSequenceClassification",
    labelled_head=False,
    next_token_loss=False,
    generates=False,
    inputs=("text",),
    peft_task_type="SEQ_CLS",
    head_modules=("classifier", "score"),
    per_token_head=False,
    vocabulary_head=False,
    head_size=1,
    windows=False,
    prepare=f"{DATA}:prepare",
    load_model=f"{TRAIN}:load_reward_model",
    trainer_parts=f"{TRAIN}:reward_parts",
    evaluate=f"{EVAL}:evaluate_reward_model",
    report="tuneforge.evaluation.report_preference:reward_parts",
    predictor=f"{EVAL}:load_reward_scorer",
    starter=("smollm2-135m", "data/pairs.jsonl", "preference pairs: prompt, chosen, rejected (text or messages)"),
))


def _policy(name: str, description: str, data_shape: str, selection: tuple[str, ...] = ("loss",),
            rewarded: bool = False) -> None:
    settings = {"beta": 0.1, "judge_run": None, "max_new_tokens": 32}
    if rewarded:  # a placeholder the user points at a reward-model run
        settings = {**settings, "reward_run": "runs/reward", "beta": 0.0 if name == "grpo" else 0.1}
    register(TaskSpec(
        name=name,
        description=description,
        baselines=("sft",),
        selection=selection,
        headline=("win_rate", "implicit_accuracy", "kl"),  # win rate needs a judge (preference.judge_run)
        shown=POLICY_SHOWN,
        auto_class="AutoModelForCausalLM",
        labelled_head=False,
        next_token_loss=True,
        generates=True,
        inputs=("text",),
        peft_task_type="CAUSAL_LM",
        head_modules=(),
        per_token_head=False,
        vocabulary_head=True,
        head_size=None,
        windows=False,
        prepare=f"{DATA}:prepare",
        load_model=f"{TRAIN}:load_policy",
        trainer_parts=f"{TRAIN}:policy_parts",
        evaluate=f"{EVAL}:evaluate_policy",
        report="tuneforge.evaluation.report_preference:policy_parts",
        predictor="tuneforge.tasks.generator:load_generator_from_meta",
        architectures=("ForCausalLM", "LMHeadModel"),
        needs="a decoder with a language-model head (e.g. ...ForCausalLM), usually an SFT run folder",
        starter=("smollm2-135m", "data/pairs.jsonl", data_shape),
        starter_settings={"preference": settings},
    ))


_policy("dpo", "direct preference optimization of a policy on chosen/rejected pairs (loss: sigmoid, ipo, hinge)",
        "preference pairs: prompt, chosen, rejected")
_policy("kto", "Kahneman-Tversky optimization on answers marked desirable or not (pairs split into both)",
        "prompt, completion, label (true: desirable), or preference pairs")
_policy("orpo", "odds-ratio preference optimization: SFT and preference in one loss, no reference model",
        "preference pairs: prompt, chosen, rejected")
_policy("grpo", "group relative policy optimization on sampled answers scored by reward models or functions",
        "prompts (prompt), or preference pairs (their prompts)", selection=("reward", "loss"), rewarded=True)
_policy("ppo", "proximal policy optimization with a value head against a reward-model run (RLHF)",
        "prompts (prompt), or preference pairs (their prompts)", selection=("loss",), rewarded=True)
