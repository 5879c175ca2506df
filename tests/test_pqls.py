"""The PQA / PQL list: one selector behind the sales reps' page, `/api/v1/pqls/` (JSON, keyset pages, CSV) and the
quick actions that take an account off the list for a cooldown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Account, EndUser, Membership
from plgapp.roles import Role
from scoring.models import LeadDisposition, Score
from tests.conftest import TenantWorld, pk_of

URL = "/api/v1/pqls/"


def scored(world: TenantWorld, key: str, value: float, *, stage: str = "Trial", segment: str = "small",
           owner: str = "", users: tuple[tuple[str, str, float, float], ...] = ()) -> Account:  # fmt: skip
    """An account with a conversion score and users (email, role, health, champion)."""
    now = timezone.now()
    tenant = world.tenant
    properties = {"employees": 20} | ({"owner_email": owner} if owner else {})
    account = Account.objects.for_tenant(tenant).create(external_id=key, name=key.title(), domain=f"{key}.test",
                                                        stage=stage, properties=properties)  # fmt: skip
    details = {"activation": 0.8, "size_segment": segment, "product_qualified": value > 0.7}
    reasons = [{"feature": "widgets", "text": f"{key} widgets 4.1x peers", "direction": "+", "weight": 0.4}]
    Score.objects.for_tenant(tenant).create(kind="conversion", entity_type="account", entity_id=account.pk, value=value,
                                            percentile=int(value * 100), grade=5 if value > 0.8 else 3,
                                            reasons=reasons, details=details, computed_at=now)  # fmt: skip
    for email, role, health, champion in users:
        user = EndUser.objects.for_tenant(tenant).create(email=email, external_id=email.split("@")[0])
        membership = Membership.objects.for_tenant(tenant).create(
            account=account, end_user=user, joined_at=now, state_changed_at=now, properties={"role": role}
        )
        Score.objects.for_tenant(tenant).create(kind="health", entity_type="user", entity_id=user.pk, value=health,
                                                percentile=50, grade=3, computed_at=now)  # fmt: skip
        Score.objects.for_tenant(tenant).create(kind="champion", entity_type="membership", entity_id=membership.pk,
                                                value=champion, percentile=50, grade=3, computed_at=now)  # fmt: skip
    return account


def walk(client: APIClient, url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while url:
        body = client.get(url).json()
        rows += body["results"]
        url = body["next"]
    return rows


@pytest.mark.django_db
def test_trial_accounts_come_ranked_by_conversion_with_users_ranked_and_their_role_there(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient]
) -> None:
    ann, bob = ("ann@acme.test", "Member", 0.9, 0.3), ("bob@acme.test", "Owner", 0.6, 0.9)
    scored(tenant_a, "acme", 0.91, users=(ann, bob))
    scored(tenant_a, "beta", 0.55)
    scored(tenant_a, "paid", 0.99, stage="Customer")  # not a trial: not a lead

    body = secret_client(tenant_a).get(URL).json()

    assert [row["name"] for row in body["results"]] == ["Acme", "Beta"]
    acme = body["results"][0]
    assert acme["conversion"]["value"] == 0.91
    assert acme["conversion"]["reasons"][0]["text"] == "acme widgets 4.1x peers"
    assert (acme["activation"], acme["size_segment"], acme["product_qualified"]) == (0.8, "small", True)
    assert [(u["email"], u["role"]) for u in acme["users"]] == [("bob@acme.test", "Owner"), ("ann@acme.test", "Member")]
    assert acme["users"][0]["scores"]["health"]["value"] == 0.6


@pytest.mark.django_db
def test_keyset_pages_walk_every_account_once_in_order_both_ways(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient]
) -> None:
    for n in range(23):
        scored(tenant_a, f"a{n:02d}", round(0.3 + (n % 7) / 10, 2))  # ties in score: id breaks them
    client = secret_client(tenant_a)

    forward = walk(client, f"{URL}?limit=5")

    assert len(forward) == 23
    assert len({row["id"] for row in forward}) == 23
    keys = [(row["conversion"]["value"], int(row["id"])) for row in forward]
    assert keys == sorted(keys, reverse=True)
    page1 = client.get(f"{URL}?limit=5").json()
    page2 = client.get(page1["next"]).json()
    back = client.get(page2["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in page1["results"]]
    assert back["previous"] is None


@pytest.mark.django_db
def test_filters_stage_min_score_segment_owner_and_search(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient]
) -> None:
    scored(tenant_a, "acme", 0.9, segment="small", owner="kim@vendor.test")
    scored(tenant_a, "bolt", 0.8, segment="large", owner="lee@vendor.test")
    scored(tenant_a, "cora", 0.4, segment="large", owner="kim@vendor.test")
    scored(tenant_a, "dash", 0.7, stage="Onboarding")
    client = secret_client(tenant_a)

    def names(query: str) -> list[str]:
        return [row["name"] for row in client.get(f"{URL}?{query}").json()["results"]]

    assert names("min_score=0.75") == ["Acme", "Bolt"]
    assert names("segment=large") == ["Bolt", "Cora"]
    assert names("owner=KIM@vendor.test") == ["Acme", "Cora"]
    assert names("q=bol") == ["Bolt"]
    assert names("stage=Onboarding") == ["Dash"]
    assert names("stage=Trial,Onboarding&min_score=0.7&segment=small") == ["Acme", "Dash"]
    assert names("q=100%25_") == []  # LIKE wildcards are searched for, not used


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field"),
    [("min_score=1.5", "min_score"), ("min_score=lots", "min_score"), ("limit=0", "limit"), ("limit=501", "limit"),
     ("cursor=garbage", "cursor")],
)  # fmt: skip
def test_bad_parameters_are_a_400_that_names_them(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient], query: str, field: str
) -> None:
    answer = secret_client(tenant_a).get(f"{URL}?{query}")

    assert answer.status_code == 400
    assert field in answer.json()["error"]["fields"]


@pytest.mark.django_db
def test_a_bad_parameter_of_the_csv_export_is_a_json_400(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient]
) -> None:
    # Found by schemathesis: the CSV renderer drew the error as an empty body without a content type.
    answer = secret_client(tenant_a).get(f"{URL}?format=csv&min_score=2")

    assert answer.status_code == 400
    assert answer["Content-Type"] == "application/json"
    assert "min_score" in answer.json()["error"]["fields"]


@pytest.mark.django_db
def test_the_csv_export_has_every_row_of_the_filtered_list(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient]
) -> None:
    for n in range(7):
        scored(tenant_a, f"c{n}", 0.5 + n / 20, users=((f"u{n}@c.test", "Admin", 0.5, 0.5),))
    scored(tenant_a, "low", 0.1)

    answer = secret_client(tenant_a).get(f"{URL}?format=csv&min_score=0.5")

    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode())))  # type: ignore[attr-defined]
    assert [row["external_id"] for row in rows] == [f"c{n}" for n in reversed(range(7))]
    assert rows[0]["rank"] == "1"
    assert rows[0]["top_users"] == "u6@c.test (Admin)"
    assert "widgets 4.1x peers" in rows[0]["reasons"]


@pytest.mark.django_db
def test_done_and_disqualified_accounts_leave_the_list_for_their_cooldown(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient]
) -> None:
    acme, beta = scored(tenant_a, "acme", 0.9), scored(tenant_a, "beta", 0.8)
    client = secret_client(tenant_a)

    refused = client.post(f"{URL}{beta.pk}/disposition", {"outcome": "disqualified"}, format="json")
    assert refused.status_code == 400
    assert "reason" in refused.json()["error"]["fields"]
    assert client.post(f"{URL}{acme.pk}/disposition", {"outcome": "done"}, format="json").status_code == 201
    assert client.post(f"{URL}{beta.pk}/disposition", {"outcome": "disqualified", "reason": "student"},
                       format="json").status_code == 201  # fmt: skip

    assert client.get(URL).json()["results"] == []
    LeadDisposition.objects.for_tenant(tenant_a.tenant).filter(account=acme).update(
        hidden_until=timezone.now() - timedelta(seconds=1)
    )
    assert [row["name"] for row in client.get(URL).json()["results"]] == ["Acme"]  # the cooldown is over


@pytest.mark.django_db
def test_another_tenants_accounts_are_invisible_and_cannot_be_dispositioned(
    tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: Callable[[TenantWorld], APIClient],
    member_client: Callable[..., Client],
) -> None:  # fmt: skip
    acme = scored(tenant_a, "acme", 0.9)
    as_b = secret_client(tenant_b)

    assert as_b.get(URL).json()["results"] == []
    assert as_b.post(f"{URL}{acme.pk}/disposition", {"outcome": "done"}, format="json").status_code == 404
    rep_b = member_client(tenant_b.tenant, Role.SALES)
    assert rep_b.post(f"/t/{tenant_b.slug}/pqls/{acme.pk}/disposition/", {"outcome": "done"}).status_code == 404
    assert "Acme" not in rep_b.get(f"/t/{tenant_b.slug}/pqls/").content.decode()
    assert not LeadDisposition.objects.unscoped().exists()


@pytest.mark.django_db
def test_the_page_shows_ranked_accounts_roles_reasons_and_lets_a_rep_mark_one_done(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    acme = scored(tenant_a, "acme", 0.91, owner="kim@vendor.test", users=(("bob@acme.test", "Owner", 0.6, 0.9),))
    scored(tenant_a, "beta", 0.55)
    rep = member_client(tenant_a.tenant, Role.SALES)

    html = rep.get(f"/t/{tenant_a.slug}/pqls/").content.decode()

    assert html.index("Acme") < html.index("Beta")
    assert "acme widgets 4.1x peers" in html
    assert '<span class="badge role">Owner</span>' in html
    assert "bob@acme.test" in html
    assert "kim@vendor.test" in html  # owner column and owner filter
    assert "format=csv" in html
    gone = rep.post(f"/t/{tenant_a.slug}/pqls/{acme.pk}/disposition/", {"outcome": "done"}, HTTP_HX_REQUEST="true")
    assert gone.status_code == 200
    assert "hidden until" in gone.content.decode()
    assert "Acme" not in rep.get(f"/t/{tenant_a.slug}/pqls/").content.decode()


@pytest.mark.django_db
def test_viewers_see_the_list_but_have_no_quick_actions(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    acme = scored(tenant_a, "acme", 0.9)
    viewer = member_client(tenant_a.tenant, Role.VIEWER)

    html = viewer.get(f"/t/{tenant_a.slug}/pqls/").content.decode()

    assert "Acme" in html
    assert "Disqualify" not in html
    assert viewer.post(f"/t/{tenant_a.slug}/pqls/{acme.pk}/disposition/", {"outcome": "done"}).status_code == 403


@pytest.mark.django_db
def test_empty_states_say_what_to_do(tenant_a: TenantWorld, member_client: Callable[..., Client]) -> None:
    rep = member_client(tenant_a.tenant, Role.SALES)

    assert "No scored trial accounts yet" in rep.get(f"/t/{tenant_a.slug}/pqls/").content.decode()
    scored(tenant_a, "acme", 0.4)
    filtered = rep.get(f"/t/{tenant_a.slug}/pqls/", {"min_score": "0.9"}).content.decode()
    assert "No accounts match these filters" in filtered
    bad = rep.get(f"/t/{tenant_a.slug}/pqls/", {"min_score": "9"})
    assert bad.status_code == 400
    assert "a probability from 0 to 1" in bad.content.decode()


@pytest.mark.django_db
def test_with_hubspot_connected_each_account_opens_in_the_portal_by_domain(
    tenant_a: TenantWorld, member_client: Callable[..., Client], settings: Any
) -> None:
    from integrations.services import connection_create, connection_test
    from tests.fakes.hubspot import FakeHubSpot

    scored(tenant_a, "acme", 0.9)
    rep = member_client(tenant_a.tenant, Role.SALES)
    assert 'data-testid="external-link"' not in rep.get(f"/t/{tenant_a.slug}/pqls/").content.decode()
    with FakeHubSpot() as hubspot:
        settings.HUBSPOT_API_URL = hubspot.url
        portal = hubspot.add_portal().portal_id
        connection = connection_create(tenant=tenant_a.tenant, provider="hubspot", name="CRM", mode="live",
                                       credentials={"access_token": hubspot.issue_token(portal)}, settings={},
                                       now=timezone.now())  # fmt: skip
        tested = connection_test(tenant=tenant_a.tenant, connection_id=connection.pk, now=timezone.now())

    assert tested.settings["portal_id"] == str(portal)
    assert tested.account_name == f"HubSpot portal {portal}"
    html = rep.get(f"/t/{tenant_a.slug}/pqls/").content.decode()
    assert f"https://app.hubspot.com/contacts/{portal}/companies/list/view/all/?query=acme.test" in html


@pytest.mark.django_db
def test_the_json_api_writes_stored_reasons_details_and_properties_as_the_decoded_list_shows_them(
    tenant_a: TenantWorld, secret_client: Callable[[TenantWorld], APIClient]
) -> None:
    """The API hands orjson the stored JSON text of the users' membership properties and scores' reasons and
    details (`as_stored`); the document must be the one the decoded values give (what the page and the browsable
    API read), unicode, nesting, empty details and missing scores included."""
    from scoring.pql_api import pql_json
    from scoring.pqls import PqlFilters, pql_page

    acme = scored(tenant_a, "acme", 0.91, users=(("ann@acme.test", "Member", 0.9, 0.3),))
    user = EndUser.objects.for_tenant(tenant_a.tenant).create(email="zoë@acme.test", external_id="zoe")
    now = timezone.now()
    Membership.objects.for_tenant(tenant_a.tenant).create(
        account=acme, end_user=user, joined_at=now, state_changed_at=now,
        properties={"role": "Propriétaire ✓", "teams": [{"name": "Ops", "size": 3.5}], "admin": True, "none": None},
    )  # fmt: skip
    reasons = [{"feature": "reports", "text": 'rapports 4 fois — "peers"', "direction": "-", "weight": -0.125}]
    Score.objects.for_tenant(tenant_a.tenant).create(
        kind="health", entity_type="user", entity_id=user.pk, value=0.123456, percentile=12, grade=1,
        reasons=reasons, details={"activation": 0.25, "nested": {"a": [1, 2]}}, computed_at=now.replace(microsecond=0),
    )  # fmt: skip

    body = secret_client(tenant_a).get(URL).json()

    decoded = pql_page(tenant=tenant_a.tenant, filters=PqlFilters(), cursor=None, limit=50, now=now)
    assert body["results"] == json.loads(json.dumps([pql_json(row) for row in decoded.rows], default=str))
    conversion = Score.objects.for_tenant(tenant_a.tenant).get(kind="conversion", entity_id=acme.pk)
    assert body["results"][0]["conversion"] == json.loads(json.dumps(conversion.as_dict()))  # as the model writes it
    zoe = next(u for u in body["results"][0]["users"] if u["external_id"] == "zoe")
    assert zoe["role"] == "Propriétaire ✓"
    assert zoe["properties"]["teams"] == [{"name": "Ops", "size": 3.5}]
    assert zoe["scores"] == {"health": {
        "value": 0.1235, "percentile": 12, "grade": 1, "reasons": reasons, "model_version": None, "rule_based": False,
        "computed_at": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "details": {"activation": 0.25, "nested": {"a": [1, 2]}},
    }}  # fmt: skip
    ann = next(u for u in body["results"][0]["users"] if u["external_id"] == "ann")
    assert "details" not in ann["scores"]["health"]
    assert ann["scores"]["health"]["reasons"] == []
    stored = Score.objects.for_tenant(tenant_a.tenant).get(kind="health", entity_id=pk_of(tenant_a, EndUser, "ann"))
    assert stored.computed_at.microsecond  # written with microseconds, as Python writes them
    assert ann["scores"]["health"]["computed_at"] == stored.computed_at.isoformat().replace("+00:00", "Z")
