"""The official client SDKs, unchanged, against the live test server; then read back via the management API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from journyio.account_identified import AccountIdentified
from journyio.client import Client as JournyClient
from journyio.client import Config, Properties
from journyio.events import Event as JournyEvent
from journyio.events import Metadata
from journyio.httpclient import HttpClientRequests
from journyio.results import Success
from journyio.user_identified import UserIdentified
from segment.analytics.client import Client as SegmentClient

from tests.conftest import TenantWorld

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Management:
    def __init__(self, base_url: str, secret_key: str) -> None:
        self.base = f"{base_url}/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {secret_key}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(f"{self.base}{path}", params=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def one(self, path: str, **params: Any) -> Any:
        [item] = self.get(path, **params)["results"]
        return self.get(f"{path}{item['id']}/")


def props(**values: Any) -> Properties:
    properties = Properties()
    for key, value in values.items():
        properties[key] = value
    return properties


def test_the_journy_sdk_sends_everything_and_it_arrives_exactly(
    live_server: Any, tenant_a: TenantWorld, tenant_b: TenantWorld
) -> None:
    client = JournyClient(HttpClientRequests(), Config(tenant_a.write_key, f"{live_server.url}/api/journy"))
    ann = UserIdentified("u-ann", "ann@acme.test")
    bob = UserIdentified.by_email("bob@acme.test")
    acme = AccountIdentified("acc-acme", "acme.test")
    globex = AccountIdentified.by_account_id("acc-globex")

    results = [
        client.get_api_key_details(),
        client.upsert_user(ann, props(first_name="Ann", plan="pro", age=31, beta=True)),
        client.upsert_user(bob, props(first_name="Bob")),
        client.upsert_account(acme, props(name="Acme", stage="Trial", seats=12)),
        client.upsert_account(globex, props(name="Globex")),
        client.add_users_to_account(acme, [ann, bob]),
        client.add_users_to_account(globex, [ann]),
        client.add_event(JournyEvent.for_user_in_account("report_built", ann, acme).with_metadata(_meta(count=3))),
        client.add_event(JournyEvent.for_user("signed_in", bob).happened_at(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))),
        client.add_event(JournyEvent.for_account("invoice_paid", globex)),
        client.link(ann, "device-123"),
        client.remove_users_from_account(globex, [ann]),
    ]

    assert all(isinstance(result, Success) for result in results), results
    assert results[0].data.permissions == ["TrackData", "ReadApiKey"]
    assert all(result.calls_remaining >= 0 for result in results)

    api = Management(live_server.url, tenant_a.secret_key)
    account = api.one("/accounts/", q="acc-acme")
    assert (account["name"], account["stage"], account["domain"]) == ("Acme", "Trial", "acme.test")
    assert account["properties"] == {"name": "Acme", "seats": 12}
    assert {m["user"]["email"] for m in account["memberships"]} == {"ann@acme.test", "bob@acme.test"}
    user = api.one("/users/", q="u-ann")
    assert user["properties"] == {"first_name": "Ann", "plan": "pro", "age": 31, "beta": True}
    left = {m["account"]["external_id"]: m["left_at"] for m in user["memberships"]}
    assert left["acc-acme"] is None
    assert left["acc-globex"] is not None
    events = api.get("/events/", user=user["id"])["results"]
    assert [(e["name"], e["account"], e["properties"]) for e in events] == [
        ("report_built", account["id"], {"count": 3})
    ]
    bob_events = api.get("/events/", name="signed_in")["results"]
    assert bob_events[0]["occurred_at"] == "2026-01-02T03:04:05Z"
    catalogue = {(p["entity_type"], p["key"]): p["type"] for p in api.get("/properties/", limit=100)["results"]}
    assert catalogue[("user", "age")] == "number"
    assert catalogue[("account", "seats")] == "number"
    assert Management(live_server.url, tenant_b.secret_key).get("/accounts/")["results"] == []


def _meta(**values: Any) -> Metadata:
    metadata = Metadata()
    for key, value in values.items():
        metadata[key] = value
    return metadata


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_the_segment_sdk_sends_identify_group_track_alias_and_it_arrives_exactly(
    live_server: Any, tenant_a: TenantWorld, gzip: bool
) -> None:
    errors: list[Any] = []
    client = SegmentClient(
        tenant_a.write_key, host=f"{live_server.url}/api/segment", sync_mode=True, gzip=gzip,
        on_error=lambda error, batch: errors.append(error), max_retries=0,
    )  # fmt: skip

    client.identify("u-1", {"email": "Carla@Initech.test", "name": "Carla", "logins": 4}, anonymous_id="anon-1")
    client.group("u-1", "g-initech", {"name": "Initech", "website": "https://www.initech.test/home", "plan": "pro"},
                 context={"membership": {"role": "Owner"}})  # fmt: skip
    client.group("u-2", "g-initech", {"name": "Initech"}, context={"membership": {"role": "Member"}})
    client.track("u-1", "Report Built", {"pages": 3, "format": {"type": "pdf"}}, context={"groupId": "g-initech"},
                 message_id="msg-1")  # fmt: skip
    client.track("u-1", "Report Built", {"pages": 3}, message_id="msg-1")  # a retry: deduped
    client.track(event="Visited Pricing", anonymous_id="anon-2", properties={"plan": "pro"})
    client.alias("anon-2", "u-1")
    client.flush()

    assert errors == []
    api = Management(live_server.url, tenant_a.secret_key)
    user = api.one("/users/", q="u-1")
    assert user["email"] == "carla@initech.test"
    assert user["properties"] == {"name": "Carla", "logins": 4}
    account = api.one("/accounts/", q="g-initech")
    assert (account["name"], account["domain"]) == ("Initech", "initech.test")
    roles = {m["user"]["external_id"]: m["properties"]["role"] for m in account["memberships"]}
    assert roles == {"u-1": "Owner", "u-2": "Member"}
    events = api.get("/events/", user=user["id"])["results"]
    names = sorted((e["name"], e["account"]) for e in events)
    assert names == [("Report Built", account["id"]), ("Visited Pricing", None)]
    built = next(e for e in events if e["name"] == "Report Built")
    assert built["properties"] == {"pages": 3, "format.type": "pdf"}
    assert built["message_id"] == "msg-1"
