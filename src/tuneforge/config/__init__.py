"""Run configuration: one YAML file, validated by pydantic, with ``key.sub=value`` overrides."""

from tuneforge.config.loader import dump_config, load_config, parse_overrides
from tuneforge.config.schema import RunConfig

__all__ = ["RunConfig", "dump_config", "load_config", "parse_overrides"]
