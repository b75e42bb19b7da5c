"""The monitor config (``examples/monitor.yaml``): how traffic is cut into windows, which signals raise an alert
and where alerts go. Each field documented once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from tuneforge.config.schema import Section

Signal = Literal["input_words_mean", "input_words_ks_p", "oov_share", "oov_share_delta", "embedding_mmd",
                 "embedding_mmd_p", "domain_auc", "prediction_psi", "prediction_chi2_p", "confidence_mean",
                 "confidence_ks_p", "accuracy", "rating_mean", "latency_ms_p95"]
SIGNALS: tuple[str, ...] = Signal.__args__  # type: ignore[attr-defined]


class AlertRule(Section):
    signal: Signal = Field(description="The per-window signal the rule reads (see docs: drift signals).")
    above: float | None = Field(None, description="Alert when the signal is above this value ...")
    below: float | None = Field(None, description="... or below this value (a p-value rule: below 0.01).")
    consecutive: int = Field(1, ge=1, description="Alert only after this many windows in a row break the rule.")
    cooldown: int = Field(0, ge=0, description="Windows after an alert during which the rule stays quiet.")
    name: str | None = Field(None, description="The alert's name (default: the signal and the threshold).")

    @model_validator(mode="after")
    def _one_threshold(self) -> AlertRule:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"rule on {self.signal}: give exactly one of above or below")
        if self.name is None:
            self.name = f"{self.signal} {'>' if self.above is not None else '<'} " \
                        f"{self.above if self.above is not None else self.below:g}"
        return self

    def broken(self, value: float | None) -> bool:
        if value is None:
            return False
        return value > self.above if self.above is not None else value < self.below  # type: ignore[operator]


class MonitorConfig(Section):
    window_requests: int | None = Field(100, ge=10, description="Requests per window (the last partial window is "
                                        "read only once it has half as many); null to cut by time.")
    window_minutes: float | None = Field(None, gt=0, description="Minutes per window (when window_requests is null).")
    permutations: int = Field(200, ge=20, le=10000, description="Permutations of the MMD test (its p-value's "
                              "resolution is 1/(permutations+1)).")
    min_feedback: int = Field(20, ge=1, description="Labelled requests a window needs before its accuracy counts.")
    seed: int = Field(0, description="Seed of the permutation test and the domain classifier.")
    rules: list[AlertRule] = Field(default_factory=list, description="Alert rules, each on one signal.")
    webhook: str | None = Field(None, description="POST each alert as JSON to this URL (Slack, PagerDuty, your own).")

    @model_validator(mode="after")
    def _one_window(self) -> MonitorConfig:
        if (self.window_requests is None) == (self.window_minutes is None):
            raise ValueError("give exactly one of window_requests or window_minutes")
        return self


def load_monitor_config(path: str | Path | None) -> MonitorConfig:
    """The monitor config from a YAML file (None: the defaults, no rules); one line naming the field on error."""
    from tuneforge.config.loader import describe_error, read_yaml
    from tuneforge.errors import ConfigError

    if path is None:
        return MonitorConfig()
    data: Any = read_yaml(path)
    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_error(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
