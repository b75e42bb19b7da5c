"""Errors a user can act on.

A :class:`UserError` carries one line that names the thing that is wrong (file, line, field) and the fix.
The CLI prints that line and exits with code 2; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, file, column, label): one actionable line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """The run config is invalid."""


class DataError(UserError):
    """The data cannot be used as asked (malformed row, missing column, unusable labels)."""
