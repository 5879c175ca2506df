"""Connections (DESIGN §7, issue 6): created with validated credentials that are encrypted at rest and never
returned, tested against the providers (the fakes, through the official SDKs), deleted — admins only, and
another tenant sees none of it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import pytest

from integrations.clients import SIGNATURE_HEADER, TIMESTAMP_HEADER
from integrations.models import Connection
from plgapp.roles import Role
from tests.conftest import TenantWorld
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.server import FakeServer, Response
from tests.fakes.slack import FakeSlack

URL = "/api/v1/connections/"
SECRET = "a-webhook-secret-of-some-length"


@pytest.fixture
def slack(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        settings.SLACK_API_URL = fake.url + "/api/"
        yield fake


@pytest.fixture
def hubspot(settings: Any) -> Iterator[FakeHubSpot]:
    with FakeHubSpot() as fake:
        settings.HUBSPOT_API_URL = fake.url
        yield fake


@pytest.mark.django_db
def test_a_slack_connection_is_stored_encrypted_tested_and_broken_when_its_token_is_revoked(
    tenant_a: TenantWorld, secret_client: Any, slack: FakeSlack
) -> None:
    workspace = slack.add_workspace("Acme Corp")
    token = slack.issue_bot_token(workspace.team_id)
    client = secret_client(tenant_a)

    created = client.post(URL, {"provider": "slack", "name": "Acme Slack", "credentials": {"bot_token": token}},
                          format="json")  # fmt: skip

    assert created.status_code == 201, created.content
    body = created.json()
    assert token not in created.content.decode()
    assert body["credentials"] == {"bot_token": f"…{token[-4:]}"}
    assert (body["status"], body["mode"]) == ("untested", "live")
    stored = Connection.objects.for_tenant(tenant_a.tenant).get()
    assert token not in stored.credentials  # encrypted at rest

    tested = client.post(f"{URL}{body['id']}/test").json()
    assert (tested["status"], tested["last_error"], tested["account_name"]) == ("ok", "", "Acme Corp")
    assert slack.requests(path="/api/auth.test")[-1].header("Authorization") == f"Bearer {token}"

    slack.revoke_token(token)
    broken = client.post(f"{URL}{body['id']}/test").json()
    assert broken["status"] == "broken"
    assert "token_revoked" in broken["last_error"]
    assert client.get(f"{URL}?status=broken").json()["results"][0]["id"] == body["id"]


@pytest.mark.django_db
def test_a_hubspot_token_is_tested_and_refused_credentials_break_the_connection(
    tenant_a: TenantWorld, secret_client: Any, hubspot: FakeHubSpot
) -> None:
    portal = hubspot.add_portal()
    token = hubspot.issue_token(portal.portal_id)
    client = secret_client(tenant_a)
    good = client.post(URL, {"provider": "hubspot", "name": "CRM", "credentials": {"access_token": token}},
                       format="json").json()  # fmt: skip
    bad = client.post(URL, {"provider": "hubspot", "name": "Old", "credentials": {"access_token": "pat-na1-nope"}},
                      format="json").json()  # fmt: skip

    assert client.post(f"{URL}{good['id']}/test").json()["status"] == "ok"
    refused = client.post(f"{URL}{bad['id']}/test").json()
    assert refused["status"] == "broken"
    assert "401" in refused["last_error"]


@pytest.mark.django_db
def test_an_unreachable_provider_is_reported_without_breaking_the_connection(
    tenant_a: TenantWorld, secret_client: Any, hubspot: FakeHubSpot
) -> None:
    token = hubspot.issue_token(hubspot.add_portal().portal_id)
    client = secret_client(tenant_a)
    connection = client.post(URL, {"provider": "hubspot", "name": "CRM", "credentials": {"access_token": token}},
                             format="json").json()  # fmt: skip
    assert client.post(f"{URL}{connection['id']}/test").json()["status"] == "ok"
    hubspot.fail_next("server_error", times=1)

    tested = client.post(f"{URL}{connection['id']}/test").json()

    assert tested["status"] == "ok"  # still usable: a 5xx is the provider's trouble, not the credentials'
    assert "answered 5" in tested["last_error"]


@pytest.mark.django_db
def test_a_webhook_ping_is_signed_with_the_secret_and_a_timestamp(tenant_a: TenantWorld, secret_client: Any) -> None:
    with FakeServer() as receiver:
        receiver.route("POST", r"/hooks/plg", lambda request, params: Response(200, {"ok": True}))
        client = secret_client(tenant_a)
        url = receiver.url + "/hooks/plg"
        created = client.post(URL, {"provider": "webhook", "name": "Zapier",
                                    "credentials": {"url": url, "secret": SECRET}}, format="json").json()  # fmt: skip
        assert created["credentials"] == {"url": url, "secret": f"…{SECRET[-4:]}"}

        tested = client.post(f"{URL}{created['id']}/test").json()

        assert tested["status"] == "ok"
        (ping,) = receiver.requests(path="/hooks/plg")
        timestamp = ping.header(TIMESTAMP_HEADER)
        assert timestamp is not None
        expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + ping.raw_body, hashlib.sha256).hexdigest()
        assert ping.header(SIGNATURE_HEADER) == f"sha256={expected}"
        assert ping.body["type"] == "ping"


@pytest.mark.django_db
def test_a_sandbox_connection_needs_no_credentials_and_tests_ok(tenant_a: TenantWorld, secret_client: Any) -> None:
    client = secret_client(tenant_a)
    created = client.post(URL, {"provider": "slack", "name": "Demo", "mode": "sandbox"}, format="json")
    assert created.status_code == 201, created.content
    tested = client.post(f"{URL}{created.json()['id']}/test").json()
    assert (tested["status"], tested["account_name"]) == ("ok", "sandbox")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "slack", "name": "x", "credentials": {}}, "credentials.bot_token"),
        ({"provider": "slack", "name": "x", "credentials": {"bot_token": "xoxp-user-token"}}, "credentials.bot_token"),
        ({"provider": "slack", "name": "x", "credentials": {"bot_token": "xoxb-1", "password": "p"}},
         "credentials.password"),
        ({"provider": "hubspot", "name": "x", "credentials": {"access_token": 42}}, "credentials.access_token"),
        ({"provider": "webhook", "name": "x", "credentials": {"url": "ftp://x", "secret": SECRET}}, "credentials.url"),
        ({"provider": "webhook", "name": "x", "credentials": {"url": "https://x.test", "secret": "short"}},
         "credentials.secret"),
        ({"provider": "slack", "name": "x", "mode": "sandbox", "credentials": {"bot_token": "xoxb-1"}}, "credentials"),
        ({"provider": "teams", "name": "x"}, "provider"),
        ({"provider": "slack"}, "name"),
    ],
)  # fmt: skip
def test_bad_connections_are_refused_per_field_and_nothing_is_stored(
    tenant_a: TenantWorld, secret_client: Any, body: dict[str, Any], field: str
) -> None:
    response = secret_client(tenant_a).post(URL, body, format="json")

    assert response.status_code == 400, response.content
    assert field in str(response.json()), response.json()
    assert not Connection.objects.for_tenant(tenant_a.tenant).exists()


@pytest.mark.django_db
def test_another_tenants_connections_are_invisible_and_untouchable(
    tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: Any, member_client: Any
) -> None:
    mine = secret_client(tenant_a).post(URL, {"provider": "slack", "name": "Mine", "mode": "sandbox"},
                                        format="json").json()  # fmt: skip
    intruder = secret_client(tenant_b)

    assert intruder.get(URL).json()["results"] == []
    assert intruder.get(f"{URL}{mine['id']}/").status_code == 404
    assert intruder.post(f"{URL}{mine['id']}/test").status_code == 404
    assert intruder.delete(f"{URL}{mine['id']}/").status_code == 404
    session = member_client(tenant_b.tenant, Role.ADMIN)
    assert session.get(f"/t/{tenant_b.slug}/api/v1/connections/{mine['id']}/").status_code == 404
    assert intruder.get(f"{URL}sandbox-calls/").json()["results"] == []
    assert Connection.objects.for_tenant(tenant_a.tenant).filter(status="untested").count() == 1


@pytest.mark.django_db
def test_admins_manage_connections_and_everyone_else_only_sees_them(
    tenant_a: TenantWorld, member_client: Any, secret_client: Any
) -> None:
    url = f"/t/{tenant_a.slug}/api/v1/connections/"
    body = {"provider": "slack", "name": "Team", "mode": "sandbox"}
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    created = admin.post(url, body, content_type="application/json")
    assert created.status_code == 201
    for role in (Role.MARKETER, Role.SALES, Role.VIEWER):
        member = member_client(tenant_a.tenant, role)
        assert member.get(url).status_code == 200
        assert member.post(url, body, content_type="application/json").status_code == 403
        assert member.delete(f"{url}{created.json()['id']}/").status_code == 403
    assert admin.delete(f"{url}{created.json()['id']}/").status_code == 204
    assert not Connection.objects.for_tenant(tenant_a.tenant).exists()


@pytest.mark.django_db
def test_the_builder_picks_slack_channels_through_every_page(
    tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: Any, slack: FakeSlack
) -> None:
    workspace = slack.add_workspace("Acme Corp")
    for n in range(250):  # more than one page of conversations.list
        slack.add_channel(workspace.team_id, f"team-{n:03d}")
    slack.add_channel(workspace.team_id, "old", is_archived=True)
    client = secret_client(tenant_a)
    connection = client.post(URL, {"provider": "slack", "name": "Slack",
                                   "credentials": {"bot_token": slack.issue_bot_token(workspace.team_id)}},
                             format="json").json()  # fmt: skip

    channels = client.get(f"{URL}{connection['id']}/channels").json()["results"]

    assert len(channels) == 250
    assert channels[0]["name"] == "team-000"
    assert "old" not in {channel["name"] for channel in channels}
    assert len(slack.requests(path="/api/conversations.list")) >= 2
    assert secret_client(tenant_b).get(f"{URL}{connection['id']}/channels").status_code == 404


@pytest.mark.django_db
def test_the_builder_picks_hubspot_lists_that_accept_members_and_owners(
    tenant_a: TenantWorld, secret_client: Any, hubspot: FakeHubSpot
) -> None:
    portal = hubspot.add_portal().portal_id
    hubspot.add_list(portal, "PQLs")
    hubspot.add_list(portal, "Webinar", processing_type="SNAPSHOT")
    hubspot.add_list(portal, "Everyone", processing_type="DYNAMIC")
    hubspot.add_owner(portal, "olive@vendor.test", "Olive", "Owner")
    client = secret_client(tenant_a)
    connection = client.post(URL, {"provider": "hubspot", "name": "CRM",
                                   "credentials": {"access_token": hubspot.issue_token(portal)}},
                             format="json").json()  # fmt: skip

    lists = client.get(f"{URL}{connection['id']}/lists").json()["results"]
    owners = client.get(f"{URL}{connection['id']}/owners").json()["results"]

    assert sorted(item["name"] for item in lists) == ["PQLs", "Webinar"]
    assert owners == [{"id": owners[0]["id"], "email": "olive@vendor.test", "name": "Olive Owner"}]
    wrong = client.get(f"{URL}{connection['id']}/channels")
    assert wrong.status_code == 400
    assert "Slack" in str(wrong.json())
