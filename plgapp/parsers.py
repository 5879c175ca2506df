"""The management API's JSON parser (REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]; its own module: DRF imports it while
defining APIView)."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ValidationError

NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


def nul_path(data: Any) -> str | None:
    """The dotted path of the first string (key or value) holding a NUL character, "" for the body itself, or None.
    Iterative: no recursion for a deep body to exhaust."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else str(key)
                if "\x00" in str(key):
                    return child.replace("\x00", "\\u0000")
                stack.append((value, child))
        elif isinstance(node, list):
            stack.extend((item, f"{path}.{n}" if path else str(n)) for n, item in enumerate(node))
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing NUL characters anywhere in the body with a 400: PostgreSQL text and jsonb cannot
    hold them, so a settings object or a playbook definition with one would fail at the database (a 500)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        path = nul_path(data)
        if path is not None:
            raise ValidationError({path or "body": NUL_MESSAGE})
        return data
