"""A small, safe boolean expression language for naming subsets of rows (evaluation.slices.where), e.g.
``label == 'sport' and words < 100`` or ``source in ('web', 'forum') and not verified``.

Allowed: names (a row's columns and text, label, words, chars), strings, numbers, booleans, None, tuples and lists
of those, comparisons (== != < <= > >= in, not in), and, or, not, unary minus. Nothing else parses: no calls, no
attributes, no indexing; an expression never runs code.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Mapping

from tuneforge.errors import ConfigError

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Name,
            ast.Load, ast.Constant, ast.Tuple, ast.List, *_COMPARE)


def parse_expression(text: str, where: str) -> ast.Expression:
    """The parsed expression, or a ConfigError naming ``where`` and what is not allowed."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{where}: {text!r} is not an expression ({exc.msg}); write e.g. "
                          f"\"label == 'sport' and words < 100\"") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ConfigError(f"{where}: {type(node).__name__} is not allowed in {text!r} (only names, constants, "
                              f"comparisons, and/or/not)")
    return tree


def names_in(tree: ast.Expression) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def evaluate(tree: ast.Expression, values: Mapping[str, Any]) -> bool:
    """The expression's truth for one row (``values``: every name it uses)."""
    return bool(_value(tree.body, values))


def _value(node: ast.AST, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_value(item, values) for item in node.elts)
    if isinstance(node, ast.BoolOp):
        parts = (_value(item, values) for item in node.values)
        return all(parts) if isinstance(node.op, ast.And) else any(parts)
    if isinstance(node, ast.UnaryOp):
        inner = _value(node.operand, values)
        return (not inner) if isinstance(node.op, ast.Not) else -inner
    assert isinstance(node, ast.Compare)
    left = _value(node.left, values)
    for op, comparator in zip(node.ops, node.comparators):
        right = _value(comparator, values)
        try:
            if not _COMPARE[type(op)](left, right):
                return False
        except TypeError:
            return False  # a missing value or a text against a number: the row is not in the slice
        left = right
    return True
