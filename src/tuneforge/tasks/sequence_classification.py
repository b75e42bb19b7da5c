"""Sequence classification: a label per text, scored by macro-F1 against the majority class and a linear probe on
the frozen base model's embeddings."""

from tuneforge.tasks.spec import TaskSpec, register

register(TaskSpec(
    name="sequence-classification",
    description="a label per text (topics, sentiment, intent)",
    baselines=("majority", "linear_probe"),
    selection=("macro_f1", "accuracy", "weighted_f1", "loss"),
    headline=("macro_f1",),
    shown=("accuracy", "macro_f1", "weighted_f1"),
    auto_class="AutoModelForSequenceClassification",
    group_by_length=False,
    next_token_loss=False,
    generates=False,
    inputs=("text",),
    labelled_head=True,
    recipe="tuneforge.pipelines.finetune:run_classification",
    evaluate_saved="tuneforge.pipelines.evaluate:evaluate_saved_classification",
    report="tuneforge.evaluation.report:classification_parts",
    predictor="tuneforge.pipelines.predict:load_label_predictor",
))
