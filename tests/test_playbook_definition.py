"""Playbook definitions (DESIGN §9): what a marketer may build, and the errors they see when it is wrong. Pure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from playbooks.definition import DefinitionInvalid, in_holdout, parse

TRIAL_PQA: dict[str, Any] = {
    "object": "account",
    "entry": {"all": [{"field": "account.stage", "op": "eq", "value": "Trial"},
                      {"field": "account.score.conversion", "op": "gt", "value": 0.75}]},
    "reentry": "never",
    "actions": [
        {"id": "notify", "type": "log", "params": {"message": "{{ account.name }} is a PQA"}},
        {"id": "add-pqls", "type": "log", "target": "users",
         "users_where": {"all": [{"field": "user.score.health", "op": "gt", "value": 0.5},
                                 {"field": "membership.role", "op": "in", "value": ["Admin", "Owner"]}]},
         "params": {"message": "add to list"}},
    ],
    "goal": {"field": "account.stage", "op": "eq", "value": "Customer"},
    "timeout": {"days": 21},
    "on_goal": [{"id": "cleanup", "type": "log", "target": "users_from:add-pqls", "params": {"message": "remove"}}],
    "on_timeout": [{"id": "task", "type": "log", "params": {"message": "call them"}}],
    "holdout_percent": 10,
}  # fmt: skip

Checked = list[tuple[Any, str, str]]


def accept_all(seen: Checked) -> Any:
    def check(condition: Any, path: str, scope: str) -> dict[str, str]:
        seen.append((condition, path, scope))
        return {}

    return check


def errors_of(raw: Any) -> dict[str, str]:
    with pytest.raises(DefinitionInvalid) as caught:
        parse(raw, check_condition=accept_all([]))
    return caught.value.fields


def test_the_seed_trial_pqa_playbook_parses_and_every_condition_is_checked_in_its_scope() -> None:
    seen: Checked = []

    definition = parse(TRIAL_PQA, check_condition=accept_all(seen))

    assert definition.timeout == timedelta(days=21)
    assert definition.holdout_percent == 10
    assert [action.id for action in definition.actions] == ["notify", "add-pqls"]
    assert definition.actions[1].per_user
    assert not definition.actions[0].per_user
    assert definition.on_goal[0].source == "add-pqls"
    assert [(path, scope) for _c, path, scope in seen] == [
        ("entry", "account"),
        ("goal", "account"),
        ("actions.1.users_where", "users_where"),
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"object": "company"}, {"object"}),
        ({"entry": None}, {"entry"}),
        ({"reentry": "always"}, {"reentry"}),
        ({"reentry_gap": {"days": 7}}, {"reentry_gap"}),
        ({"timeout": {"weeks": 3}}, {"timeout"}),
        ({"timeout": {"days": 0}}, {"timeout"}),
        ({"timeout": {"days": 400}}, {"timeout"}),
        ({"holdout_percent": 80}, {"holdout_percent"}),
        ({"holdout_percent": 10.5}, {"holdout_percent"}),
        ({"colour": "red"}, {"colour"}),
        ({"goal": None}, {"on_goal"}),
        ({"timeout": None}, {"on_timeout"}),
        ({"actions": [{"id": "x", "type": "fax", "params": {}}]}, {"actions.0.type", "on_goal.0.target"}),
        ({"actions": [{"id": "bad id!", "type": "log"}]}, {"actions.0.id", "on_goal.0.target"}),
        ({"on_timeout": [{"id": "notify", "type": "log"}]}, {"on_timeout.0.id"}),
        ({"on_goal": [{"id": "c", "type": "log", "target": "users_from:notify"}]}, {"on_goal.0.target"}),
        ({"actions": [{"id": "a", "type": "log", "target": "users_from:a"}]}, {"actions.0.target", "on_goal.0.target"}),
        ({"actions": [{"id": "a", "type": "log", "users_where": {}}]}, {"actions.0.users_where", "on_goal.0.target"}),
        (
            {"actions": [{"id": "a", "type": "log", "params": {"message": 3}}]},
            {"actions.0.params.message", "on_goal.0.target"},
        ),
    ],
)
def test_mistakes_are_reported_by_field_path(change: dict[str, Any], expected: set[str]) -> None:
    assert set(errors_of({**TRIAL_PQA, **change})) == expected


def test_user_playbooks_act_on_the_enrolled_user_only() -> None:
    raw = {"object": "user", "entry": {"all": []},
           "actions": [{"id": "a", "type": "log", "target": "users"}]}  # fmt: skip

    assert errors_of(raw) == {"actions.0.target": "user playbooks act on the enrolled user only"}


def test_condition_errors_from_the_catalogue_come_back_under_their_paths() -> None:
    def check(condition: Any, path: str, scope: str) -> dict[str, str]:
        return {f"{path}.field": "no such field"} if path == "goal" else {}

    with pytest.raises(DefinitionInvalid) as caught:
        parse(TRIAL_PQA, check_condition=check)

    assert caught.value.fields == {"goal.field": "no such field"}


def test_the_holdout_split_is_stable_and_close_to_the_percentage() -> None:
    members = [entity for entity in range(20_000) if in_holdout(7, entity, 10)]

    assert members == [entity for entity in range(20_000) if in_holdout(7, entity, 10)]
    assert 0.09 < len(members) / 20_000 < 0.11
    assert not any(in_holdout(7, entity, 0) for entity in range(1000))
    # Another playbook splits the same entities differently.
    assert members != [entity for entity in range(20_000) if in_holdout(8, entity, 10)]
