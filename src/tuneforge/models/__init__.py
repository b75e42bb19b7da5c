"""Models: resolve a name (local, offline asset, hub), load for a task, inspect."""

from tuneforge.models.assets import ResolvedModel, resolve_model

__all__ = ["ResolvedModel", "resolve_model"]
