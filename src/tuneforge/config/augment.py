"""The ``data.augment:`` section: augmented copies of the training split (made after the split and the leakage
check)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

class AugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section (schema.Section)

    operations: list[Literal["synonym", "insert", "swap", "delete"]] = Field(
        default_factory=lambda: ["synonym", "insert", "swap", "delete"],
        description="EDA operations: synonym (WordNet synonyms of non-stopwords), insert (a synonym at a random "
        "place), swap (two words), delete (each word with probability rate).")
    copies: int = Field(1, ge=1, le=16, description="Augmented copies per training example (each by one operation).")
    rate: float = Field(0.1, gt=0, le=0.5, description="Share of an example's words each operation changes.")
    seed: int = Field(0, description="Seed of the augmentation (which words, which operation).")
