"""Python lists as PostgreSQL array literals (`'{…}'`), for the tenant door's plain SQL (plgapp.models).

psycopg2 sends a list as `ARRAY[e1, e2, …]`: one constant per element, which PostgreSQL's parser and analyser
each turn into a node (~1 µs apiece on the server). An ingestion request's dirty marks alone are five arrays of
~126 values: 1.37 ms as ARRAY[…], 0.80 ms as literals (docs/benchmarks.md). As one string the server reads the
values with the element type's input function instead. The statement must give the array's type (`::bigint[]`)
or compare it with a column (`col = ANY(%(ids)s)`), as it must for an empty list already.
"""

from __future__ import annotations

from datetime import date
from typing import Any


def _quoted(text: str) -> str:
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def array_literal(values: list[Any]) -> str | list[Any]:
    """`values` as an array literal, or the list itself when an element is of a kind this does not write
    (nested lists, dicts, …): psycopg2 then adapts it as before."""
    parts: list[str] = []
    append = parts.append
    for value in values:
        kind = type(value)
        if kind is int:
            append(str(value))
        elif kind is str:
            append(_quoted(value))
        elif value is None:
            append("NULL")
        elif kind is bool:
            append("t" if value else "f")
        elif isinstance(value, date):  # datetime too: ISO 8601, offset included
            append(f'"{value.isoformat()}"')
        elif kind is float:
            append(repr(value))
        else:
            return values
    return "{" + ",".join(parts) + "}"
