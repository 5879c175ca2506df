"""While PostgreSQL is unreachable the management API and the pages answer 503 with Retry-After, never 500
(issue 8); ingestion already does (tests/test_ingest_journy.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import InterfaceError, OperationalError, connection, connections
from django.test import Client
from rest_framework.test import APIClient

from plgapp.roles import Role
from tests.conftest import TenantWorld


@pytest.mark.django_db
@pytest.mark.parametrize("error", [OperationalError("server closed the connection unexpectedly"),
                                   InterfaceError("connection already closed")])  # fmt: skip
def test_the_api_and_the_pages_answer_503_with_retry_after_when_the_database_is_gone(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient],
    member_client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch, error: Exception,
) -> None:  # fmt: skip
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise error

    api, rep = secret_client(tenant_a), member_client(tenant_a.tenant, Role.SALES)
    monkeypatch.setattr("accounts.api.AccountViewSet.get_queryset", unavailable)
    monkeypatch.setattr("scoring.views.pql_page", unavailable)

    from_api = api.get("/api/v1/accounts/")
    from_page = rep.get(f"/t/{tenant_a.slug}/pqls/")

    assert from_api.status_code == 503
    assert from_api["Retry-After"] == "5"
    assert from_api.json()["error"]["code"] == "unavailable"
    assert from_page.status_code == 503
    assert from_page["Retry-After"] == "5"
    assert "Back in a moment" in from_page.content.decode()


@pytest.mark.django_db
def test_other_errors_are_not_disguised_as_an_outage(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr("accounts.api.AccountViewSet.get_queryset", bug)
    client = secret_client(tenant_a)
    client.raise_request_exception = False

    assert client.get("/api/v1/accounts/").status_code == 500


@pytest.mark.django_db(transaction=True)
def test_a_healthy_connection_is_checked_without_a_query() -> None:
    connection.ensure_connection()
    opened: list[object] = []

    class Watched:  # the driver's connection, noting every cursor opened on it
        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def cursor(self, *args: Any) -> Any:
            opened.append(args)
            return self.real.cursor(*args)

    wrapper = connections["default"]
    real = wrapper.connection
    wrapper.connection = Watched(real)
    try:
        usable = wrapper.is_usable()
    finally:
        wrapper.connection = real

    assert usable
    assert opened == []


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_is_found_unusable_and_replaced() -> None:
    connection.ensure_connection()
    dropped_pid = connection.connection.info.backend_pid
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [dropped_pid])
    finally:
        other.close()
    time.sleep(0.2)  # the server's goodbye reaches the socket

    assert not connection.is_usable()
    connection.health_check_done = False  # type: ignore[attr-defined]  # as each request starts (close_old_connections)
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:  # a new connection: the query works
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != dropped_pid
