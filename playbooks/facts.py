"""Load `conditions.Facts` for the Python backend, in bulk: a fixed handful of queries for any number of entities.

`facts_for(tenant=, root=, ids=, now=, condition=)` -> {id: Facts}. Given the condition, only the rollups of the
events (and days) it reads are loaded; without one, every event of the last MAX_WITHIN_DAYS days.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from accounts.models import Account, EndUser, Membership
from playbooks import conditions as c
from plgapp.models import Tenant
from scoring.models import Score
from signals.models import DailyRollup

ACCOUNT_COLUMNS = ("external_id", "domain", "name", "stage", "stage_changed_at", "created_at")
USER_COLUMNS = ("external_id", "email", "stage", "first_seen_at", "last_seen_at")

# What rollups to read per level: {event name: days}, or None for every event over MAX_WITHIN_DAYS days.
Windows = dict[str, int] | None


def facts_for(
    *, tenant: Tenant, root: str, ids: Iterable[int], now: datetime, condition: c.Condition | None = None
) -> dict[int, c.Facts]:
    """{id: Facts} for the accounts, users or memberships (root) `ids` of `tenant`; unknown ids are left out."""
    wanted = sorted(set(ids))
    windows = _windows(condition)
    today = now.astimezone(UTC).date()
    if root == "account":
        accounts = _accounts(tenant, wanted, today, windows["account"])
        return {pk: c.Facts(account=facts) for pk, facts in accounts.items()}
    if root == "user":
        users = _users(tenant, wanted, today, windows["user"])
        return {pk: c.Facts(user=facts) for pk, facts in users.items()}
    if root != "membership":
        raise ValueError(f"root is account, user or membership, not {root!r}")
    rows = list(
        Membership.objects.for_tenant(tenant)
        .filter(pk__in=wanted)
        .values_list("pk", "account_id", "end_user_id", "properties", "joined_at")
    )
    accounts = _accounts(tenant, sorted({row[1] for row in rows}), today, windows["account"])
    users = _users(tenant, sorted({row[2] for row in rows}), today, windows["user"])
    scores, _details = _scores(tenant, "membership", wanted)
    pairs = {(account_id, user_id): pk for pk, account_id, user_id, _, _ in rows}
    events = _pair_events(tenant, pairs, today, windows["membership"])
    return {
        pk: c.Facts(
            account=accounts[account_id],
            user=users[user_id],
            membership=c.EntityFacts(
                builtins={"joined_at": joined_at},
                properties=properties,
                scores=scores[pk],
                events=events.get(pk, {}),
            ),
        )
        for pk, account_id, user_id, properties, joined_at in rows
    }


def _windows(condition: c.Condition | None) -> dict[str, Windows]:
    if condition is None:
        return dict.fromkeys(c.ENTITIES)
    windows: dict[str, Windows] = {entity: {} for entity in c.ENTITIES}
    for (of, event), days in c.event_windows(condition).items():
        level = windows[of]
        assert level is not None
        level[event] = days
    return windows


def _accounts(tenant: Tenant, ids: list[int], today: date, windows: Windows) -> dict[int, c.EntityFacts]:
    rows = Account.objects.for_tenant(tenant).filter(pk__in=ids).values("pk", "properties", *ACCOUNT_COLUMNS)
    scores, details = _scores(tenant, "account", ids)
    events = _level_events(tenant, "account", ids, today, windows)
    return {
        row["pk"]: c.EntityFacts(
            builtins={**{name: row[name] for name in ACCOUNT_COLUMNS}, "activation": _activation(details[row["pk"]])},
            properties=row["properties"],
            scores=scores[row["pk"]],
            events=events.get(row["pk"], {}),
        )
        for row in rows
    }


def _activation(details: Mapping[str, Any]) -> float | None:
    """The conversion score's details["activation"] if a number, else the churn score's (semantics 2)."""
    for kind in ("conversion", "churn"):
        found = details.get(kind)
        number = c.number_value(found.get("activation")) if isinstance(found, dict) else None
        if number is not None:
            return number
    return None


def _users(tenant: Tenant, ids: list[int], today: date, windows: Windows) -> dict[int, c.EntityFacts]:
    rows = EndUser.objects.for_tenant(tenant).filter(pk__in=ids).values("pk", "properties", *USER_COLUMNS)
    scores, _details = _scores(tenant, "user", ids)
    events = _level_events(tenant, "user", ids, today, windows)
    return {
        row["pk"]: c.EntityFacts(
            builtins={name: row[name] for name in USER_COLUMNS},
            properties=row["properties"],
            scores=scores[row["pk"]],
            events=events.get(row["pk"], {}),
        )
        for row in rows
    }


def _scores(
    tenant: Tenant, entity: str, ids: list[int]
) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, Any]]]:
    """{entity id: {kind: value}} and {entity id: {kind: details}} of the entities' current scores."""
    values: dict[int, dict[str, float]] = defaultdict(dict)
    details: dict[int, dict[str, Any]] = defaultdict(dict)
    rows = Score.objects.for_tenant(tenant).filter(entity_type=entity, entity_id__in=ids, kind__in=c.SCORES[entity])
    for entity_id, kind, value, detail in rows.values_list("entity_id", "kind", "value", "details"):
        values[entity_id][kind] = value
        details[entity_id][kind] = detail
    return values, details


def _rollups(tenant: Tenant, today: date, windows: Windows) -> Any:
    longest = c.MAX_WITHIN_DAYS if windows is None else max(windows.values(), default=0)
    rows = DailyRollup.objects.for_tenant(tenant).filter(day__gt=today - timedelta(days=longest), day__lte=today)
    return rows if windows is None else rows.filter(name__in=sorted(windows))


def _level_events(
    tenant: Tenant, level: str, ids: Collection[int], today: date, windows: Windows
) -> dict[int, dict[str, dict[date, int]]]:
    if windows == {} or not ids:
        return {}
    rows = _rollups(tenant, today, windows)
    if level == "account":
        rows = rows.filter(account_id__in=list(ids), end_user_id=0)
        column = "account_id"
    else:
        rows = rows.filter(account_id=0, end_user_id__in=list(ids))
        column = "end_user_id"
    events: dict[int, dict[str, dict[date, int]]] = defaultdict(lambda: defaultdict(dict))
    for entity_id, name, day, count in rows.values_list(column, "name", "day", "count"):
        events[entity_id][name][day] = count
    return events


def _pair_events(
    tenant: Tenant, pairs: Mapping[tuple[int, int], int], today: date, windows: Windows
) -> dict[int, dict[str, dict[date, int]]]:
    if windows == {} or not pairs:
        return {}
    rows = _rollups(tenant, today, windows).filter(
        account_id__in=sorted({account for account, _ in pairs}), end_user_id__in=sorted({user for _, user in pairs})
    )
    events: dict[int, dict[str, dict[date, int]]] = defaultdict(lambda: defaultdict(dict))
    for account_id, user_id, name, day, count in rows.values_list("account_id", "end_user_id", "name", "day", "count"):
        membership = pairs.get((account_id, user_id))
        if membership is not None:
            events[membership][name][day] = count
    return events
