"""Fine-tuning methods behind one registry: ``full``, ``freeze``, ``lora`` (more plug in by registering)."""

from tuneforge.methods.registry import apply_method, available_methods, method_config_class, register

__all__ = ["apply_method", "available_methods", "method_config_class", "register"]
