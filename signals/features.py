"""Point-in-time features of accounts, users and memberships (DESIGN §10), for training and scoring.

`load_history()` reads what a tenant's features need once (daily rollups, property / stage / membership
history); `account_features()`, `user_features()` and `membership_activity()` then compute, for any
snapshot instant, features from data strictly before it: rollup days before the snapshot's day,
property values and stages set before the instant, memberships joined before it. Nothing later leaks
in — tests/test_features.py proves it by adding later data and comparing.

The result is a raw table (numbers and categories by name); `FeatureSpec` (fitted at training, stored
with the model) turns raw tables into the fixed matrix a model expects.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from accounts.models import EntityType, Membership, PropertyChange, PropertyDefinition, StageChange
from plgapp.models import Tenant

WINDOWS = (1, 7, 30, 90)
USER_WINDOWS = (7, 30)
ACTIVE_SEAT_DAYS = 30
MAX_CATEGORY_VALUES = 12
MIN_CATEGORY_SHARE = 0.01
AUTO_KEY_EVENTS = 10
NEVER_DAYS = 3650.0  # "days since" for something that never happened

# --- loading ------------------------------------------------------------------------------------------


@dataclass
class Rollups:
    """Daily counts of one level (account, user or pair) as parallel arrays, sorted by nothing."""

    entity: np.ndarray  # account or user id (pairs: account id)
    other: np.ndarray  # pairs: user id; otherwise 0
    name: np.ndarray  # index into names
    day: np.ndarray  # date ordinal
    count: np.ndarray
    names: list[str]

    @classmethod
    def empty(cls) -> Rollups:
        zeros = np.zeros(0, dtype=np.int64)
        return cls(zeros, zeros, zeros, zeros, zeros, [])


@dataclass
class History:
    """What features of one tenant need, loaded once; every feature function reads only data before T."""

    tenant_id: int
    account_rollups: Rollups
    user_rollups: Rollups
    pair_rollups: Rollups
    # (entity_type, entity_id) -> key -> [(changed_at, value)] sorted by time
    properties: dict[tuple[str, int], dict[str, list[tuple[datetime, Any]]]]
    stages: dict[tuple[str, int], list[tuple[datetime, str | None]]]
    # membership id -> (account id, user id, joined_at, left_at)
    memberships: dict[int, tuple[int, int, datetime, datetime | None]]
    property_types: dict[tuple[str, str], str]
    first_day: dict[tuple[str, int], int] = field(default_factory=dict)  # first activity (date ordinal)


def _rollups(tenant: Tenant, level: str, since: date | None) -> Rollups:
    from signals.models import DailyRollup  # the rollup model belongs to this app

    queryset = DailyRollup.objects.for_tenant(tenant)
    if level == "account":
        queryset = queryset.filter(end_user_id=0).exclude(account_id=0)
        columns = ("account_id", "end_user_id")
    elif level == "user":
        queryset = queryset.filter(account_id=0).exclude(end_user_id=0)
        columns = ("end_user_id", "account_id")
    else:
        queryset = queryset.exclude(account_id=0).exclude(end_user_id=0)
        columns = ("account_id", "end_user_id")
    if since is not None:
        queryset = queryset.filter(day__gte=since)
    rows = list(queryset.values_list(*columns, "name", "day", "count"))
    if not rows:
        return Rollups.empty()
    names = sorted({row[2] for row in rows})
    index = {name: n for n, name in enumerate(names)}
    return Rollups(
        entity=np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)),
        other=np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows)),
        name=np.fromiter((index[row[2]] for row in rows), dtype=np.int64, count=len(rows)),
        day=np.fromiter((row[3].toordinal() for row in rows), dtype=np.int64, count=len(rows)),
        count=np.fromiter((row[4] for row in rows), dtype=np.int64, count=len(rows)),
        names=names,
    )


def load_history(tenant: Tenant, *, since: date | None = None) -> History:
    """Everything features need for this tenant (rollups from `since` on, if given: scoring at one instant
    needs only the longest window back)."""
    properties: dict[tuple[str, int], dict[str, list[tuple[datetime, Any]]]] = defaultdict(lambda: defaultdict(list))
    for entity_type, entity_id, key, value, changed_at in (
        PropertyChange.objects.for_tenant(tenant)
        .order_by("changed_at", "pk")
        .values_list("entity_type", "entity_id", "key", "value", "changed_at")
    ):
        properties[(entity_type, entity_id)][key].append((changed_at, value))
    stages: dict[tuple[str, int], list[tuple[datetime, str | None]]] = defaultdict(list)
    for entity_type, entity_id, to_stage, changed_at in (
        StageChange.objects.for_tenant(tenant)
        .order_by("changed_at", "pk")
        .values_list("entity_type", "entity_id", "to_stage", "changed_at")
    ):
        stages[(entity_type, entity_id)].append((changed_at, to_stage))
    memberships = {
        pk: (account_id, user_id, joined_at, left_at)
        for pk, account_id, user_id, joined_at, left_at in Membership.objects.for_tenant(tenant).values_list(
            "pk", "account_id", "end_user_id", "joined_at", "left_at"
        )
    }
    types = {
        (entity_type, key): kind
        for entity_type, key, kind in PropertyDefinition.objects.for_tenant(tenant).values_list(
            "entity_type", "key", "type"
        )
    }
    history = History(
        tenant_id=tenant.pk,
        account_rollups=_rollups(tenant, "account", since),
        user_rollups=_rollups(tenant, "user", since),
        pair_rollups=_rollups(tenant, "pair", since),
        properties=properties,
        stages=stages,
        memberships=memberships,
        property_types=types,
    )
    history.first_day = _first_days(tenant)
    return history


def _first_days(tenant: Tenant) -> dict[tuple[str, int], int]:
    from django.db.models import Min

    from signals.models import DailyRollup

    first: dict[tuple[str, int], int] = {}
    rollups = DailyRollup.objects.for_tenant(tenant)
    for account_id, day in rollups.filter(end_user_id=0).values_list("account_id").annotate(first=Min("day")):
        first[(EntityType.ACCOUNT, account_id)] = day.toordinal()
    for user_id, day in rollups.filter(account_id=0).values_list("end_user_id").annotate(first=Min("day")):
        first[(EntityType.USER, user_id)] = day.toordinal()
    return first


# --- as-of lookups --------------------------------------------------------------------------------------


def value_as_of(changes: Sequence[tuple[datetime, Any]], at: datetime) -> Any:
    """The value of the latest change strictly before `at` (None if none, or if it was deleted)."""
    value = None
    for changed_at, changed_value in changes:
        if changed_at >= at:
            break
        value = changed_value
    return value


def stage_as_of(history: History, entity_type: str, entity_id: int, at: datetime) -> str | None:
    return value_as_of(history.stages.get((entity_type, entity_id), ()), at)


def properties_as_of(history: History, entity_type: str, entity_id: int, at: datetime) -> dict[str, Any]:
    keys = history.properties.get((entity_type, entity_id), {})
    found = {key: value_as_of(changes, at) for key, changes in keys.items()}
    return {key: value for key, value in found.items() if value is not None}


def snapshot_day(at: datetime) -> int:
    """Rollup days strictly before this ordinal are visible at `at` (a day counts once it is over)."""
    return at.astimezone(UTC).date().toordinal()


def key_events_of(history: History, configured: Sequence[str]) -> list[str]:
    """The configured key events, or (none configured) the tenant's most frequent event names."""
    if configured:
        return list(configured)
    rollups = history.account_rollups if len(history.account_rollups.count) else history.user_rollups
    totals: Counter[str] = Counter()
    for n, name in enumerate(rollups.names):
        totals[name] = int(rollups.count[rollups.name == n].sum())
    return [name for name, _count in totals.most_common(AUTO_KEY_EVENTS)]


# --- raw feature tables ---------------------------------------------------------------------------------


@dataclass
class RawFeatures:
    """Features by name for a list of entities: numbers (NaN = unknown) and categories (None = unknown)."""

    ids: np.ndarray
    numbers: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, list[str | None]] = field(default_factory=dict)
    # feature name -> how to talk about it: {"kind": "count", "event": ..., "window": 30} etc.
    describe: dict[str, dict[str, Any]] = field(default_factory=dict)


def _window_counts(
    rollups: Rollups, ids: np.ndarray, cutoff: int, names: Sequence[str], windows: Sequence[int]
) -> dict[tuple[str, int], np.ndarray]:
    """(event, window) -> per-entity counts over the `window` days before `cutoff` (exclusive)."""
    position = {int(entity): n for n, entity in enumerate(ids)}
    result = {(name, window): np.zeros(len(ids)) for name in names for window in windows}
    if not len(rollups.count):
        return result
    longest = max(windows)
    mask = (rollups.day < cutoff) & (rollups.day >= cutoff - longest)
    rows = np.flatnonzero(mask)
    slots = np.array([position.get(int(entity), -1) for entity in rollups.entity[rows]], dtype=np.int64)
    keep = slots >= 0
    rows, slots = rows[keep], slots[keep]
    name_index = {name: n for n, name in enumerate(rollups.names)}
    for name in names:
        n = name_index.get(name)
        if n is None:
            continue
        of_name = rollups.name[rows] == n
        for window in windows:
            in_window = of_name & (rollups.day[rows] >= cutoff - window)
            np.add.at(result[(name, window)], slots[in_window], rollups.count[rows][in_window])
    return result


def _activity(rollups: Rollups, ids: np.ndarray, cutoff: int) -> dict[str, np.ndarray]:
    """All-event totals: last 30 / previous 30 days, active days in 30, days since the last active day."""
    position = {int(entity): n for n, entity in enumerate(ids)}
    last30, prev30, active30 = np.zeros(len(ids)), np.zeros(len(ids)), np.zeros(len(ids))
    last_day = np.full(len(ids), -1, dtype=np.int64)
    if len(rollups.count):
        rows = np.flatnonzero(rollups.day < cutoff)
        slots = np.array([position.get(int(entity), -1) for entity in rollups.entity[rows]], dtype=np.int64)
        keep = slots >= 0
        rows, slots = rows[keep], slots[keep]
        days, counts = rollups.day[rows], rollups.count[rows]
        recent = days >= cutoff - 30
        previous = (days < cutoff - 30) & (days >= cutoff - 60)
        np.add.at(last30, slots[recent], counts[recent])
        np.add.at(prev30, slots[previous], counts[previous])
        np.maximum.at(last_day, slots, days)
        # distinct active days in the last 30: unique (slot, day) pairs
        pairs = np.unique(slots[recent] * 1_000_000 + (days[recent] - (cutoff - 31)))
        np.add.at(active30, pairs // 1_000_000, 1)
    since = np.where(last_day >= 0, cutoff - last_day, NEVER_DAYS).astype(float)
    trend = np.log((last30 + 1.0) / (prev30 + 1.0))
    return {"events_30d": last30, "events_prev_30d": prev30, "trend_30d": trend, "active_days_30d": active30,
            "days_since_last_active": since}  # fmt: skip


def _typed_properties(
    raw: RawFeatures, history: History, entity_type: str, ids: np.ndarray, at: datetime, excluded: set[str]
) -> None:
    """Every typed property as of `at`: numbers, booleans (0/1), datetimes (days before `at`), texts."""
    values = [properties_as_of(history, entity_type, int(pk), at) for pk in ids]
    keys = sorted({key for row in values for key in row} - excluded - {"stage", "name"})
    for key in keys:
        kind = history.property_types.get((entity_type, key))
        column = [row.get(key) for row in values]
        name = f"prop:{key}"
        if kind == "number":
            raw.numbers[name] = np.array([float(v) if isinstance(v, int | float) else np.nan for v in column])
        elif kind == "boolean":
            raw.numbers[name] = np.array([float(v) if isinstance(v, bool) else np.nan for v in column])
        elif kind == "datetime":
            raw.numbers[name] = np.array([_days_before(v, at) for v in column])
        elif kind == "text":
            raw.categories[name] = [v if isinstance(v, str) else None for v in column]
        else:
            continue
        raw.describe[name] = {"kind": f"property_{kind}", "property": key}


def _days_before(value: Any, at: datetime) -> float:
    if not isinstance(value, str):
        return math.nan
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return math.nan
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (at - parsed).total_seconds() / 86400


def _role(properties: dict[str, Any]) -> str | None:
    role = properties.get("role")
    return role.strip().lower() if isinstance(role, str) and role.strip() else None


def members_as_of(history: History, at: datetime) -> dict[int, list[tuple[int, int]]]:
    """account id -> [(membership id, user id)] of members at `at` (joined before, not left by then)."""
    members: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for pk, (account_id, user_id, joined_at, left_at) in history.memberships.items():
        if joined_at < at and (left_at is None or left_at >= at):
            members[account_id].append((pk, user_id))
    return members


def account_features(
    history: History, ids: Sequence[int], at: datetime, settings: dict[str, Any], key_events: Sequence[str]
) -> RawFeatures:
    """Features of accounts at instant `at` (a training snapshot or now)."""
    ids_array = np.asarray(ids, dtype=np.int64)
    cutoff = snapshot_day(at)
    raw = RawFeatures(ids=ids_array)
    counts = _window_counts(history.account_rollups, ids_array, cutoff, key_events, WINDOWS)
    for (name, window), values in counts.items():
        raw.numbers[f"count:{name}:{window}d"] = values
        raw.describe[f"count:{name}:{window}d"] = {"kind": "count", "event": name, "window": window}
    for name, values in _activity(history.account_rollups, ids_array, cutoff).items():
        raw.numbers[name] = values
        raw.describe[name] = {"kind": name}
    key_30 = sum((counts[(name, 30)] for name in key_events), np.zeros(len(ids_array)))

    members = members_as_of(history, at)
    pair_active = _active_pairs(history.pair_rollups, cutoff, ACTIVE_SEAT_DAYS)
    seats, active = np.zeros(len(ids_array)), np.zeros(len(ids_array))
    roles: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(ids_array)))
    for n, pk in enumerate(ids_array):
        of_account = members.get(int(pk), [])
        seats[n] = len(of_account)
        active[n] = sum(1 for _m, user in of_account if (int(pk), user) in pair_active)
        for membership_pk, _user in of_account:
            role = _role(properties_as_of(history, EntityType.MEMBERSHIP, membership_pk, at)) or "unknown"
            roles[role][n] += 1
    raw.numbers["seats"], raw.numbers["active_seats_30d"] = seats, active
    raw.numbers["active_seat_share"] = np.where(seats > 0, active / np.maximum(seats, 1), np.nan)
    for name in ("seats", "active_seats_30d", "active_seat_share"):
        raw.describe[name] = {"kind": name}
    for role, values in sorted(roles.items()):
        if role in ("owner", "admin", "member"):
            raw.numbers[f"role_share:{role}"] = np.where(seats > 0, values / np.maximum(seats, 1), np.nan)
            raw.describe[f"role_share:{role}"] = {"kind": "role_share", "role": role}

    age = np.array([cutoff - history.first_day.get((EntityType.ACCOUNT, int(pk)), cutoff) for pk in ids_array])
    raw.numbers["age_days"] = age.astype(float)
    raw.describe["age_days"] = {"kind": "age_days"}
    reached = milestones_reached(history, ids_array, at, settings, key_events, seats=seats)
    raw.numbers["activation"] = reached.mean(axis=1) if reached.shape[1] else np.full(len(ids_array), np.nan)
    raw.describe["activation"] = {"kind": "activation"}
    for column, milestone in enumerate(settings.get("milestones", [])):
        name = f"milestone:{milestone['name']}"
        raw.numbers[name] = reached[:, column]
        raw.describe[name] = {"kind": "milestone", "milestone": milestone["name"]}
    raw.numbers["key_events_30d"] = key_30
    raw.describe["key_events_30d"] = {"kind": "key_events", "window": 30}
    _typed_properties(raw, history, EntityType.ACCOUNT, ids_array, at, set(settings.get("excluded_properties", [])))
    _quota(raw, history, ids_array, at)
    return raw


def _active_pairs(rollups: Rollups, cutoff: int, days: int) -> set[tuple[int, int]]:
    if not len(rollups.count):
        return set()
    mask = (rollups.day < cutoff) & (rollups.day >= cutoff - days)
    return set(zip(rollups.entity[mask].tolist(), rollups.other[mask].tolist(), strict=True))


QUOTA_PAIRS = (("_used", "_limit"), ("used_", "limit_"), ("_usage", "_quota"))


def _quota(raw: RawFeatures, history: History, ids: np.ndarray, at: datetime) -> None:
    """Quota ratio (x_used / x_limit) and its velocity: days until the limit at the last 30 days' rate."""
    numbers = {key.removeprefix("prop:") for key in raw.numbers if key.startswith("prop:")}
    for used_key in sorted(numbers):
        for used_part, limit_part in QUOTA_PAIRS:
            if used_part not in used_key:
                continue
            limit_key = used_key.replace(used_part, limit_part)
            if limit_key not in numbers:
                continue
            used, limit = raw.numbers[f"prop:{used_key}"], raw.numbers[f"prop:{limit_key}"]
            ratio = np.where(limit > 0, used / np.where(limit > 0, limit, 1), np.nan)
            month_ago = at - timedelta(days=30)
            before = np.array(
                [
                    _number(value_as_of(history.properties.get((EntityType.ACCOUNT, int(pk)), {}).get(used_key, ()),
                                        month_ago))
                    for pk in ids
                ]
            )  # fmt: skip
            rate = (used - np.where(np.isnan(before), 0.0, before)) / 30.0
            days_left = np.where((rate > 0) & (limit > used), (limit - used) / np.where(rate > 0, rate, 1), 365.0)
            days_left = np.where(limit <= used, 0.0, np.minimum(days_left, 365.0))
            stem = used_key.replace(used_part, "")
            raw.numbers[f"quota_ratio:{stem}"] = ratio
            raw.numbers[f"quota_days_left:{stem}"] = np.where(np.isnan(ratio), np.nan, days_left)
            raw.describe[f"quota_ratio:{stem}"] = {"kind": "quota_ratio", "quota": stem}
            raw.describe[f"quota_days_left:{stem}"] = {"kind": "quota_days_left", "quota": stem}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def milestones_reached(
    history: History,
    ids: np.ndarray,
    at: datetime,
    settings: dict[str, Any],
    key_events: Sequence[str],
    *,
    seats: np.ndarray,
) -> np.ndarray:
    """accounts x milestones: 1.0 where the account reached the milestone before `at` (settings order)."""
    milestones = settings.get("milestones", [])
    cutoff = snapshot_day(at)
    reached = np.zeros((len(ids), len(milestones)))
    rollups = history.account_rollups
    position = {int(entity): n for n, entity in enumerate(ids)}
    name_index = {name: n for n, name in enumerate(rollups.names)}
    key_index = {name_index[name] for name in key_events if name in name_index}
    visible = np.flatnonzero(rollups.day < cutoff) if len(rollups.count) else np.zeros(0, dtype=np.int64)
    slots = np.array([position.get(int(e), -1) for e in rollups.entity[visible]], dtype=np.int64)
    keep = slots >= 0
    visible, slots = visible[keep], slots[keep]
    first = np.array([history.first_day.get((EntityType.ACCOUNT, int(pk)), cutoff) for pk in ids])
    for column, milestone in enumerate(milestones):
        metric = milestone.get("metric", "event")
        count = float(milestone.get("count", 1))
        within = milestone.get("within_hours")
        limit_day = first + (math.ceil(float(within) / 24) if within else 100_000)
        in_time = rollups.day[visible] < limit_day[slots]
        if metric == "seats":
            reached[:, column] = seats >= count
            continue
        totals = np.zeros(len(ids))
        if metric == "event":
            n = name_index.get(str(milestone.get("event")))
            if n is None:
                continue
            chosen = in_time & (rollups.name[visible] == n)
            np.add.at(totals, slots[chosen], rollups.count[visible][chosen])
        elif metric == "key_events":
            chosen = in_time & np.isin(rollups.name[visible], list(key_index))
            np.add.at(totals, slots[chosen], rollups.count[visible][chosen])
        elif metric == "active_days":
            pairs = np.unique(slots[in_time] * 1_000_000 + (rollups.day[visible][in_time] % 1_000_000))
            np.add.at(totals, pairs // 1_000_000, 1)
        reached[:, column] = totals >= count
    return reached


def user_features(
    history: History, ids: Sequence[int], at: datetime, settings: dict[str, Any], key_events: Sequence[str]
) -> RawFeatures:
    """Features of users at instant `at` (health: will they be active in the next days?)."""
    ids_array = np.asarray(ids, dtype=np.int64)
    cutoff = snapshot_day(at)
    raw = RawFeatures(ids=ids_array)
    counts = _window_counts(history.user_rollups, ids_array, cutoff, key_events, USER_WINDOWS)
    for (name, window), values in counts.items():
        raw.numbers[f"count:{name}:{window}d"] = values
        raw.describe[f"count:{name}:{window}d"] = {"kind": "count", "event": name, "window": window}
    for name, values in _activity(history.user_rollups, ids_array, cutoff).items():
        raw.numbers[name] = values
        raw.describe[name] = {"kind": name}
    # Activity in the last week, the strongest single hint of the next two weeks.
    week = _window_counts(history.user_rollups, ids_array, cutoff, history.user_rollups.names, (7,))
    raw.numbers["events_7d"] = sum(week.values(), np.zeros(len(ids_array)))
    raw.describe["events_7d"] = {"kind": "events_7d"}
    age = np.array([cutoff - history.first_day.get((EntityType.USER, int(pk)), cutoff) for pk in ids_array])
    raw.numbers["age_days"] = age.astype(float)
    raw.describe["age_days"] = {"kind": "age_days"}
    accounts, best_role = np.zeros(len(ids_array)), np.zeros(len(ids_array))
    weights = settings.get("champion", {}).get("role_weights", {})
    position = {int(pk): n for n, pk in enumerate(ids_array)}
    for membership_pk, (_account, user_id, joined_at, left_at) in history.memberships.items():
        n = position.get(user_id)
        if n is None or not (joined_at < at and (left_at is None or left_at >= at)):
            continue
        accounts[n] += 1
        role = _role(properties_as_of(history, EntityType.MEMBERSHIP, membership_pk, at))
        best_role[n] = max(best_role[n], float(weights.get(role or "", 0.0)))
    raw.numbers["accounts"], raw.numbers["role_weight"] = accounts, best_role
    raw.describe["accounts"], raw.describe["role_weight"] = {"kind": "accounts"}, {"kind": "role_weight"}
    _typed_properties(raw, history, EntityType.USER, ids_array, at, set(settings.get("excluded_properties", [])))
    return raw


def membership_activity(
    history: History, memberships: Iterable[int], at: datetime, key_events: Sequence[str], days: int = 30
) -> dict[int, tuple[float, float, dict[str, float]]]:
    """membership id -> (user's key events in the account, the account's key events, per-event user counts)
    over the `days` before `at`: the user's share of the team's key activity."""
    cutoff = snapshot_day(at)
    pairs = history.pair_rollups
    name_index = {name: n for n, name in enumerate(pairs.names)}
    wanted = {name_index[name]: name for name in key_events if name in name_index}
    per_pair: dict[tuple[int, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_account: dict[int, float] = defaultdict(float)
    if len(pairs.count):
        mask = (pairs.day < cutoff) & (pairs.day >= cutoff - days) & np.isin(pairs.name, list(wanted))
        for account, user, name, count in zip(
            pairs.entity[mask].tolist(), pairs.other[mask].tolist(), pairs.name[mask].tolist(),
            pairs.count[mask].tolist(), strict=True,
        ):  # fmt: skip
            per_pair[(account, user)][wanted[name]] += count
            per_account[account] += count
    result = {}
    for pk in memberships:
        account, user, _joined, _left = history.memberships[pk]
        events = dict(per_pair.get((account, user), {}))
        result[pk] = (sum(events.values()), per_account.get(account, 0.0), events)
    return result


# --- fixed encoding ---------------------------------------------------------------------------------


@dataclass
class FeatureSpec:
    """The columns a model was trained on: numbers by name, categories one-hot for their frequent values."""

    numbers: list[str]
    categories: dict[str, list[str]]
    describe: dict[str, dict[str, Any]]

    @property
    def columns(self) -> list[str]:
        one_hot = [f"{name}={value}" for name, values in self.categories.items() for value in values]
        return [*self.numbers, *one_hot]

    @classmethod
    def fit(cls, tables: Sequence[RawFeatures]) -> FeatureSpec:
        numbers = sorted({name for table in tables for name in table.numbers})
        categories: dict[str, list[str]] = {}
        total = sum(len(table.ids) for table in tables)
        for name in sorted({name for table in tables for name in table.categories}):
            counter: Counter[str] = Counter(
                value for table in tables for value in table.categories.get(name, []) if value is not None
            )
            frequent = [value for value, count in counter.most_common() if count >= MIN_CATEGORY_SHARE * total]
            if 0 < len(counter) <= MAX_CATEGORY_VALUES * 4 and frequent:  # identifiers are not categories
                categories[name] = sorted(frequent[:MAX_CATEGORY_VALUES])
        describe: dict[str, dict[str, Any]] = {}
        for table in tables:
            describe.update(table.describe)
        return cls(numbers=numbers, categories=categories, describe=describe)

    def matrix(self, table: RawFeatures) -> np.ndarray:
        columns: list[np.ndarray] = []
        missing = np.full(len(table.ids), np.nan)
        for name in self.numbers:
            columns.append(np.asarray(table.numbers.get(name, missing), dtype=float))
        for name, values in self.categories.items():
            raw = table.categories.get(name, [None] * len(table.ids))
            for value in values:
                columns.append(np.array([1.0 if item == value else 0.0 for item in raw]))
        if not columns:
            return np.zeros((len(table.ids), 0))
        return np.column_stack(columns)

    def as_json(self) -> dict[str, Any]:
        return {"numbers": self.numbers, "categories": self.categories, "describe": self.describe}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(numbers=list(data["numbers"]), categories=dict(data["categories"]), describe=dict(data["describe"]))
