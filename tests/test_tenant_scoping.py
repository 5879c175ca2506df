"""The fail-closed tenant door (DESIGN §4): no tenant, no rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.db import DataError, OperationalError, connection, connections, models, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from accounts.models import Account, EndUser, EntityType, Membership
from accounts.services import DirtyMarks
from plgapp.keys import KeyKind
from plgapp.models import ApiKey, TenantManager, TenantMember, TenantScopedModel, TenantScopeError, copy_fields
from plgapp.services import api_key_create
from signals.calls import AccountRef, Track, UserRef
from signals.models import DailyRollup, Event
from signals.rollups import rollups_recompute
from signals.services import _forget_deleted, calls_ingest, events_move
from tests.conftest import TenantWorld

# (model label, field) pairs that may be unique across tenants, with the reason.
GLOBAL_UNIQUE_ALLOWED = {
    ("plgapp.ApiKey", ("hash",)): "a key is looked up by its hash before its tenant is known",
}


def tenant_owned_models() -> list[type[models.Model]]:
    return [
        model for model in apps.get_models() if any(field.name == "tenant" for field in model._meta.concrete_fields)
    ]


def test_every_model_with_a_tenant_field_uses_the_tenant_scoped_base() -> None:
    offenders = [
        model._meta.label
        for model in tenant_owned_models()
        if not issubclass(model, TenantScopedModel)
        or not isinstance(model._default_manager, TenantManager)
        or model._meta.get_field("tenant").null
    ]
    assert offenders == [], f"tenant-owned models outside the fail-closed base: {offenders}"
    assert {"plgapp.ApiKey", "plgapp.TenantMember"} <= {m._meta.label for m in tenant_owned_models()}


def test_every_unique_constraint_and_index_of_tenant_data_leads_with_tenant() -> None:
    offenders = []
    for model in tenant_owned_models():
        label = model._meta.label
        for field in model._meta.concrete_fields:
            if field.unique and not field.primary_key and (label, (field.name,)) not in GLOBAL_UNIQUE_ALLOWED:
                offenders.append(f"{label}.{field.name} is unique=True (make it unique together with tenant)")
        for constraint in model._meta.constraints:
            fields = tuple(getattr(constraint, "fields", ()) or ())
            is_unique = isinstance(constraint, models.UniqueConstraint)
            if is_unique and (label, fields) not in GLOBAL_UNIQUE_ALLOWED and (not fields or fields[0] != "tenant"):
                offenders.append(f"{label} constraint {constraint.name} does not start with tenant")
        for index in model._meta.indexes:
            if not index.fields or index.fields[0] != "tenant":
                offenders.append(f"{label} index {index.name} does not start with tenant")
    assert offenders == []


# Every index of a table as PostgreSQL has it: (table, index, columns in order, unique, partial).
_INDEXES_SQL = """
SELECT t.relname, i.relname, array_agg(a.attname ORDER BY k.n), ix.indisunique, ix.indpred IS NOT NULL
FROM pg_index AS ix
JOIN pg_class AS i ON i.oid = ix.indexrelid
JOIN pg_class AS t ON t.oid = ix.indrelid
CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = k.attnum
WHERE t.relname = ANY(%s) AND NOT ix.indisprimary
GROUP BY t.relname, i.relname, ix.indisunique, ix.indpred
"""


@pytest.mark.django_db
def test_every_tenant_table_is_indexed_by_tenant_first_and_never_by_tenant_alone() -> None:
    """Deleting a tenant and every tenant-scoped scan need an index led by tenant_id on each table; an index on a
    column that another index already leads with is only upkeep on every write (the busiest tables are these)."""
    tables = [model._meta.db_table for model in tenant_owned_models()]
    with connection.cursor() as cursor:
        cursor.execute(_INDEXES_SQL, [tables])
        indexes = cursor.fetchall()
    whole = [(table, columns) for table, _name, columns, _unique, partial in indexes if not partial]
    unled = [table for table in tables if not any(t == table and columns[0] == "tenant_id" for t, columns in whole)]
    redundant = [
        f"{table}.{name}"
        for table, name, columns, unique, partial in indexes
        if len(columns) == 1 and not unique and not partial
        and any(t == table and len(other) > 1 and other[0] == columns[0] for t, other in whole)
    ]  # fmt: skip
    assert unled == [], "tenant tables without an index led by tenant_id"
    assert redundant == [], "single-column indexes that another index already leads with"


@pytest.mark.django_db
def test_the_events_table_has_no_index_on_one_column_alone() -> None:
    """Every ingestion request inserts ~100 events, and each keeps every index of the table up to date: one on
    end_user_id or account_id alone served only Django's cascade by that column, which the services replace with
    deletes by tenant (signals.services). Only the primary key stands alone."""
    with connection.cursor() as cursor:
        cursor.execute(_INDEXES_SQL, [["signals_event"]])
        alone = [name for _table, name, columns, _unique, partial in cursor.fetchall() if len(columns) == 1]
    assert alone == []


def test_every_read_or_change_of_events_by_user_or_account_is_served_by_their_partial_indexes(
    tenant_a: TenantWorld,
) -> None:
    """The indexes by account and by user leave out events without one (signals.models): each statement the
    product runs on events by user or account — timelines, rollup recomputes, merges, deletes — names the entity,
    which implies the index's condition. Captured from the real code and explained with sequential scans off."""
    tenant = tenant_a.tenant
    at = now()
    calls = [
        (n, Track(name="ping", at=at - timedelta(hours=n), user=UserRef(external_id=f"u{n % 3}"),
                  account=AccountRef(external_id=f"a{n % 2}") if n % 4 else None))
        for n in range(12)
    ]  # fmt: skip
    calls_ingest(tenant=tenant, calls=calls, now=at)
    user_ids = list(EndUser.objects.for_tenant(tenant).order_by("pk").values_list("pk", flat=True))
    account_ids = list(Account.objects.for_tenant(tenant).order_by("pk").values_list("pk", flat=True))
    day = at.date()
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        list(Event.objects.for_tenant(tenant).filter(account_id=account_ids[0]).order_by("-occurred_at", "-id")[:51])
        list(Event.objects.for_tenant(tenant).filter(end_user_id=user_ids[0]).order_by("-occurred_at", "-id")[:51])
        rollups_recompute(tenant=tenant, entity_type=EntityType.ACCOUNT, ranges=[(account_ids[0], day, day)])
        rollups_recompute(tenant=tenant, entity_type=EntityType.USER, ranges=[(user_ids[0], day, day)])
        events_move(tenant=tenant, entity_type=EntityType.USER, from_pk=user_ids[2], to_pk=user_ids[1])
        events_move(tenant=tenant, entity_type=EntityType.ACCOUNT, from_pk=account_ids[1], to_pk=account_ids[0])
        _forget_deleted(tenant=tenant, entity_type=EntityType.USER, pks=[user_ids[1]], marks=DirtyMarks())
        transaction.set_rollback(True)
    skipped = ("INSERT INTO signals_event", "SAVEPOINT", "RELEASE", "SELECT pg_advisory")
    statements = [query["sql"] for query in captured.captured_queries
                  if re.search(r"\bsignals_event\b", query["sql"])  # not signals_eventname
                  and not query["sql"].lstrip().startswith(skipped)]  # fmt: skip
    assert len(statements) >= 7
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for statement in statements:
            cursor.execute(f"EXPLAIN {statement}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on signals_event" not in plan, plan
            assert "event_account_time" in plan or "event_user_time" in plan, plan


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        lambda: list(ApiKey.objects.all()),
        lambda: ApiKey.objects.filter(kind="write").count(),
        lambda: ApiKey.objects.get(name="x"),
        lambda: ApiKey.objects.create(name="x", kind="write", prefix="p", hash="h"),
        lambda: TenantMember.objects.exists(),
    ],
    ids=["all", "filter-count", "get", "create", "exists"],
)
def test_querying_tenant_data_without_a_tenant_raises(query: Callable[[], object]) -> None:
    with pytest.raises(TenantScopeError, match="for_tenant"):
        query()


def test_for_tenant_sees_only_that_tenants_rows(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    names_a = set(ApiKey.objects.for_tenant(tenant_a.tenant).values_list("name", flat=True))
    names_b = set(ApiKey.objects.for_tenant(tenant_b.tenant.pk).values_list("name", flat=True))

    assert names_a == {"tenant-a write", "tenant-a secret"}
    assert names_b == {"tenant-b write", "tenant-b secret"}


def test_rows_created_through_a_scoped_queryset_belong_to_its_tenant(tenant_a: TenantWorld) -> None:
    key = ApiKey.objects.for_tenant(tenant_a.tenant).create(name="n", kind="write", prefix="plg_pk_x", hash="1" * 64)
    [bulk] = ApiKey.objects.for_tenant(tenant_a.tenant).bulk_create(
        [ApiKey(name="b", kind="write", prefix="plg_pk_y", hash="2" * 64)]
    )

    assert key.tenant_id == tenant_a.tenant.pk
    assert bulk.tenant_id == tenant_a.tenant.pk


def test_writing_another_tenants_row_through_a_scoped_queryset_raises(
    tenant_a: TenantWorld, tenant_b: TenantWorld
) -> None:
    scoped_to_a = ApiKey.objects.for_tenant(tenant_a.tenant)

    with pytest.raises(TenantScopeError):
        scoped_to_a.create(tenant=tenant_b.tenant, name="n", kind="write", prefix="p", hash="3" * 64)
    with pytest.raises(TenantScopeError):
        scoped_to_a.bulk_create([ApiKey(tenant=tenant_b.tenant, name="n", kind="write", prefix="p", hash="4" * 64)])


def test_for_tenant_refuses_things_that_are_not_tenants(tenant_a: TenantWorld) -> None:
    with pytest.raises(TenantScopeError):
        ApiKey.objects.for_tenant("tenant-a")  # type: ignore[arg-type]
    with pytest.raises(TenantScopeError):
        ApiKey.objects.for_tenant(None)  # type: ignore[arg-type]


def test_unscoped_is_the_explicit_way_to_query_across_tenants(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    assert ApiKey.objects.unscoped().filter(kind=KeyKind.WRITE).count() == 2


def test_reverse_relations_of_tenant_rows_are_scoped_to_the_parents_tenant(tenant_a: TenantWorld) -> None:
    account = Account.objects.for_tenant(tenant_a.tenant).create(external_id="a")
    user = EndUser.objects.for_tenant(tenant_a.tenant).create(external_id="u")
    Membership.objects.for_tenant(tenant_a.tenant).create(account=account, end_user=user, joined_at=now(),
                                                          state_changed_at=now())  # fmt: skip

    assert [m.end_user_id for m in account.memberships.all()] == [user.pk]
    assert "tenant_id" in str(account.memberships.all().query)


def test_reverse_relations_of_rows_outside_tenants_refuse_to_guess(
    tenant_a: TenantWorld, tenant_b: TenantWorld
) -> None:
    with pytest.raises(TenantScopeError):
        list(tenant_a.admin.tenant_memberships.all())  # a login may belong to several tenants


def test_deleting_a_tenant_removes_its_rows_only(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    api_key_create(tenant=tenant_a.tenant, kind=KeyKind.WRITE, name="extra")

    tenant_a.tenant.delete()

    assert ApiKey.objects.unscoped().filter(tenant_id=tenant_b.tenant.pk).count() == 2
    assert ApiKey.objects.unscoped().count() == 2


# Modules that may hold plain SQL, with the reason. Tenant data goes through TenantManager.sql/.copy.
PLAIN_SQL_ALLOWED = {
    "plgapp/models.py": "the tenant door itself (TenantManager.sql / .copy / .copy_out)",
    "plgapp/selectors.py": "API-key lookup by hash, before the tenant is known (as unscoped() would)",
    "plgapp/health.py": "readiness check (SELECT 1)",
    "plgapp/devservices.py": "creates the embedded database",
    "plgapp/rls.py": "row-level security: the session's tenant setting, policies and grants",
    "plgapp/checks.py": "deploy check: the application's database role",
}
PLAIN_SQL_MARKERS = ("connection.cursor", "cursor.execute", ".raw(", "copy_expert", "RawSQL(")


def test_plain_sql_only_goes_through_the_tenant_door() -> None:
    root = Path(__file__).resolve().parent.parent
    offenders: list[str] = []
    for app in ("plgapp", "accounts", "signals", "scoring", "playbooks", "integrations"):
        for path in (root / app).rglob("*.py"):
            relative = path.relative_to(root).as_posix()
            if "/migrations/" in relative or relative in PLAIN_SQL_ALLOWED:
                continue
            text = path.read_text()
            offenders.extend(f"{relative}: {marker}" for marker in PLAIN_SQL_MARKERS if marker in text)
    assert offenders == [], "use Model.objects.sql(tenant, ...) / .copy(tenant, ...) for plain SQL on tenant data"


def test_the_plain_sql_door_binds_the_tenant_itself(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    keys = ApiKey.objects.sql(tenant_a.tenant, "SELECT name FROM plgapp_apikey WHERE tenant_id = %(tenant)s", {})
    assert sorted(name for (name,) in keys) == sorted(
        ApiKey.objects.for_tenant(tenant_a.tenant).values_list("name", flat=True)
    )
    with pytest.raises(TenantScopeError):
        ApiKey.objects.sql(tenant_a.tenant, "SELECT name FROM plgapp_apikey", {})
    with pytest.raises(TenantScopeError):  # a caller cannot choose the tenant
        ApiKey.objects.sql(
            tenant_a.tenant, "SELECT 1 FROM plgapp_apikey WHERE tenant_id = %(tenant)s", {"tenant": tenant_b.tenant.pk}
        )


def test_the_copy_out_door_binds_the_tenant_itself(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    """Binary COPY of a query's rows: the door binds the tenant as `sql` does, and a caller cannot choose one."""
    statement = "SELECT name FROM plgapp_apikey WHERE tenant_id = %(tenant)s AND name <> %(not)s"
    rows = copy_fields(ApiKey.objects.copy_out(tenant_a.tenant, statement, {"not": "no such key"}))

    assert all(len(row) == 1 for row in rows)
    names = [bytes(row[0]).decode() for row in rows if row[0] is not None]
    assert sorted(names) == sorted(ApiKey.objects.for_tenant(tenant_a.tenant).values_list("name", flat=True))
    assert set(names).isdisjoint(ApiKey.objects.for_tenant(tenant_b.tenant).values_list("name", flat=True))
    with pytest.raises(TenantScopeError):
        ApiKey.objects.copy_out(tenant_a.tenant, "SELECT name FROM plgapp_apikey", {})
    with pytest.raises(TenantScopeError):
        ApiKey.objects.copy_out(tenant_a.tenant, statement, {"tenant": tenant_b.tenant.pk, "not": ""})


def test_the_bulk_set_door_writes_only_the_named_tenants_rows(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    from datetime import UTC, datetime

    from accounts.models import Account

    mine = Account.objects.for_tenant(tenant_a.tenant).create(external_id="m", name="Mine")
    theirs = Account.objects.for_tenant(tenant_b.tenant).create(external_id="t", name="Theirs")
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for row in (mine, theirs):
        row.name, row.properties, row.stage, row.stage_changed_at = (
            "Renamed",
            {"plan": "pro", "n": [1, {"x": None}]},
            None,
            at,
        )

    Account.objects.set_by_pk(tenant_a.tenant, ["name", "properties", "stage", "stage_changed_at"], [mine, theirs])

    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.name, mine.properties, mine.stage, mine.stage_changed_at) == (
        "Renamed", {"plan": "pro", "n": [1, {"x": None}]}, None, at
    )  # fmt: skip
    assert (theirs.name, theirs.properties) == ("Theirs", {})  # named by pk, but another tenant's: untouched


def test_the_copy_door_writes_every_row_to_the_named_tenant(tenant_a: TenantWorld) -> None:
    EndUser.objects.copy(
        tenant_a.tenant,
        ["external_id", "email", "properties", "property_times", "created_at", "updated_at"],
        [("u\t1", None, '{"a": "b\\\\c"}', "{}", now(), now())],
    )

    user = EndUser.objects.for_tenant(tenant_a.tenant).get()
    assert (user.external_id, user.email, user.properties) == ("u\t1", None, {"a": "b\\c"})


@pytest.mark.parametrize("door", ["copy", "insert"])
def test_the_bulk_doors_upsert_within_the_named_tenant_only(
    tenant_a: TenantWorld, tenant_b: TenantWorld, door: str
) -> None:
    write = getattr(DailyRollup.objects, door)
    columns, key = ["account_id", "end_user_id", "name", "day", "count"], ["account_id", "end_user_id", "name", "day"]
    day, name = date(2026, 11, 20), 'o"pe\\n\ted'  # quote, backslash, tab: each door's own escaping
    for world in (tenant_a, tenant_b):
        write(world.tenant, columns, [(1, 0, name, day, 3)])

    write(tenant_a.tenant, columns, [(1, 0, name, day, 5), (2, 0, "x", day, 1)], conflict=key, update=["count"])

    mine = DailyRollup.objects.for_tenant(tenant_a.tenant).order_by("account_id")
    assert list(mine.values_list("account_id", "name", "count")) == [(1, name, 5), (2, "x", 1)]  # replaced, added
    assert DailyRollup.objects.for_tenant(tenant_b.tenant).get().count == 3  # the same key in another tenant


def test_the_insert_door_writes_json_columns_as_json(tenant_a: TenantWorld) -> None:
    properties = {"plan": "pro", "seats": 3, "ratio": 0.5, "tags": ["a", "b"], "nested": {"x": None}}
    EndUser.objects.insert(
        tenant_a.tenant,
        ["external_id", "properties", "property_times", "created_at", "updated_at"],
        [("u1", properties, {}, now(), now())],
    )

    assert EndUser.objects.for_tenant(tenant_a.tenant).get().properties == properties


def test_the_copy_door_raises_djangos_database_errors_not_the_drivers(tenant_a: TenantWorld) -> None:
    # Found by the chaos suite: a COPY cut off by a PostgreSQL restart raised the driver's OperationalError, which
    # the ingestion door did not know as an outage, and answered 500 instead of 503 + Retry-After.
    columns = ["account_id", "end_user_id", "name", "day", "count"]

    with pytest.raises(DataError) as raised:
        DailyRollup.objects.copy(tenant_a.tenant, columns, [(1, 0, "opened", date(2026, 11, 20), "many")])

    assert type(raised.value).__module__ == "django.db.utils"


@pytest.mark.django_db(transaction=True)
def test_a_copy_on_a_connection_the_server_dropped_is_an_operational_error(tenant_a: TenantWorld) -> None:
    columns = ["account_id", "end_user_id", "name", "day", "count"]
    connection.ensure_connection()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    finally:
        other.close()

    try:
        with pytest.raises(OperationalError):
            DailyRollup.objects.copy(tenant_a.tenant, columns, [(1, 0, "opened", date(2026, 11, 20), 1)])
    finally:
        connection.close()


def test_the_copy_door_keeps_existing_rows_when_an_upsert_updates_nothing(tenant_a: TenantWorld) -> None:
    columns, key = ["account_id", "end_user_id", "name", "day", "count"], ["account_id", "end_user_id", "name", "day"]
    day = date(2026, 11, 20)
    DailyRollup.objects.copy(tenant_a.tenant, columns, [(1, 0, "opened", day, 3)])

    DailyRollup.objects.copy(
        tenant_a.tenant, columns, [(1, 0, "opened", day, 5), (2, 0, "opened", day, 1)], conflict=key
    )

    mine = DailyRollup.objects.for_tenant(tenant_a.tenant).order_by("account_id").values_list("account_id", "count")
    assert list(mine) == [(1, 3), (2, 1)]
