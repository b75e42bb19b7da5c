"""The ``evaluation.slices:`` section: which subsets of the test split are scored on their own (metadata columns,
sensitive attributes, labels, text length, named expressions) and how a weak one is flagged."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

class SlicesConfig(BaseModel):
    """Per-slice evaluation: the test metrics of the fine-tuned model and each baseline on subsets of the test split."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section (schema.Section)

    columns: list[str] = Field(default_factory=list, description="Metadata columns of the data: a slice per value "
                               "(e.g. source, region).")
    sensitive: list[str] = Field(default_factory=list, description="Sensitive attribute columns: sliced, and the group "
                                 "fairness figures (demographic parity and equalized-odds differences, per-group "
                                 "selection and error rates, through fairlearn) with intervals.")
    positive_label: str | None = Field(None, description="Fairness: the favourable label (selection = predicting "
                                       "it); default: every label in turn (one-vs-rest), the worst reported.")
    by_label: bool = Field(True, description="A slice per true label (scored by accuracy, the label's recall).")
    length_buckets: list[int] | Literal["auto"] | None = Field(
        "auto", description="Slices by text length in words: ascending bucket edges, e.g. [50, 200]; auto: the test "
        "split's length terciles; null: none.")
    where: dict[str, str] = Field(default_factory=dict, description="Named slices by a boolean expression over the "
                                  "columns and text, label, words, chars, e.g. {short_sport: \"label == 'sport' and "
                                  "words < 100\"}.")
    min_rows: int = Field(10, ge=1, description="A slice with fewer test rows is reported but never flagged.")

    @field_validator("where")
    @classmethod
    def _expressions_parse(cls, value: dict[str, str]) -> dict[str, str]:
        from tuneforge.config.expression import parse_expression
        from tuneforge.errors import ConfigError

        for name, text in value.items():
            try:
                parse_expression(text, name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("length_buckets")
    @classmethod
    def _ascending(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or any(b <= a for a, b in zip(value, value[1:])) or value[0] <= 0):
            raise ValueError(f"bucket edges must be positive and ascending, got {value}")
        return value
