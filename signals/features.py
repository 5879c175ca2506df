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

import functools
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from time import perf_counter
from typing import Any

import numpy as np
import orjson
from django.core.cache import cache
from django.db import connection, transaction
from redis.exceptions import RedisError

from accounts.models import EntityType, Membership, PropertyChange, PropertyDefinition, StageChange
from plgapp import rls
from plgapp.models import Tenant

WINDOWS = (1, 7, 30, 90)
USER_WINDOWS = (7, 30)
ACTIVE_SEAT_DAYS = 30
MAX_CATEGORY_VALUES = 12
MIN_CATEGORY_SHARE = 0.01
AUTO_KEY_EVENTS = 10
NEVER_DAYS = 3650.0  # "days since" for something that never happened

# --- loading ------------------------------------------------------------------------------------------

LEVELS = ("account", "user", "pair")
ENTITY_TYPES = (EntityType.ACCOUNT, EntityType.USER, EntityType.MEMBERSHIP)
NEVER_MICROS = int(np.iinfo(np.int64).max)  # a membership that was never left
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ORDINAL = "(day - DATE '0001-01-01' + 1)"  # date.toordinal() in SQL
_BUCKETS = 8  # aggregates are split this many ways, so no single value nears PostgreSQL's 1 GB limit
LOAD_WORK_MEM = "64MB"  # per sort or hash of the loading queries (PostgreSQL's default, 4MB, spills to disk)
# A whole tenant's loading queries run on this many connections at once (see load_history): three where there are
# three cores or more, two on two cores, where a third connection only contended (load 4.9-6.0 s vs 4.4-4.8 s,
# the whole rescore 13.0-13.5 s vs 12.2-12.8 s, back to back; docs/adr/0018-rescoring-cpu-on-two-cores.md).
# The cores this process may use (its affinity, not the host's count). Measured with PostgreSQL on the same two
# cores; a database on a host of its own may take three.
LOAD_THREADS = min(3, max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2))


def micros(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime: exact, and ordered as the datetimes are."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_PG_EPOCH_MICROS = 946_684_800_000_000  # PostgreSQL counts time from 2000-01-01: that instant in micros()


def pg_timestamps(data: Any) -> np.ndarray:
    """Microseconds since the epoch (as `micros`) from a timestamptz[] in binary (`array_send(array_agg(t))`), which
    holds PostgreSQL's own microseconds since 2000-01-01: exact, without converting each value in SQL (extract()
    works in numeric, slowly). 'infinity' becomes NEVER_MICROS."""
    raw = pg_array(data)
    return np.where(raw == NEVER_MICROS, NEVER_MICROS, raw + _PG_EPOCH_MICROS)


def pg_array(data: Any, kind: str = "i8") -> np.ndarray:
    """A one-dimensional array without NULLs, from PostgreSQL's binary array format (`array_send(...)`): the
    fastest way to move millions of numbers through `Model.objects.sql` (no Python object per value)."""
    if data is None:
        return np.zeros(0, dtype=np.float64 if kind.startswith("f") else np.int64)
    values = np.frombuffer(data, dtype=np.dtype([("length", ">i4"), ("value", f">{kind}")]), offset=20)["value"]
    return values.astype(np.float64 if kind.startswith("f") else np.int64)


def _text(field: Any) -> str:
    return bytes(field).decode()


def entity_slots(entities: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The position of each of `entities` in `ids` (-1 where it is not there); `ids` hold no duplicates."""
    if not len(entities) or not len(ids):
        return np.full(len(entities), -1, dtype=np.int64)
    low, high = int(ids.min()), int(ids.max())
    if high - low < max(4 * len(ids), 1 << 20):  # a lookup table is cheaper than a search
        # -1 on both sides of the ids' range: an entity outside it is clipped onto one (three passes in all)
        table = np.full(high - low + 3, -1, dtype=np.int64)
        table[ids - (low - 1)] = np.arange(len(ids))
        shifted = entities - (low - 1)
        np.maximum(shifted, 0, out=shifted)  # clipped in place: np.clip costs twice as much on millions
        np.minimum(shifted, high - low + 2, out=shifted)
        return table[shifted]
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    found = np.minimum(np.searchsorted(ordered, entities), len(ordered) - 1)
    return np.where(ordered[found] == entities, order[found], -1)


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
class KeyChanges:
    """The changes of one property key of one entity type, sorted by (entity, time, order of writing)."""

    entity: np.ndarray
    at: np.ndarray  # microseconds since the epoch
    values: np.ndarray  # objects: JSON values, None where the key was deleted
    _columns: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _piecemeal: dict[str, int] = field(default_factory=dict, repr=False)  # kind -> rows converted by gather alone

    @classmethod
    def as_written(cls, entity: np.ndarray, at: np.ndarray, values: np.ndarray, written: np.ndarray) -> KeyChanges:
        """Changes in any order, sorted as the history was written: by entity, time, then `written` (the order of
        writing: ids, or positions in a list kept in that order)."""
        order = np.lexsort((written, at, entity))
        return cls(entity=entity[order], at=at[order], values=values[order])

    def rows_as_of(self, ids: np.ndarray, at: datetime) -> np.ndarray:
        """Per id, the row of its latest change strictly before `at` (-1: none)."""
        ids = np.asarray(ids, dtype=np.int64)
        low = np.searchsorted(self.entity, ids, side="left")
        high = np.searchsorted(self.entity, ids, side="right")
        before = np.concatenate(([0], np.cumsum(self.at < micros(at))))
        count = before[high] - before[low]  # an entity's rows are in time order: the earlier ones come first
        return np.where(count > 0, low + count - 1, -1)

    def column(self, kind: str) -> np.ndarray:
        """The values as `kind`: "value" (as written), "present" (not deleted), "number" (ints, floats and
        booleans), "strict_number" (not booleans), "boolean", "text" (or None), "role" (texts trimmed and in
        lower case, None when blank), "epoch" (ISO datetime texts as seconds since the epoch). Converted once,
        then kept."""
        if kind == "value":
            return self.values
        if kind not in self._columns:
            self._columns[kind] = _converted(self.values, kind)
        return self._columns[kind]

    def gather(self, rows: np.ndarray, kind: str) -> np.ndarray:
        """`column(kind)` at `rows` (from rows_as_of); a missing row gives NaN, None or False.

        Scoring at one instant gathers each entity's latest row only, a fraction of a long history (an account's
        storage use, say, changes daily): those rows are converted alone, until the rows converted that way add
        up to the whole history, which is then converted once and kept (training gathers at many instants)."""
        missing = _MISSING.get(kind, math.nan)
        if not len(self.values):
            return np.full(len(rows), missing, dtype=self.column(kind).dtype)
        picked = np.maximum(rows, 0)
        piecemeal = self._piecemeal.get(kind, 0) + len(rows)
        if kind == "value" or kind in self._columns or piecemeal >= len(self.values):
            result = self.column(kind)[picked]
        else:
            self._piecemeal[kind] = piecemeal
            result = _converted(self.values[picked], kind)
        result[rows < 0] = missing
        return result


# gather's value for no row (else NaN)
_MISSING: dict[str, Any] = {"present": False, "text": None, "role": None, "value": None}


def _converted(values: np.ndarray, kind: str) -> np.ndarray:
    """JSON values (objects) as one of KeyChanges.column's kinds. By each value's exact type — JSON values are of
    the builtin types alone (bool is not an int here) — with numpy's loops, not one Python step per value."""
    if kind == "epoch":
        return np.array([_epoch_seconds(v) for v in values.tolist()], dtype=float)
    if kind == "present":
        return np.asarray(values != None, dtype=bool)  # noqa: E711 - numpy compares each value with None
    types = np.fromiter(map(type, values.tolist()), dtype=object, count=len(values))

    def of_type(*wanted: type) -> np.ndarray:
        chosen = np.zeros(len(values), dtype=bool)
        for kind_of_value in wanted:
            chosen |= np.asarray(types == kind_of_value, dtype=bool)  # one comparison per value, in numpy's loop
        return chosen

    if kind in ("text", "role"):
        text = np.full(len(values), None, dtype=object)
        strings = of_type(str)
        if kind == "text":
            text[strings] = values[strings]
        else:  # each distinct text once: a membership's role trimmed and in lower case, None when blank
            written = values[strings].tolist()
            role_of = {value: value.strip().lower() or None for value in set(written)}
            text[strings] = [role_of[value] for value in written]
        return text
    if kind == "number":
        chosen = of_type(float, int, bool)
    elif kind == "strict_number":
        chosen = of_type(float, int)
    elif kind == "boolean":
        chosen = of_type(bool)
    else:
        raise ValueError(f"no column {kind}")
    numbers = np.full(len(values), math.nan)
    numbers[chosen] = values[chosen].astype(float)
    return numbers


@dataclass
class Memberships:
    """Memberships as parallel arrays sorted by id; `joined` and `left` in microseconds (never left: NEVER)."""

    pk: np.ndarray
    account: np.ndarray
    user: np.ndarray
    joined: np.ndarray
    left: np.ndarray

    @classmethod
    def empty(cls) -> Memberships:
        zeros = np.zeros(0, dtype=np.int64)
        return cls(zeros, zeros, zeros, zeros, zeros)

    def __len__(self) -> int:
        return len(self.pk)

    def active(self, at: datetime) -> np.ndarray:
        """Which memberships hold at `at`: joined before it and not left by then."""
        instant = micros(at)
        return (self.joined < instant) & (self.left >= instant)

    def __getitem__(self, pk: int) -> tuple[int, int, datetime, datetime | None]:
        """(account id, user id, joined_at, left_at) of one membership."""
        n = int(np.searchsorted(self.pk, pk))
        if n >= len(self.pk) or int(self.pk[n]) != pk:
            raise KeyError(pk)
        left = int(self.left[n])
        return (int(self.account[n]), int(self.user[n]), _EPOCH + timedelta(microseconds=int(self.joined[n])),
                None if left == NEVER_MICROS else _EPOCH + timedelta(microseconds=left))  # fmt: skip


@dataclass
class FirstDays:
    """The first day with activity (date ordinal) of each account and user: sorted ids and days per type."""

    ids: dict[str, np.ndarray] = field(default_factory=dict)
    days: dict[str, np.ndarray] = field(default_factory=dict)

    def lookup(self, entity_type: str, ids: np.ndarray, default: int) -> np.ndarray:
        known, days = self.ids.get(entity_type), self.days.get(entity_type)
        if known is None or days is None or not len(known):
            return np.full(len(ids), default, dtype=np.int64)
        slots = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        return np.where(known[slots] == ids, days[slots], default)

    def get(self, key: tuple[str, int], default: int | None = None) -> int | None:
        found = self.lookup(key[0], np.array([key[1]], dtype=np.int64), -1)[0]
        return default if found < 0 else int(found)

    def values(self) -> list[int]:
        return [int(day) for days in self.days.values() for day in days]


class StageRows(Mapping[tuple[str, int], list[tuple[datetime, str | None]]]):
    """A stage history as loaded: arrays in the order of writing (entity type, entity id, microseconds since the
    epoch, stage). Live scoring reads them as `KeyChanges`; as a mapping (entity type, id) -> [(changed_at,
    stage)] (training labels) the lists are built on first use."""

    def __init__(self, types: list[str], entity: np.ndarray, at: np.ndarray, stages: list[str | None]) -> None:
        self.types, self.entity, self.at, self.stages = types, entity, at, stages
        self._lists: dict[tuple[str, int], list[tuple[datetime, str | None]]] | None = None

    def changes(self, entity_type: str) -> KeyChanges:
        mine = np.flatnonzero(np.array(self.types, dtype=object) == entity_type) if self.types else np.zeros(0, int)
        values = np.empty(len(mine), dtype=object)
        values[:] = [self.stages[n] for n in mine.tolist()]
        return KeyChanges.as_written(self.entity[mine], self.at[mine], values, mine)

    def _mapping(self) -> dict[tuple[str, int], list[tuple[datetime, str | None]]]:
        if self._lists is None:
            lists: dict[tuple[str, int], list[tuple[datetime, str | None]]] = defaultdict(list)
            for entity_type, entity_id, at, stage in zip(
                self.types, self.entity.tolist(), self.at.tolist(), self.stages, strict=True
            ):
                lists[(entity_type, entity_id)].append((_EPOCH + timedelta(microseconds=at), stage))
            self._lists = dict(lists)
        return self._lists

    def __getitem__(self, key: tuple[str, int]) -> list[tuple[datetime, str | None]]:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())


@dataclass
class History:
    """What features of one tenant need, loaded once; every feature function reads only data before T."""

    tenant_id: int
    account_rollups: Rollups
    user_rollups: Rollups
    pair_rollups: Rollups
    # entity type -> key -> its changes
    properties: dict[str, dict[str, KeyChanges]]
    stages: Mapping[tuple[str, int], list[tuple[datetime, str | None]]]  # in the order of writing
    memberships: Memberships
    property_types: dict[tuple[str, str], str]
    first_day: FirstDays = field(default_factory=FirstDays)
    # The tenant's events per name, for key_events_of, when not every account and user was loaded.
    name_totals: Callable[[], dict[str, int]] | None = None
    levels: tuple[str, ...] = LEVELS  # the rollup levels loaded
    live_at: datetime | None = None  # loaded at this instant to score live (see visible_before)
    # snapshot day (ordinal) -> (account ids, user ids) active in an account in the ACTIVE_SEAT_DAYS days before it
    active_pairs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _stage_changes: dict[str, KeyChanges] = field(default_factory=dict, repr=False, compare=False)

    def stages_as_of(self, entity_type: str, ids: np.ndarray, at: datetime) -> np.ndarray:
        """The stage of each of `ids` as of `at`: its latest change strictly before `at` (objects; None = none)."""
        changes = self._stage_changes.get(entity_type)
        if changes is None and isinstance(self.stages, StageRows):  # loaded as arrays
            changes = self._stage_changes[entity_type] = self.stages.changes(entity_type)
        if changes is None:  # the stage history as arrays, once (each entity's list is in the order of writing)
            mine = [(entity_id, changed_at, stage) for (kind, entity_id), changes_of in self.stages.items()
                    if kind == entity_type for changed_at, stage in changes_of]  # fmt: skip
            entity = np.fromiter((row[0] for row in mine), dtype=np.int64, count=len(mine))
            at_micros = np.fromiter((micros(row[1]) for row in mine), dtype=np.int64, count=len(mine))
            values = np.empty(len(mine), dtype=object)
            values[:] = [row[2] for row in mine]
            changes = self._stage_changes[entity_type] = KeyChanges.as_written(
                entity, at_micros, values, np.arange(len(mine))
            )
        return changes.gather(changes.rows_as_of(np.asarray(ids, dtype=np.int64), at), "value")


@dataclass(frozen=True)
class Scope:
    """Some accounts and users of a tenant (incremental rescoring): their rollups, properties, stages and
    memberships, and the properties of those memberships; nothing about other entities."""

    accounts: tuple[int, ...] = ()
    users: tuple[int, ...] = ()


_LEVEL_ROWS = {
    "account": "end_user_id = 0 AND account_id <> 0",
    "user": "account_id = 0 AND end_user_id <> 0",
    "pair": "account_id <> 0 AND end_user_id <> 0",
}


def _rollups(tenant: Tenant, since: dict[str, date | None], scope: Scope | None) -> dict[str, Rollups]:
    """The rollups of the levels in `since` (each from its own day on, None: all), in one pass over the table:
    rows grouped by name and day, each level's ids and counts of a group as binary arrays."""
    from signals.models import DailyRollup  # the rollup model belongs to this app

    conditions: list[str] = []
    columns: list[str] = []
    params: dict[str, Any] = {}
    for level, first in since.items():
        condition = _LEVEL_ROWS[level]
        if first is not None:
            condition += f" AND day >= %({level}_since)s"
            params[f"{level}_since"] = first
        if scope is not None:
            side, ids = ("end_user_id", scope.users) if level == "user" else ("account_id", scope.accounts)
            condition += f" AND {side} = ANY(%({level}_ids)s::bigint[])"
            params[f"{level}_ids"] = list(ids)
        conditions.append(f"({condition})")
        entity = "end_user_id" if level == "user" else "account_id"
        # Several levels share the pass; each one's aggregates take its rows only (alone, WHERE has chosen them).
        of_level = f"FILTER (WHERE {_LEVEL_ROWS[level]})" if len(since) > 1 else ""
        columns += [f"array_send(array_agg({entity}) {of_level})", f"array_send(array_agg(count) {of_level})"]
        if level == "pair":
            columns.append(f"array_send(array_agg(end_user_id) {of_level})")
    if not conditions:
        return {}
    rows = [
        (_text(name), int.from_bytes(ordinal, "big", signed=True), *arrays)
        for name, ordinal, *arrays in DailyRollup.objects.binary_rows(
            tenant,
            f"SELECT name, {_ORDINAL}, {', '.join(columns)} FROM signals_dailyrollup "  # noqa: S608 - constant names
            f"WHERE tenant_id = %(tenant)s AND ({' OR '.join(conditions)}) GROUP BY name, day",
            params,
        )
    ]
    result: dict[str, Rollups] = {}
    offset = 2
    for level in since:
        width = 3 if level == "pair" else 2
        mine = [(row[0], row[1], *row[offset : offset + width]) for row in rows if row[offset] is not None]
        offset += width
        if not mine:
            result[level] = Rollups.empty()
            continue
        names = sorted({row[0] for row in mine})
        index = {name: n for n, name in enumerate(names)}
        entities = [pg_array(row[2]) for row in mine]
        sizes = [len(part) for part in entities]
        result[level] = Rollups(
            entity=np.concatenate(entities),
            other=np.concatenate([pg_array(row[4]) for row in mine])
            if level == "pair"
            else np.zeros(sum(sizes), np.int64),
            name=np.repeat(np.array([index[row[0]] for row in mine], dtype=np.int64), sizes),
            day=np.repeat(np.array([row[1] for row in mine], dtype=np.int64), sizes),
            count=np.concatenate([pg_array(row[3], "i4") for row in mine]),
            names=names,
        )
    return result


# One row of an account's series (signals.rollups.SERIES_RECORD): EventName id, day ordinal, count; big-endian.
_SERIES_RECORD = np.dtype([("name", ">i8"), ("day", ">i4"), ("count", ">i4")])


def _account_series(tenant: Tenant, since: date, scope: Scope | None) -> Rollups | None:
    """The account-level rollups from `since` on, read from the accounts' series (`AccountSeries`, kept by the
    rollup processor) instead of grouping millions of rollup rows; the series travel by binary COPY (bytea as
    itself, not as hex text). None when a series starts after `since` (its account's latest rows are over
    SERIES_DAYS days after it): the rollups must be read then."""
    from signals.models import AccountSeries

    where, params = "", dict[str, Any](since=since)
    if scope is not None:
        where, params["ids"] = " AND account_id = ANY(%(ids)s::bigint[])", list(scope.accounts)
    # A few rows of everything, as bytes: PostgreSQL concatenates 100,000 values faster than Python walks them.
    rows = AccountSeries.objects.binary_rows(
        tenant,
        "SELECT bool_and(since <= %(since)s), array_send(array_agg(account_id)), "  # noqa: S608 - constants
        "array_send(array_agg(length(packed))), string_agg(packed, ''::bytea) "
        f"FROM signals_accountseries WHERE tenant_id = %(tenant)s{where} GROUP BY account_id %% {_BUCKETS}",
        params,
    )
    if not all(row[0] is not None and row[0][0] for row in rows):
        return None
    if not rows:
        return Rollups.empty()
    ids = np.concatenate([pg_array(row[1]) for row in rows])
    sizes = np.concatenate([pg_array(row[2], "i4") for row in rows]) // _SERIES_RECORD.itemsize
    # Each row's records are read where they arrived and converted straight into the columns: no joined copy of
    # the whole (100 MB on 100,000 accounts), then one of each column.
    name, day, count = (np.empty(int(sizes.sum()), dtype=np.int64) for _ in range(3))
    start = 0
    for row in rows:
        records = np.frombuffer(row[3] or b"", dtype=_SERIES_RECORD)
        stop = start + len(records)
        name[start:stop], day[start:stop], count[start:stop] = records["name"], records["day"], records["count"]
        start = stop
    return _series_rollups(tenant, np.repeat(ids, sizes), name, day, count, since)


def _earliest_of_series(rollups: Rollups) -> tuple[np.ndarray, np.ndarray]:
    """(account ids ascending, the earliest loaded day of each) of rollups read from series, which come account by
    account: one pass, not a search per row."""
    entity, day = rollups.entity, rollups.day
    if not len(entity):
        return entity, day
    starts = np.flatnonzero(np.concatenate(([True], entity[1:] != entity[:-1])))
    ids, firsts = entity[starts], np.minimum.reduceat(day, starts)
    order = np.argsort(ids, kind="stable")
    return ids[order], firsts[order]


def _series_rollups(tenant: Tenant, entity: np.ndarray, name_ids: np.ndarray, day: np.ndarray, count: np.ndarray,
                    since: date) -> Rollups:  # fmt: skip
    """Rollups from the rows of series (their accounts, event name ids, days and counts), those from `since` on;
    names from the registry."""
    from signals.models import EventName

    kept = day >= since.toordinal()
    if not kept.all():
        entity, name_ids, day, count = entity[kept], name_ids[kept], day[kept], count[kept]
    if not len(name_ids):
        return Rollups.empty()
    low, high = int(name_ids.min()), int(name_ids.max())
    if high - low < 1 << 22:  # registry ids of one tenant: usually a narrow range, marked in one pass
        seen = np.zeros(high - low + 1, dtype=bool)
        seen[name_ids - low] = True
        present = np.flatnonzero(seen) + low
    else:
        present = np.unique(name_ids)
    known = dict(
        EventName.objects.sql(
            tenant,
            "SELECT id, name FROM signals_eventname WHERE tenant_id = %(tenant)s AND id = ANY(%(ids)s::bigint[])",
            {"ids": present.tolist()},
        )
    )
    names = sorted(known.values())
    index_of_name = {name: n for n, name in enumerate(names)}
    name_of_present = np.array([index_of_name[known[pk]] for pk in present.tolist()], dtype=np.int64)
    return Rollups(
        entity=entity,
        other=np.zeros(len(entity), dtype=np.int64),
        name=name_of_present[entity_slots(name_ids, present)],
        day=day,
        count=count,
        names=names,
    )


def _memberships(tenant: Tenant, scope: Scope | None) -> Memberships:
    where, params = "", {}
    if scope is not None:
        where = " AND (account_id = ANY(%(accounts)s::bigint[]) OR end_user_id = ANY(%(users)s::bigint[]))"
        params = {"accounts": list(scope.accounts), "users": list(scope.users)}
    rows = Membership.objects.binary_rows(
        tenant,
        "SELECT array_send(array_agg(id)), array_send(array_agg(account_id)), array_send(array_agg(end_user_id)), "  # noqa: S608 - constant names
        "array_send(array_agg(joined_at)), array_send(array_agg(COALESCE(left_at, 'infinity'))) "
        f"FROM accounts_membership WHERE tenant_id = %(tenant)s{where} GROUP BY id %% {_BUCKETS}",
        params,
    )
    if not rows:
        return Memberships.empty()
    columns = [np.concatenate([(pg_timestamps if k >= 3 else pg_array)(row[k]) for row in rows]) for k in range(5)]
    order = np.argsort(columns[0], kind="stable")
    return Memberships(*(column[order] for column in columns))


def _properties(
    tenant: Tenant,
    entity_types: Sequence[str],
    scope: Scope | None,
    keys: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, KeyChanges]]:
    where = ""
    params: dict[str, Any] = {"types": list(entity_types)}
    for n, (entity_type, wanted) in enumerate(sorted((keys or {}).items())):
        where += f" AND (entity_type <> %(type{n})s OR key = ANY(%(keys{n})s::text[]))"
        params.update({f"type{n}": entity_type, f"keys{n}": list(wanted)})
    if scope is not None:
        where += (
            " AND ((entity_type = 'account' AND entity_id = ANY(%(accounts)s::bigint[])) OR "
            "(entity_type = 'user' AND entity_id = ANY(%(users)s::bigint[])) OR "
            # An array, not IN (subquery): the planner then probes the index per membership instead of reading
            # every membership's changes of the tenant and filtering them by a hashed subplan (190 ms -> a few on
            # 537,609 memberships).
            "(entity_type = 'membership' AND entity_id = ANY(ARRAY(SELECT id FROM accounts_membership WHERE "
            "tenant_id = %(tenant)s AND (account_id = ANY(%(accounts)s::bigint[]) OR "
            "end_user_id = ANY(%(users)s::bigint[]))))))"
        )
        params.update(accounts=list(scope.accounts), users=list(scope.users))
    rows = PropertyChange.objects.binary_rows(
        tenant,
        "SELECT entity_type, key, array_send(array_agg(entity_id)), "  # noqa: S608 - constant names
        "array_send(array_agg(changed_at)), array_send(array_agg(id)), json_agg(value)::text "
        "FROM accounts_propertychange WHERE tenant_id = %(tenant)s AND entity_type = ANY(%(types)s::text[])"
        f"{where} GROUP BY entity_type, key, entity_id %% {_BUCKETS}",
        params,
    )
    parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]]] = defaultdict(list)
    for entity_type, key, entities, times, pks, values in rows:
        part = (pg_array(entities), pg_timestamps(times), pg_array(pks), orjson.loads(values))
        parts[(_text(entity_type), _text(key))].append(part)
    result: dict[str, dict[str, KeyChanges]] = {entity_type: {} for entity_type in entity_types}
    for (entity_type, key), chunks in sorted(parts.items()):
        entity = np.concatenate([chunk[0] for chunk in chunks])
        at = np.concatenate([chunk[1] for chunk in chunks])
        pks = np.concatenate([chunk[2] for chunk in chunks])
        values = np.fromiter((value for chunk in chunks for value in chunk[3]), dtype=object, count=len(entity))
        result.setdefault(entity_type, {})[key] = KeyChanges.as_written(entity, at, values, pks)
    return result


def _stages(tenant: Tenant, scope: Scope | None) -> StageRows:
    where, params = "", {}
    if scope is not None:
        where = (
            " AND ((entity_type = 'account' AND entity_id = ANY(%(accounts)s::bigint[])) OR "
            "(entity_type = 'user' AND entity_id = ANY(%(users)s::bigint[])))"
        )
        params = {"accounts": list(scope.accounts), "users": list(scope.users)}
    rows = StageChange.objects.binary_rows(
        tenant,
        "SELECT array_send(array_agg(entity_id ORDER BY changed_at, id)), "  # noqa: S608 - constants
        "array_send(array_agg(changed_at ORDER BY changed_at, id)), "
        "json_agg(entity_type ORDER BY changed_at, id)::text, json_agg(to_stage ORDER BY changed_at, id)::text "
        f"FROM accounts_stagechange WHERE tenant_id = %(tenant)s{where}",
        params,
    )
    entity, at, types, stages = rows[0]
    if entity is None:
        return StageRows([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), [])
    return StageRows(orjson.loads(types), pg_array(entity), pg_timestamps(at), orjson.loads(stages))


_FIRST_DAY_LEVELS = (
    (EntityType.ACCOUNT, "account", "account_id", "end_user_id = 0"),
    (EntityType.USER, "user", "end_user_id", "account_id = 0"),
)


def _property_types(tenant: Tenant) -> dict[tuple[str, str], str]:
    rows = PropertyDefinition.objects.for_tenant(tenant).values_list("entity_type", "key", "type")
    return {(entity_type, key): kind for entity_type, key, kind in rows}


def _older_first_days(
    tenant: Tenant, levels: Sequence[str], since: date | None, scope: Scope | None
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """level -> (entity ids, first day) parts of the accounts (account level) and users (user level) with
    activity before `since`, the days not loaded (nothing when everything was loaded)."""
    from signals.models import DailyRollup

    older: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for _entity_type, level, column, where in _FIRST_DAY_LEVELS:
        if level not in levels or since is None:
            continue
        params: dict[str, Any] = {"since": since}
        if scope is not None:
            where += f" AND {column} = ANY(%(ids)s::bigint[])"
            params["ids"] = list(scope.users if level == "user" else scope.accounts)
        older[level] = [
            (pg_array(ids), pg_array(firsts, "i4"))
            for ids, firsts in DailyRollup.objects.binary_rows(
                tenant,
                f"SELECT array_send(array_agg(entity)), array_send(array_agg(first)) FROM (SELECT {column} AS entity, "  # noqa: S608 - constant names
                f"min{_ORDINAL} AS first FROM signals_dailyrollup WHERE tenant_id = %(tenant)s AND {where} "
                f"AND day < %(since)s GROUP BY {column}) AS older",
                params,
            )
        ]
    return older


def _first_days(
    loaded: dict[str, Rollups],
    older: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    earliest: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> FirstDays:
    """The first day with activity of every loaded account (account level) and user (user level): the earliest
    loaded day, or an earlier one from the rows before them (`_older_first_days`). `earliest`: a level's earliest
    loaded days, already known (ids, days)."""
    first = FirstDays()
    for entity_type, level, _column, _where in _FIRST_DAY_LEVELS:
        if level not in loaded:
            continue
        known = (earliest or {}).get(level)
        before = [part for part in older.get(level, []) if len(part[0])]
        if known is not None and not before:
            first.ids[entity_type], first.days[entity_type] = known
            continue
        parts = [known or (loaded[level].entity, loaded[level].day), *before]
        first.ids[entity_type], first.days[entity_type] = _earliest_by_entity(
            np.concatenate([ids for ids, _days in parts]), np.concatenate([days for _ids, days in parts])
        )
    return first


def _earliest_by_entity(entity: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct entities ascending, the smallest day of each)."""
    if not len(entity):
        return entity, day
    low, high = int(entity.min()), int(entity.max())
    if high - low < max(4 * len(entity), 1 << 20):  # a table indexed by id: one pass
        table = np.full(high - low + 1, NEVER_MICROS, dtype=np.int64)
        np.minimum.at(table, entity - low, day)
        present = np.flatnonzero(table != NEVER_MICROS)
        return present + low, table[present]
    order = np.lexsort((day, entity))
    entity, day = entity[order], day[order]
    firsts = np.ones(len(entity), dtype=bool)
    firsts[1:] = entity[1:] != entity[:-1]
    return entity[firsts], day[firsts]


def load_history(
    tenant: Tenant,
    *,
    since: date | None = None,
    levels: Sequence[str] = LEVELS,
    pairs_since: date | None = None,
    entity_types: Sequence[str] = ENTITY_TYPES,
    property_keys: Mapping[str, Sequence[str]] | None = None,
    active_pairs_at: datetime | None = None,
    live_at: datetime | None = None,
    scope: Scope | None = None,
) -> History:
    """Everything features need for this tenant, or only part of it:

    - `since`: rollups from that day on (scoring at one instant needs only the longest window back);
      `pairs_since`: pair-level rollups from that (later) day on;
    - `levels`: the rollup levels ("account", "user", "pair") to load; `entity_types`: whose properties,
      `property_keys`: only these keys of some entity types (e.g. {"membership": ["role"]});
    - `active_pairs_at`: the users active in each account in the 30 days before that instant (active seats at
      that snapshot without the pair-level rollups);
    - `live_at`: loaded at this instant to score live: features at it also see the day under way;
    - `scope`: only these accounts and users (and their memberships): rescoring a few changed entities.
    First days of activity are always those of all time. Everything moves as binary arrays (`pg_array`)."""
    since_of = {level: (pairs_since or since) if level == "pair" else since for level in levels}
    # Recent account-level rows come from the accounts' series: a packed value per account, not millions of rows.
    series_since = since_of.pop("account") if "account" in since_of and since is not None else None
    active_day = None if active_pairs_at is None else _visible_day(active_pairs_at, live_at)
    # A whole tenant's load runs its queries on several connections at once: PostgreSQL computes one while Python
    # decodes another. Only outside a transaction of the caller's, whose uncommitted rows other connections could
    # not see (each statement reads its own snapshot either way: nothing was read as of one instant before).
    threads = LOAD_THREADS if scope is None and not connection.in_atomic_block else 1
    queries: dict[str, Callable[[], Any]] = {  # the biggest first: with threads, they start at once
        "rollups": lambda: _rollups(tenant, since_of, scope),
        "active_pairs": lambda: None if active_day is None else _active_pairs_kept(tenant, active_day, scope),
        "account_series": lambda: None if series_since is None else _account_series(tenant, series_since, scope),
        # On several connections, each entity type's properties apart (one query is as long as the rest together).
        **{
            f"properties:{'+'.join(part)}": partial(_properties, tenant, part, scope, property_keys)
            for part in ([[entity_type] for entity_type in entity_types] if threads > 1 else [entity_types])
        },
        "memberships": lambda: _memberships(tenant, scope),
        "stages": lambda: _stages(tenant, scope),
        "older_first_days": lambda: _older_first_days(tenant, levels, since, scope),
        "types": lambda: _property_types(tenant),
    }
    got = _run_queries(tenant, queries, threads)
    loaded: dict[str, Rollups] = got["rollups"]
    earliest: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if series_since is not None:
        series: Rollups | None = got["account_series"]
        if series is None:  # rarely (a score long before an account's latest rows): the rows themselves
            reread = {"account": lambda: _rollups(tenant, {"account": series_since}, scope)["account"]}
            account_rollups = _run_queries(tenant, reread, 1)["account"]
        else:
            account_rollups, earliest["account"] = series, _earliest_of_series(series)
        loaded = {level: account_rollups if level == "account" else loaded[level] for level in levels
                  if level in loaded or level == "account"}  # fmt: skip
    history = History(
        tenant_id=tenant.pk,
        account_rollups=loaded.get("account", Rollups.empty()),
        user_rollups=loaded.get("user", Rollups.empty()),
        pair_rollups=loaded.get("pair", Rollups.empty()),
        properties={
            entity_type: changes
            for name, part in got.items()
            if name.startswith("properties:")
            for entity_type, changes in part.items()
        },
        stages=got["stages"],
        memberships=got["memberships"],
        property_types=got["types"],
        first_day=_first_days(loaded, got["older_first_days"], earliest),
        levels=tuple(loaded),
        live_at=live_at,
    )
    if active_day is not None:
        history.active_pairs[active_day] = got["active_pairs"]
    if scope is not None or not {"account", "user"} <= set(levels):
        # Only the loaded rows cannot tell; asked once per load (a round's kinds and champions share it).
        history.name_totals = functools.cache(lambda: name_totals(tenant, since=since))
    return history


def _run_queries(tenant: Tenant, queries: dict[str, Callable[[], Any]], threads: int) -> dict[str, Any]:
    """Each query's result by name: in one transaction on this connection, or shared out between `threads`
    threads, each with a connection of its own in this thread's tenant context (closed when its query is done)."""

    # The queries' own parallel workers pay off only when they are alone: beside each other, the threads keep the
    # cores busy already, and workers add their partial aggregates and gathering on top (~1.5 s of CPU on 100,000
    # accounts). Those of one thread keep the server's setting.
    workers = "0" if threads > 1 else None

    def in_transaction(query: Callable[[], Any]) -> Any:
        with transaction.atomic():
            # Big aggregates: room to hash them in memory (no spill to disk), and no JIT compiling (it does not pay
            # here). Only until this transaction ends; the WHERE is the tenant door's rule.
            PropertyDefinition.objects.sql(
                tenant,
                "SELECT set_config('work_mem', %(work_mem)s, true), set_config('jit', 'off', true), "
                "set_config('max_parallel_workers_per_gather', "
                "COALESCE(%(workers)s, current_setting('max_parallel_workers_per_gather')), true) "
                "WHERE %(tenant)s IS NOT NULL",
                {"work_mem": LOAD_WORK_MEM, "workers": workers},
            )
            return query()

    if threads <= 1:
        return in_transaction(lambda: {name: query() for name, query in queries.items()})
    context = rls.current()

    def on_own_connection(query: Callable[[], Any]) -> Any:
        previous = rls.swap(context)
        try:
            return in_transaction(query)
        finally:
            connection.close()  # this thread's; a pool thread's connection would otherwise outlive the load
            rls.swap(previous)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = {name: pool.submit(on_own_connection, query) for name, query in queries.items()}
        return {name: future.result() for name, future in futures.items()}


# The tenant's events per name are a whole-tenant aggregate: seconds on a tenant of 100,000 accounts, asked for by
# every processing round of a tenant that names no key events (the default). An answer that cost more than
# NAME_TOTALS_KEEP_MIN_COST seconds is kept NAME_TOTALS_KEEP_FACTOR times as long as it took (at most
# NAME_TOTALS_KEEP_MAX_SECONDS), so the aggregate takes at most ~1% of the time; a small tenant's costs
# milliseconds and is never kept. Kept in the shared cache (Redis; without it, counted every time) under the number
# of event names the tenant has: a new event name is counted at once (ADR 0020).
NAME_TOTALS_KEEP_MIN_COST = 0.1
NAME_TOTALS_KEEP_FACTOR = 100
NAME_TOTALS_KEEP_MAX_SECONDS = 900


def name_totals(tenant: Tenant, *, since: date | None) -> dict[str, int]:
    """Events per name over the tenant's account-level rollups (user-level if it has none), from `since` on:
    what `key_events_of` ranks when the tenant configured no key events."""
    from signals.models import EventName

    key = f"name-totals:{tenant.pk}:{since}:{EventName.objects.for_tenant(tenant).count()}"
    try:
        kept = cache.get(key)
    except RedisError:
        kept = None
    if kept is not None:
        return dict(kept)
    began = perf_counter()
    totals = _name_totals_counted(tenant, since)
    cost = perf_counter() - began
    if cost >= NAME_TOTALS_KEEP_MIN_COST:
        with suppress(RedisError):
            cache.set(key, totals, min(NAME_TOTALS_KEEP_MAX_SECONDS, NAME_TOTALS_KEEP_FACTOR * cost))
    return totals


def _name_totals_counted(tenant: Tenant, since: date | None) -> dict[str, int]:
    from signals.models import DailyRollup

    since_sql = " AND day >= %(since)s" if since is not None else ""
    for where in ("end_user_id = 0 AND account_id <> 0", "account_id = 0 AND end_user_id <> 0"):
        rows = DailyRollup.objects.sql(
            tenant,
            f"SELECT name, sum(count) FROM signals_dailyrollup WHERE tenant_id = %(tenant)s AND {where}{since_sql} "  # noqa: S608 - constant names
            "GROUP BY name",
            {"since": since},
        )
        if rows:
            return {str(name): int(total) for name, total in rows}
    return {}


# --- as-of lookups --------------------------------------------------------------------------------------


def properties_as_of(history: History, entity_type: str, entity_id: int, at: datetime) -> dict[str, Any]:
    """One entity's properties as of `at` (its latest value set strictly before, unless deleted)."""
    found = {}
    ids = np.array([entity_id], dtype=np.int64)
    for key, changes in history.properties.get(entity_type, {}).items():
        row = int(changes.rows_as_of(ids, at)[0])
        if row >= 0 and changes.values[row] is not None:
            found[key] = changes.values[row]
    return found


def property_column(
    history: History, entity_type: str, key: str, ids: np.ndarray, at: datetime, kind: str = "value"
) -> np.ndarray:
    """The value of one property of many entities as of `at`: as written (objects; None where unset or deleted),
    or as another of `KeyChanges.column`'s kinds (numbers: NaN where unset)."""
    changes = history.properties.get(entity_type, {}).get(key)
    if changes is None:
        changes = KeyChanges(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object))
    return changes.gather(changes.rows_as_of(np.asarray(ids, dtype=np.int64), at), kind)


def snapshot_day(at: datetime) -> int:
    """Rollup days strictly before this ordinal are complete at `at` (a day counts once it is over)."""
    return at.astimezone(UTC).date().toordinal()


def visible_before(history: History, at: datetime) -> int:
    """Rollup days strictly before this ordinal are visible to features at `at`: the complete days before it,
    and, when `at` is the instant the history was loaded for live scoring, the day under way too. Its rollups
    then hold exactly what had happened by `at`, so today's events move today's scores; at any other instant
    the day's bucket would mix what came before `at` with what came after (point-in-time snapshots, which
    training takes at midnights, where both rules agree)."""
    return _visible_day(at, history.live_at)


def _visible_day(at: datetime, live_at: datetime | None) -> int:
    day = snapshot_day(at)
    if live_at is not None and at == live_at and at.astimezone(UTC).time() != time(0):
        return day + 1
    return day


def key_events_of(history: History, configured: Sequence[str]) -> list[str]:
    """The configured key events, or (none configured) the tenant's most frequent event names."""
    if configured:
        return list(configured)
    totals: Counter[str] = Counter()
    if history.name_totals is not None:
        counted = history.name_totals()
        for name in sorted(counted):  # ties in name order, as below
            totals[name] = counted[name]
    else:
        rollups = history.account_rollups if len(history.account_rollups.count) else history.user_rollups
        sums = np.bincount(rollups.name, weights=rollups.count, minlength=len(rollups.names))
        for n, name in enumerate(rollups.names):
            totals[name] = int(sums[n])
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


@dataclass
class _Visible:
    """The rollup rows of one level that belong to `ids` (as slots into them) and lie before `cutoff`."""

    slot: np.ndarray
    name: np.ndarray
    day: np.ndarray
    count: np.ndarray
    names: list[str]
    size: int
    cutoff: int

    @property
    def age(self) -> np.ndarray:
        """Days before the snapshot day (1 = the day before)."""
        return self.cutoff - self.day

    def sums(self, rows: np.ndarray) -> np.ndarray:
        """Per entity, the counts of `rows` (a mask or indices) added up."""
        return np.bincount(self.slot[rows], weights=self.count[rows], minlength=self.size).astype(float)


def _visible(rollups: Rollups, ids: np.ndarray, cutoff: int) -> _Visible:
    if not len(rollups.count) or not len(ids):
        empty = np.zeros(0, dtype=np.int64)
        return _Visible(empty, empty, empty, empty, list(rollups.names), len(ids), cutoff)
    slots = entity_slots(rollups.entity, ids)
    keep = (slots >= 0) & (rollups.day < cutoff)  # masks, not row numbers: each gather is one cheap pass
    if keep.all():  # every row (live scoring of every entity): the arrays as they are
        return _Visible(slots, rollups.name, rollups.day, rollups.count, list(rollups.names), len(ids), cutoff)
    return _Visible(slots[keep], rollups.name[keep], rollups.day[keep], rollups.count[keep], list(rollups.names),
                    len(ids), cutoff)  # fmt: skip


def _window_counts(
    rollups: Rollups | _Visible, ids: np.ndarray, cutoff: int, names: Sequence[str], windows: Sequence[int]
) -> dict[tuple[str, int], np.ndarray]:
    """(event, window) -> per-entity counts over the `window` days before `cutoff` (exclusive)."""
    view = rollups if isinstance(rollups, _Visible) else _visible(rollups, ids, cutoff)
    result = {(name, window): np.zeros(len(ids)) for name in names for window in windows}
    if not len(view.count):
        return result
    longest = max(windows)
    age = view.age
    name_index = {name: n for n, name in enumerate(view.names)}
    for name in names:
        n = name_index.get(name)
        if n is None:
            continue
        rows = np.flatnonzero((view.name == n) & (age <= longest))
        for window in windows:
            result[(name, window)] = view.sums(rows[age[rows] <= window])
    return result


def _activity(rollups: Rollups | _Visible, ids: np.ndarray, cutoff: int, today: int) -> dict[str, np.ndarray]:
    """All-event totals: last 30 / previous 30 days, active days in 30, days since the last active day counted
    from `today` (the snapshot's day: 0 when active on the day under way, 1 when active the day before)."""
    view = rollups if isinstance(rollups, _Visible) else _visible(rollups, ids, cutoff)
    size = len(ids)
    last30, prev30, active30 = np.zeros(size), np.zeros(size), np.zeros(size)
    last_day = np.full(size, -1, dtype=np.int64)
    if len(view.count):
        age = view.age
        recent = age <= 30
        last30 = view.sums(recent)
        prev30 = view.sums((age > 30) & (age <= 60))
        np.maximum.at(last_day, view.slot, view.day)
        # distinct active days in the last 30: a day is active if any row of the entity falls on it
        days = np.zeros(size * 30, dtype=bool)
        days[view.slot[recent] * 30 + (age[recent] - 1)] = True
        active30 = days.reshape(size, 30).sum(axis=1).astype(float)
    since = np.where(last_day >= 0, today - last_day, NEVER_DAYS).astype(float)
    trend = np.log((last30 + 1.0) / (prev30 + 1.0))
    return {"events_30d": last30, "events_prev_30d": prev30, "trend_30d": trend, "active_days_30d": active30,
            "days_since_last_active": since}  # fmt: skip


def _typed_properties(
    raw: RawFeatures, history: History, entity_type: str, ids: np.ndarray, at: datetime, excluded: set[str]
) -> None:
    """Every typed property as of `at`: numbers, booleans (0/1), datetimes (days before `at`), texts."""
    table = history.properties.get(entity_type, {})
    for key in sorted(set(table) - excluded - {"stage", "name"}):
        changes = table[key]
        rows = changes.rows_as_of(ids, at)
        if not changes.gather(rows, "present").any():
            continue  # nobody has it at `at`: not a feature of this table
        kind = history.property_types.get((entity_type, key))
        name = f"prop:{key}"
        if kind == "number":
            raw.numbers[name] = changes.gather(rows, "number")
        elif kind == "boolean":
            raw.numbers[name] = changes.gather(rows, "boolean")
        elif kind == "datetime":
            raw.numbers[name] = ((micros(at) - changes.gather(rows, "epoch")) / 1e6) / 86400
        elif kind == "text":
            raw.categories[name] = changes.gather(rows, "text").tolist()
        else:
            continue
        raw.describe[name] = {"kind": f"property_{kind}", "property": key}


def _epoch_seconds(value: Any) -> float:
    """An ISO datetime text as microseconds since the epoch (naive = UTC), as a float; NaN if it is none."""
    if not isinstance(value, str):
        return math.nan
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return math.nan
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return float(micros(parsed))


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


def _roles(history: History, memberships: np.ndarray, at: datetime) -> np.ndarray:
    """The role of each membership as of `at`, trimmed and in lower case (objects; None = no role, or a blank or
    non-text one)."""
    changes = history.properties.get(EntityType.MEMBERSHIP, {}).get("role")
    if changes is not None:
        changes.column("role")  # every row's once, kept: each kind scored over this history reads them
    return property_column(history, EntityType.MEMBERSHIP, "role", memberships, at, "role")


def members_as_of(history: History, at: datetime) -> dict[int, list[tuple[int, int]]]:
    """account id -> [(membership id, user id)] of members at `at` (joined before, not left by then)."""
    members: dict[int, list[tuple[int, int]]] = defaultdict(list)
    memberships = history.memberships
    active = np.flatnonzero(memberships.active(at))
    for pk, account_id, user_id in zip(
        memberships.pk[active].tolist(), memberships.account[active].tolist(), memberships.user[active].tolist(),
        strict=True,
    ):  # fmt: skip
        members[account_id].append((pk, user_id))
    return members


def _recent_pairs(history: History, cutoff: int) -> tuple[np.ndarray, np.ndarray]:
    """(account ids, user ids) of the users active in an account in the ACTIVE_SEAT_DAYS days before `cutoff`
    (repeats allowed): loaded as such for that day, or taken from the pair-level rollups."""
    if cutoff in history.active_pairs:
        return history.active_pairs[cutoff]
    if "pair" not in history.levels:
        raise ValueError(f"neither pair rollups nor the active pairs before day {cutoff} were loaded")
    pairs = history.pair_rollups
    recent = np.flatnonzero((pairs.day < cutoff) & (pairs.day >= cutoff - ACTIVE_SEAT_DAYS))
    return pairs.entity[recent], pairs.other[recent]


def _active_pairs(tenant: Tenant, day: int, scope: Scope | None) -> tuple[np.ndarray, np.ndarray]:
    """The (account, user) memberships with activity of the user in the account in the ACTIVE_SEAT_DAYS days
    before `day` (active seats count members only): one probe of the rollups' unique index per membership, much
    cheaper than grouping those days' pair-level rollups (millions of rows on a big tenant) to find them."""
    from signals.models import DailyRollup

    params: dict[str, Any] = {"first": date.fromordinal(day - ACTIVE_SEAT_DAYS), "day": date.fromordinal(day)}
    where = ""
    if scope is not None:
        where, params["ids"] = " AND m.account_id = ANY(%(ids)s::bigint[])", list(scope.accounts)
    rows = DailyRollup.objects.binary_rows(
        tenant,
        "SELECT array_send(array_agg(m.account_id)), array_send(array_agg(m.end_user_id)) "  # noqa: S608
        f"FROM accounts_membership AS m WHERE m.tenant_id = %(tenant)s{where} AND EXISTS (SELECT FROM "
        "signals_dailyrollup AS r WHERE r.tenant_id = %(tenant)s AND r.account_id = m.account_id "
        "AND r.end_user_id = m.end_user_id AND r.day >= %(first)s AND r.day < %(day)s)",
        params,
    )
    return (pg_array(rows[0][0]), pg_array(rows[0][1])) if rows else (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _active_pairs_kept(tenant: Tenant, day: int, scope: Scope | None) -> tuple[np.ndarray, np.ndarray]:
    """`_active_pairs` from the pairs' latest days (`PairActivity`, kept by the rollup processor): those in the
    ACTIVE_SEAT_DAYS days before `day`, read in one range of an index, when no latest day is `day` or later (a
    pair active then may also have been active before: only its rows can tell); else the probes."""
    from signals.models import PairActivity

    params: dict[str, Any] = {"first": date.fromordinal(day - ACTIVE_SEAT_DAYS), "day": date.fromordinal(day)}
    where = ""
    if scope is not None:
        where, params["ids"] = " AND account_id = ANY(%(ids)s::bigint[])", list(scope.accounts)
    rows = PairActivity.objects.binary_rows(
        tenant,
        "SELECT array_send(array_agg(account_id)), array_send(array_agg(end_user_id)), "  # noqa: S608 - constants
        f"(SELECT max(last_day) >= %(day)s FROM signals_pairactivity WHERE tenant_id = %(tenant)s{where}) "
        f"FROM signals_pairactivity WHERE tenant_id = %(tenant)s AND last_day >= %(first)s{where}",
        params,
    )
    accounts, users, too_late = rows[0]
    if too_late is not None and bytes(too_late) != b"\x00":  # a boolean: one byte
        return _active_pairs(tenant, day, scope)
    return pg_array(accounts), pg_array(users)


def _pair_codes(accounts: np.ndarray, users: np.ndarray, all_users: np.ndarray) -> np.ndarray:
    """One integer per (account slot, user id) pair; `all_users` holds every user id that may appear."""
    top = int(all_users.max()) + 1 if len(all_users) else 1
    if top < (1 << 40) and (not len(accounts) or int(accounts.max()) < (1 << 22)):
        return accounts * top + users
    known = np.unique(all_users)
    return accounts * len(known) + np.searchsorted(known, users)


def account_features(
    history: History, ids: Sequence[int], at: datetime, settings: dict[str, Any], key_events: Sequence[str]
) -> RawFeatures:
    """Features of accounts at instant `at` (a training snapshot or now)."""
    ids_array = np.asarray(ids, dtype=np.int64)
    cutoff = visible_before(history, at)
    raw = RawFeatures(ids=ids_array)
    view = _visible(history.account_rollups, ids_array, cutoff)
    counts = _window_counts(view, ids_array, cutoff, key_events, WINDOWS)
    for (name, window), values in counts.items():
        raw.numbers[f"count:{name}:{window}d"] = values
        raw.describe[f"count:{name}:{window}d"] = {"kind": "count", "event": name, "window": window}
    for name, values in _activity(view, ids_array, cutoff, snapshot_day(at)).items():
        raw.numbers[name] = values
        raw.describe[name] = {"kind": name}
    key_30 = sum((counts[(name, 30)] for name in key_events), np.zeros(len(ids_array)))

    size = len(ids_array)
    memberships = history.memberships
    active_members = np.flatnonzero(memberships.active(at))
    slots = entity_slots(memberships.account[active_members], ids_array)
    mine = slots >= 0
    members, slots = active_members[mine], slots[mine]
    seats = np.bincount(slots, minlength=size).astype(float)
    # A seat is active when its user did something in that account in the last ACTIVE_SEAT_DAYS days.
    pair_accounts, pair_users = _recent_pairs(history, cutoff)
    pair_slots = entity_slots(pair_accounts, ids_array)
    seen = pair_slots >= 0
    every_user = np.concatenate([memberships.user[members], pair_users[seen]])
    active_codes = _pair_codes(pair_slots[seen], pair_users[seen], every_user)
    is_active = np.isin(_pair_codes(slots, memberships.user[members], every_user), active_codes)
    active = np.bincount(slots[is_active], minlength=size).astype(float)
    roles = _roles(history, memberships.pk[members], at)
    raw.numbers["seats"], raw.numbers["active_seats_30d"] = seats, active
    raw.numbers["active_seat_share"] = np.where(seats > 0, active / np.maximum(seats, 1), np.nan)
    for name in ("seats", "active_seats_30d", "active_seat_share"):
        raw.describe[name] = {"kind": name}
    for role in ("admin", "member", "owner"):  # in sorted order, those the members have
        of_role = roles == role
        if of_role.any():
            values = np.bincount(slots[of_role], minlength=size).astype(float)
            raw.numbers[f"role_share:{role}"] = np.where(seats > 0, values / np.maximum(seats, 1), np.nan)
            raw.describe[f"role_share:{role}"] = {"kind": "role_share", "role": role}

    # Age as of the snapshot: a first activity after it (an entity that existed but was quiet) is not known yet.
    today = snapshot_day(at)
    age = today - np.minimum(history.first_day.lookup(EntityType.ACCOUNT, ids_array, cutoff), today)
    raw.numbers["age_days"] = age.astype(float)
    raw.describe["age_days"] = {"kind": "age_days"}
    _intensity(raw, age, seats, key_30)
    reached = milestones_reached(history, ids_array, at, settings, key_events, seats=seats, view=view)
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


def _intensity(raw: RawFeatures, age: np.ndarray, seats: np.ndarray, key_30: np.ndarray) -> None:
    """Activity per day of observed life and per teammate: a young trial or a big team is not judged by
    totals that only reflect its age or its size."""
    days = np.clip(age, 1, 30).astype(float)
    team = np.maximum(seats, 1.0)
    events = raw.numbers["events_30d"]
    derived = {
        "events_per_day": events / days,
        "events_per_seat_day": events / team / days,
        "key_events_per_seat_day": key_30 / team / days,
        "key_event_share": np.where(events > 0, key_30 / np.maximum(events, 1.0), np.nan),
        "active_day_share": raw.numbers["active_days_30d"] / days,
        "seats_per_week": seats / days * 7,
    }
    for name, values in derived.items():
        raw.numbers[name] = values
        raw.describe[name] = {"kind": name}


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
            changes = history.properties.get(EntityType.ACCOUNT, {}).get(used_key)
            before = (
                changes.gather(changes.rows_as_of(ids, month_ago), "strict_number")
                if changes is not None
                else np.full(len(ids), np.nan)
            )
            rate = (used - np.where(np.isnan(before), 0.0, before)) / 30.0
            days_left = np.where((rate > 0) & (limit > used), (limit - used) / np.where(rate > 0, rate, 1), 365.0)
            days_left = np.where(limit <= used, 0.0, np.minimum(days_left, 365.0))
            stem = used_key.replace(used_part, "")
            raw.numbers[f"quota_ratio:{stem}"] = ratio
            raw.numbers[f"quota_days_left:{stem}"] = np.where(np.isnan(ratio), np.nan, days_left)
            raw.describe[f"quota_ratio:{stem}"] = {"kind": "quota_ratio", "quota": stem}
            raw.describe[f"quota_days_left:{stem}"] = {"kind": "quota_days_left", "quota": stem}


def milestones_reached(
    history: History,
    ids: np.ndarray,
    at: datetime,
    settings: dict[str, Any],
    key_events: Sequence[str],
    *,
    seats: np.ndarray,
    view: _Visible | None = None,
) -> np.ndarray:
    """accounts x milestones: 1.0 where the account reached the milestone before `at` (settings order)."""
    milestones = settings.get("milestones", [])
    cutoff = visible_before(history, at)
    reached = np.zeros((len(ids), len(milestones)))
    if view is None:
        view = _visible(history.account_rollups, ids, cutoff)
    name_index = {name: n for n, name in enumerate(view.names)}
    key_index = [name_index[name] for name in key_events if name in name_index]
    first = history.first_day.lookup(EntityType.ACCOUNT, ids, cutoff)
    for column, milestone in enumerate(milestones):
        metric = milestone.get("metric", "event")
        count = float(milestone.get("count", 1))
        within = milestone.get("within_hours")
        if metric == "seats":
            reached[:, column] = seats >= count
            continue
        limit_day = first + (math.ceil(float(within) / 24) if within else 100_000)
        in_time = view.day < limit_day[view.slot]
        totals = np.zeros(len(ids))
        if metric == "event":
            n = name_index.get(str(milestone.get("event")))
            if n is None:
                continue
            totals = view.sums(in_time & (view.name == n))
        elif metric == "key_events":
            totals = view.sums(in_time & np.isin(view.name, key_index))
        elif metric == "active_days":
            pairs = np.unique(view.slot[in_time] * 1_000_000 + (view.day[in_time] % 1_000_000))
            totals = np.bincount(pairs // 1_000_000, minlength=len(ids)).astype(float)
        reached[:, column] = totals >= count
    return reached


def user_features(
    history: History, ids: Sequence[int], at: datetime, settings: dict[str, Any], key_events: Sequence[str]
) -> RawFeatures:
    """Features of users at instant `at` (health: will they be active in the next days?)."""
    ids_array = np.asarray(ids, dtype=np.int64)
    cutoff = visible_before(history, at)
    raw = RawFeatures(ids=ids_array)
    view = _visible(history.user_rollups, ids_array, cutoff)
    counts = _window_counts(view, ids_array, cutoff, key_events, USER_WINDOWS)
    for (name, window), values in counts.items():
        raw.numbers[f"count:{name}:{window}d"] = values
        raw.describe[f"count:{name}:{window}d"] = {"kind": "count", "event": name, "window": window}
    for name, values in _activity(view, ids_array, cutoff, snapshot_day(at)).items():
        raw.numbers[name] = values
        raw.describe[name] = {"kind": name}
    # Activity in the last week, the strongest single hint of the next two weeks.
    raw.numbers["events_7d"] = view.sums(view.age <= 7) if len(view.count) else np.zeros(len(ids_array))
    raw.describe["events_7d"] = {"kind": "events_7d"}
    today = snapshot_day(at)
    age = today - np.minimum(history.first_day.lookup(EntityType.USER, ids_array, cutoff), today)  # as of it
    raw.numbers["age_days"] = age.astype(float)
    raw.describe["age_days"] = {"kind": "age_days"}
    weights = settings.get("champion", {}).get("role_weights", {})
    memberships = history.memberships
    active_members = np.flatnonzero(memberships.active(at))
    slots = entity_slots(memberships.user[active_members], ids_array)
    mine = slots >= 0
    members, slots = active_members[mine], slots[mine]
    accounts = np.bincount(slots, minlength=len(ids_array)).astype(float)
    roles = _roles(history, memberships.pk[members], at).tolist()
    role_weight = np.array([float(weights.get(role or "", 0.0)) for role in roles], dtype=float)
    best_role = np.zeros(len(ids_array))
    np.maximum.at(best_role, slots, role_weight)
    raw.numbers["accounts"], raw.numbers["role_weight"] = accounts, best_role
    raw.describe["accounts"], raw.describe["role_weight"] = {"kind": "accounts"}, {"kind": "role_weight"}
    _typed_properties(raw, history, EntityType.USER, ids_array, at, set(settings.get("excluded_properties", [])))
    return raw


@dataclass
class TeamActivity:
    """Key events per membership (user in account) over a window, against the whole account's."""

    memberships: np.ndarray  # membership ids
    events: list[str]  # the key events found, columns of `counts`
    counts: np.ndarray  # memberships x events: the user's key events in that account
    account_totals: np.ndarray  # per membership: every user's key events in its account


def team_activity(
    history: History, memberships: np.ndarray, at: datetime, key_events: Sequence[str], days: int = 30
) -> TeamActivity:
    """The user's share of the team's key activity, for each of `memberships`, over the `days` before `at`."""
    cutoff = visible_before(history, at)
    pairs = history.pair_rollups
    name_index = {name: n for n, name in enumerate(pairs.names)}
    events = [name for name in key_events if name in name_index]
    events = list(dict.fromkeys(events))
    memberships = np.asarray(memberships, dtype=np.int64)
    slots = np.searchsorted(history.memberships.pk, memberships)
    accounts, users = history.memberships.account[slots], history.memberships.user[slots]
    counts = np.zeros((len(memberships), len(events)))
    totals = np.zeros(len(memberships))
    if not len(pairs.count) or not events or not len(memberships):
        return TeamActivity(memberships, events, counts, totals)
    column_of = np.full(len(pairs.names), -1, dtype=np.int64)
    for column, name in enumerate(events):
        column_of[name_index[name]] = column
    rows = np.flatnonzero((pairs.day < cutoff) & (pairs.day >= cutoff - days) & (column_of[pairs.name] >= 0))
    account_ids = np.unique(accounts)
    row_accounts = entity_slots(pairs.entity[rows], account_ids)
    seen = row_accounts >= 0
    rows, row_accounts = rows[seen], row_accounts[seen]
    per_account = np.bincount(row_accounts, weights=pairs.count[rows], minlength=len(account_ids))
    totals = per_account[np.searchsorted(account_ids, accounts)].astype(float)
    every_user = np.concatenate([users, pairs.other[rows]])
    member_codes = _pair_codes(np.searchsorted(account_ids, accounts), users, every_user)
    row_codes = _pair_codes(row_accounts, pairs.other[rows], every_user)
    order = np.argsort(member_codes, kind="stable")
    found = np.minimum(np.searchsorted(member_codes[order], row_codes), len(order) - 1)
    hit = member_codes[order][found] == row_codes
    target = order[found[hit]]
    np.add.at(counts, (target, column_of[pairs.name[rows][hit]]), pairs.count[rows][hit])
    return TeamActivity(memberships, events, counts, totals)


def membership_activity(
    history: History, memberships: Iterable[int], at: datetime, key_events: Sequence[str], days: int = 30
) -> dict[int, tuple[float, float, dict[str, float]]]:
    """membership id -> (user's key events in the account, the account's key events, per-event user counts)
    over the `days` before `at`: the user's share of the team's key activity."""
    activity = team_activity(history, np.fromiter(memberships, dtype=np.int64), at, key_events, days)
    result = {}
    for n, pk in enumerate(activity.memberships.tolist()):
        events = {name: float(activity.counts[n, k]) for k, name in enumerate(activity.events) if activity.counts[n, k]}
        result[pk] = (sum(events.values()), float(activity.account_totals[n]), events)
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
