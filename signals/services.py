"""Ingestion: store validated calls (signals.calls) for a tenant, whole or not at all, in bulk.

One request = one transaction = a handful of statements, whatever its size: one query for the
catalogue, one per kind for identities, one multi-row insert for new users/accounts, one for events,
one update for last-seen times, one upsert for the dirty marks. Rare paths (merges, deletes, late
stage changes) cost more statements but stay correct.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction

from accounts.identity import Node, Resolver, prefetch_together
from accounts.models import Account, EndUser, EntityType
from accounts.services import (
    DirtyMarks,
    MembershipWrite,
    PropertyCatalog,
    PropertyWrite,
    accounts_merge,
    device_link,
    device_links_lookup,
    end_users_merge,
    entities_delete,
    entities_mark_dirty,
    entity_properties_apply,
    memberships_apply,
    users_seen,
)
from plgapp.models import Tenant
from plgapp.redis_client import redis_for
from signals.calls import (
    AddUsers,
    Call,
    DeleteAccount,
    DeleteUser,
    Link,
    PropertyMap,
    Rejected,
    RemoveUsers,
    Track,
    UpsertAccount,
    UpsertUser,
    property_types,
)
from signals.models import Event, Signal
from signals.processing import tenant_processing_lock
from signals.rollups import rollups_forget

logger = logging.getLogger(__name__)
RETRIES = 3


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def _type_errors(catalog: PropertyCatalog, call: Call) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    if type(call) is Track and type(call.properties) is PropertyMap:
        # Nearly every call of a request: an event whose keys all have these types in the catalogue already.
        known = catalog.known_by_type.get(EntityType.EVENT)
        if known is not None and call.properties.types.items() <= known.items():
            return {}, {}
    checks: list[tuple[str, str, dict[str, Any]]] = []
    if isinstance(call, UpsertUser):
        checks.append((EntityType.USER, "properties", call.properties))
    elif isinstance(call, UpsertAccount):
        checks.append((EntityType.ACCOUNT, "properties", call.properties))
    elif isinstance(call, Track):
        checks.append((EntityType.EVENT, "metadata", call.properties))
    elif isinstance(call, AddUsers):
        checks.extend(
            (EntityType.MEMBERSHIP, f"users.{n}.properties", member.properties) for n, member in enumerate(call.users)
        )
    errors: dict[str, str] = {}
    first_seen: dict[tuple[str, str], str] = {}
    for entity_type, path, properties in checks:
        typed = property_types(properties)
        is_entity = entity_type in (EntityType.USER, EntityType.ACCOUNT)
        if is_entity and "stage" in typed and typed.pop("stage") != "text":
            errors[f"{path}.stage"] = "a stage is a text, e.g. Trial"
        clashes, new = catalog.check(entity_type, typed)
        errors.update({f"{path}.{key}": text for key, text in clashes.items()})
        for item, kind in new.items():
            if first_seen.setdefault(item, kind) != kind:
                errors[f"{path}.{item[1]}"] = f"has values of two types in one call ({first_seen[item]}, {kind})"
    return errors, first_seen


def _catalog_keys(calls: Sequence[tuple[int, Call]]) -> set[tuple[str, str]]:
    """(entity type, key) of every property the calls name: the keys are gathered per entity type first (a set
    update per call, in C), since a hundred events of a request name the same dozen keys."""
    events: set[str] = set()
    by_type: dict[str, set[str]] = {EntityType.EVENT: events}
    for _index, call in calls:
        if type(call) is Track:
            events.update(call.properties)
        elif isinstance(call, UpsertUser):
            by_type.setdefault(EntityType.USER, set()).update(call.properties)
        elif isinstance(call, UpsertAccount):
            by_type.setdefault(EntityType.ACCOUNT, set()).update(call.properties)
        elif isinstance(call, AddUsers):
            for member in call.users:
                by_type.setdefault(EntityType.MEMBERSHIP, set()).update(member.properties)
    return {(entity_type, key) for entity_type, keys in by_type.items() for key in keys}


def _segments(calls: Sequence[tuple[int, Call]]) -> list[list[tuple[int, Call]]]:
    """Split at deletes, so that "delete, then track" and "track, then delete" both mean what they say."""
    segments: list[list[tuple[int, Call]]] = [[]]
    for item in calls:
        segments[-1].append(item)
        if isinstance(item[1], DeleteUser | DeleteAccount):
            segments.append([])
    return [segment for segment in segments if segment]


def calls_ingest(*, tenant: Tenant, calls: Sequence[tuple[int, Call]], now: datetime) -> IngestResult:
    """Store `(index, call)` pairs. Calls whose property types clash with the catalogue are rejected."""
    for attempt in range(1, RETRIES + 1):
        try:
            with transaction.atomic():
                result = _ingest(tenant=tenant, calls=calls, now=now)
                if result.accepted:
                    transaction.on_commit(lambda: _hint_processing(tenant.pk))
            return result
        except (IntegrityError, OperationalError) as exc:
            # A concurrent request created the same user/account first, or a deadlock: redo the whole request.
            retryable = isinstance(exc, IntegrityError) or "deadlock" in str(exc)
            if not retryable or attempt == RETRIES:
                raise
            logger.info("ingest retry", extra={"attempt": attempt, "reason": type(exc).__name__})
    raise AssertionError("unreachable")


HINT_PENDING_PREFIX = "plg:processing:hinted:"  # + tenant id: set while a processing task is queued, not started
HINT_PENDING_SECONDS = 10  # a hint lost with its worker blocks new ones at most this long (the sweep runs anyway)
# After Redis failed (the flag or the broker), no hint is tried for this long: each try waits for the connection
# (~2 s), and a request must not pay that while Redis is away. The marks wait in the database meanwhile.
HINT_PAUSE_AFTER_FAILURE_SECONDS = 5.0
_hints_paused_until = 0.0


def _hint_processing(tenant_id: int) -> None:
    processing_hint(tenant_id)


def processing_hint(tenant_id: int, *, delay: float = 0.0, even_if_queued: bool = False) -> None:
    """Best effort: the marks are in the database; the beat sweep recovers a hint that cannot be sent.

    At most one processing task per tenant waits in the queue: a write while one waits is left to it (it claims
    the marks when it starts, after this commit). The task clears the flag as it starts, so a write during a run
    queues the next one at once. (This replaced a per-process one-hint-a-second throttle whose delays, up to a
    second, and piled-up hints under load were most of the event -> action latency; docs/benchmarks.md.)

    `even_if_queued`: a run handing over to its successor, which the flag must not stop: it may have been set by a
    task that left its marks to the run (`processing_hand_over_to_run`), with no task queued."""
    from signals.tasks import dirty_entities_process_task

    global _hints_paused_until
    if time.monotonic() < _hints_paused_until:
        return  # Redis failed moments ago: the next hint after the pause (or the sweep) covers these marks
    flag = f"{HINT_PENDING_PREFIX}{tenant_id}"
    try:
        if not redis_for(settings.REDIS_URL).set(flag, "1", nx=not even_if_queued, ex=HINT_PENDING_SECONDS):
            return  # a queued task will see these marks
    except Exception as exc:  # Redis is the broker too: no hint can be sent now
        _hints_paused_until = time.monotonic() + HINT_PAUSE_AFTER_FAILURE_SECONDS
        logger.warning("processing hint not sent; the sweep will pick the marks up", extra={"error": str(exc)})
        return
    try:
        if delay:
            dirty_entities_process_task.apply_async(args=(tenant_id,), retry=False, countdown=delay)
        else:
            dirty_entities_process_task.apply_async(args=(tenant_id,), retry=False)
    except Exception as exc:  # a broker outage must not fail a request that is already stored
        _hints_paused_until = time.monotonic() + HINT_PAUSE_AFTER_FAILURE_SECONDS
        logger.warning("processing hint not sent; the sweep will pick the marks up", extra={"error": str(exc)})
        processing_hint_taken(tenant_id)  # nothing waits: let the next write try again


DRAINING_PREFIX = "plg:processing:draining:"  # + tenant id: a run's token while it holds the tenant's marks
DRAINING_SECONDS = 30  # a run that died leaves it at most this long (its lock went with its connection)


def processing_draining_start(tenant_id: int) -> str | None:
    """A run holds the tenant: tasks that find it held leave the hand-over to it (ADR 0025). Its token, or None
    when Redis failed (tasks then look again later, as for any other holder)."""
    token = uuid.uuid4().hex
    try:
        redis_for(settings.REDIS_URL).set(f"{DRAINING_PREFIX}{tenant_id}", token, ex=DRAINING_SECONDS)
    except Exception as exc:
        logger.warning("processing run not announced", extra={"error": str(exc)})
        return None
    return token


def processing_draining_end(tenant_id: int, token: str | None) -> bool:
    """The run's end: True when a write hinted during the run (the flag is set) — its marks may have come after the
    run's last claim, so the run queues a successor. The announcement goes first: a task that finds the tenant held
    after this looks again later, and one that found it announced before this has set the flag by now or sees
    the announcement gone (`processing_hand_over_to_run`)."""
    key = f"{DRAINING_PREFIX}{tenant_id}"
    try:
        client = redis_for(settings.REDIS_URL)
        if token is not None and client.get(key) == token.encode():
            client.delete(key)  # another run's token (one took the tenant between rounds) stays
        return bool(client.exists(f"{HINT_PENDING_PREFIX}{tenant_id}"))
    except Exception as exc:
        logger.warning("processing run end not recorded", extra={"error": str(exc)})
        return True  # a successor too many costs a task; one too few leaves marks to the sweep


def processing_hand_over_to_run(tenant_id: int) -> bool:
    """A task found the tenant held. If a run holds it, leave the marks to that run and return True: the flag is
    set again without a task, so that the run queues its successor when it ends and writes meanwhile queue none.
    The announcement is checked again after the flag is set: if the run ended in between, it may not have seen
    the flag, which is cleared again so that the caller's look (False) is queued, not taken for one waiting."""
    key, flag = f"{DRAINING_PREFIX}{tenant_id}", f"{HINT_PENDING_PREFIX}{tenant_id}"
    try:
        client = redis_for(settings.REDIS_URL)
        if not client.exists(key):
            return False
        client.set(flag, "1", ex=HINT_PENDING_SECONDS)
        if client.exists(key):
            return True
        client.delete(flag)
        return False
    except Exception as exc:
        logger.warning("processing hand-over not recorded", extra={"error": str(exc)})
        return False


def processing_hint_taken(tenant_id: int) -> None:
    """Called by the processing task as it starts: writes from now on queue the next run."""
    try:
        redis_for(settings.REDIS_URL).delete(f"{HINT_PENDING_PREFIX}{tenant_id}")
    except Exception as exc:  # the flag expires on its own
        logger.warning("processing hint flag not cleared", extra={"error": str(exc)})


def _ingest(*, tenant: Tenant, calls: Sequence[tuple[int, Call]], now: datetime) -> IngestResult:
    result = IngestResult()
    catalog = PropertyCatalog(tenant)
    catalog.load(_catalog_keys(calls))
    # One index may carry several calls (a Segment identify = upsert + link): they stand or fall together.
    groups: dict[int, list[Call]] = {}
    for index, call in calls:
        groups.setdefault(index, []).append(call)
    accepted: list[tuple[int, Call]] = []
    for index, group in groups.items():
        errors: dict[str, str] = {}
        first_seen: dict[tuple[str, str], str] = {}
        for call in group:
            call_errors, call_new = _type_errors(catalog, call)
            errors.update(call_errors)
            for item, kind in call_new.items():
                if first_seen.setdefault(item, kind) != kind:
                    errors[item[1]] = f"has values of two types ({first_seen[item]}, {kind})"
        if errors:
            result.rejected.append(Rejected(index=index, fields=errors))
            continue
        catalog.record(first_seen)
        accepted.extend((index, call) for call in group)
    catalog.save(now=now)
    marks = DirtyMarks()
    for segment in _segments(accepted):
        _ingest_segment(tenant=tenant, calls=[call for _index, call in segment], now=now, marks=marks)
    entities_mark_dirty(tenant=tenant, marks=marks, now=now)
    result.accepted = len({index for index, _call in accepted})
    return result


# The event column that names each kind of entity, and the one that names the other kind.
_EVENT_SIDES = {EntityType.USER: ("end_user_id", "account_id"), EntityType.ACCOUNT: ("account_id", "end_user_id")}


def _merger(tenant: Tenant, entity_type: EntityType, marks: DirtyMarks) -> Callable[[int, int], None]:
    """The merge step the identity resolver calls: events, then the rows, then rollups and marks."""
    merge_rows = end_users_merge if entity_type == EntityType.USER else accounts_merge

    def merge(survivor_pk: int, loser_pk: int) -> None:
        tenant_processing_lock(tenant)  # before any row of the merge is touched (ADR 0006)
        moved = events_move(tenant=tenant, entity_type=entity_type, from_pk=loser_pk, to_pk=survivor_pk)
        merge_rows(tenant=tenant, survivor_pk=survivor_pk, loser_pk=loser_pk)
        # The loser's rows go; the survivor's buckets on the moved events' days are recomputed.
        rollups_forget(tenant=tenant, entity_type=entity_type, pks=[loser_pk])
        marks.discard(entity_type, [loser_pk])
        marks.add(entity_type, survivor_pk)
        if moved is not None:
            marks.add_days(entity_type, survivor_pk, *moved)

    return merge


def _forget_deleted(*, tenant: Tenant, entity_type: EntityType, pks: list[int], marks: DirtyMarks) -> None:
    """Before users or accounts are deleted: mark the other side of their events (a deleted user's accounts, a
    deleted account's users) for those days, then drop their rollups and their events."""
    tenant_processing_lock(tenant)  # before any row of the delete is touched (ADR 0006)
    marks.discard(entity_type, pks)
    side, other = _EVENT_SIDES[entity_type]
    other_type = EntityType.ACCOUNT if entity_type == EntityType.USER else EntityType.USER
    for other_pk, first, last in Event.objects.sql(
        tenant,
        f"SELECT {other}, min((occurred_at AT TIME ZONE 'UTC')::date), max((occurred_at AT TIME ZONE 'UTC')::date) "  # noqa: S608 - constant columns
        f"FROM signals_event WHERE tenant_id = %(tenant)s AND {side} = ANY(%(ids)s::bigint[]) AND {other} IS NOT NULL "
        f"GROUP BY {other}",
        {"ids": pks},
    ):
        marks.add_days(other_type, other_pk, first, last)
    rollups_forget(tenant=tenant, entity_type=entity_type, pks=pks)
    # The events go with their user or account: by tenant, which the tenant-led index serves (signals.models).
    Event.objects.for_tenant(tenant).filter(**{f"{side}__in": pks}).delete()


def _ingest_segment(*, tenant: Tenant, calls: list[Call], now: datetime, marks: DirtyMarks) -> None:
    users, accounts = Resolver.for_users(tenant), Resolver.for_accounts(tenant)
    user_refs, account_refs = [], []
    for call in calls:
        if type(call) is Track:  # nearly every call; the tests below are for the other kinds
            if call.user is not None:
                user_refs.append(call.user)
            if call.account:
                account_refs.append(call.account)
            continue
        if isinstance(call, UpsertUser | Link | DeleteUser) and call.user is not None:
            user_refs.append(call.user)
        if isinstance(call, UpsertAccount | AddUsers | RemoveUsers | DeleteAccount) and call.account:
            account_refs.append(call.account)
        if isinstance(call, AddUsers):
            user_refs.extend(member.user for member in call.users)
        if isinstance(call, RemoveUsers):
            user_refs.extend(call.users)
    prefetch_together(
        tenant,
        (users, [(ref.external_id, ref.email) for ref in user_refs if ref]),
        (accounts, [(ref.external_id, ref.domain) for ref in account_refs if ref]),
    )

    # Plan identities in call order (creations, merges and moves happen in flush()).
    planned: list[tuple[Call, Node | None, Node | None, list[Node | None]]] = []
    no_members: list[Node | None] = []  # shared by the calls that name no members, never changed
    for call in calls:
        if type(call) is Track:
            user_node = users.resolve(call.user.external_id, call.user.email) if call.user is not None else None
            account_node = (
                accounts.resolve(call.account.external_id, call.account.domain) if call.account is not None else None
            )
            planned.append((call, user_node, account_node, no_members))
            continue
        user_node = account_node = None
        members: list[Node | None] = []
        if isinstance(call, DeleteUser):
            user_node = users.find(call.user.external_id, call.user.email)
        elif isinstance(call, DeleteAccount):
            account_node = accounts.find(call.account.external_id, call.account.domain)
        elif isinstance(call, RemoveUsers):
            account_node = accounts.find(call.account.external_id, call.account.domain)
            members = [users.find(ref.external_id, ref.email) for ref in call.users]
        else:
            user = getattr(call, "user", None)
            account = getattr(call, "account", None)
            if user is not None:
                user_node = users.resolve(user.external_id, user.email)
            if account is not None:
                account_node = accounts.resolve(account.external_id, account.domain)
            if isinstance(call, AddUsers):
                members = [users.resolve(member.user.external_id, member.user.email) for member in call.users]
        planned.append((call, user_node, account_node, members))
    users.flush(merge=_merger(tenant, EntityType.USER, marks), defaults=lambda: {"created_at": now, "updated_at": now})
    accounts.flush(
        merge=_merger(tenant, EntityType.ACCOUNT, marks), defaults=lambda: {"created_at": now, "updated_at": now}
    )
    for entity_type, resolver in ((EntityType.USER, users), (EntityType.ACCOUNT, accounts)):
        for pk in resolver.changed:  # created, or an identifier changed: not only events
            marks.add(entity_type, pk)

    user_writes: list[PropertyWrite] = []
    account_writes: list[PropertyWrite] = []
    membership_writes: list[MembershipWrite] = []
    links: list[tuple[str, int, datetime]] = []
    events: list[tuple[Any, ...]] = []
    seen: dict[int, tuple[datetime, datetime]] = {}  # user -> first, last event time (also for rollup marks)
    account_seen: dict[int, tuple[datetime, datetime]] = {}
    delete_users: list[int] = []
    delete_accounts: list[int] = []
    device_users = device_links_lookup(
        tenant=tenant, device_ids={c.device_id for c in calls if isinstance(c, Track) and c.device_id and not c.user}
    )

    received = now.isoformat()  # every event row of the request carries it: formatted once, not per row
    for call, user_node, account_node, members in planned:
        # A node without a pk after flush() is one a call only looked for (find), which found nothing.
        user_pk = user_node.root().pk if user_node is not None else None
        account_pk = account_node.root().pk if account_node is not None else None
        if type(call) is Track:
            at = call.at
            if user_pk is None and call.device_id:
                user_pk = device_users.get(call.device_id)
            events.append(
                (call.name[:255], user_pk, account_pk, call.device_id, call.properties, at, received, call.message_id)
            )
            if user_pk is not None:
                _widen(seen, user_pk, at)
            if account_pk is not None:
                _widen(account_seen, account_pk, at)
        elif isinstance(call, UpsertUser) and user_pk is not None:
            user_writes.append(PropertyWrite(pk=user_pk, properties=call.properties, at=call.at))
            marks.add(EntityType.USER, user_pk)
        elif isinstance(call, UpsertAccount) and account_pk is not None:
            account_writes.append(PropertyWrite(pk=account_pk, properties=call.properties, at=call.at))
            marks.add(EntityType.ACCOUNT, account_pk)
        elif isinstance(call, AddUsers | RemoveUsers) and account_pk is not None:
            marks.add(EntityType.ACCOUNT, account_pk)
            member_calls = call.users if isinstance(call, AddUsers) else [None] * len(call.users)
            for member, node in zip(member_calls, members, strict=True):
                if node is None or node.root().pk is None:
                    continue
                member_pk = users.pk_of(node)
                marks.add(EntityType.USER, member_pk)
                membership_writes.append(
                    MembershipWrite(
                        account_pk=account_pk, user_pk=member_pk, at=call.at, is_removal=member is None,
                        properties=member.properties if member is not None else {},
                    )
                )  # fmt: skip
        elif isinstance(call, Link) and user_pk is not None:
            links.append((call.device_id, user_pk, call.at))
            device_users[call.device_id] = user_pk
            marks.add(EntityType.USER, user_pk)
        elif isinstance(call, DeleteUser) and user_pk is not None:
            delete_users.append(user_pk)
        elif isinstance(call, DeleteAccount) and account_pk is not None:
            delete_accounts.append(account_pk)

    for user_pk, (first, last) in seen.items():
        marks.add_events(EntityType.USER, user_pk, first, last)
    for account_pk, (first, last) in account_seen.items():
        marks.add_events(EntityType.ACCOUNT, account_pk, first, last)
    entity_properties_apply(tenant=tenant, model=EndUser, writes=user_writes, now=now)
    entity_properties_apply(tenant=tenant, model=Account, writes=account_writes, now=now)
    memberships_apply(tenant=tenant, writes=membership_writes)
    events_insert(tenant=tenant, rows=events)
    for device_id, user_pk, at in links:
        device_link(tenant=tenant, device_id=device_id, user_pk=user_pk, at=at)
        events_attribute_device(tenant=tenant, device_id=device_id, user_pk=user_pk, marks=marks)
    users_seen(tenant=tenant, seen=seen, read=users.seen_as_read())
    if delete_users:
        _forget_deleted(tenant=tenant, entity_type=EntityType.USER, pks=delete_users, marks=marks)
        entities_delete(tenant=tenant, model=EndUser, pks=delete_users)
    if delete_accounts:
        _forget_deleted(tenant=tenant, entity_type=EntityType.ACCOUNT, pks=delete_accounts, marks=marks)
        entities_delete(tenant=tenant, model=Account, pks=delete_accounts)


def _widen(spans: dict[int, tuple[datetime, datetime]], pk: int, at: datetime) -> None:
    """Widen pk's (first, last) event time to take in `at`."""
    span = spans.get(pk)
    if span is None:
        spans[pk] = (at, at)
    elif at < span[0]:
        spans[pk] = (at, span[1])
    elif at > span[1]:
        spans[pk] = (span[0], at)


EVENT_COLUMNS = (
    "name",
    "end_user_id",
    "account_id",
    "device_id",
    "properties",
    "occurred_at",
    "received_at",
    "message_id",
)


def events_insert(*, tenant: Tenant, rows: list[tuple[Any, ...]]) -> None:
    """Store events (rows of EVENT_COLUMNS; properties as a dict) in one statement, or two when some rows carry a
    message_id: those skip a message_id the tenant already sent (idempotent retries). Kept apart because a row
    under ON CONFLICT is inserted speculatively, which costs an extra WAL record per row."""
    Event.objects.insert(tenant, EVENT_COLUMNS, [row for row in rows if row[-1] is None])
    Event.objects.insert(
        tenant,
        EVENT_COLUMNS,
        [row for row in rows if row[-1] is not None],
        conflict=["message_id"],
        conflict_where="message_id IS NOT NULL",
    )


def _moved_days(rows: list[tuple[Any, ...]]) -> tuple[date, date] | None:
    [(first, last)] = rows
    return None if first is None else (first, last)


# Statement tail of a move: the UTC days of the moved events (none moved: NULLs).
_MOVED_DAYS = (
    "SELECT min((occurred_at AT TIME ZONE 'UTC')::date), max((occurred_at AT TIME ZONE 'UTC')::date) FROM moved"
)


def events_move(*, tenant: Tenant, entity_type: EntityType, from_pk: int, to_pk: int) -> tuple[date, date] | None:
    """Give the events of a user or account that is merged away to the survivor; returns their UTC days."""
    column, _other = _EVENT_SIDES[entity_type]
    return _moved_days(
        Event.objects.sql(
            tenant,
            f"WITH moved AS (UPDATE signals_event SET {column} = %(to)s "  # noqa: S608 - constant columns
            f"WHERE tenant_id = %(tenant)s AND {column} = %(from)s RETURNING occurred_at) {_MOVED_DAYS}",
            {"from": from_pk, "to": to_pk},
        )
    )


def events_attribute_device(*, tenant: Tenant, device_id: str, user_pk: int, marks: DirtyMarks) -> None:
    """Give a device's anonymous events to the user it was linked to (and that user's rollups those days)."""
    moved = _moved_days(
        Event.objects.sql(
            tenant,
            "WITH moved AS (UPDATE signals_event SET end_user_id = %(user)s WHERE tenant_id = %(tenant)s "  # noqa: S608
            f"AND device_id = %(device)s AND end_user_id IS NULL RETURNING occurred_at) {_MOVED_DAYS}",
            {"user": user_pk, "device": device_id},
        )
    )
    if moved is not None:
        marks.add_days(EntityType.USER, user_pk, *moved)


# --- signal definitions -------------------------------------------------------------------------------------


class SignalKeyTaken(ValueError):
    pass


def _rescore_soon(tenant: Tenant) -> None:
    """A signal feeds rule-based scores and discovery: rescore the tenant after the change commits. By task name,
    since scoring depends on signals and not the reverse (DESIGN §3)."""
    from celery import current_app

    tenant_id = tenant.pk
    transaction.on_commit(lambda: current_app.send_task("scoring.tasks.scores_refresh_all", args=(tenant_id,)))


def signal_save(*, tenant: Tenant, signal: Signal | None, data: dict[str, Any], now: datetime) -> Signal:
    """Create (signal None) or update a validated signal definition; raises SignalKeyTaken on a duplicate key."""
    target = signal if signal is not None else Signal(tenant=tenant, created_at=now)
    for name, value in data.items():
        setattr(target, name, value)
    target.updated_at = now
    try:
        with transaction.atomic():
            target.save()
            _rescore_soon(tenant)
    except IntegrityError:
        raise SignalKeyTaken(f"a signal with key {target.key!r} already exists") from None
    return target


def signal_delete(*, tenant: Tenant, signal: Signal) -> None:
    with transaction.atomic():
        Signal.objects.for_tenant(tenant).filter(pk=signal.pk).delete()
        _rescore_soon(tenant)
