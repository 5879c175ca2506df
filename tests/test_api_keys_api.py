"""Management API for API keys: /api/v1/api-keys/ (secret key) and /t/<slug>/api/v1/api-keys/ (session)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from plgapp.keys import KeyKind, hash_key
from plgapp.models import ApiKey
from plgapp.roles import Role
from plgapp.services import api_key_create
from tests.conftest import TenantWorld

SecretClient = Callable[[TenantWorld], APIClient]


def test_a_secret_key_lists_its_tenants_keys_by_prefix_never_the_key(
    tenant_a: TenantWorld, secret_client: SecretClient
) -> None:
    response = secret_client(tenant_a).get("/api/v1/api-keys/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    assert {item["name"] for item in body["results"]} == {"tenant-a write", "tenant-a secret"}
    assert all("key" not in item and "hash" not in item for item in body["results"])
    assert all(item["prefix"].startswith(("plg_pk_", "plg_sk_")) for item in body["results"])
    assert tenant_a.secret_key not in response.content.decode()


def test_creating_a_key_returns_it_once_and_stores_only_its_hash(
    tenant_a: TenantWorld, secret_client: SecretClient
) -> None:
    client = secret_client(tenant_a)

    response = client.post("/api/v1/api-keys/", {"name": "Backend", "kind": "write"}, format="json")

    assert response.status_code == 201
    created = response.json()
    assert created["key"].startswith("plg_pk_")
    stored = ApiKey.objects.for_tenant(tenant_a.tenant).get(pk=created["id"])
    assert stored.hash == hash_key(created["key"])
    assert created["key"] not in {stored.prefix, stored.hash, stored.name}
    again = client.get(f"/api/v1/api-keys/{created['id']}/").json()
    assert "key" not in again
    assert again["prefix"] == created["key"][: len(again["prefix"])]


def test_a_revoked_key_stops_working_at_once(tenant_a: TenantWorld, secret_client: SecretClient) -> None:
    admin = secret_client(tenant_a)
    created = admin.post("/api/v1/api-keys/", {"name": "temp", "kind": "secret"}, format="json").json()
    temp = APIClient()
    temp.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert temp.get("/api/v1/tenant/").status_code == 200

    revoked = admin.post(f"/api/v1/api-keys/{created['id']}/revoke/")

    assert revoked.status_code == 200
    assert revoked.json()["is_active"] is False
    assert revoked.json()["revoked_at"] is not None
    denied = temp.get("/api/v1/tenant/")
    assert denied.status_code == 401
    assert denied.json()["error"]["message"] == "Invalid or revoked API key."


def test_revoking_twice_keeps_the_first_revocation_time(tenant_a: TenantWorld, secret_client: SecretClient) -> None:
    client = secret_client(tenant_a)
    key = api_key_create(tenant=tenant_a.tenant, kind=KeyKind.WRITE, name="x").api_key

    first = client.post(f"/api/v1/api-keys/{key.pk}/revoke/").json()
    second = client.post(f"/api/v1/api-keys/{key.pk}/revoke/").json()

    assert first["revoked_at"] == second["revoked_at"]


def test_a_key_of_b_sees_nothing_of_a(
    tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: SecretClient
) -> None:
    client_b = secret_client(tenant_b)
    key_of_a = ApiKey.objects.for_tenant(tenant_a.tenant).first()
    assert key_of_a is not None

    listing = client_b.get("/api/v1/api-keys/").json()
    detail = client_b.get(f"/api/v1/api-keys/{key_of_a.pk}/")
    revoke = client_b.post(f"/api/v1/api-keys/{key_of_a.pk}/revoke/")
    via_a_url = client_b.get(f"/t/{tenant_a.slug}/api/v1/api-keys/")
    tenant = client_b.get("/api/v1/tenant/").json()

    assert {item["name"] for item in listing["results"]} == {"tenant-b write", "tenant-b secret"}
    assert detail.status_code == 404
    assert revoke.status_code == 404
    assert via_a_url.status_code == 404
    assert tenant["slug"] == tenant_b.slug
    key_of_a.refresh_from_db()
    assert key_of_a.revoked_at is None


def test_another_tenants_id_answers_exactly_like_a_missing_one(
    tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: SecretClient
) -> None:
    key_of_a = ApiKey.objects.for_tenant(tenant_a.tenant).first()
    assert key_of_a is not None
    client_b = secret_client(tenant_b)

    other = client_b.get(f"/api/v1/api-keys/{key_of_a.pk}/")
    missing = client_b.get("/api/v1/api-keys/00000000-0000-0000-0000-000000000000/")
    malformed = client_b.get("/api/v1/api-keys/not-a-uuid/")

    assert other.status_code == missing.status_code == malformed.status_code == 404
    assert other.json() == missing.json() == {"error": {"code": "not_found", "message": "Not found."}}


def test_session_users_reach_the_api_under_their_tenants_url(
    tenant_a: TenantWorld, tenant_b: TenantWorld, member_client: Callable[..., Client]
) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN)

    own = client.get(f"/t/{tenant_a.slug}/api/v1/api-keys/")
    other = client.get(f"/t/{tenant_b.slug}/api/v1/api-keys/")
    unknown = client.get("/t/no-such-tenant/api/v1/api-keys/")
    no_tenant_in_url = client.get("/api/v1/api-keys/")

    assert own.status_code == 200
    assert {item["name"] for item in own.json()["results"]} == {"tenant-a write", "tenant-a secret"}
    assert other.status_code == unknown.status_code == 404
    assert no_tenant_in_url.status_code == 403
    assert "/t/<slug>/api/v1/" in no_tenant_in_url.json()["error"]["message"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SALES, Role.MARKETER])
def test_only_admins_manage_keys(tenant_a: TenantWorld, member_client: Callable[..., Client], role: Role) -> None:
    client = member_client(tenant_a.tenant, role)

    listing = client.get(f"/t/{tenant_a.slug}/api/v1/api-keys/")
    create = client.post(
        f"/t/{tenant_a.slug}/api/v1/api-keys/", {"name": "x", "kind": "secret"}, content_type="application/json"
    )

    assert listing.status_code == create.status_code == 403
    assert "manage_tenant" in create.json()["error"]["message"]
    assert ApiKey.objects.for_tenant(tenant_a.tenant).count() == 2


def test_a_viewer_can_read_the_tenant_but_not_write(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    client = member_client(tenant_a.tenant, Role.VIEWER)

    assert client.get(f"/t/{tenant_a.slug}/api/v1/tenant/").json()["slug"] == tenant_a.slug


def test_session_writes_need_the_csrf_token(tenant_a: TenantWorld, member_client: Callable[..., Client]) -> None:
    client = member_client(tenant_a.tenant, Role.ADMIN, enforce_csrf=True)

    response = client.post(
        f"/t/{tenant_a.slug}/api/v1/api-keys/", {"name": "x", "kind": "write"}, content_type="application/json"
    )

    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"kind": "write"}, "name"),
        ({"name": "x", "kind": "admin"}, "kind"),
        ({"name": "", "kind": "write"}, "name"),
        ({"name": "x" * 101, "kind": "write"}, "name"),
    ],
)
def test_bad_input_gets_a_400_naming_the_field_and_creates_nothing(
    tenant_a: TenantWorld, secret_client: SecretClient, payload: dict[str, str], field: str
) -> None:
    response = secret_client(tenant_a).post("/api/v1/api-keys/", payload, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert error["message"].startswith(f"{field}:")
    assert ApiKey.objects.for_tenant(tenant_a.tenant).count() == 2


def test_malformed_json_is_a_400_not_a_500(tenant_a: TenantWorld, secret_client: SecretClient) -> None:
    response = secret_client(tenant_a).generic(
        "POST", "/api/v1/api-keys/", '{"name": "x", "kind": ', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_lists_page_with_a_cursor_and_a_bounded_limit(tenant_a: TenantWorld, secret_client: SecretClient) -> None:
    client = secret_client(tenant_a)
    for n in range(4):
        api_key_create(tenant=tenant_a.tenant, kind=KeyKind.WRITE, name=f"k{n}")

    first = client.get("/api/v1/api-keys/?limit=3").json()
    second = client.get(first["next"]).json()
    too_big = client.get("/api/v1/api-keys/?limit=501")

    assert len(first["results"]) == 3
    assert first["previous"] is None
    assert len(second["results"]) == 3
    assert second["next"] is None
    assert {i["id"] for i in first["results"]}.isdisjoint({i["id"] for i in second["results"]})
    assert too_big.status_code == 400
    assert "limit" in too_big.json()["error"]["fields"]
    assert client.get("/api/v1/api-keys/?limit=%C2%B2").status_code == 400  # "²" is a digit to str.isdigit


def test_lists_filter_by_kind_and_activity(tenant_a: TenantWorld, secret_client: SecretClient) -> None:
    client = secret_client(tenant_a)
    old = api_key_create(tenant=tenant_a.tenant, kind=KeyKind.WRITE, name="old").api_key
    client.post(f"/api/v1/api-keys/{old.pk}/revoke/")

    writes = client.get("/api/v1/api-keys/?kind=write").json()["results"]
    active_writes = client.get("/api/v1/api-keys/?kind=write&is_active=true").json()["results"]

    assert {k["name"] for k in writes} == {"tenant-a write", "old"}
    assert {k["name"] for k in active_writes} == {"tenant-a write"}


def test_listing_keys_takes_a_fixed_number_of_queries(
    tenant_a: TenantWorld, secret_client: SecretClient, django_assert_max_num_queries: Any
) -> None:
    client = secret_client(tenant_a)
    for n in range(20):
        api_key_create(tenant=tenant_a.tenant, kind=KeyKind.WRITE, name=f"k{n}", created_by=tenant_a.admin)

    # key lookup, last-used mark, the page (with creators), and the request savepoint + release; then 2 of this
    # suite's: the request middleware clears and restores the test's all-tenants database session (plgapp/rls.py)
    with django_assert_max_num_queries(7):
        response = client.get("/api/v1/api-keys/?limit=100")

    assert len(response.json()["results"]) == 22
