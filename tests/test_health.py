from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.test import Client, override_settings


@pytest.fixture
def no_database_connection() -> None:
    """Liveness must not touch the database, and these tests have no access to it: close what an earlier test in
    this process left open, or the request middleware would clear that connection's tenant first."""
    connection.close()


@pytest.mark.usefixtures("no_database_connection")
def test_healthz_says_the_process_is_alive() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.usefixtures("no_database_connection")
def test_a_request_id_with_a_line_break_is_replaced_not_echoed() -> None:
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="abcdefgh\n")

    assert response.status_code == 200
    assert response["X-Request-ID"] != "abcdefgh\n"


def test_readyz_is_200_when_postgres_and_redis_answer(db: None) -> None:
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_readyz_is_503_naming_redis_when_redis_is_down(db: None) -> None:
    response = Client().get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "unavailable (ConnectionError)"  # details go to the log, not the public


def test_readyz_is_503_naming_the_database_when_it_is_down(db: None) -> None:
    with mock.patch.object(connection, "cursor", side_effect=OperationalError("connection refused")):
        response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unavailable (OperationalError)"
    assert response.json()["checks"]["redis"] == "ok"
