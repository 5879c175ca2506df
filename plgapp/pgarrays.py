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

_BOOLEANS = {True: "t", False: "f"}


def _quoted(text: str) -> str:
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def array_literal(values: list[Any]) -> str | list[Any]:
    """`values` as an array literal, or the list itself when an element is of a kind this does not write
    (nested lists, dicts, …): psycopg2 then adapts it as before."""
    kinds = set(map(type, values))
    if kinds == {int}:  # ids: the usual case, written in C
        return "{" + ",".join(map(str, values)) + "}"
    if kinds == {bool}:
        return "{" + ",".join(map(_BOOLEANS.__getitem__, values)) + "}"
    if kinds == {str}:
        joined = '","'.join(values)
        # No element holds a quote or a backslash: the separators hold every quote there is.
        if "\\" not in joined and joined.count('"') == 2 * (len(values) - 1):
            return '{"' + joined + '"}'
    return _element_by_element(values)


def _element_by_element(values: list[Any]) -> str | list[Any]:
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
        elif isinstance(value, str):  # a str subclass (TextChoices, StrEnum): its text, not its str()
            append(_quoted(str.__str__(value)))
        elif isinstance(value, date):  # datetime too: ISO 8601, offset included
            append(f'"{value.isoformat()}"')
        elif kind is float:
            append(repr(value))
        else:
            return values
    return "{" + ",".join(parts) + "}"
