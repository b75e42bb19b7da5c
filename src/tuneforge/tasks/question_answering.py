"""Extractive question answering: the answer's span in a context, scored by SQuAD F1 and exact match against the
sliding-window baseline (the context sentence sharing the most words with the question)."""

from tuneforge.tasks.spec import TaskSpec, register

register(TaskSpec(
    name="question-answering",
    description="the answer's span in a context (extractive QA)",
    baselines=("sliding_window",),
    selection=("f1", "exact_match", "loss"),
    headline=("f1",),
    shown=("exact_match", "f1"),
    auto_class="AutoModelForQuestionAnswering",
    group_by_length=False,
    next_token_loss=False,
    generates=False,
    inputs=("question", "context"),
    labelled_head=False,
    recipe="tuneforge.pipelines.question_answering:run_question_answering",
    evaluate_saved="tuneforge.pipelines.question_answering:evaluate_saved_qa",
    report="tuneforge.evaluation.report_qa:qa_parts",
    predictor="tuneforge.pipelines.question_answering:load_qa_predictor",
))
