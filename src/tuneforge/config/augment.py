"""The ``data.augment:`` section: augmented copies of the training split (made after the split and the leakage
check)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BackTranslationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section (schema.Section)

    model: str = Field(description="The translator: a tuneforge causal-lm or seq2seq run folder, a model folder, an "
                       "offline short name (smollm2-135m) or a hub id; a decoder is prompted, an encoder-decoder reads "
                       "the prompt as its source.")
    back_model: str | None = Field(None, description="The model translating back from the pivot language (a pair of "
                                   "one-direction models, e.g. opus-mt-en-fr and opus-mt-fr-en); default: model.")
    language: str = Field("English", description="The data's language.")
    pivot: str = Field("French", description="The language of the round trip.")
    prompt: str = Field("auto", description="The prompt, with {text}, {source} and {target}; auto: an instruction "
                        "for a decoder, the text itself for an encoder-decoder (a one-direction translation model).")
    max_length_ratio: float = Field(1.5, gt=1, description="A round trip is kept only when its length in words is "
                                    "within this ratio of the source's (either way).")
    max_new_tokens: int = Field(160, ge=8, description="Longest translation, in tokens.")
    batch_size: int = Field(8, ge=1, description="Texts translated at once.")


class AugmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section (schema.Section)

    operations: list[Literal["synonym", "insert", "swap", "delete", "back_translation"]] = Field(
        default_factory=lambda: ["synonym", "insert", "swap", "delete"],
        description="EDA operations: synonym (WordNet synonyms of non-stopwords), insert (a synonym at a random "
        "place), swap (two words), delete (each word with probability rate); back_translation (a round trip through "
        "data.augment.back_translation's pivot language).")
    copies: int = Field(1, ge=1, le=16, description="Augmented copies per training example (each by one operation).")
    rate: float = Field(0.1, gt=0, le=0.5, description="Share of an example's words each operation changes.")
    seed: int = Field(0, description="Seed of the augmentation (which words, which operation).")
    back_translation: BackTranslationConfig | None = Field(None, description="The translator of back_translation.")
    keep_label: str = Field("none", description="Label-preservation filter: none; probe (a logistic regression on "
                            "the frozen base model's embeddings of the original training examples); or a "
                            "classification run folder. A copy is dropped when that model predicts another label "
                            "for it than for its source.")
    targets: bool = Field(False, description="Generative tasks: augment the reference answers too (default: only the "
                          "prompts).")

    @model_validator(mode="after")
    def _translator_given(self) -> AugmentConfig:
        if "back_translation" in self.operations and self.back_translation is None:
            raise ValueError("operations has back_translation: set back_translation.model (a translation model or a "
                             "causal-lm/seq2seq run folder)")
        return self
