"""Connecting Slack and HubSpot through their OAuth flows (issue 6), against the fakes' OAuth endpoints: the
install ends in one working connection, the state is bound to the admin and their browser, and a rotating
token near expiry is refreshed by exactly one of several concurrent callers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from integrations.crypto import encrypt
from integrations.models import Connection
from integrations.oauth import usable_credentials
from integrations.services import connection_test, credentials_of
from plgapp import rls
from plgapp.roles import Role
from tests.conftest import TenantWorld
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.slack import FakeSlack


@pytest.fixture
def slack_app(settings: Any) -> Iterator[tuple[FakeSlack, str]]:
    with FakeSlack() as fake:
        app = fake.add_app(token_rotation=True)
        settings.SLACK_API_URL = fake.url + "/api/"
        settings.SLACK_CLIENT_ID, settings.SLACK_CLIENT_SECRET = app.client_id, app.client_secret
        settings.SLACK_AUTHORIZE_URL = "https://slack.test/oauth/v2/authorize"
        settings.PUBLIC_URL = "https://plg.example"
        yield fake, fake.add_workspace("Acme Corp").team_id


def start(client: Client, world: TenantWorld, provider: str) -> dict[str, str]:
    answer = client.get(f"/t/{world.slug}/settings/integrations/{provider}/connect/")
    assert answer.status_code == 302, answer.content
    return {key: values[0] for key, values in parse_qs(urlsplit(answer["Location"]).query).items()}


def near_expiry(connection: Connection) -> None:
    credentials = credentials_of(connection)
    credentials["expires_at"] = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    Connection.objects.for_tenant(connection.tenant_id).filter(pk=connection.pk).update(
        credentials=encrypt(credentials)
    )


@pytest.mark.django_db(transaction=True)
def test_slack_installs_with_rotation_and_one_of_many_callers_refreshes_the_token(
    tenant_a: TenantWorld, member_client: Any, slack_app: tuple[FakeSlack, str]
) -> None:
    fake, team = slack_app
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    query = start(admin, tenant_a, "slack")
    assert query["redirect_uri"] == "https://plg.example/integrations/slack/callback/"
    assert "chat:write" in query["scope"]
    code = fake.issue_oauth_code(query["client_id"], team, redirect_uri=query["redirect_uri"])

    back = admin.get("/integrations/slack/callback/", {"code": code, "state": query["state"]})

    assert back.status_code == 302, back.content
    connection = Connection.objects.for_tenant(tenant_a.tenant).get()
    assert back["Location"] == f"/t/{tenant_a.slug}/settings/integrations/"
    assert (connection.status, connection.account_name) == ("ok", "Slack: Acme Corp")
    first = credentials_of(connection)
    assert first["bot_token"].startswith("xoxe.xoxb-")
    assert first["refresh_token"]

    near_expiry(connection)
    results: list[str] = []

    def use() -> None:  # as the executor task of one tenant does
        with rls.tenant(tenant_a.tenant.pk):
            results.append(usable_credentials(Connection.objects.for_tenant(tenant_a.tenant).get())["bot_token"])

    callers = [threading.Thread(target=use) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()

    refreshes = [r for r in fake.requests(path="/api/oauth.v2.access") if r.body.get("grant_type") == "refresh_token"]
    assert len(refreshes) == 1  # single-use refresh tokens: a second refresh would have broken the connection
    assert len(set(results)) == 1
    assert results[0] != first["bot_token"]
    assert connection_test(tenant=tenant_a.tenant, connection_id=connection.pk, now=timezone.now()).status == "ok"


@pytest.mark.django_db
def test_the_state_belongs_to_the_admin_and_the_browser_that_started_the_install(
    tenant_a: TenantWorld, member_client: Any, slack_app: tuple[FakeSlack, str]
) -> None:
    fake, team = slack_app
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    query = start(admin, tenant_a, "slack")
    code = fake.issue_oauth_code(query["client_id"], team, redirect_uri=query["redirect_uri"])

    other_admin = member_client(tenant_a.tenant, Role.ADMIN)
    stolen = other_admin.get("/integrations/slack/callback/", {"code": code, "state": query["state"]})
    forged = admin.get("/integrations/slack/callback/", {"code": code, "state": query["state"] + "x"})
    denied = admin.get("/integrations/slack/callback/", {"error": "access_denied", "state": query["state"]})

    assert [stolen.status_code, forged.status_code, denied.status_code] == [400, 400, 400]
    assert "access_denied" in denied.content.decode()
    assert not Connection.objects.for_tenant(tenant_a.tenant).exists()
    marketer = member_client(tenant_a.tenant, Role.MARKETER)
    assert marketer.get(f"/t/{tenant_a.slug}/settings/integrations/slack/connect/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_hubspot_installs_and_refreshes_before_expiry(tenant_a: TenantWorld, member_client: Any, settings: Any) -> None:
    with FakeHubSpot() as fake:
        app = fake.add_app()
        portal = fake.add_portal().portal_id
        settings.HUBSPOT_API_URL = fake.url
        settings.HUBSPOT_CLIENT_ID, settings.HUBSPOT_CLIENT_SECRET = app.client_id, app.client_secret
        settings.PUBLIC_URL = "https://plg.example"
        admin = member_client(tenant_a.tenant, Role.ADMIN)
        query = start(admin, tenant_a, "hubspot")
        assert "crm.lists.write" in query["scope"]
        code = fake.issue_oauth_code(app.client_id, portal, redirect_uri=query["redirect_uri"])

        assert admin.get("/integrations/hubspot/callback/", {"code": code, "state": query["state"]}).status_code == 302

        connection = Connection.objects.for_tenant(tenant_a.tenant).get()
        first = credentials_of(connection)
        assert first["refresh_token"]
        near_expiry(connection)
        fresh = usable_credentials(Connection.objects.for_tenant(tenant_a.tenant).get())
        assert fresh["access_token"] != first["access_token"]
        assert connection_test(tenant=tenant_a.tenant, connection_id=connection.pk, now=timezone.now()).status == "ok"
