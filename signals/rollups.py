"""Daily rollups (DESIGN §5): events per (account, user, name, UTC day), kept equal to a GROUP BY of
`signals_event`.

Never incremented: the processor recomputes whole buckets. Each dirty mark carries the UTC day range of
the events that changed for its entity (new events, late ones, events moved in by a merge or a device
link, events deleted with the entity on the other side); `rollups_process` — the first registered
processor, order 10 — deletes the rollup rows of the marked entities in those ranges and inserts them
again from the raw events, in the processing transaction. An account mark recomputes the account's
account-level and pair-level rows, a user mark the user's user-level and pair-level rows. Running it twice,
or on a range wider than needed, gives the same rows; a lost hint only delays it (the sweep hands the
marks over again).

Ingestion, which owns the moves and deletes, calls `rollups_forget` for users and accounts that stop
existing (merged away or deleted); their rows have no raw events left to recompute from.

In the same transaction, two derived copies follow the rows they are made from (docs/adr/0022-account-series.md):
each recomputed account's series (`AccountSeries`: its account-level rows of SERIES_DAYS days up to its latest,
packed in one value) and the latest day of each (account, user) pair whose rows changed (`PairActivity`). A full
rescore reads 100,000 series and the recent pairs instead of grouping millions of rollup rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

from accounts.models import DirtyEntity, EntityType
from plgapp.models import Tenant
from signals.models import AccountSeries, DailyRollup, EventName, PairActivity
from signals.processing import register, round_changes, tenant_processing_lock

ROLLUPS_ORDER = 10  # before anything that reads rollups (features, scores)
# Days of account-level rows an account's series keeps, counted back from its latest day with a row: more than
# the live scoring's look-back (scoring.services.SCORING_LOOKBACK_DAYS, 160), so a score at any instant up to 40
# days before that day finds every row it reads there. A load that needs more days reads the rollups instead.
SERIES_DAYS = 200
# One rollup row of a series: (EventName id, day ordinal, count), big-endian as int8send / int4send write them.
SERIES_RECORD = "int8send(n.id) || int4send(r.day - DATE '0001-01-01' + 1) || int4send(r.count)"
# Every series of the tenants `{tenant}` names, from their rollups (also run by migration signals/0009).
SERIES_REBUILD = f"""
    INSERT INTO signals_accountseries (tenant_id, account_id, since, packed)
    SELECT r.tenant_id, r.account_id, r.last_day - {SERIES_DAYS}, string_agg({SERIES_RECORD}, ''::bytea)
      FROM (SELECT *, max(day) OVER (PARTITION BY tenant_id, account_id) AS last_day FROM signals_dailyrollup
             WHERE tenant_id = {{tenant}} AND end_user_id = 0 AND account_id <> 0) AS r
      JOIN signals_eventname AS n ON n.tenant_id = r.tenant_id AND n.name = r.name
     WHERE r.day >= r.last_day - {SERIES_DAYS}
     GROUP BY r.tenant_id, r.account_id, r.last_day
"""  # noqa: S608 - constant expressions

# Every pair's latest day of the tenants `{tenant}` names.
PAIR_ACTIVITY_REBUILD = """
    INSERT INTO signals_pairactivity (tenant_id, account_id, end_user_id, last_day)
    SELECT tenant_id, account_id, end_user_id, max(day) FROM signals_dailyrollup
     WHERE tenant_id = {tenant} AND account_id <> 0 AND end_user_id <> 0 GROUP BY tenant_id, account_id, end_user_id
"""

# Per entity type: (the rollup/event column that names it, the column on the other side).
_SIDES = {EntityType.ACCOUNT: ("account_id", "end_user_id"), EntityType.USER: ("end_user_id", "account_id")}


def rollups_process(tenant: Tenant, entities: list[tuple[str, int]]) -> None:
    """Processor: recompute the rollup buckets the claimed marks name (marks without a range: nothing)."""
    ids_by_type: dict[str, set[int]] = {}
    for entity_type, entity_id in entities:
        if entity_type in _SIDES:
            ids_by_type.setdefault(entity_type, set()).add(entity_id)
    if not ids_by_type:
        return
    # A range read here may already be wider than at the claim (a re-mark committed since): recomputing more is
    # harmless, and such a mark has a newer marked_at, so it stays for the next round anyway.
    ranges: dict[str, list[tuple[int, date, date]]] = {}
    for entity_type, entity_id, first_day, last_day in (
        DirtyEntity.objects.for_tenant(tenant)
        .filter(entity_type__in=list(ids_by_type), first_day__isnull=False)
        .filter(entity_id__in=sorted({pk for ids in ids_by_type.values() for pk in ids}))
        .values_list("entity_type", "entity_id", "first_day", "last_day")
    ):
        if first_day is not None and last_day is not None and entity_id in ids_by_type[entity_type]:
            ranges.setdefault(entity_type, []).append((entity_id, first_day, last_day))
    changes = round_changes()
    for entity_type, items in sorted(ranges.items()):
        names = rollups_recompute(tenant=tenant, entity_type=entity_type, ranges=items)
        if changes is not None:
            for entity_id, name in names:
                changes.event_names.setdefault((entity_type, entity_id), set()).add(name)


def rollups_recompute(
    *, tenant: Tenant, entity_type: str, ranges: Sequence[tuple[int, date, date]]
) -> set[tuple[int, str]]:
    """Make the rollup rows of these users or accounts in these day ranges equal to their raw events; returns
    the (entity id, event name) pairs that have rows in those ranges before or after.

    `ranges` is (entity id, first UTC day, last UTC day), inclusive. Rows of the other levels of the same
    events are untouched: account-level rows when users are recomputed, user-level rows for accounts.
    """
    if not ranges:
        return set()
    side, other = _SIDES[EntityType(entity_type)]
    merged: dict[int, tuple[date, date]] = {}  # one range per entity, or the join would count events twice
    for pk, first, last in ranges:
        known = merged.get(pk)
        merged[pk] = (min(first, known[0]), max(last, known[1])) if known else (first, last)
    ids = sorted(merged)
    params = {
        "ids": ids,
        "firsts": [merged[pk][0].isoformat() for pk in ids],
        "lasts": [merged[pk][1].isoformat() for pk in ids],
    }
    marks = "unnest(%(ids)s::bigint[], %(firsts)s::date[], %(lasts)s::date[]) AS m(id, first_day, last_day)"
    deleted = DailyRollup.objects.sql(
        tenant,
        f"WITH gone AS (DELETE FROM signals_dailyrollup AS r USING {marks} "  # noqa: S608 - constant column names
        f"WHERE r.tenant_id = %(tenant)s AND r.{side} = m.id AND r.day BETWEEN m.first_day AND m.last_day "
        f"RETURNING r.{side}, r.name, r.{other}) SELECT DISTINCT {side}, name, {other} FROM gone",
        params,
    )
    # One pass over the events, two groupings: the entity's own level (the other side summed up, stored as 0)
    # and its pairs (events that also name the other side). An event without the other side is in the own
    # level only; HAVING drops its would-be pair row (other side NULL), which would collide with it. The names
    # written go to the event-name registry (the catalogue's list), with the earliest day.
    written = DailyRollup.objects.sql(
        tenant,
        f"""
        WITH written AS (
        INSERT INTO signals_dailyrollup (tenant_id, {side}, {other}, name, day, count)
        SELECT %(tenant)s, e.{side}, COALESCE(e.{other}, 0), e.name, e.day, count(*)
          FROM (SELECT ev.{side}, ev.{other}, ev.name, (ev.occurred_at AT TIME ZONE 'UTC')::date AS day
                  FROM {marks}
                  JOIN signals_event AS ev
                    ON ev.tenant_id = %(tenant)s AND ev.{side} = m.id
                   AND ev.occurred_at >= m.first_day::timestamp AT TIME ZONE 'UTC'
                   AND ev.occurred_at < (m.last_day + 1)::timestamp AT TIME ZONE 'UTC') AS e
         GROUP BY GROUPING SETS ((e.{side}, e.name, e.day), (e.{side}, e.{other}, e.name, e.day))
        HAVING GROUPING(e.{other}) = 1 OR e.{other} IS NOT NULL
        ON CONFLICT (tenant_id, account_id, end_user_id, name, day) DO UPDATE SET count = EXCLUDED.count
        RETURNING {side}, name, day, {other}),
        registered AS (
        INSERT INTO signals_eventname (tenant_id, name, first_day)
        SELECT %(tenant)s, name, min(day) FROM written GROUP BY name
        ON CONFLICT (tenant_id, name) DO UPDATE SET first_day = EXCLUDED.first_day
        WHERE EXCLUDED.first_day < signals_eventname.first_day)
        SELECT DISTINCT {side}, name, {other} FROM written
        """,  # noqa: S608 - constant column names
        params,
    )
    if entity_type == EntityType.ACCOUNT:  # their account-level rows changed: their series too
        account_series_write(tenant=tenant, account_ids=ids)
    # The pairs whose rows were deleted or written (the other side not 0): their latest days.
    pairs = {(pk, other_id) if entity_type == EntityType.ACCOUNT else (other_id, pk)
             for pk, _name, other_id in (*deleted, *written) if other_id}  # fmt: skip
    pair_activity_write(tenant=tenant, pairs=pairs)
    return {(pk, name) for pk, name, _other in deleted} | {(pk, name) for pk, name, _other in written}


def account_series_write(*, tenant: Tenant, account_ids: Iterable[int]) -> None:
    """Rewrite these accounts' series from their account-level rollup rows of the SERIES_DAYS days up to the
    account's latest day with such a row. An account without any has no series. Called by the recompute, after
    the rows are written."""
    ids = sorted(set(account_ids))
    if not ids:
        return
    AccountSeries.objects.sql(
        tenant,
        f"""
        WITH latest AS (
        SELECT m.id, (SELECT max(r.day) FROM signals_dailyrollup AS r WHERE r.tenant_id = %(tenant)s
                       AND r.account_id = m.id AND r.end_user_id = 0) AS last_day
          FROM unnest(%(ids)s::bigint[]) AS m(id)),
        gone AS (
        DELETE FROM signals_accountseries AS s USING latest
         WHERE s.tenant_id = %(tenant)s AND s.account_id = latest.id AND latest.last_day IS NULL)
        INSERT INTO signals_accountseries (tenant_id, account_id, since, packed)
        SELECT %(tenant)s, l.id, l.last_day - {SERIES_DAYS}, string_agg({SERIES_RECORD}, ''::bytea)
          FROM latest AS l
          JOIN signals_dailyrollup AS r ON r.tenant_id = %(tenant)s AND r.account_id = l.id AND r.end_user_id = 0
           AND r.day >= l.last_day - {SERIES_DAYS}
          JOIN signals_eventname AS n ON n.tenant_id = %(tenant)s AND n.name = r.name
         GROUP BY l.id, l.last_day
        ON CONFLICT (tenant_id, account_id) DO UPDATE SET since = EXCLUDED.since, packed = EXCLUDED.packed
        """,  # noqa: S608 - constant expressions
        {"ids": ids},
    )


def pair_activity_write(*, tenant: Tenant, pairs: Iterable[tuple[int, int]]) -> None:
    """Rewrite the latest day of these (account id, user id) pairs from their pair-level rows: the newest row,
    found walking the user's rows newest first; a pair without rows has none."""
    ordered = sorted(set(pairs))
    if not ordered:
        return
    PairActivity.objects.sql(
        tenant,
        """
        WITH latest AS (
        SELECT p.account_id, p.end_user_id,
               (SELECT r.day FROM signals_dailyrollup AS r WHERE r.tenant_id = %(tenant)s
                   AND r.end_user_id = p.end_user_id AND r.account_id = p.account_id
                 ORDER BY r.day DESC LIMIT 1) AS last_day
          FROM unnest(%(accounts)s::bigint[], %(users)s::bigint[]) AS p(account_id, end_user_id)),
        gone AS (
        DELETE FROM signals_pairactivity AS a USING latest AS l
         WHERE a.tenant_id = %(tenant)s AND a.account_id = l.account_id AND a.end_user_id = l.end_user_id
           AND l.last_day IS NULL)
        INSERT INTO signals_pairactivity (tenant_id, account_id, end_user_id, last_day)
        SELECT %(tenant)s, account_id, end_user_id, last_day FROM latest WHERE last_day IS NOT NULL
        ON CONFLICT (tenant_id, account_id, end_user_id) DO UPDATE SET last_day = EXCLUDED.last_day
        """,
        {"accounts": [account for account, _user in ordered], "users": [user for _account, user in ordered]},
    )


def account_series_rebuild(*, tenant: Tenant) -> None:
    """Every series and pair's latest day of the tenant from its rollups, in one pass each (rollups loaded in
    bulk, not by the processor), as the processor would write them; the names are registered first (as the
    processor does), since a series names events by their registry ids."""
    EventName.objects.sql(
        tenant,
        "INSERT INTO signals_eventname (tenant_id, name, first_day) SELECT %(tenant)s, name, min(day) "
        "FROM signals_dailyrollup WHERE tenant_id = %(tenant)s AND end_user_id = 0 AND account_id <> 0 GROUP BY name "
        "ON CONFLICT (tenant_id, name) DO UPDATE SET first_day = EXCLUDED.first_day "
        "WHERE EXCLUDED.first_day < signals_eventname.first_day",
        {},
    )
    for table in ("signals_accountseries", "signals_pairactivity"):
        AccountSeries.objects.sql(tenant, f"DELETE FROM {table} WHERE tenant_id = %(tenant)s", {})  # noqa: S608
    AccountSeries.objects.sql(tenant, SERIES_REBUILD.replace("{tenant}", "%(tenant)s"), {})
    PairActivity.objects.sql(tenant, PAIR_ACTIVITY_REBUILD.replace("{tenant}", "%(tenant)s"), {})


def rollups_forget(*, tenant: Tenant, entity_type: str, pks: Iterable[int]) -> None:
    """Delete every rollup row of users or accounts that are being merged away or deleted (all levels).

    Takes the tenant's processing lock first, so a processor cannot write such a row back after this
    statement from a snapshot that still had the entity's events.
    """
    ids = sorted(set(pks))
    if not ids:
        return
    side, _other = _SIDES[EntityType(entity_type)]
    tenant_processing_lock(tenant)
    DailyRollup.objects.sql(
        tenant,
        f"DELETE FROM signals_dailyrollup WHERE tenant_id = %(tenant)s AND {side} = ANY(%(ids)s::bigint[])",  # noqa: S608
        {"ids": ids},
    )
    PairActivity.objects.sql(
        tenant,
        f"DELETE FROM signals_pairactivity WHERE tenant_id = %(tenant)s AND {side} = ANY(%(ids)s::bigint[])",  # noqa: S608
        {"ids": ids},
    )
    if entity_type == EntityType.ACCOUNT:
        AccountSeries.objects.sql(
            tenant,
            "DELETE FROM signals_accountseries WHERE tenant_id = %(tenant)s AND account_id = ANY(%(ids)s::bigint[])",
            {"ids": ids},
        )


register(rollups_process, order=ROLLUPS_ORDER)
