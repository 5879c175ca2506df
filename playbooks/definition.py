"""A playbook definition (DESIGN §9): parse and validate the JSON marketers build. Pure (no Django).

    {"object": "account", "entry": COND, "reentry": "never" | "after_exit", "reentry_gap": {"days": 7},
     "actions": [ACTION...], "goal": COND | null, "timeout": {"days", "hours", "minutes"} | null,
     "on_goal": [ACTION...], "on_timeout": [ACTION...], "holdout_percent": 10}

    ACTION = {"id", "type", "target": "entity" | "users" | "users_from:<main action id>",
              "users_where": COND (target users only), "params": {...}}

`target` defaults to the enrolled entity. In account playbooks `users` means the account's members that
match `users_where` (user.* and membership.* fields); `users_from:<id>` (goal / timeout actions) means exactly
the users that main action succeeded for in this enrollment. Conditions are checked by a function the caller
passes (the catalogue lives in the database), so this module stays pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from playbooks import actions as action_types

ConditionCheck = Callable[[Any, str, str], dict[str, str]]  # (raw condition, path, scope) -> {path: message}

ACTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
PHASES = ("actions", "on_goal", "on_timeout")
MAX_ACTIONS = 20
MAX_HOLDOUT_PERCENT = 50
MAX_DURATION = timedelta(days=365)
TOP_LEVEL = {"object", "entry", "reentry", "reentry_gap", "actions", "goal", "timeout", "on_goal", "on_timeout",
             "holdout_percent"}  # fmt: skip


class DefinitionInvalid(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class Action:
    id: str
    type: str
    target: str  # "entity", "users" or "users_from:<id>"
    users_where: Any
    params: Mapping[str, Any]

    @property
    def source(self) -> str | None:
        """The main action whose users this one targets (users_from), if any."""
        return self.target.split(":", 1)[1] if self.target.startswith("users_from:") else None

    @property
    def per_user(self) -> bool:
        return self.target != "entity"


@dataclass(frozen=True)
class Definition:
    object: str
    entry: Any
    reentry: str
    reentry_gap: timedelta
    actions: tuple[Action, ...]
    goal: Any
    timeout: timedelta | None
    on_goal: tuple[Action, ...]
    on_timeout: tuple[Action, ...]
    holdout_percent: int

    def phase(self, name: str) -> tuple[Action, ...]:
        return {"main": self.actions, "goal": self.on_goal, "timeout": self.on_timeout}[name]


def _duration(raw: Any, path: str, errors: dict[str, str]) -> timedelta | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw or set(raw) - {"days", "hours", "minutes"}:
        errors[path] = "is an object with days, hours and/or minutes"
        return None
    total = timedelta()
    for unit, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors[f"{path}.{unit}"] = "is a number of at least 0"
            return None
        total += timedelta(**{unit: value})
    if total <= timedelta() or total > MAX_DURATION:
        errors[path] = "is more than 0 and at most 365 days"
        return None
    return total


def _actions(
    raw: Any, phase: str, obj: str, errors: dict[str, str], facts: action_types.TenantFacts | None
) -> list[Action]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errors[phase] = "is a list of actions"
        return []
    if len(raw) > MAX_ACTIONS:
        errors[phase] = f"has at most {MAX_ACTIONS} actions"
        return []
    result = []
    for n, item in enumerate(raw):
        path = f"{phase}.{n}"
        if not isinstance(item, dict):
            errors[path] = "is an object with id, type and params"
            continue
        unknown = set(item) - {"id", "type", "target", "users_where", "params"}
        if unknown:
            errors[path] = f"unknown keys: {', '.join(sorted(unknown))}"
        action_id = item.get("id")
        if not isinstance(action_id, str) or not ACTION_ID.match(action_id):
            errors[f"{path}.id"] = "is 1-64 letters, digits, - or _ (it names the action in results and users_from)"
        kind = item.get("type")
        action_type = action_types.get(kind) if isinstance(kind, str) else None
        if action_type is None:
            known = ", ".join(sorted(action_types.registered()))
            errors[f"{path}.type"] = f"{kind!r} is not an action type (known: {known})"
        target = item.get("target", "entity")
        if not isinstance(target, str) or not (target in ("entity", "users") or target.startswith("users_from:")):
            errors[f"{path}.target"] = 'is "entity", "users" or "users_from:<action id>"'
            target = "entity"
        elif obj == "user" and target != "entity":
            errors[f"{path}.target"] = "user playbooks act on the enrolled user only"
        elif target.startswith("users_from:") and phase == "actions":
            errors[f"{path}.target"] = "users_from targets the users of a main action, from on_goal or on_timeout"
        if action_type is not None and target != "entity" and "users" not in action_type.targets:
            errors[f"{path}.target"] = f"{kind} acts on the {obj}, not on users"
        if action_type is not None and target == "entity" and "entity" not in action_type.targets:
            errors[f"{path}.target"] = f"{kind} acts on users: set target to users or users_from:<action id>"
        if "users_where" in item and target != "users":
            errors[f"{path}.users_where"] = "only for target users"
        params = item.get("params", {})
        if not isinstance(params, dict):
            errors[f"{path}.params"] = "is an object"
            params = {}
        elif action_type is not None:
            found = action_type.params_errors(params)
            if not found and facts is not None and action_type.tenant_params_errors is not None:
                found = action_type.tenant_params_errors(params, replace(facts, obj=obj))
            for key, message in found.items():
                errors[f"{path}.params.{key}"] = message
        result.append(
            Action(id=str(action_id), type=str(kind), target=target, users_where=item.get("users_where"),
                   params=params)
        )  # fmt: skip
    return result


def parse(raw: Any, *, check_condition: ConditionCheck, facts: action_types.TenantFacts | None = None) -> Definition:
    """The validated definition, or DefinitionInvalid with a message per field path. `facts` (the tenant's
    catalogue and connections) let action types check their params against the tenant, e.g. templates."""
    if not isinstance(raw, dict):
        raise DefinitionInvalid({"definition": "is a JSON object"})
    errors: dict[str, str] = {}
    for key in sorted(set(raw) - TOP_LEVEL):
        errors[key] = "is not part of a playbook definition"
    obj = raw.get("object")
    if obj not in ("account", "user"):
        errors["object"] = 'is "account" or "user"'
        obj = "account"
    if raw.get("entry") is None:
        errors["entry"] = "is required: the condition that enrolls an entity"
    else:
        errors.update(check_condition(raw["entry"], "entry", obj))
    if raw.get("goal") is not None:
        errors.update(check_condition(raw["goal"], "goal", obj))
    reentry = raw.get("reentry", "never")
    if reentry not in ("never", "after_exit"):
        errors["reentry"] = 'is "never" or "after_exit"'
    gap = _duration(raw.get("reentry_gap"), "reentry_gap", errors) or timedelta()
    if raw.get("reentry_gap") is not None and reentry != "after_exit":
        errors["reentry_gap"] = 'only with reentry "after_exit"'
    timeout = _duration(raw.get("timeout"), "timeout", errors)
    holdout = raw.get("holdout_percent", 0)
    if isinstance(holdout, bool) or not isinstance(holdout, int) or not 0 <= holdout <= MAX_HOLDOUT_PERCENT:
        errors["holdout_percent"] = f"is a whole number from 0 to {MAX_HOLDOUT_PERCENT}"
        holdout = 0
    phases = {phase: _actions(raw.get(phase), phase, obj, errors, facts) for phase in PHASES}
    if raw.get("on_goal") and raw.get("goal") is None:
        errors["on_goal"] = "needs a goal"
    if raw.get("on_timeout") and raw.get("timeout") is None:
        errors["on_timeout"] = "needs a timeout"
    seen: dict[str, str] = {}
    main_users = {action.id for action in phases["actions"] if action.target == "users"}
    for phase, items in phases.items():
        for n, action in enumerate(items):
            if action.id in seen:
                errors[f"{phase}.{n}.id"] = f"{action.id!r} is already used in {seen[action.id]}"
            seen.setdefault(action.id, phase)
            if action.target == "users" and obj == "account":
                condition = action.users_where if action.users_where is not None else {"all": []}
                errors.update(check_condition(condition, f"{phase}.{n}.users_where", "users_where"))
            source = action.source
            if source is not None and source not in main_users:
                errors[f"{phase}.{n}.target"] = f"users_from:{source} names no main action with target users"
    if errors:
        raise DefinitionInvalid(errors)
    return Definition(
        object=obj, entry=raw["entry"], reentry=reentry, reentry_gap=gap, actions=tuple(phases["actions"]),
        goal=raw.get("goal"), timeout=timeout, on_goal=tuple(phases["on_goal"]),
        on_timeout=tuple(phases["on_timeout"]), holdout_percent=holdout,
    )  # fmt: skip


def in_holdout(playbook_id: int, entity_id: int, holdout_percent: int) -> bool:
    """A stable split: the same entity is in the same group of a playbook every time (across versions)."""
    import hashlib

    digest = hashlib.sha256(f"{playbook_id}:{entity_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 < holdout_percent * 100
