"""The journy.io-compatible ingestion API: identities, properties, memberships, history, errors."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any
from unittest import mock

import kombu.exceptions
import pytest
from django.db import IntegrityError, OperationalError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.identity import Resolver
from accounts.models import (
    Account,
    DeviceLink,
    DirtyEntity,
    EndUser,
    Membership,
    PropertyChange,
    PropertyDefinition,
    StageChange,
)
from signals import ratelimit
from signals.models import Event
from signals.tasks import dirty_entities_process_task
from tests.conftest import TenantWorld


class Journy:
    """A client speaking the journy.io wire format with a tenant's write key."""

    def __init__(self, world: TenantWorld, key: str | None = None) -> None:
        self.world = world
        self.client = Client(HTTP_X_API_KEY=key or world.write_key)

    def send(self, method: str, path: str, body: Any = None, **extra: Any) -> Any:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        return getattr(self.client, method)(f"/api/journy{path}", data, content_type="application/json", **extra)

    def upsert_user(self, identification: dict[str, Any], properties: dict[str, Any], **extra: Any) -> Any:
        return self.send("post", "/users/upsert", {"identification": identification, "properties": properties, **extra})

    def upsert_account(self, identification: dict[str, Any], properties: dict[str, Any], **extra: Any) -> Any:
        return self.send(
            "post", "/accounts/upsert", {"identification": identification, "properties": properties, **extra}
        )

    def add_users(self, account: dict[str, Any], users: list[dict[str, Any]], **extra: Any) -> Any:
        return self.send("post", "/accounts/users/add", {"account": account, "users": users, **extra})

    def track(self, identification: dict[str, Any], name: str, **extra: Any) -> Any:
        return self.send("post", "/track", {"identification": identification, "name": name, **extra})

    def batch(self, calls: list[Any]) -> Any:
        return self.send("post", "/batch", {"calls": calls})

    def users(self) -> Any:
        return EndUser.objects.for_tenant(self.world.tenant)

    def accounts(self) -> Any:
        return Account.objects.for_tenant(self.world.tenant)

    def events(self) -> Any:
        return Event.objects.for_tenant(self.world.tenant)


@pytest.fixture
def journy(tenant_a: TenantWorld) -> Journy:
    return Journy(tenant_a)


def test_every_answer_has_the_journy_envelope_and_rate_limit_headers(journy: Journy) -> None:
    response = journy.track({"user": {"userId": "u1"}}, "signed_in")

    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["status"] == 201
    assert body["meta"]["requestId"] == response["X-Request-ID"]
    assert body["message"] == "Accepted"
    assert int(response["X-RateLimit-Limit"]) == 6000
    assert int(response["X-RateLimit-Remaining"]) <= 5999


def test_a_user_identified_by_email_then_by_user_id_and_email_is_one_record(journy: Journy) -> None:
    journy.upsert_user({"email": "Ann@Acme.com"}, {"First Name": "Ann"})
    journy.upsert_user({"userId": "u1", "email": "ann@acme.com"}, {"plan": "pro"})
    journy.track({"user": {"userId": "u1"}}, "login")
    journy.track({"user": {"email": "ANN@acme.com"}}, "logout")

    [user] = journy.users()
    assert (user.external_id, user.email) == ("u1", "ann@acme.com")
    assert user.properties == {"first_name": "Ann", "plan": "pro"}
    assert set(journy.events().values_list("name", "end_user_id")) == {("login", user.pk), ("logout", user.pk)}
    assert user.last_seen_at is not None


def test_a_batch_naming_records_by_both_identifiers_finds_each_record_once(journy: Journy) -> None:
    journy.upsert_user({"userId": "u1", "email": "ann@acme.com"}, {})
    journy.upsert_user({"email": "bob@acme.com"}, {})
    journy.upsert_account({"accountId": "a1", "domain": "acme.com"}, {})

    response = journy.batch([
        {"type": "track", "name": "both", "identification": {"user": {"userId": "u1", "email": "ann@acme.com"},
                                                             "account": {"accountId": "a1", "domain": "acme.com"}}},
        {"type": "track", "name": "by_email", "identification": {"user": {"email": "ann@acme.com"},
                                                                 "account": {"domain": "acme.com"}}},
        {"type": "track", "name": "email_only_row", "identification": {"user": {"email": "bob@acme.com"}}},
        {"type": "track", "name": "new", "identification": {"user": {"userId": "u2"}}},
    ])  # fmt: skip

    assert response.status_code == 200, response.content
    ann, bob, new = (journy.users().get(email="ann@acme.com"), journy.users().get(email="bob@acme.com"),
                     journy.users().get(external_id="u2"))  # fmt: skip
    [account] = journy.accounts()
    assert journy.users().count() == 3
    assert set(journy.events().values_list("name", "end_user_id", "account_id")) == {
        ("both", ann.pk, account.pk), ("by_email", ann.pk, account.pk),
        ("email_only_row", bob.pk, None), ("new", new.pk, None),
    }  # fmt: skip


def test_the_identity_prefetch_reads_a_record_both_identifiers_match_once(journy: Journy) -> None:
    journy.upsert_user({"userId": "u1", "email": "ann@acme.com"}, {})
    resolver = Resolver.for_users(journy.world.tenant)

    resolver.prefetch([("u1", "ann@acme.com"), (None, "ann@acme.com"), ("u1", None)])

    [node] = resolver.nodes
    assert (node.external_id, node.alt) == ("u1", "ann@acme.com")


def test_one_person_can_be_owner_of_one_account_and_member_of_another(journy: Journy) -> None:
    journy.upsert_account({"accountId": "a", "domain": "a.com"}, {"name": "A Inc", "stage": "Trial"})
    journy.upsert_account({"accountId": "b"}, {"name": "B Ltd"})
    journy.add_users({"accountId": "a"}, [{"identification": {"userId": "u1"}, "properties": {"role": "Owner"}}])
    journy.add_users({"domain": "https://www.B.example.org/x"} | {"accountId": "b"}, [
        {"identification": {"userId": "u1"}, "properties": {"role": "Member"}},
        {"identification": {"userId": "u2"}, "properties": {"role": "Admin"}},
    ])  # fmt: skip

    roles = {
        (m.account.external_id, m.end_user.external_id): m.properties["role"]
        for m in Membership.objects.for_tenant(journy.world.tenant).select_related("account", "end_user")
    }
    assert roles == {("a", "u1"): "Owner", ("b", "u1"): "Member", ("b", "u2"): "Admin"}
    account_b = journy.accounts().get(external_id="b")
    assert account_b.domain == "b.example.org"
    assert journy.accounts().get(external_id="a").name == "A Inc"


def test_removing_a_user_keeps_the_membership_with_a_left_time(journy: Journy) -> None:
    journy.add_users({"accountId": "a"}, [{"identification": {"userId": "u1"}}], timestamp="2026-01-01T00:00:00Z")
    response = journy.send(
        "post",
        "/accounts/users/remove",
        {
            "account": {"accountId": "a"},
            "users": [{"identification": {"userId": "u1"}}],
            "timestamp": "2026-02-01T00:00:00Z",
        },
    )

    assert response.status_code == 201
    membership = Membership.objects.for_tenant(journy.world.tenant).get()
    assert membership.joined_at.isoformat() == "2026-01-01T00:00:00+00:00"
    assert membership.left_at is not None
    assert membership.left_at.isoformat() == "2026-02-01T00:00:00+00:00"


def test_linking_a_device_gives_its_anonymous_events_to_the_user(journy: Journy) -> None:
    journy.batch([{"type": "track", "identification": {"account": {"accountId": "a"}}, "name": "visited"}])
    Event.objects.for_tenant(journy.world.tenant).update(device_id="dev-1")  # anonymous events (Segment anonymousId)
    Event.objects.for_tenant(journy.world.tenant).update(end_user=None)

    response = journy.send("post", "/link", {"deviceId": "dev-1", "identification": {"userId": "u1"}})

    assert response.status_code == 201
    user = journy.users().get(external_id="u1")
    assert list(journy.events().values_list("end_user_id", flat=True)) == [user.pk]
    assert DeviceLink.objects.for_tenant(journy.world.tenant).get().end_user_id == user.pk


def test_two_records_that_turn_out_to_be_one_person_are_merged(journy: Journy) -> None:
    journy.upsert_user({"userId": "u1"}, {"plan": "pro"})
    journy.upsert_user({"email": "ann@acme.com"}, {"city": "Ghent"})
    journy.track({"user": {"email": "ann@acme.com"}}, "before_merge")
    journy.add_users(
        {"accountId": "a"}, [{"identification": {"email": "ann@acme.com"}, "properties": {"role": "Owner"}}]
    )

    journy.upsert_user({"userId": "u1", "email": "ann@acme.com"}, {})

    [user] = journy.users()
    assert (user.external_id, user.email) == ("u1", "ann@acme.com")
    assert user.properties == {"plan": "pro", "city": "Ghent"}
    assert list(journy.events().values_list("end_user_id", flat=True)) == [user.pk]
    assert Membership.objects.for_tenant(journy.world.tenant).get().end_user_id == user.pk
    assert set(
        PropertyChange.objects.for_tenant(journy.world.tenant)
        .filter(entity_type="user")
        .values_list("entity_id", flat=True)
    ) == {user.pk}


def test_an_email_held_by_another_user_id_moves_to_the_new_owner(journy: Journy) -> None:
    journy.upsert_user({"userId": "u1", "email": "shared@acme.com"}, {})
    journy.upsert_user({"userId": "u2", "email": "shared@acme.com"}, {})

    emails = dict(journy.users().values_list("external_id", "email"))
    assert emails == {"u1": None, "u2": "shared@acme.com"}


def test_null_deletes_a_property_and_keys_are_normalized(journy: Journy) -> None:
    journy.upsert_user({"userId": "u1"}, {"  Favourite Colour ": "blue", "plan": "pro"})
    journy.upsert_user({"userId": "u1"}, {"plan": None})

    assert journy.users().get().properties == {"favourite_colour": "blue"}


def test_property_types_are_recorded_on_first_sight_and_a_clash_is_rejected(journy: Journy) -> None:
    journy.upsert_user(
        {"userId": "u1"},
        {"age": 31, "vip": True, "tags": ["a", "b"], "signed_up": "2026-01-02T03:04:05Z", "city": "Ghent"},
    )
    clash = journy.upsert_user({"userId": "u1"}, {"age": "thirty-one"})

    assert clash.status_code == 400
    assert clash.json()["errors"]["fields"] == {"properties.age": "is a number property of users; got a text value"}
    types = dict(
        PropertyDefinition.objects.for_tenant(journy.world.tenant).filter(entity_type="user").values_list("key", "type")
    )
    assert types == {"age": "number", "vip": "boolean", "tags": "list", "signed_up": "datetime", "city": "text"}
    assert journy.users().get().properties["age"] == 31


def test_a_stage_property_moves_the_stage_and_records_the_change(journy: Journy) -> None:
    journy.upsert_account({"accountId": "a"}, {"stage": "Trial"}, timestamp="2026-01-01T00:00:00Z")
    journy.upsert_account({"accountId": "a"}, {"stage": "Customer"}, timestamp="2026-02-01T00:00:00Z")

    account = journy.accounts().get()
    assert account.stage == "Customer"
    assert "stage" not in account.properties
    history = list(
        StageChange.objects.for_tenant(journy.world.tenant).order_by("changed_at").values_list("from_stage", "to_stage")
    )
    assert history == [(None, "Trial"), ("Trial", "Customer")]


def test_an_older_write_arriving_late_never_overwrites_a_newer_one(journy: Journy) -> None:
    journy.upsert_account({"accountId": "a"}, {"plan": "pro", "stage": "Customer"}, timestamp="2026-03-01T00:00:00Z")
    journy.upsert_account(
        {"accountId": "a"}, {"plan": "free", "seats": 3, "stage": "Trial"}, timestamp="2026-01-01T00:00:00Z"
    )

    account = journy.accounts().get()
    assert account.properties == {"plan": "pro", "seats": 3}
    assert account.stage == "Customer"
    history = list(
        StageChange.objects.for_tenant(journy.world.tenant).order_by("changed_at").values_list("from_stage", "to_stage")
    )
    assert history == [(None, "Trial"), ("Trial", "Customer")]
    plan_history = list(
        PropertyChange.objects.for_tenant(journy.world.tenant)
        .filter(key="plan")
        .order_by("changed_at")
        .values_list("value")
    )
    assert plan_history == [("free",), ("pro",)]


def test_a_year_of_history_loads_through_the_batch_endpoint_as_it_happened(journy: Journy) -> None:
    calls: list[dict[str, Any]] = [
        {"type": "upsertAccount", "identification": {"accountId": "a"}, "properties": {"stage": "Trial"},
         "timestamp": "2025-01-05T10:00:00Z"},
        {"type": "addUsers", "account": {"accountId": "a"}, "timestamp": "2025-01-05T10:00:00Z",
         "users": [{"identification": {"userId": "u1"}, "properties": {"role": "Owner"}}]},
    ]  # fmt: skip
    calls += [
        {"type": "track", "identification": {"user": {"userId": "u1"}, "account": {"accountId": "a"}},
         "name": "report_built", "triggeredAt": f"2025-{month:02d}-15T09:00:00Z"}
        for month in range(1, 13)
    ]  # fmt: skip
    calls.append(
        {"type": "upsertAccount", "identification": {"accountId": "a"}, "properties": {"stage": "Customer"},
         "timestamp": "2025-11-20T00:00:00Z"}
    )  # fmt: skip

    response = journy.batch(calls)

    assert response.status_code == 200
    assert response.json()["data"] == {"accepted": 15, "rejected": []}
    user = journy.users().get()
    assert (user.first_seen_at.isoformat(), user.last_seen_at.isoformat()) == (
        "2025-01-15T09:00:00+00:00",
        "2025-12-15T09:00:00+00:00",
    )
    assert journy.accounts().get().stage_changed_at.isoformat() == "2025-11-20T00:00:00+00:00"
    assert Membership.objects.for_tenant(journy.world.tenant).get().joined_at.isoformat() == "2025-01-05T10:00:00+00:00"


def test_a_batch_stores_good_calls_and_lists_bad_ones_by_index(journy: Journy) -> None:
    response = journy.batch(
        [
            {"type": "track", "identification": {"user": {"userId": "u1"}}, "name": "ok"},
            {"type": "track", "identification": {}, "name": "no one"},
            {"type": "upsertUser", "identification": {"userId": "u1"}, "properties": {"nested": {"a": 1}}},
            "not an object",
            {"type": "upsertUser", "identification": {"userId": "u1"}, "properties": {"age": 3}},
        ]
    )

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["accepted"] == 2
    assert [item["index"] for item in data["rejected"]] == [1, 2, 3]
    assert "needs a user, an account, or both" in data["rejected"][0]["message"]
    assert "an object is not a supported value" in data["rejected"][1]["message"]
    assert journy.events().count() == 1
    assert journy.users().get().properties == {"age": 3}


def test_a_repeated_message_id_is_stored_once(journy: Journy) -> None:
    for _ in range(2):
        journy.track({"user": {"userId": "u1"}}, "paid", messageId="m-1")

    assert journy.events().count() == 1


def test_every_accepted_write_marks_what_it_touched_even_when_redis_is_down(
    journy: Journy, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # the rate limiter's Redis: nothing listens there
    broker_down = kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    with (
        mock.patch.object(dirty_entities_process_task, "apply_async", side_effect=broker_down) as hint,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = journy.track({"user": {"userId": "u1"}, "account": {"accountId": "a"}}, "still_works")

    assert response.status_code == 201
    assert not hint.called  # Redis (also the broker) refused the hint's flag: no hint, and the request stands
    marks = set(DirtyEntity.objects.for_tenant(journy.world.tenant).values_list("entity_type", flat=True))
    assert marks == {"user", "account"}
    assert journy.events().count() == 1


def test_after_a_failed_hint_the_next_requests_do_not_wait_for_the_broker(
    journy: Journy, django_capture_on_commit_callbacks: Any
) -> None:
    # Given the broker refused a hint (each try waits ~2 s for kombu's connection retries: found by the chaos suite)
    broker_down = kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    with (
        mock.patch.object(dirty_entities_process_task, "apply_async", side_effect=broker_down) as hint,
        django_capture_on_commit_callbacks(execute=True),
    ):
        journy.track({"user": {"userId": "u1"}}, "first")
        # When more writes come within the pause
        for n in range(3):
            journy.track({"user": {"userId": f"u{n + 2}"}}, "later")

    # Then only the first tried the broker; the others are stored and marked, for the next hint or the sweep
    assert hint.call_count == 1
    assert journy.events().count() == 4
    assert DirtyEntity.objects.for_tenant(journy.world.tenant).filter(entity_type="user").count() == 4


# --- errors -----------------------------------------------------------------------------------


def test_malformed_json_is_a_400_that_says_where(journy: Journy) -> None:
    response = journy.send("post", "/track", '{"name": "x", ')

    assert response.status_code == 400
    assert "Malformed JSON" in response.json()["message"]
    assert "line 1" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"identification": {"user": {"userId": "u1"}}}, "name"),
        ({"identification": {"user": {"email": "not-an-email"}}, "name": "x"}, "identification.user.email"),
        ({"identification": {"user": {"userId": "u1"}}, "name": "x", "triggeredAt": "yesterday"}, "triggeredAt"),
        ({"identification": {"user": {"userId": "u1"}}, "name": "x", "metadata": {"tags": ["a"]}}, "metadata.tags"),
        ({"identification": {"account": {"domain": "no spaces.com"}}, "name": "x"}, "identification.account.domain"),
    ],
)
def test_an_invalid_call_is_a_400_naming_the_field_and_stores_nothing(
    journy: Journy, body: dict[str, Any], field: str
) -> None:
    response = journy.send("post", "/track", body)

    assert response.status_code == 400
    assert field in response.json()["errors"]["fields"]
    assert journy.events().count() == 0
    assert journy.users().count() == 0


def test_a_call_over_32_kb_is_413(journy: Journy) -> None:
    response = journy.track({"user": {"userId": "u1"}}, "big", metadata={"blob": "x" * 40_000})

    assert response.status_code == 413
    assert "32,768" in response.json()["message"]


def test_a_batch_of_more_than_1000_calls_is_413(journy: Journy) -> None:
    calls = [{"type": "track", "identification": {"user": {"userId": "u"}}, "name": "e"}] * 1001

    response = journy.batch(calls)

    assert response.status_code == 413
    assert "1,000" in response.json()["message"]


def test_gzip_bodies_are_accepted_and_gzip_bombs_refused_before_inflating(journy: Journy) -> None:
    body = gzip.compress(json.dumps({"identification": {"user": {"userId": "u1"}}, "name": "zipped"}).encode())
    bomb = gzip.compress(b'{"calls": [' + b" " * 50_000_000 + b"]}")

    ok = journy.send("post", "/track", body, HTTP_CONTENT_ENCODING="gzip")
    refused = journy.send("post", "/batch", bomb, HTTP_CONTENT_ENCODING="gzip")

    assert ok.status_code == 201
    assert journy.events().get().name == "zipped"
    assert refused.status_code == 413
    assert "after decompression" in refused.json()["message"]


def test_a_wrong_or_revoked_key_is_401_in_the_envelope(tenant_a: TenantWorld) -> None:
    response = Journy(tenant_a, key="plg_pk_not-a-real-key").track({"user": {"userId": "u"}}, "x")

    assert response.status_code == 401
    assert response.json()["meta"]["status"] == 401
    assert response["X-RateLimit-Remaining"].isdigit()


def test_a_secret_key_on_ingestion_is_refused(tenant_a: TenantWorld) -> None:
    response = Journy(tenant_a, key=tenant_a.secret_key).track({"user": {"userId": "u"}}, "x")

    assert response.status_code == 401
    assert "write key" in response.json()["message"]


def test_over_the_rate_limit_is_429_with_retry_after(journy: Journy) -> None:
    journy.world.tenant.ingest_rate_limit = 2
    journy.world.tenant.save()
    client = ratelimit._redis()[0]
    client.delete(*client.keys("plg:rl:*") or ["none"])

    codes = [journy.track({"user": {"userId": "u"}}, "x").status_code for _ in range(3)]
    limited = journy.track({"user": {"userId": "u"}}, "x")

    assert codes == [201, 201, 429]
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited["X-RateLimit-Remaining"] == "0"
    assert journy.events().count() == 2


def test_a_database_outage_is_503_with_retry_after_never_500(journy: Journy) -> None:
    with mock.patch("signals.api_journy.calls_ingest", side_effect=OperationalError("connection refused")):
        response = journy.track({"user": {"userId": "u"}}, "x")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "nothing was stored" in response.json()["message"]


def test_a_write_that_keeps_losing_races_is_503_with_retry_after_never_500(journy: Journy) -> None:
    # Found by the chaos suite: clients retrying together after an outage create the same new users in several
    # requests at once; one that lost the race on every retry answered 500.
    conflict = IntegrityError('duplicate key value violates unique constraint "enduser_external_id"')
    with mock.patch("signals.api_journy.calls_ingest", side_effect=conflict):
        response = journy.batch([{"type": "track", "name": "x", "identification": {"user": {"userId": "u"}}}])

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "nothing was stored" in response.json()["message"]


def test_validate_lists_the_keys_permissions(journy: Journy) -> None:
    response = journy.client.get("/api/journy/validate")

    assert response.status_code == 200
    assert "TrackData" in response.json()["data"]["permissions"]


def test_deleting_a_user_removes_its_events_memberships_and_history(journy: Journy) -> None:
    journy.add_users({"accountId": "a"}, [{"identification": {"userId": "u1"}, "properties": {"role": "Owner"}}])
    journy.track({"user": {"userId": "u1"}, "account": {"accountId": "a"}}, "x")

    response = journy.send("delete", "/users", {"identification": {"userId": "u1"}})

    assert response.status_code == 200
    assert journy.users().count() == 0
    assert journy.events().count() == 0
    assert Membership.objects.for_tenant(journy.world.tenant).count() == 0
    assert journy.accounts().count() == 1


def test_deleting_users_and_accounts_deletes_exactly_their_events_by_tenant(
    journy: Journy, tenant_b: TenantWorld
) -> None:
    """Events have no index on end_user_id or account_id alone (ingestion keeps every index up to date): the
    delete must name the tenant, and take exactly the deleted records' events."""
    for user, account in (("u1", "a1"), ("u2", "a1"), ("u2", "a2"), ("u3", "a3")):
        journy.track({"user": {"userId": user}, "account": {"accountId": account}}, f"{user}-{account}")
    Journy(tenant_b).track({"user": {"userId": "u1"}, "account": {"accountId": "a1"}}, "theirs")

    with CaptureQueriesContext(connection) as queries:
        assert journy.send("delete", "/users", {"identification": {"userId": "u1"}}).status_code == 200
        assert journy.send("delete", "/accounts", {"identification": {"accountId": "a2"}}).status_code == 200

    assert sorted(journy.events().values_list("name", flat=True)) == ["u2-a1", "u3-a3"]
    assert list(Event.objects.for_tenant(tenant_b.tenant).values_list("name", flat=True)) == ["theirs"]
    deletes = [query["sql"] for query in queries.captured_queries if 'DELETE FROM "signals_event"' in query["sql"]]
    assert len(deletes) == 2
    assert all('"signals_event"."tenant_id" =' in sql for sql in deletes), deletes


def test_one_tenants_write_key_never_touches_another_tenants_records(
    tenant_a: TenantWorld, tenant_b: TenantWorld
) -> None:
    Journy(tenant_a).upsert_user({"userId": "u1"}, {"plan": "a-plan"})
    Journy(tenant_b).upsert_user({"userId": "u1"}, {"plan": "b-plan"})
    Journy(tenant_b).send("delete", "/users", {"identification": {"userId": "u1"}})

    assert EndUser.objects.for_tenant(tenant_a.tenant).get().properties == {"plan": "a-plan"}
    assert EndUser.objects.for_tenant(tenant_b.tenant).count() == 0


def test_texts_with_tabs_newlines_and_backslashes_are_stored_exactly(journy: Journy) -> None:
    awkward = 'tab\there, line\nbreak, return\r, back\\slash, quote", \\N, tab-escape \\t'
    response = journy.batch(
        [
            {"type": "track", "identification": {"user": {"userId": "u\\1"}}, "name": awkward,
             "metadata": {"note": awkward}},
            {"type": "track", "identification": {"account": {"accountId": "a\tb"}}, "name": "with id",
             "metadata": {"note": awkward}, "messageId": "m\\1"},
        ]
    )  # fmt: skip

    assert response.status_code == 200, response.json()
    plain, keyed = journy.events().order_by("id")
    assert (plain.name, plain.properties, plain.message_id) == (awkward, {"note": awkward}, None)
    assert plain.end_user.external_id == "u\\1"
    assert (keyed.properties, keyed.message_id) == ({"note": awkward}, "m\\1")


def test_nul_characters_are_refused_with_a_400_not_stored(journy: Journy) -> None:
    response = journy.batch(
        [
            {"type": "track", "identification": {"user": {"userId": "u1"}}, "name": "bad\u0000name"},
            {"type": "track", "identification": {"user": {"userId": "u1"}}, "name": "ok",
             "metadata": {"note": "nul\u0000inside"}},
            {"type": "upsertUser", "identification": {"userId": "u\u00002"}, "properties": {"plan": "pro"}},
            {"type": "track", "identification": {"user": {"userId": "u1"}}, "name": "fine"},
        ]
    )  # fmt: skip

    assert response.status_code == 200
    rejected = {item["index"]: item["fields"] for item in response.json()["data"]["rejected"]}
    assert rejected == {
        0: {"name": "must not contain NUL characters (\\u0000)"},
        1: {"metadata.note": "must not contain NUL characters (\\u0000)"},
        2: {"identification.userId": "must not contain NUL characters (\\u0000)"},
    }
    assert list(journy.events().values_list("name", flat=True)) == ["fine"]


def test_a_batch_mixing_calls_with_and_without_message_ids_stores_each_once(journy: Journy) -> None:
    calls = [
        {"type": "track", "identification": {"user": {"userId": "u1"}}, "name": f"e{n}"}
        | ({"messageId": f"m{n}"} if n % 2 else {})
        for n in range(6)
    ]
    journy.batch(calls)
    journy.batch(calls)  # a client retry: keyed events are skipped, the others are new events

    names = sorted(journy.events().values_list("name", flat=True))
    assert names == ["e0", "e0", "e1", "e2", "e2", "e3", "e4", "e4", "e5"]


def test_last_seen_is_kept_to_the_minute_and_first_seen_exactly(journy: Journy) -> None:
    def track_at(at: str) -> None:
        journy.track({"user": {"userId": "u1"}}, "ping", triggeredAt=at)

    track_at("2026-03-01T10:00:00Z")
    track_at("2026-03-01T10:00:30Z")  # within the minute: not rewritten
    user = journy.users().get()
    assert (user.first_seen_at.isoformat(), user.last_seen_at.isoformat()) == (
        "2026-03-01T10:00:00+00:00",
        "2026-03-01T10:00:00+00:00",
    )
    track_at("2026-03-01T10:01:00Z")
    track_at("2026-03-01T09:59:59Z")  # earlier than first seen: always recorded
    user.refresh_from_db()
    assert (user.first_seen_at.isoformat(), user.last_seen_at.isoformat()) == (
        "2026-03-01T09:59:59+00:00",
        "2026-03-01T10:01:00+00:00",
    )


def test_users_whose_seen_times_already_cover_a_request_cost_no_update(journy: Journy) -> None:
    def seen_updates(calls: list[dict[str, Any]]) -> list[set[int]]:
        """The user ids of each users-seen UPDATE the batch sent."""
        with CaptureQueriesContext(connection) as queries:
            assert journy.batch(calls).status_code == 200
        return [
            {int(pk) for pk in re.search(r"unnest\('\{([\d,]*)\}'", query["sql"]).group(1).split(",")}  # type: ignore[union-attr]
            for query in queries.captured_queries
            if "UPDATE accounts_enduser" in query["sql"]
        ]

    def ping(user: dict[str, str], at: str) -> dict[str, Any]:
        return {"type": "track", "identification": {"user": user}, "name": "ping", "triggeredAt": at}

    u1, u2 = {"userId": "u1"}, {"userId": "u2"}
    assert len(seen_updates([ping(u1, "2026-03-01T10:00:00Z"), ping(u2, "2026-03-01T10:00:00Z")])) == 1  # new users
    pks = {user.external_id: user.pk for user in journy.users()}
    # Within the minute and not earlier, for both: the prefetch's read says so, no statement is sent.
    assert seen_updates([ping(u1, "2026-03-01T10:00:59.999Z"), ping(u2, "2026-03-01T10:00:00Z")]) == []
    # One of them a minute on: one statement, naming that user only.
    assert seen_updates([ping(u1, "2026-03-01T10:00:30Z"), ping(u2, "2026-03-01T10:01:00Z")]) == [{pks["u2"]}]
    seen = {u.external_id: (u.first_seen_at.isoformat(), u.last_seen_at.isoformat()) for u in journy.users()}
    assert seen == {
        "u1": ("2026-03-01T10:00:00+00:00", "2026-03-01T10:00:00+00:00"),
        "u2": ("2026-03-01T10:00:00+00:00", "2026-03-01T10:01:00+00:00"),
    }

    # A user known by email only, seen earlier, turns out to be u1 within a request whose event u1's own times
    # cover: the merge keeps the wider times, and no users-seen statement is needed.
    assert len(seen_updates([ping({"email": "one@example.com"}, "2026-03-01T09:00:00Z")])) == 1
    merged = ping({"userId": "u1", "email": "one@example.com"}, "2026-03-01T10:00:10Z")
    assert seen_updates([merged]) == []
    user = journy.users().get(external_id="u1")
    assert (user.pk, user.first_seen_at.isoformat(), user.last_seen_at.isoformat()) == (
        pks["u1"],
        "2026-03-01T09:00:00+00:00",
        "2026-03-01T10:00:00+00:00",
    )
    assert not journy.users().filter(external_id__isnull=True).exists()
