"""The `--where` expression language: compare columns with literals, nothing else.

A filter expression may come from a config file or a service wrapping facedata, so it is never handed to
eval, compile or pandas.query. `ast.parse(mode="eval")` only builds a syntax tree, which is then checked
against a whitelist and evaluated here, vectorised over DataFrame columns:

- column names (no dunder names), numbers, 'strings', True/False;
- comparisons == != < <= > >= (chained: `0 < blur <= 1`), `in [...]` / `not in [...]` with literal lists;
- and / or / not; + - * / and unary minus on numeric columns; parentheses.

Everything else (`@` variables, attribute access, calls, lambdas, subscripts, comprehensions, `**`, `&`,
...) is refused with a one-line reason. Unknown values (nulls) follow SQL-like three-valued logic and a
row whose condition is unknown does not match.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MAX_LENGTH = 4096
MAX_DEPTH = 100  # nesting of the syntax tree (keeps checking and evaluation far from the recursion limit)

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ARITHMETIC: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
# What the refusal names for node types that are not part of the language.
_REFUSED: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Call: "function calls",
    ast.Lambda: "lambdas",
    ast.Subscript: "subscripts",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments",
    ast.IfExp: "conditional expressions",
    ast.JoinedStr: "f-strings",
    ast.Starred: "starred expressions",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.MatMult: "'@'",
    ast.Pow: "'**'",
    ast.FloorDiv: "'//'",
    ast.Mod: "'%'",
    ast.BitAnd: "'&' (use and)",
    ast.BitOr: "'|' (use or)",
    ast.BitXor: "'^'",
    ast.Invert: "'~' (use not)",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
    ast.Is: "'is'",
    ast.IsNot: "'is not'",
}

BOOL, NUM, STR = "boolean", "number", "text"
_ALLOWED = "only columns, literals, comparisons, in [...], and/or/not, + - * / and parentheses"


class QueryError(Exception):
    """The expression is not in the language, or does not fit the columns (message without the option)."""


@dataclass(frozen=True)
class Query:
    """A checked expression and the column names it uses."""

    text: str
    tree: ast.Expression
    names: frozenset[str]


def parse_query(text: str, columns: Collection[str]) -> Query:
    """Parse and check `text` against the language and the known `columns` (nothing is evaluated)."""
    if not text.strip():
        raise QueryError("empty expression")
    if len(text) > MAX_LENGTH:
        raise QueryError(f"expression longer than {MAX_LENGTH} characters")
    try:
        with warnings.catch_warnings():  # e.g. "1or 2": the parser's warning becomes a SyntaxError, not stderr noise
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        if _has_at_sign(text):
            raise QueryError(f"'@' (local variables) not allowed; {_ALLOWED}") from None
        raise QueryError(f"invalid syntax ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise QueryError("expression too deeply nested") from None
    names: set[str] = set()
    _check(tree.body, names, 0)
    unknown = sorted(names - set(columns))
    if unknown:
        raise QueryError(f"unknown column {unknown[0]!r}; columns: {', '.join(columns)}")
    return Query(text, tree, frozenset(names))


def evaluate(query: Query, column: Callable[[str], pd.Series], rows: int) -> np.ndarray:
    """Boolean mask over `rows` rows; `column(name)` gives a column (nulls = unknown, never matching)."""
    kind, value = _Evaluator(column).value(query.tree.body)
    if kind != BOOL:
        raise QueryError(f"the expression must be a condition (true/false per row), it gives {kind} values")
    if isinstance(value, pd.Series):
        return value.astype("boolean").fillna(False).to_numpy(bool)
    return np.full(rows, bool(value))


def _has_at_sign(text: str) -> bool:
    """Whether `@` appears as an operator (not inside a string literal)."""
    try:
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        return any(t.type == tokenize.OP and t.string == "@" for t in tokens)
    except (tokenize.TokenError, SyntaxError):
        return "@" in text


def _check(node: ast.AST, names: set[str], depth: int) -> None:
    """Refuse any node outside the language; collect the column names used."""
    if depth > MAX_DEPTH:
        raise QueryError(f"expression nested more than {MAX_DEPTH} levels deep")
    refused = _REFUSED.get(type(node))
    if refused is None and isinstance(node, ast.BinOp | ast.UnaryOp):
        refused = _REFUSED.get(type(node.op))
    if refused is not None:
        raise QueryError(f"{refused} not allowed; {_ALLOWED}")
    if isinstance(node, ast.Name):
        if node.id.startswith("__") or node.id.endswith("__"):
            raise QueryError(f"dunder name {node.id!r} not allowed")
        names.add(node.id)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, bool | int | float | str):
            raise QueryError(f"literal {node.value!r} not allowed (numbers, 'text', True, False only)")
    elif isinstance(node, ast.Compare):
        _check(node.left, names, depth + 1)
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                _literal_list(right)
            elif type(op) in _COMPARE:
                _check(right, names, depth + 1)
            else:
                raise QueryError(f"{_REFUSED.get(type(op), type(op).__name__)} not allowed; {_ALLOWED}")
    elif isinstance(node, ast.BoolOp | ast.BinOp | ast.UnaryOp):
        if isinstance(node, ast.BinOp) and type(node.op) not in _ARITHMETIC:
            raise QueryError(f"operator {type(node.op).__name__} not allowed; {_ALLOWED}")
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.operator | ast.unaryop | ast.boolop):
                _check(child, names, depth + 1)
    else:
        raise QueryError(f"{type(node).__name__} expressions not allowed; {_ALLOWED}")


def _literal_list(node: ast.AST) -> list[Any]:
    """The values of the literal list right of `in` (numbers may be negative)."""
    if not isinstance(node, ast.List | ast.Tuple):
        raise QueryError("'in' takes a literal list, e.g. event in ['0--Parade', '1--Handshaking']")
    values = []
    for item in node.elts:
        sign = 1
        if isinstance(item, ast.UnaryOp) and isinstance(item.op, ast.USub):
            sign, item = -1, item.operand
        ok = isinstance(item, ast.Constant) and isinstance(item.value, bool | int | float | str)
        if not ok or (sign < 0 and not isinstance(item.value, int | float)):  # type: ignore[attr-defined]
            raise QueryError("'in [...]' lists may hold only number, 'text' or True/False literals")
        values.append(item.value if sign > 0 else -item.value)  # type: ignore[attr-defined]
    return values


class _Evaluator:
    """Evaluates a checked tree to (kind, value): value a pandas Series (nullable dtype) or a scalar."""

    def __init__(self, column: Callable[[str], pd.Series]) -> None:
        self.column = column

    def value(self, node: ast.AST) -> tuple[str, Any]:
        if isinstance(node, ast.Constant):
            kind = _literal_kind(node.value)
            return kind, np.float64(node.value) if kind == NUM else node.value  # 1 / 0 is inf, not an exception
        if isinstance(node, ast.Name):
            return _column_value(node.id, self.column(node.id))
        if isinstance(node, ast.BoolOp):
            return self._bool_op(node)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BinOp):
            return self._arithmetic(node)
        assert isinstance(node, ast.Compare)
        return self._compare(node)

    def _bool_op(self, node: ast.BoolOp) -> tuple[str, Any]:
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        word = "and" if isinstance(node.op, ast.And) else "or"
        result = None
        for operand in node.values:
            value = self._condition(operand, word)
            result = value if result is None else combine(result, value)
        return BOOL, result

    def _unary(self, node: ast.UnaryOp) -> tuple[str, Any]:
        if isinstance(node.op, ast.Not):
            value = self._condition(node.operand, "not")
            return BOOL, ~value if isinstance(value, pd.Series) else not value
        kind, value = self.value(node.operand)
        if kind != NUM:
            raise QueryError(f"unary minus/plus on {kind} values")
        return NUM, -value if isinstance(node.op, ast.USub) else value

    def _arithmetic(self, node: ast.BinOp) -> tuple[str, Any]:
        (lk, left), (rk, right) = self.value(node.left), self.value(node.right)
        if lk != NUM or rk != NUM:
            raise QueryError(f"arithmetic on {lk if lk != NUM else rk} values")
        with np.errstate(all="ignore"):
            return NUM, _ARITHMETIC[type(node.op)](left, right)

    def _compare(self, node: ast.Compare) -> tuple[str, Any]:
        result = None
        left = self.value(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                value = _membership(left, _literal_list(comparator), negate=isinstance(op, ast.NotIn))
            else:
                right = self.value(comparator)
                value = _comparison(_COMPARE[type(op)], left, right)
                left = right
            result = value if result is None else result & value
        return BOOL, result

    def _condition(self, node: ast.AST, word: str) -> Any:
        kind, value = self.value(node)
        if kind != BOOL:
            raise QueryError(f"'{word}' needs conditions, got {kind} values")
        return value.astype("boolean") if isinstance(value, pd.Series) else bool(value)


def _literal_kind(value: Any) -> str:
    return BOOL if isinstance(value, bool) else STR if isinstance(value, str) else NUM


def _column_value(name: str, series: pd.Series) -> tuple[str, pd.Series]:
    """A column as (kind, nullable Series): numbers as Float64, flags as boolean, text as string."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return BOOL, series.astype("boolean")
    if pd.api.types.is_numeric_dtype(series.dtype):
        return NUM, series.astype("Float64")
    present = series.dropna()
    if all(isinstance(v, str) for v in present):
        return STR, series.astype("string[python]")
    raise QueryError(f"column {name!r} holds lists or objects and cannot be compared")


def _comparison(op: Callable[[Any, Any], Any], left: tuple[str, Any], right: tuple[str, Any]) -> Any:
    (lk, lv), (rk, rv) = left, right
    if lk != rk and {lk, rk} != {BOOL, NUM}:
        raise QueryError(f"cannot compare {lk} with {rk} (e.g. a text column with a number)")
    if lk != rk:  # a flag against 0/1
        lv, rv = (_as_number(v) for v in (lv, rv))
    if (op not in (operator.eq, operator.ne)) and BOOL in (lk, rk):
        raise QueryError("true/false values can only be compared with == or !=")
    result = op(lv, rv)
    return result.astype("boolean") if isinstance(result, pd.Series) else bool(result)


def _as_number(value: Any) -> Any:
    return value.astype("Float64") if isinstance(value, pd.Series) else float(value)


def _membership(left: tuple[str, Any], items: list[Any], negate: bool) -> Any:
    kind, value = left
    for item in items:
        item_kind = _literal_kind(item)
        if item_kind != kind and {item_kind, kind} != {BOOL, NUM}:
            raise QueryError(f"'in [...]' of {kind} values holds {item!r}")
    if not isinstance(value, pd.Series):
        return (value in items) != negate
    found = value.isin(items).astype("boolean")
    found[value.isna()] = pd.NA  # unknown stays unknown, also for `not in`
    return ~found if negate else found
