"""Evaluation: metrics with bootstrap intervals, baselines, and the report."""
