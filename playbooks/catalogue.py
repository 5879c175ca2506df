"""The tenant's data catalogue as conditions see it, and the validator that checks a condition against it.

`catalogue_get(tenant=)` reads what can be tested: builtins with their types, every PropertyDefinition (text,
number, boolean, datetime, list), the score kinds (numbers), activation, and the event names seen in the daily
rollups. `condition_errors(raw, catalogue, scope=)` returns {path: message} for a marketer — the structural
mistakes of conditions.parse plus: unknown fields and events (with close matches), operators that do not fit the
field's type, literals of the wrong type, fields outside the scope. Paths are relative to the condition ("" is the
condition itself, "all.2.any.0.op" a part of it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from accounts.models import PropertyDefinition
from playbooks import conditions as c
from plgapp.models import Tenant
from signals.models import EventName

# scope -> (entities whose fields it reads, entities whose events it reads)
SCOPES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "account": (frozenset({"account"}), frozenset({"account"})),
    "user": (frozenset({"user"}), frozenset({"user"})),
    "users_where": (frozenset({"user", "membership"}), frozenset({"user", "membership"})),
    "membership": (frozenset(c.ENTITIES), frozenset(c.ENTITIES)),
}
SCOPE_TEXT = {
    "account": "an account condition reads account fields and account events",
    "user": "a user condition reads user fields and user events",
    "users_where": "users_where reads the user's fields and membership fields (the user in this account), and "
    "their events",
    "membership": "",
}

TYPE_OPS: dict[str, frozenset[str]] = {
    "text": frozenset({"eq", "neq", "in", "not_in", "contains", "starts_with", "exists", "not_exists"}),
    "number": frozenset({"eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "not_exists"}),
    "boolean": frozenset({"eq", "neq", "exists", "not_exists"}),
    "datetime": frozenset({"gt", "gte", "lt", "lte", "within_last_days", "more_than_days_ago", "exists", "not_exists"}),
    "list": frozenset({"contains", "exists", "not_exists"}),
}
TYPE_TEXT = {"text": "text", "number": "a number", "boolean": "true/false", "datetime": "a date", "list": "a list"}
OP_NEEDS = {
    "eq": "a text, a number or true/false", "neq": "a text, a number or true/false",
    "in": "a text or a number", "not_in": "a text or a number",
    "gt": "a number or a date", "gte": "a number or a date", "lt": "a number or a date", "lte": "a number or a date",
    "contains": "a text or a list", "starts_with": "a text",
    "within_last_days": "a date", "more_than_days_ago": "a date",
}  # fmt: skip
GIVE = {
    "text": 'give a text, e.g. "Trial"',
    "number": "give a number, e.g. 0.75",
    "boolean": "give true or false",
    "datetime": 'give an ISO date, e.g. "2025-01-31" or "2025-01-31T09:00:00Z"',
}
GIVE_LIST = {
    "text": 'give a list of texts, e.g. ["Admin", "Owner"]',
    "number": "give a list of numbers, e.g. [1, 2, 3]",
}


@dataclass(frozen=True)
class Catalogue:
    """What conditions of one tenant can read. `properties`: entity -> key -> type; `events`: names seen."""

    properties: Mapping[str, Mapping[str, str]]
    events: frozenset[str]

    def field_type(self, ref: c.FieldRef) -> str | None:
        """The type of a resolved field; None for a property the tenant never sent."""
        if ref.source == "property":
            return self.properties.get(ref.entity, {}).get(ref.name)
        return ref.builtin_kind

    def fields(self, entities: Iterable[str]) -> list[str]:
        """Every field name of these entities, builtins first."""
        names: list[str] = []
        for entity in entities:
            names += [f"{entity}.{name}" for name in c.BUILTINS[entity]]
            names += [f"{entity}.score.{kind}" for kind in c.SCORES[entity]]
            prefix = f"{entity}." if entity == "membership" else f"{entity}.properties."
            names += [f"{prefix}{key}" for key in sorted(self.properties.get(entity, {}))]
        return names


def catalogue_get(*, tenant: Tenant) -> Catalogue:
    properties: dict[str, dict[str, str]] = {entity: {} for entity in c.ENTITIES}
    definitions = PropertyDefinition.objects.for_tenant(tenant).filter(entity_type__in=c.ENTITIES)
    for entity, key, kind in definitions.values_list("entity_type", "key", "type"):
        properties[entity][key] = kind
    events = EventName.objects.for_tenant(tenant).values_list("name", flat=True)
    return Catalogue(properties=properties, events=frozenset(events))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _close(word: str, choices: Iterable[str], *, prefix: str = "") -> str:
    matches = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + match for match in matches)}?" if matches else ""


def _node(raw: Any, path: str) -> Any:
    """The raw JSON at a path such as "all.2.any.0" (None when it is not there)."""
    node = raw
    for part in path.split(".") if path else []:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def condition_errors(raw: Any, catalogue: Catalogue, *, scope: str) -> dict[str, str]:
    """{path: message} — empty when `raw` is a well-formed condition that fits the catalogue and the scope."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    parsed = c.parse_collect(raw)
    errors = dict(parsed.errors)
    for path, message in parsed.errors.items():
        if path == "field" or path.endswith(".field"):
            name = _node(raw, path)
            if isinstance(name, str):
                errors[path] = _unknown_shape(name, message, catalogue, scope)
    for path, leaf in parsed.leaves:
        if isinstance(leaf, c.EventTest):
            errors.update(_event_errors(leaf, path, catalogue, scope))
        else:
            errors.update(_field_errors(leaf, path, catalogue, scope))
    return errors


def _unknown_shape(name: str, message: str, catalogue: Catalogue, scope: str) -> str:
    entity, _, rest = name.partition(".")
    if entity in ("account", "user") and rest in catalogue.properties.get(entity, {}):
        return f"{name} is not a field; did you mean {entity}.properties.{rest}?"
    suggestion = _close(name, catalogue.fields(SCOPES[scope][0]))
    return f"{message}{suggestion}" if suggestion else message


def _field_errors(leaf: c.FieldTest, path: str, catalogue: Catalogue, scope: str) -> dict[str, str]:
    field_path, op_path, value_path = _join(path, "field"), _join(path, "op"), _join(path, "value")
    ref = c.field_ref(leaf.field)
    if ref.entity not in SCOPES[scope][0]:
        return {field_path: f"{leaf.field} cannot be used here: {SCOPE_TEXT[scope]}"}
    kind = catalogue.field_type(ref)
    if kind is None:
        prefix = leaf.field.removesuffix(ref.name)
        suggestion = _close(ref.name, catalogue.properties.get(ref.entity, {}), prefix=prefix)
        return {field_path: f"no {ref.entity} property named {ref.name!r} has been received yet{suggestion}"}
    if leaf.op not in TYPE_OPS[kind]:
        return {op_path: f"{leaf.op} needs {OP_NEEDS[leaf.op]}; {leaf.field} is {TYPE_TEXT[kind]}"}
    if leaf.op in c.PRESENCE_OPS or leaf.op in c.RELATIVE_OPS or leaf.op in ("contains", "starts_with"):
        return {}  # the literal's shape is all these need, and parse checked it
    items = leaf.value if leaf.op in ("in", "not_in") else (leaf.value,)
    wanted = "text" if kind == "datetime" else kind  # a date literal is an ISO text (parse checked its shape)
    fits = all(c.scalar_kind(item) == wanted for item in items)
    if not fits:
        give = GIVE_LIST.get(kind, "") if leaf.op in ("in", "not_in") else GIVE[kind]
        return {value_path: f"{leaf.field} is {TYPE_TEXT[kind]}: {give}"}
    if (ref.source == "score" or ref.name == "activation") and not all(0 <= item <= 1 for item in items):
        return {value_path: f"{leaf.field} is between 0 and 1 (0.75 means 75%)"}
    return {}


def _event_errors(leaf: c.EventTest, path: str, catalogue: Catalogue, scope: str) -> dict[str, str]:
    if leaf.of not in SCOPES[scope][1]:
        return {_join(path, "of"): f"{leaf.of} events cannot be used here: {SCOPE_TEXT[scope]}"}
    if leaf.event not in catalogue.events:
        suggestion = _close(leaf.event, sorted(catalogue.events))
        return {_join(path, "event"): f"no event named {leaf.event!r} has been received yet{suggestion}"}
    if leaf.value < 0:
        return {_join(path, "value"): "a count of events is 0 or more"}
    return {}
