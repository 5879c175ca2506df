"""An API answer, and the data it was rendered from, is freed as soon as it is sent — by reference counting, not
by the cyclic collector at some later request (plgapp.middleware.ReleaseRenderedResponseMiddleware)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import RequestFactory
from django.test.client import ClientHandler
from rest_framework.response import Response

from accounts.models import Account
from tests.conftest import TenantWorld
from tests.test_pqls import scored


@pytest.fixture
def handler(db: None) -> ClientHandler:
    """Django's handler as a WSGI server drives it, made before the collector is watched (its middleware chain
    is built once per process in a server)."""
    built = ClientHandler()
    built.load_middleware()
    return built


@pytest.fixture
def cyclic_garbage(handler: ClientHandler) -> Iterator[list[Any]]:
    """What the collector finds unreachable at `collect_into`: it is off meanwhile, so nothing is freed behind
    the test's back, and DEBUG_SAVEALL keeps what it finds for the test to look at."""
    found: list[Any] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def collect_into(found: list[Any]) -> None:
    gc.collect()
    found.extend(gc.garbage)


def served(handler: ClientHandler, path: str, secret_key: str) -> int:
    """GET through the handler (not the test client, which ties each answer into a cycle of its own:
    `response.json`); the answer is dropped on return, as a server drops it once it is sent."""
    environ = RequestFactory().get(path, HTTP_AUTHORIZATION=f"Bearer {secret_key}").environ
    return int(handler(environ).status_code)


def answer_rows(garbage: list[Any]) -> list[dict[str, Any]]:
    return [thing for thing in garbage if isinstance(thing, dict) and "conversion" in thing and "users" in thing]


def test_a_pql_page_and_its_rows_are_freed_once_sent(
    tenant_a: TenantWorld, handler: ClientHandler, cyclic_garbage: list[Any]
) -> None:
    for n in range(10):
        scored(tenant_a, f"trial-{n}", 0.5 + n / 100, users=(
            (f"owner{n}@trial-{n}.test", "Owner", 0.9, 0.8), (f"member{n}@trial-{n}.test", "Member", 0.4, 0.2),
        ))  # fmt: skip

    status = served(handler, "/api/v1/pqls/?limit=10", tenant_a.secret_key)
    collect_into(cyclic_garbage)

    assert status == 200
    assert not [thing for thing in cyclic_garbage if isinstance(thing, Response)]
    assert answer_rows(cyclic_garbage) == []


def test_a_serialized_page_and_its_instances_are_freed_once_sent(
    tenant_a: TenantWorld, handler: ClientHandler, cyclic_garbage: list[Any]
) -> None:
    Account.objects.for_tenant(tenant_a.tenant).bulk_create(
        Account(external_id=f"acct-{n}", name=f"Account {n}", properties={"plan": "pro"}) for n in range(30)
    )

    status = served(handler, "/api/v1/accounts/?limit=30", tenant_a.secret_key)
    collect_into(cyclic_garbage)

    assert status == 200
    assert not [thing for thing in cyclic_garbage if isinstance(thing, Response | Account)]
    assert not [thing for thing in cyclic_garbage if isinstance(thing, dict) and "external_id" in thing]


def test_an_error_answer_is_freed_too(tenant_a: TenantWorld, handler: ClientHandler, cyclic_garbage: list[Any]) -> None:
    status = served(handler, "/api/v1/accounts/999999999/", tenant_a.secret_key)
    collect_into(cyclic_garbage)

    assert status == 404
    assert not [thing for thing in cyclic_garbage if isinstance(thing, Response)]
