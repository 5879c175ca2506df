"""The Segment-compatible door: auth variants, message mapping, errors, isolation; and concurrent writers."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest import mock

import pytest
import requests
from django.db import OperationalError
from django.test import Client

from accounts.models import Account, DeviceLink, EndUser, Membership
from signals.models import Event
from tests.conftest import TenantWorld


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def post(path: str, body: Any, **headers: Any) -> Any:
    return Client().post(f"/api/segment/v1/{path}", json.dumps(body), content_type="application/json", **headers)


def test_the_write_key_may_come_as_basic_auth_or_in_the_body(tenant_a: TenantWorld) -> None:
    by_header = post("track", {"userId": "u1", "event": "a"}, HTTP_AUTHORIZATION=basic(tenant_a.write_key))
    by_body = post("track", {"userId": "u1", "event": "b", "writeKey": tenant_a.write_key})
    without = post("track", {"userId": "u1", "event": "c"})

    assert (by_header.status_code, by_body.status_code) == (200, 200)
    assert by_header.json()["success"] is True
    assert without.status_code == 401
    assert set(without.json()) >= {"code", "message"}
    assert sorted(Event.objects.for_tenant(tenant_a.tenant).values_list("name", flat=True)) == ["a", "b"]


def test_identify_with_an_anonymous_id_links_the_device(tenant_a: TenantWorld) -> None:
    auth = basic(tenant_a.write_key)
    post("track", {"anonymousId": "anon-9", "event": "Visited"}, HTTP_AUTHORIZATION=auth)

    post("identify", {"userId": "u1", "anonymousId": "anon-9", "traits": {"email": "X@Y.test", "plan": "pro"}},
         HTTP_AUTHORIZATION=auth)  # fmt: skip

    user = EndUser.objects.for_tenant(tenant_a.tenant).get()
    assert (user.external_id, user.email, user.properties) == ("u1", "x@y.test", {"plan": "pro"})
    assert DeviceLink.objects.for_tenant(tenant_a.tenant).get().device_id == "anon-9"
    assert Event.objects.for_tenant(tenant_a.tenant).get().end_user_id == user.pk


def test_group_upserts_the_account_and_the_membership_with_its_role(tenant_a: TenantWorld) -> None:
    response = post(
        "group",
        {"userId": "u1", "groupId": "g1", "traits": {"name": "Initech", "website": "http://initech.test/about"},
         "context": {"membership": {"role": "Admin"}}},
        HTTP_AUTHORIZATION=basic(tenant_a.write_key),
    )  # fmt: skip

    assert response.status_code == 200
    account = Account.objects.for_tenant(tenant_a.tenant).get()
    assert (account.external_id, account.domain, account.name) == ("g1", "initech.test", "Initech")
    assert Membership.objects.for_tenant(tenant_a.tenant).get().properties == {"role": "Admin"}


def test_a_batch_stores_good_messages_and_lists_bad_ones(tenant_a: TenantWorld) -> None:
    response = post(
        "batch",
        {"batch": [
            {"type": "track", "userId": "u1", "event": "ok", "messageId": "m1"},
            {"type": "track", "event": "nobody"},
            {"type": "track", "userId": "u1", "event": "lists", "properties": {"items": ["a", "b"]}},
            {"type": "unknown"},
            {"type": "track", "userId": "u1", "event": "ok", "messageId": "m1"},
        ]},
        HTTP_AUTHORIZATION=basic(tenant_a.write_key),
    )  # fmt: skip

    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [item["index"] for item in body["rejected"]] == [1, 2, 3]
    assert Event.objects.for_tenant(tenant_a.tenant).count() == 1  # m1 twice is one event


def test_a_message_that_cannot_be_stored_is_400_with_a_code(tenant_a: TenantWorld) -> None:
    response = post("identify", {"traits": {"plan": "pro"}}, HTTP_AUTHORIZATION=basic(tenant_a.write_key))

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert "userId" in response.json()["message"]


def test_nul_characters_are_a_clear_400_on_the_segment_door_too(tenant_a: TenantWorld) -> None:
    auth = basic(tenant_a.write_key)

    single = post("track", {"userId": "u1", "event": "x", "properties": {"a\u0000b": 1}}, HTTP_AUTHORIZATION=auth)
    batch = post(
        "batch",
        {"batch": [{"type": "identify", "userId": "u1", "traits": {"tags": ["ok", "n\u0000"]}},
                   {"type": "track", "userId": "u1", "event": "kept"}]},
        HTTP_AUTHORIZATION=auth,
    )  # fmt: skip

    assert single.status_code == 400
    assert single.json()["message"] == "properties.a\\u0000b: must not contain NUL characters (\\u0000)"
    assert batch.status_code == 200
    assert batch.json()["rejected"][0]["fields"] == {"traits.tags.1": "must not contain NUL characters (\\u0000)"}
    assert list(Event.objects.for_tenant(tenant_a.tenant).values_list("name", flat=True)) == ["kept"]


def test_an_unsupported_content_encoding_is_415(tenant_a: TenantWorld) -> None:
    response = post("track", {"userId": "u", "event": "e"}, HTTP_AUTHORIZATION=basic(tenant_a.write_key),
                    HTTP_CONTENT_ENCODING="br")  # fmt: skip

    assert response.status_code == 415


def test_a_database_outage_is_503_on_the_segment_door_too(tenant_a: TenantWorld) -> None:
    with mock.patch("signals.api_segment.calls_ingest", side_effect=OperationalError("gone")):
        response = post("track", {"userId": "u", "event": "e"}, HTTP_AUTHORIZATION=basic(tenant_a.write_key))

    assert response.status_code == 503
    assert response["Retry-After"] == "5"


def test_a_segment_write_key_only_writes_its_own_tenant(tenant_a: TenantWorld, tenant_b: TenantWorld) -> None:
    post("identify", {"userId": "u1", "traits": {"plan": "a"}}, HTTP_AUTHORIZATION=basic(tenant_a.write_key))
    post("identify", {"userId": "u1", "traits": {"plan": "b"}}, HTTP_AUTHORIZATION=basic(tenant_b.write_key))

    assert EndUser.objects.for_tenant(tenant_a.tenant).get().properties == {"plan": "a"}
    assert EndUser.objects.for_tenant(tenant_b.tenant).get().properties == {"plan": "b"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_creating_the_same_user_make_one_record(live_server: Any, tenant_a: TenantWorld) -> None:
    def send(n: int) -> int:
        identification = {"user": {"userId": "same", "email": "same@x.test"}, "account": {"accountId": "acc"}}
        body: dict[str, Any] = {"calls": [{"type": "track", "identification": identification, "name": f"e{n}"}]}
        response = requests.post(
            f"{live_server.url}/api/journy/batch", json=body, headers={"x-api-key": tenant_a.write_key}, timeout=30
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(send, range(16)))

    assert codes == [200] * 16
    assert EndUser.objects.for_tenant(tenant_a.tenant).count() == 1
    assert Account.objects.for_tenant(tenant_a.tenant).count() == 1
    assert Event.objects.for_tenant(tenant_a.tenant).count() == 16
