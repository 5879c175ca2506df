"""Writes of accounts, users, memberships and their history. Used by ingestion (signals.services).

Every function takes the tenant first and works on sets of rows: ingestion calls them once per
request with everything the request touches, never once per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import Q

from accounts.models import (
    Account,
    DeviceLink,
    DirtyEntity,
    EndUser,
    EntityType,
    Membership,
    PropertyChange,
    PropertyDefinition,
    StageChange,
)
from accounts.properties import combine_records, merge_properties
from plgapp.models import Tenant

STAGE_KEY = "stage"
LAST_SEEN_RESOLUTION_SECONDS = 60
NAME_KEY = "name"


# --- the data catalogue ------------------------------------------------------------------------------


# A key's type never changes once recorded, so each process remembers the types it has read from the
# database (never the ones it is about to write: that transaction may roll back or lose a race).
_known_types: dict[int, dict[tuple[str, str], str]] = {}
_KNOWN_TYPES_LIMIT = 100_000
_known_types_size = 0


def _remember_type(tenant_pk: int, item: tuple[str, str], kind: str) -> None:
    global _known_types_size
    if _known_types_size >= _KNOWN_TYPES_LIMIT:
        _known_types.clear()
        _known_types_size = 0
    _known_types.setdefault(tenant_pk, {})[item] = kind
    _known_types_size += 1


@dataclass
class PropertyCatalog:
    """Types of property keys per entity type: known ones from the database, new ones as first seen."""

    tenant: Tenant
    known: dict[tuple[str, str], str] = field(default_factory=dict)
    new: dict[tuple[str, str], str] = field(default_factory=dict)
    # The known types again, by entity type: a call whose keys are all known with these types (nearly every call)
    # is checked by one subset test of two item views, in C.
    known_by_type: dict[str, dict[str, str]] = field(default_factory=dict)

    def _know(self, item: tuple[str, str], kind: str) -> None:
        self.known[item] = kind
        self.known_by_type.setdefault(item[0], {})[item[1]] = kind

    def load(self, keys: Iterable[tuple[str, str]]) -> None:
        remembered = _known_types.get(self.tenant.pk, {})
        wanted = set()
        for item in keys:
            kind = remembered.get(item)
            if kind is not None:
                self._know(item, kind)
            elif item not in self.known:
                wanted.add(item)
        if not wanted:
            return
        condition = Q()
        for entity_type in {entity_type for entity_type, _key in wanted}:
            condition |= Q(entity_type=entity_type, key__in=[key for et, key in wanted if et == entity_type])
        for entity_type, key, kind in (
            PropertyDefinition.objects.for_tenant(self.tenant)
            .filter(condition)
            .values_list("entity_type", "key", "type")
        ):
            self._know((entity_type, key), kind)
            _remember_type(self.tenant.pk, (entity_type, key), kind)

    def check(self, entity_type: str, typed: dict[str, str]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
        """(keys whose type differs from the catalogue's, keys seen for the first time) — records nothing."""
        errors: dict[str, str] = {}
        first_seen: dict[tuple[str, str], str] = {}
        known = self.known_by_type.get(entity_type)
        if known is not None and typed.items() <= known.items():
            return errors, first_seen
        for key, kind in typed.items():
            expected = self.known.get((entity_type, key)) or self.new.get((entity_type, key))
            if expected is None:
                first_seen[(entity_type, key)] = kind
            elif expected != kind:
                errors[key] = f"is a {expected} property of {entity_type}s; got a {kind} value"
        return errors, first_seen

    def record(self, first_seen: dict[tuple[str, str], str]) -> None:
        for item, kind in first_seen.items():
            self.new.setdefault(item, kind)

    def save(self, *, now: datetime) -> None:
        if not self.new:
            return
        PropertyDefinition.objects.for_tenant(self.tenant).bulk_create(
            [
                PropertyDefinition(entity_type=entity_type, key=key, type=kind, first_seen_at=now)
                for (entity_type, key), kind in self.new.items()
            ],
            ignore_conflicts=True,
        )
        for item, kind in self.new.items():
            self._know(item, kind)
        self.new = {}


# --- properties and stages -----------------------------------------------------------------------


@dataclass(frozen=True)
class PropertyWrite:
    pk: int
    properties: dict[str, Any]
    at: datetime


def _stage_value(value: Any) -> str | None:
    return None if value is None else str(value)


def entity_properties_apply(
    *, tenant: Tenant, model: type[EndUser] | type[Account], writes: Sequence[PropertyWrite], now: datetime
) -> None:
    """Apply property writes in order (point-in-time rules), with PropertyChange / StageChange history."""
    if not writes:
        return
    entity_type = EntityType.USER if model is EndUser else EntityType.ACCOUNT
    pks = sorted({write.pk for write in writes})
    rows = {
        row.pk: row for row in model.objects.for_tenant(tenant).filter(pk__in=pks).order_by("pk").select_for_update()
    }
    changes: list[PropertyChange] = []
    late_stages: list[tuple[int, str | None, datetime]] = []
    stage_changes: list[StageChange] = []
    touched: set[int] = set()
    for write in writes:
        row = rows.get(write.pk)
        if row is None:
            continue
        updates = dict(write.properties)
        if STAGE_KEY in updates:
            stage = _stage_value(updates.pop(STAGE_KEY))
            if row.stage_changed_at is None or write.at >= row.stage_changed_at:
                if stage != row.stage:
                    stage_changes.append(
                        StageChange(
                            entity_type=entity_type, entity_id=row.pk, from_stage=row.stage, to_stage=stage,
                            changed_at=write.at,
                        )
                    )  # fmt: skip
                    row.stage = stage
                row.stage_changed_at = write.at
                touched.add(row.pk)
            else:
                late_stages.append((row.pk, stage, write.at))
        merged = merge_properties(row.properties, row.property_times, updates, write.at)
        if merged.changed:
            row.properties, row.property_times = merged.properties, merged.times
            touched.add(row.pk)
        if isinstance(row, Account) and NAME_KEY in updates and merged.times.get(NAME_KEY) == write.at.isoformat():
            row.name = str(updates[NAME_KEY] or "")[:255]
        changes.extend(
            PropertyChange(entity_type=entity_type, entity_id=row.pk, key=key, value=value, changed_at=write.at)
            for key, value in updates.items()
        )
    for pk in touched:
        rows[pk].updated_at = now
    fields = ["properties", "property_times", "stage", "stage_changed_at", "updated_at"]
    if model is Account:
        fields.append("name")
    changed_rows: list[Any] = [rows[pk] for pk in sorted(touched)]
    model.objects.set_by_pk(tenant, fields, changed_rows)
    PropertyChange.objects.for_tenant(tenant).bulk_create(changes)
    StageChange.objects.for_tenant(tenant).bulk_create(stage_changes)
    for pk, stage, at in late_stages:
        _stage_change_insert_in_past(tenant=tenant, entity_type=entity_type, entity_id=pk, stage=stage, at=at)


def _stage_change_insert_in_past(
    *, tenant: Tenant, entity_type: str, entity_id: int, stage: str | None, at: datetime
) -> None:
    """A stage write older than the current stage: slot it into the history where it happened."""
    history = StageChange.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id=entity_id)
    before = history.filter(changed_at__lte=at).order_by("-changed_at", "-pk").first()
    after = history.filter(changed_at__gt=at).order_by("changed_at", "pk").first()
    from_stage = before.to_stage if before else None
    if from_stage == stage:
        return
    history.create(entity_type=entity_type, entity_id=entity_id, from_stage=from_stage, to_stage=stage, changed_at=at)
    if after is not None:
        history.filter(pk=after.pk).update(from_stage=stage)


# --- memberships ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipWrite:
    account_pk: int
    user_pk: int
    at: datetime
    is_removal: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


def memberships_apply(*, tenant: Tenant, writes: Sequence[MembershipWrite]) -> None:
    """Add / remove users to / from accounts, with relationship properties, as of each write's time."""
    if not writes:
        return
    memberships = Membership.objects.for_tenant(tenant)
    pairs = {(w.account_pk, w.user_pk) for w in writes}
    existing = {
        (m.account_id, m.end_user_id): m
        for m in memberships.filter(
            account_id__in={a for a, _u in pairs}, end_user_id__in={u for _a, u in pairs}
        ).select_for_update()
        if (m.account_id, m.end_user_id) in pairs
    }
    created = []
    for write in writes:
        if (write.account_pk, write.user_pk) in existing or write.is_removal:
            continue
        membership = Membership(
            tenant=tenant, account_id=write.account_pk, end_user_id=write.user_pk, joined_at=write.at,
            state_changed_at=write.at,
        )  # fmt: skip
        existing[(write.account_pk, write.user_pk)] = membership
        created.append(membership)
    memberships.bulk_create(created)
    changes: list[PropertyChange] = []
    for write in writes:
        found = existing.get((write.account_pk, write.user_pk))
        if found is None:
            continue  # removing someone who was never a member
        membership = found
        if write.is_removal:
            if membership.left_at is None and write.at >= membership.state_changed_at:
                membership.left_at = write.at
                membership.state_changed_at = write.at
            continue
        if write.at >= membership.state_changed_at:
            if membership.left_at is not None:
                membership.joined_at, membership.left_at = write.at, None
            membership.state_changed_at = write.at
        elif membership.left_at is None or write.at < membership.left_at:
            membership.joined_at = min(membership.joined_at, write.at)
        merged = merge_properties(membership.properties, membership.property_times, write.properties, write.at)
        membership.properties, membership.property_times = merged.properties, merged.times
        changes.extend(
            PropertyChange(
                entity_type=EntityType.MEMBERSHIP, entity_id=membership.pk, key=key, value=value, changed_at=write.at
            )
            for key, value in write.properties.items()
        )
    Membership.objects.set_by_pk(
        tenant, ["properties", "property_times", "joined_at", "left_at", "state_changed_at"], list(existing.values())
    )
    PropertyChange.objects.for_tenant(tenant).bulk_create(changes)


# --- devices, deletion, merges, bookkeeping -----------------------------------------------------------


def device_link(*, tenant: Tenant, device_id: str, user_pk: int, at: datetime) -> None:
    DeviceLink.objects.for_tenant(tenant).update_or_create(
        device_id=device_id, defaults={"end_user_id": user_pk, "linked_at": at}
    )


def device_links_lookup(*, tenant: Tenant, device_ids: Iterable[str]) -> dict[str, int]:
    ids = set(device_ids)
    if not ids:
        return {}
    return dict(DeviceLink.objects.for_tenant(tenant).filter(device_id__in=ids).values_list("device_id", "end_user_id"))


def _history_of(tenant: Tenant, entity_type: str, pks: Iterable[int]) -> tuple[Any, Any]:
    ids = list(pks)
    return (
        PropertyChange.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id__in=ids),
        StageChange.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id__in=ids),
    )


def entities_delete(*, tenant: Tenant, model: type[EndUser] | type[Account], pks: Sequence[int]) -> None:
    """Delete users or accounts with their memberships and history (their events, their daily rollups and the
    marks of the other side are the caller's, signals.services, which deletes them first)."""
    if not pks:
        return
    entity_type = EntityType.USER if model is EndUser else EntityType.ACCOUNT
    membership_filter = {"end_user_id__in": pks} if model is EndUser else {"account_id__in": pks}
    membership_ids = list(
        Membership.objects.for_tenant(tenant).filter(**membership_filter).values_list("pk", flat=True)
    )
    for queryset in (
        *_history_of(tenant, entity_type, pks),
        *_history_of(tenant, EntityType.MEMBERSHIP, membership_ids),
    ):
        queryset.delete()
    DirtyEntity.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id__in=pks).delete()
    model.objects.for_tenant(tenant).filter(pk__in=pks).delete()


def _combine_memberships(tenant: Tenant, keep: Membership, drop: Membership) -> None:
    keep.properties, keep.property_times = combine_records(
        (keep.properties, keep.property_times), (drop.properties, drop.property_times)
    )
    keep.joined_at = min(keep.joined_at, drop.joined_at)
    if drop.state_changed_at > keep.state_changed_at:
        keep.left_at, keep.state_changed_at = drop.left_at, drop.state_changed_at
    keep.save(update_fields=["properties", "property_times", "joined_at", "left_at", "state_changed_at"])
    PropertyChange.objects.for_tenant(tenant).filter(entity_type=EntityType.MEMBERSHIP, entity_id=drop.pk).update(
        entity_id=keep.pk
    )
    drop.delete()


def _merge_rows(tenant: Tenant, model: type[EndUser] | type[Account], survivor_pk: int, loser_pk: int) -> None:
    manager = model.objects.for_tenant(tenant)
    survivor, loser = manager.select_for_update().get(pk=survivor_pk), manager.select_for_update().get(pk=loser_pk)
    entity_type = EntityType.USER if model is EndUser else EntityType.ACCOUNT
    side, other = ("end_user", "account") if model is EndUser else ("account", "end_user")
    kept = {
        getattr(m, f"{other}_id"): m
        for m in Membership.objects.for_tenant(tenant).filter(**{f"{side}_id": survivor_pk})
    }
    for membership in Membership.objects.for_tenant(tenant).filter(**{f"{side}_id": loser_pk}):
        twin = kept.get(getattr(membership, f"{other}_id"))
        if twin is None:
            Membership.objects.for_tenant(tenant).filter(pk=membership.pk).update(**{f"{side}_id": survivor_pk})
        else:
            _combine_memberships(tenant, twin, membership)
    for queryset in _history_of(tenant, entity_type, [loser_pk]):
        queryset.update(entity_id=survivor_pk)
    survivor.properties, survivor.property_times = combine_records(
        (survivor.properties, survivor.property_times), (loser.properties, loser.property_times)
    )
    if loser.stage_changed_at and (
        survivor.stage_changed_at is None or loser.stage_changed_at > survivor.stage_changed_at
    ):
        survivor.stage, survivor.stage_changed_at = loser.stage, loser.stage_changed_at
    survivor.created_at = min(survivor.created_at, loser.created_at)
    if isinstance(survivor, EndUser) and isinstance(loser, EndUser):
        survivor.first_seen_at = min(filter(None, [survivor.first_seen_at, loser.first_seen_at]), default=None)
        survivor.last_seen_at = max(filter(None, [survivor.last_seen_at, loser.last_seen_at]), default=None)
        DeviceLink.objects.for_tenant(tenant).filter(end_user_id=loser_pk).update(end_user_id=survivor_pk)
    elif isinstance(survivor, Account) and isinstance(loser, Account) and not survivor.name:
        survivor.name = loser.name
    DirtyEntity.objects.for_tenant(tenant).filter(entity_type=entity_type, entity_id=loser_pk).delete()
    loser.delete()
    survivor.save()


def end_users_merge(*, tenant: Tenant, survivor_pk: int, loser_pk: int) -> None:
    """Fold the user `loser` into `survivor` (memberships, devices, history, properties). Events: caller."""
    _merge_rows(tenant, EndUser, survivor_pk, loser_pk)


def accounts_merge(*, tenant: Tenant, survivor_pk: int, loser_pk: int) -> None:
    """Fold the account `loser` into `survivor` (memberships, history, properties). Events: caller."""
    _merge_rows(tenant, Account, survivor_pk, loser_pk)


def _widens(
    times: tuple[datetime, datetime], stored: tuple[datetime | None, datetime | None] | None, resolution: timedelta
) -> bool:
    """Whether the UPDATE of users_seen would change a row holding `stored` (None: not known, so it may)."""
    if stored is None or stored[0] is None:
        return True
    first, last = times
    return first < stored[0] or (stored[1] is not None and last >= stored[1] + resolution)


def users_seen(
    *,
    tenant: Tenant,
    seen: dict[int, tuple[datetime, datetime]],
    read: dict[int, tuple[datetime | None, datetime | None]] | None = None,
) -> None:
    """Widen first_seen_at / last_seen_at of users by the event times of a request (one statement).

    last_seen_at is kept to the minute: a user seen again within a minute of the stored time is not
    rewritten, which spares a row update per active user and request on the hot path. `read` holds the times
    this transaction read earlier (the identity prefetch): both only ever widen, so a user they already cover
    needs no statement at all, and a request whose users all are covered sends none.
    """
    resolution = timedelta(seconds=LAST_SEEN_RESOLUTION_SECONDS)
    if read:
        seen = {pk: times for pk, times in seen.items() if _widens(times, read.get(pk), resolution)}
    if not seen:
        return
    # Arrays, not a VALUES list: one parameter per column keeps the statement cheap to build and parse.
    pks = sorted(seen)
    EndUser.objects.sql(
        tenant,
        """
        UPDATE accounts_enduser AS u
           SET first_seen_at = LEAST(COALESCE(u.first_seen_at, v.first), v.first),
               last_seen_at = GREATEST(COALESCE(u.last_seen_at, v.last), v.last)
          FROM unnest(%(ids)s::bigint[], %(firsts)s::timestamptz[], %(lasts)s::timestamptz[]) AS v(id, first, last)
         WHERE u.tenant_id = %(tenant)s AND u.id = v.id
           AND (u.first_seen_at IS NULL OR v.first < u.first_seen_at
                OR v.last >= u.last_seen_at + make_interval(secs => %(resolution)s))
        """,
        {
            "ids": pks,
            "firsts": [seen[pk][0].isoformat() for pk in pks],
            "lasts": [seen[pk][1].isoformat() for pk in pks],
            "resolution": LAST_SEEN_RESOLUTION_SECONDS,
        },
    )


DayRange = tuple[date, date]


def utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


@dataclass
class DirtyMarks:
    """What a request asks downstream processing to do: entity -> UTC days of events whose daily rollups
    it invalidates (new events, events moved in by a merge or device link, events deleted with another
    entity), or None when only properties or memberships changed (no rollup work). `changed` holds the entities
    with more than events changed (`add`: properties, memberships, identity, creation, merges); the others'
    marks say that only events changed (`fields_changed` false)."""

    days: dict[tuple[str, int], DayRange | None] = field(default_factory=dict)
    changed: set[tuple[str, int]] = field(default_factory=set)

    def add(self, entity_type: str, pk: int) -> None:
        self.days.setdefault((entity_type, pk), None)
        self.changed.add((entity_type, pk))

    def add_events(self, entity_type: str, pk: int, first: datetime, last: datetime) -> None:
        self.add_days(entity_type, pk, utc_day(first), utc_day(last))

    def add_days(self, entity_type: str, pk: int, first: date, last: date) -> None:
        current = self.days.get((entity_type, pk))
        if current is not None:
            first, last = min(first, current[0]), max(last, current[1])
        self.days[(entity_type, pk)] = (first, last)

    def discard(self, entity_type: str, pks: Iterable[int]) -> None:
        for pk in pks:
            self.days.pop((entity_type, pk), None)
            self.changed.discard((entity_type, pk))

    def __contains__(self, item: object) -> bool:
        return item in self.days

    def __len__(self) -> int:
        return len(self.days)


def entities_mark_dirty(*, tenant: Tenant, marks: DirtyMarks, now: datetime) -> None:
    """Record, in the caller's transaction, that these entities need downstream processing.

    A re-mark moves marked_at strictly forward — even when this request's clock reads earlier than the stored
    mark, or the same microsecond — which is what the processor's "delete only if marked_at is unchanged"
    relies on (ADR 0014): a mark re-set while a round works survives it. It also widens the day range: LEAST /
    GREATEST ignore NULLs, so a null range (property-only write) never narrows a pending one. `fields_changed`
    is only ever set by a re-mark: events alone never hide an earlier change of fields still pending.
    """
    if not marks:
        return
    ordered = sorted(marks.days)  # a fixed order, so that concurrent requests do not deadlock on the same marks
    ranges = [marks.days[item] for item in ordered]
    DirtyEntity.objects.sql(
        tenant,
        """
        INSERT INTO accounts_dirtyentity
               (tenant_id, entity_type, entity_id, marked_at, first_day, last_day, fields_changed)
        SELECT %(tenant)s, mark.entity_type, mark.entity_id, %(now)s, mark.first_day, mark.last_day, mark.changed
          FROM unnest(%(types)s::text[], %(ids)s::bigint[], %(firsts)s::date[], %(lasts)s::date[],
                      %(changed)s::boolean[])
               AS mark(entity_type, entity_id, first_day, last_day, changed)
        ON CONFLICT (tenant_id, entity_type, entity_id) DO UPDATE
           SET marked_at = GREATEST(EXCLUDED.marked_at, accounts_dirtyentity.marked_at + interval '1 microsecond'),
               first_day = LEAST(accounts_dirtyentity.first_day, EXCLUDED.first_day),
               last_day = GREATEST(accounts_dirtyentity.last_day, EXCLUDED.last_day),
               fields_changed = accounts_dirtyentity.fields_changed OR EXCLUDED.fields_changed
        """,
        {
            "now": now,
            "types": [str(entity_type) for entity_type, _pk in ordered],
            "ids": [pk for _t, pk in ordered],
            "firsts": [days[0].isoformat() if days else None for days in ranges],
            "lasts": [days[1].isoformat() if days else None for days in ranges],
            "changed": [item in marks.changed for item in ordered],
        },
    )
