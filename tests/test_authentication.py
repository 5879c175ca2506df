"""Key authentication for the three ways SDKs send keys, and what a wrong key gets told."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from plgapp import services
from plgapp.authentication import WriteKeyAuthentication
from plgapp.models import ApiKey
from plgapp.services import api_key_revoke
from tests.conftest import TenantWorld


class IngestProbe(APIView):
    """Stands in for the ingestion endpoints (issue 3), which use WriteKeyAuthentication."""

    authentication_classes = [WriteKeyAuthentication]
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        api_key = request.auth
        assert isinstance(api_key, ApiKey)
        return Response({"tenant": api_key.tenant.slug, "kind": api_key.kind})


def call_probe(**headers: str) -> Response:
    request = APIRequestFactory().post("/probe", {}, format="json", **headers)
    response = IngestProbe.as_view()(request)
    response.render()
    return response


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_write_key_in_x_api_key_authenticates_as_its_tenant(tenant_a: TenantWorld) -> None:
    response = call_probe(HTTP_X_API_KEY=tenant_a.write_key)

    assert response.status_code == 200
    assert response.data == {"tenant": "tenant-a", "kind": "write"}


def test_a_write_key_as_basic_auth_user_authenticates_like_segment_sdks(tenant_a: TenantWorld) -> None:
    response = call_probe(HTTP_AUTHORIZATION=basic(tenant_a.write_key))

    assert response.status_code == 200
    assert response.data["tenant"] == "tenant-a"


def test_a_secret_key_is_refused_on_ingestion_and_told_why(tenant_a: TenantWorld) -> None:
    response = call_probe(HTTP_X_API_KEY=tenant_a.secret_key)

    assert response.status_code == 401
    assert "send data with a write key" in response.data["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authentication credentials were not provided."),
        ({"HTTP_X_API_KEY": "plg_pk_wrong"}, "Invalid or revoked API key."),
        ({"HTTP_X_API_KEY": "sk_live_123"}, "That is not an API key of this service"),
        ({"HTTP_X_API_KEY": ""}, "The API key is empty."),
        ({"HTTP_AUTHORIZATION": "Basic !!!"}, "not valid base64"),
    ],
    ids=["missing", "unknown", "foreign-format", "empty", "bad-basic"],
)
def test_ingestion_without_a_valid_key_is_401_with_a_reason(db: None, headers: dict[str, str], message: str) -> None:
    response = call_probe(**headers)

    assert response.status_code == 401
    assert message in response.data["error"]["message"]
    assert response["WWW-Authenticate"] == 'Basic realm="ingest"'


def test_a_revoked_write_key_is_refused(tenant_a: TenantWorld) -> None:
    key = ApiKey.objects.for_tenant(tenant_a.tenant).get(kind="write")
    api_key_revoke(tenant=tenant_a.tenant, key_id=key.pk)

    assert call_probe(HTTP_X_API_KEY=tenant_a.write_key).status_code == 401


def test_the_management_api_refuses_write_keys_and_says_why(tenant_a: TenantWorld, api_client: APIClient) -> None:
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_a.write_key}")

    response = api_client.get("/api/v1/tenant/")

    assert response.status_code == 401
    assert "write key" in response.json()["error"]["message"]
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_the_management_api_without_credentials_is_401(db: None, api_client: APIClient) -> None:
    response = api_client.get("/api/v1/api-keys/")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_malformed_bearer_header_is_401_not_500(db: None, api_client: APIClient) -> None:
    response = api_client.get("/api/v1/tenant/", HTTP_AUTHORIZATION="Bearer a b")

    assert response.status_code == 401


def test_using_a_key_records_when_it_was_last_used_at_most_once_a_minute(
    tenant_a: TenantWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "_last_marked", {})
    key = ApiKey.objects.for_tenant(tenant_a.tenant).get(kind="write")
    assert key.last_used_at is None

    call_probe(HTTP_X_API_KEY=tenant_a.write_key)
    key.refresh_from_db()
    first = key.last_used_at
    call_probe(HTTP_X_API_KEY=tenant_a.write_key)
    key.refresh_from_db()

    assert first is not None
    assert key.last_used_at == first
    assert timedelta(seconds=60) == services.LAST_USED_RESOLUTION


@pytest.mark.django_db
def test_repeated_failed_sign_ins_lock_the_email_for_a_while_even_with_the_right_password(
    tenant_a: TenantWorld, settings: Any
) -> None:
    from tests.factories import PASSWORD

    settings.LOGIN_FAILURES_PER_EMAIL = 3
    browser = Client()
    for _ in range(3):
        assert browser.post("/login/", {"username": "admin@tenant-a.test", "password": "wrong"}).status_code == 200

    locked = browser.post("/login/", {"username": "ADMIN@tenant-a.test", "password": PASSWORD})

    assert locked.status_code == 429
    assert 0 < int(locked["Retry-After"]) <= settings.LOGIN_LOCK_SECONDS
    assert "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in browser.session
    other = Client().post("/login/", {"username": "someone-else@tenant-a.test", "password": "wrong"})
    assert other.status_code == 200  # another email from the same address is not locked by this one


@pytest.mark.django_db
def test_a_successful_sign_in_clears_the_failures_and_one_address_cannot_try_endless_emails(
    tenant_a: TenantWorld, settings: Any
) -> None:
    from tests.factories import PASSWORD

    settings.LOGIN_FAILURES_PER_EMAIL, settings.LOGIN_FAILURES_PER_ADDRESS = 2, 4
    browser = Client()
    browser.post("/login/", {"username": "admin@tenant-a.test", "password": "wrong"})
    assert browser.post("/login/", {"username": "admin@tenant-a.test", "password": PASSWORD}).status_code == 302
    browser.logout()
    assert browser.post("/login/", {"username": "admin@tenant-a.test", "password": "wrong"}).status_code == 200

    for n in range(3):  # other emails from the same address: the address's budget runs out
        Client().post("/login/", {"username": f"guess{n}@tenant-a.test", "password": "wrong"})

    assert Client().post("/login/", {"username": "new@tenant-a.test", "password": "x"}).status_code == 429
