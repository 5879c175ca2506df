"""PostgreSQL row-level security, the second wall behind the tenant door (plgapp/rls.py, ADR 0013).

These prove the wall on its own: with the ORM's tenant filter taken away, the database still shows and accepts only
the rows of the tenant the request or task works for."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.http import StreamingHttpResponse
from django.test import Client

from accounts.models import Account
from playbooks.tasks import run_execute_task, sweep_dispatch
from plgapp import rls
from plgapp.api_base import TenantScopedAPIView
from plgapp.celery import _task_database_context
from plgapp.models import TenantScopedModel
from scoring.tasks import model_train_task
from tests.conftest import TenantWorld
from tests.test_ingest_journy import Journy
from tests.test_pqls import scored

pytestmark = pytest.mark.django_db


def _one(sql: str, params: list[Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchone()[0]


@pytest.fixture
def two_tenants(tenant_a: TenantWorld, tenant_b: TenantWorld) -> tuple[TenantWorld, TenantWorld]:
    for world in (tenant_a, tenant_b):
        journy = Journy(world)
        for n in range(3):
            response = journy.upsert_account({"accountId": f"{world.slug}-{n}"}, {"name": f"{world.slug} {n}"})
            assert response.status_code == 201, response.content
    return tenant_a, tenant_b


def test_every_tenant_table_forces_row_level_security_with_the_tenant_policy() -> None:
    tables = rls.tenant_tables(connection)
    declared = {
        model._meta.db_table
        for model in apps.get_models()
        if issubclass(model, TenantScopedModel) and model._meta.managed and not model._meta.proxy
    }
    assert declared <= set(tables), "every tenant-scoped model's table has a tenant_id column"
    assert len(tables) >= 18
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) AND c.relrowsecurity AND c.relforcerowsecurity",
            [tables],
        )
        forced = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT tablename, array_agg(policyname) FROM pg_policies WHERE policyname LIKE %s GROUP BY tablename",
            [f"{rls.POLICY_PREFIX}%"],
        )
        policies = dict(cursor.fetchall())
    assert forced == set(tables)
    assert policies == {table: [rls.POLICY_NAME] for table in tables}  # the current version only, on every table


def test_the_policy_reads_the_settings_once_per_query_not_once_per_row(tenant_a: TenantWorld) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN SELECT count(*) FROM {Account._meta.db_table} WHERE name <> ''")  # noqa: S608
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "InitPlan" in plan, plan  # v1 compared each row with current_setting() called for that row


def test_the_application_connects_as_a_role_that_owns_nothing_and_cannot_bypass_the_policies() -> None:
    role = _one("SELECT current_user")
    assert role == settings.DATABASE_APP_ROLE
    assert _one("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user") is False
    owners = _one(
        "SELECT array_agg(DISTINCT tableowner) FROM pg_tables WHERE tablename = ANY(%s)",
        [rls.tenant_tables(connection)],
    )
    assert owners == [settings.DATABASE_OWNER["USER"]]
    assert role not in owners
    with pytest.raises(DatabaseError, match="must be owner"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {Account._meta.db_table} DISABLE ROW LEVEL SECURITY")


def test_an_unscoped_query_sees_only_the_tenant_of_the_connection(two_tenants: tuple[TenantWorld, TenantWorld]) -> None:
    a, b = two_tenants
    table = Account._meta.db_table
    with rls.tenant(b.tenant.pk):
        assert {row.tenant_id for row in Account.objects.unscoped().all()} == {b.tenant.pk}
        assert _one(f"SELECT count(*) FROM {table}") == 3  # noqa: S608 - a model's table
        assert _one(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", [a.tenant.pk]) == 0  # noqa: S608
        # Nor can it change A's rows, or write a row into A.
        assert Account.objects.unscoped().filter(tenant_id=a.tenant.pk).update(name="stolen") == 0
        assert Account.objects.unscoped().filter(tenant_id=a.tenant.pk).delete()[0] == 0
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            Account.objects.unscoped().create(tenant_id=a.tenant.pk, external_id="planted", name="planted")
    with rls.tenant(a.tenant.pk):
        assert sorted(Account.objects.unscoped().values_list("name", flat=True)) == ["tenant-a 0", "tenant-a 1",
                                                                                      "tenant-a 2"]  # fmt: skip


def test_a_connection_that_names_no_tenant_sees_no_tenant_rows(two_tenants: tuple[TenantWorld, TenantWorld]) -> None:
    previous = rls.swap(rls.NO_TENANT)
    try:
        assert Account.objects.unscoped().count() == 0
        assert _one(f"SELECT count(*) FROM {Account._meta.db_table}") == 0  # noqa: S608 - a model's table
    finally:
        rls.restore(previous)
    with rls.all_tenants():
        assert Account.objects.unscoped().count() == 6


def test_requests_hold_even_when_the_door_forgets_the_tenant(
    two_tenants: tuple[TenantWorld, TenantWorld], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The management API's base view made to forget its tenant filter: B's key still reads only B's accounts,
    and A's account is still 'not found' for B."""
    a, b = two_tenants
    monkeypatch.setattr(
        TenantScopedAPIView, "get_queryset", lambda self: self.scoped_model.objects.unscoped().order_by("id")
    )
    ids = {world.slug: {str(pk) for pk in Account.objects.for_tenant(world.tenant).values_list("pk", flat=True)}
           for world in (a, b)}  # fmt: skip
    client = Client(HTTP_AUTHORIZATION=f"Bearer {b.secret_key}")
    listed = client.get("/api/v1/accounts/?limit=100")
    assert listed.status_code == 200
    assert {str(row["id"]) for row in listed.json()["results"]} == ids[b.slug]
    for a_id in ids[a.slug]:
        assert client.get(f"/api/v1/accounts/{a_id}/").status_code == 404
    # and A's own key, through the same forgetful view, sees A's
    a_client = Client(HTTP_AUTHORIZATION=f"Bearer {a.secret_key}")
    assert {str(row["id"]) for row in a_client.get("/api/v1/accounts/").json()["results"]} == ids[a.slug]


def test_a_request_leaves_no_tenant_on_its_connection(two_tenants: tuple[TenantWorld, TenantWorld]) -> None:
    a, _b = two_tenants
    before = rls.swap(rls.NO_TENANT)  # as a production connection starts a request
    try:
        response = Client(HTTP_AUTHORIZATION=f"Bearer {a.secret_key}").get("/api/v1/accounts/")
        assert response.status_code == 200
        assert rls.swap(rls.NO_TENANT) == rls.NO_TENANT
        # a refused key leaves nothing behind either
        assert Client(HTTP_AUTHORIZATION="Bearer plg_sk_" + "x" * 40).get("/api/v1/accounts/").status_code == 401
        assert rls.swap(rls.NO_TENANT) == rls.NO_TENANT
    finally:
        rls.restore(before)


def test_tasks_run_with_their_tenant_or_as_the_system() -> None:
    assert _task_database_context(run_execute_task, (7, 42), {}) == rls.tenant_context(7)
    assert _task_database_context(model_train_task, (), {"tenant_id": 9, "version_id": 1}) == rls.tenant_context(9)
    assert _task_database_context(sweep_dispatch, (), {}) == rls.ALL_TENANTS
    # a tenant task without a usable tenant sees nothing rather than everything
    assert _task_database_context(run_execute_task, ("7; DROP", 42), {}) == rls.NO_TENANT
    assert _task_database_context(run_execute_task, (), {}) == rls.NO_TENANT


def test_the_deploy_check_warns_when_the_application_role_escapes_row_level_security() -> None:
    from plgapp.checks import database_role_is_subject_to_row_level_security, role_warnings

    assert database_role_is_subject_to_row_level_security() == []  # this suite's role is subject to it
    assert [warning.id for warning in role_warnings("postgres", True, False)] == ["plgapp.W001"]
    assert [warning.id for warning in role_warnings("etl", False, True)] == ["plgapp.W001"]


def test_a_streamed_csv_is_read_with_the_tenant_of_its_request(two_tenants: tuple[TenantWorld, TenantWorld]) -> None:
    """The body of a streamed answer is produced after the request cleared its tenant (as in production)."""
    a, _b = two_tenants
    for n in range(3):
        scored(a, f"{a.slug}-streamed-{n}", 0.5 + n / 10)
    before = rls.swap(rls.NO_TENANT)
    try:
        response = Client(HTTP_AUTHORIZATION=f"Bearer {a.secret_key}").get("/api/v1/pqls/?format=csv")
        assert response.status_code == 200
        body = b"".join(cast(StreamingHttpResponse, response).streaming_content).decode()  # type: ignore[arg-type]
    finally:
        rls.restore(before)
    assert all(f"{a.slug}-streamed-{n}" in body for n in range(3)), body
