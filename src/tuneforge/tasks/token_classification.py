"""Token classification (NER): a BIO tag per word, scored by entity-level F1 against memorization (each word's most
frequent training tag)."""

from tuneforge.tasks.spec import TaskSpec, register

register(TaskSpec(
    name="token-classification",
    description="a BIO tag per word (named entities)",
    baselines=("memorization",),
    selection=("entity_f1", "loss"),
    headline=("entity_f1",),
    shown=("entity_f1", "entity_precision", "entity_recall", "token_accuracy"),
    auto_class="AutoModelForTokenClassification",
    group_by_length=True,
    next_token_loss=False,
    generates=False,
    inputs=("text",),
    labelled_head=True,
    recipe="tuneforge.pipelines.token_classification:run_token_classification",
    evaluate_saved="tuneforge.pipelines.token_classification:evaluate_saved_ner",
    report="tuneforge.evaluation.report_ner:ner_parts",
    predictor="tuneforge.pipelines.token_classification:load_tag_predictor",
))
