"""Data: load, clean, check, split without leakage, report."""

from tuneforge.data.prepare import PreparedData, prepare_data

__all__ = ["PreparedData", "prepare_data"]
