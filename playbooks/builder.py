"""The playbook builder's editing model (pure: no Django). The page is a form over a definition (DESIGN §9); the
server owns the state (ADR 0012):

- a hidden field carries the whole definition as JSON, so nothing the form does not show is lost;
- every visible input is named `v:<type>:<path>` — its value goes to that place of the definition, converted by
  type (`str`, `num`, `int`, `list` comma-separated, `numlist`, `bool`, `opt` = removed when empty);
- a button named `op` edits the structure: `add-rule:<list path>`, `add-event:<list path>`, `add-group:<list path>`,
  `remove:<path>`, `switch:<group path>` (all ↔ any), `add-action:<phase>:<type>`, `goal:on|off`,
  `users:<action path>:<target>`.

Paths are `/`-separated keys and list indexes: `entry/all/0/value`, `actions/1/params/text`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

PHASES = ("actions", "on_goal", "on_timeout")
GROUP_KEYS = ("all", "any")
DEFAULT_TIMEOUT = {"days": 21}


class EditInvalid(ValueError):
    """The form was not made by the builder (a hand-edited request): say so instead of guessing."""


def skeleton(obj: str = "account") -> dict[str, Any]:
    return {"object": obj, "entry": {"all": []}, "actions": []}


def as_group(condition: Any) -> dict[str, Any]:
    """Conditions are shown as a group at the top (a lone test or `not` becomes a group of one)."""
    if isinstance(condition, dict) and any(key in condition for key in GROUP_KEYS):
        return condition
    return {"all": [] if condition in (None, {}) else [condition]}


def normalized(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition with every condition as a group, as the builder edits it (same meaning)."""
    result = copy.deepcopy(dict(definition))
    result["entry"] = as_group(result.get("entry"))
    if "goal" in result:
        result["goal"] = as_group(result["goal"])
    for phase in PHASES:
        for action in result.get(phase) or []:
            if isinstance(action, dict) and "users_where" in action:
                action["users_where"] = as_group(action["users_where"])
    return result


def _segments(path: str) -> list[str | int]:
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", path or ""):
        raise EditInvalid(f"not a builder path: {path!r}")
    return [int(part) if part.isdigit() else part for part in path.split("/")]


def _parent(root: Any, path: str) -> tuple[Any, str | int]:
    *head, last = _segments(path)
    node = root
    for key in head:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise EditInvalid(f"{path!r} is not in the definition") from exc
    if isinstance(node, list) and not (isinstance(last, int) and last < len(node)):
        raise EditInvalid(f"{path!r} is not in the definition")
    if not isinstance(node, list | dict):
        raise EditInvalid(f"{path!r} is not in the definition")
    return node, last


def get(root: Any, path: str) -> Any:
    node, last = _parent(root, path)
    try:
        return node[last]
    except (KeyError, IndexError, TypeError) as exc:
        raise EditInvalid(f"{path!r} is not in the definition") from exc


def _number(raw: str) -> int | float | str:
    text = raw.strip()
    try:
        number = float(text)
    except ValueError:
        return text  # kept as typed: validation says it is not a number, the field keeps what was written
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def convert(kind: str, raw: str) -> Any:
    if kind == "str":
        return raw
    if kind == "num":
        return _number(raw) if raw.strip() else ""
    if kind == "int":
        value = _number(raw)
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if kind == "list":
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind == "numlist":
        return [_number(part) for part in raw.split(",") if part.strip()]
    if kind == "bool":
        return raw.strip().lower() in ("true", "1", "on", "yes")
    if kind == "json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    raise EditInvalid(f"unknown input type {kind!r}")


def apply_values(definition: dict[str, Any], items: Iterable[tuple[str, str]]) -> None:
    """Write each `v:<type>:<path>` input into the definition (`opt`: an empty input removes the key)."""
    for name, raw in items:
        if not name.startswith("v:"):
            continue
        try:
            _prefix, kind, path = name.split(":", 2)
        except ValueError as exc:
            raise EditInvalid(f"not a builder input: {name!r}") from exc
        optional = kind.startswith("opt")
        kind = kind.removeprefix("opt") or "str"
        node, last = _parent(definition, path) if "/" in path else (definition, path)
        if optional and not raw.strip():
            if isinstance(node, dict):
                node.pop(str(last), None)
            continue
        node[last] = convert(kind, raw)  # type: ignore[index]  # a list index or a key: _parent checked it


def _fresh_id(definition: Mapping[str, Any], base: str) -> str:
    taken = {a.get("id") for phase in PHASES for a in definition.get(phase) or [] if isinstance(a, dict)}
    stem = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:40] or "action"
    candidate, n = stem, 2
    while candidate in taken:
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


ACTION_DEFAULTS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    # type -> (id stem, params, target)
    "slack.send_message": ("notify", {"channel": "", "text": "", "color": "good"}, None),
    "hubspot.add_to_list": ("add-to-list", {"list_id": ""}, "users"),
    "hubspot.remove_from_list": ("remove-from-list", {"list_id": ""}, "users"),
    "hubspot.create_task": ("task", {"subject": "Follow up on {{ account.name }}", "body": ""}, None),
    "webhook.post": ("webhook", {"event": "", "data": {}}, None),
    "log": ("log", {"message": ""}, None),
}


def apply_op(definition: dict[str, Any], op: str) -> None:
    verb, _, argument = op.partition(":")
    if verb in ("add-rule", "add-event", "add-group"):
        items = get(definition, argument)
        if not isinstance(items, list):
            raise EditInvalid(f"{argument!r} is not a list of conditions")
        obj = "user" if argument.startswith(tuple(f"{p}/" for p in PHASES)) else definition.get("object", "account")
        items.append({
            "add-rule": {"field": "", "op": "eq", "value": ""},
            "add-event": {"event": "", "of": obj, "within_days": 30, "op": "gte", "value": 1},
            "add-group": {"any": []},
        }[verb])  # fmt: skip
    elif verb == "remove":
        node, last = _parent(definition, argument)
        if isinstance(node, list):
            node.pop(int(last))
        else:
            node.pop(last, None)
    elif verb == "switch":
        group = get(definition, argument)
        if not isinstance(group, dict) or not any(key in group for key in GROUP_KEYS):
            raise EditInvalid(f"{argument!r} is not a group")
        mode = "all" if "all" in group else "any"
        group["any" if mode == "all" else "all"] = group.pop(mode)
    elif verb == "add-action":
        phase, _, kind = argument.partition(":")
        if phase not in PHASES or kind not in ACTION_DEFAULTS:
            raise EditInvalid(f"cannot add {kind!r} to {phase!r}")
        stem, params, target = ACTION_DEFAULTS[kind]
        action: dict[str, Any] = {"id": _fresh_id(definition, stem), "type": kind, "params": copy.deepcopy(params)}
        if target == "users" and definition.get("object", "account") == "account":
            main_user_actions = [a["id"] for a in definition.get("actions") or [] if a.get("target") == "users"]
            if phase != "actions" and kind == "hubspot.remove_from_list" and main_user_actions:
                action["target"] = f"users_from:{main_user_actions[0]}"
            else:
                action["target"], action["users_where"] = "users", {"all": []}
        definition.setdefault(phase, []).append(action)
    elif verb == "users":
        path, _, target = argument.rpartition(":")
        action = get(definition, path)
        if target == "users":
            action["target"] = "users"
            action.setdefault("users_where", {"all": []})
        elif target.startswith("users_from-"):
            action["target"] = "users_from:" + target.removeprefix("users_from-")
            action.pop("users_where", None)
        else:
            raise EditInvalid(f"unknown target {target!r}")
    elif verb == "goal":
        if argument == "on":
            definition.setdefault("goal", {"all": []})
            definition.setdefault("timeout", dict(DEFAULT_TIMEOUT))
            definition.setdefault("on_goal", [])
            definition.setdefault("on_timeout", [])
        else:
            for key in ("goal", "timeout", "on_goal", "on_timeout"):
                definition.pop(key, None)
    else:
        raise EditInvalid(f"unknown edit {op!r}")


def edit(raw_definition: str, items: Iterable[tuple[str, str]], op: str | None) -> dict[str, Any]:
    """The builder's round trip: the hidden definition, the inputs written into it, then the structural edit."""
    try:
        definition = json.loads(raw_definition) if raw_definition else skeleton()
    except json.JSONDecodeError as exc:
        raise EditInvalid("the builder's state is not JSON") from exc
    if not isinstance(definition, dict):
        raise EditInvalid("the builder's state is not an object")
    definition = normalized(definition)
    apply_values(definition, items)
    if op:
        apply_op(definition, op)
    return definition


def saved_form(definition: Mapping[str, Any]) -> dict[str, Any]:
    """What is stored: empty groups dropped where they are optional (an empty users_where means every user)."""
    result = copy.deepcopy(dict(definition))
    for phase in PHASES:
        for action in result.get(phase) or []:
            where = action.get("users_where")
            if isinstance(where, dict) and not any(where.get(key) for key in GROUP_KEYS):
                action.pop("users_where")
            if isinstance(action.get("params"), dict):
                action["params"] = {k: v for k, v in action["params"].items() if v not in ("", None)}
    return result
