"""Settings → Integrations and the sandbox outbox, as an admin, a sales rep and another tenant see them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from integrations.delivery import slack_post
from integrations.hubspot_delivery import list_change
from integrations.models import Connection, ConnectionStatus
from integrations.services import connection_create, credentials_of
from plgapp.roles import Role
from tests.conftest import TenantWorld
from tests.fakes.slack import FakeSlack


@pytest.fixture
def slack(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        settings.SLACK_API_URL = fake.url + "/api/"
        yield fake


def page(tenant: TenantWorld, path: str = "") -> str:
    return f"/t/{tenant.slug}/settings/integrations/{path}"


@pytest.mark.django_db
def test_an_admin_pastes_a_slack_token_and_sees_the_connection_tested(
    tenant_a: TenantWorld, member_client: Callable[..., Client], slack: FakeSlack
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    token = slack.issue_bot_token(slack.add_workspace("Acme Corp").team_id)

    empty = admin.get(page(tenant_a))
    assert 'data-testid="no-connections"' in empty.content.decode()

    added = admin.post(page(tenant_a), {"provider": "slack", "name": "Sales Slack", "mode": "live",
                                        "bot_token": token}, follow=True)  # fmt: skip

    html = added.content.decode()
    assert "Sales Slack" in html
    assert "works" in html
    assert token not in html  # only the last characters are ever shown
    assert f"…{token[-4:]}" in html
    connection = Connection.objects.for_tenant(tenant_a.tenant).get()
    assert connection.status == ConnectionStatus.OK
    assert credentials_of(connection) == {"bot_token": token}
    assert token not in connection.credentials  # encrypted at rest


@pytest.mark.django_db
def test_a_wrong_token_is_an_inline_error_and_stores_nothing(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)

    refused = admin.post(page(tenant_a), {"provider": "slack", "name": "S", "mode": "live", "bot_token": "xoxp-user"})

    assert refused.status_code == 400
    assert 'id="bot_token-error"' in refused.content.decode()
    assert "starts with xoxb-" in refused.content.decode()
    assert not Connection.objects.for_tenant(tenant_a.tenant).exists()


@pytest.mark.django_db
def test_the_test_button_marks_a_revoked_token_broken_with_the_providers_error(
    tenant_a: TenantWorld, member_client: Callable[..., Client], slack: FakeSlack
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    token = slack.issue_bot_token(slack.add_workspace().team_id)
    connection = connection_create(tenant=tenant_a.tenant, provider="slack", name="S", mode="live",
                                   credentials={"bot_token": token}, settings={}, now=timezone.now())  # fmt: skip
    slack.revoke_token(token)

    card = admin.post(page(tenant_a, f"{connection.pk}/test/"), HTTP_HX_REQUEST="true")

    assert card.status_code == 200
    html = card.content.decode()
    assert 'data-testid="status">Broken' in html
    assert "token_revoked" in html
    assert "<html" not in html  # a fragment for HTMX to swap in


@pytest.mark.django_db
def test_sandbox_calls_show_in_the_outbox_newest_first_and_filtered_by_connection(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    now = timezone.now()
    chat = connection_create(tenant=tenant_a.tenant, provider="slack", name="Sandbox Slack", mode="sandbox",
                             credentials={}, settings={}, now=now)  # fmt: skip
    crm = connection_create(tenant=tenant_a.tenant, provider="hubspot", name="Sandbox CRM", mode="sandbox",
                            credentials={}, settings={}, now=now)  # fmt: skip
    slack_post(tenant_id=tenant_a.tenant.pk, connection_id=chat.pk, channel="#sales", text="Acme is a PQA",
               color="good")  # fmt: skip
    list_change(tenant_id=tenant_a.tenant.pk, connection_id=crm.pk, list_id="9001", email="ann@acme.test", add=True)
    sales = member_client(tenant_a.tenant, Role.SALES)

    outbox = sales.get(f"/t/{tenant_a.slug}/outbox/").content.decode()

    assert outbox.index("ann@acme.test") < outbox.index("Acme is a PQA")  # newest first
    assert "#2EB67D" in outbox  # the colour the message would have had
    assert "add to list 9001" in outbox
    only_slack = sales.get(f"/t/{tenant_a.slug}/outbox/", {"connection": chat.pk}).content.decode()
    assert "Acme is a PQA" in only_slack
    assert "ann@acme.test" not in only_slack


@pytest.mark.django_db
def test_sales_reps_cannot_open_integrations_and_other_tenants_see_nothing(
    tenant_a: TenantWorld, tenant_b: TenantWorld, member_client: Callable[..., Client]
) -> None:
    connection = connection_create(tenant=tenant_a.tenant, provider="slack", name="A's sandbox", mode="sandbox",
                                   credentials={}, settings={}, now=timezone.now())  # fmt: skip
    slack_post(tenant_id=tenant_a.tenant.pk, connection_id=connection.pk, channel="#a", text="secret", color=None)
    sales = member_client(tenant_a.tenant, Role.SALES)
    other_admin = member_client(tenant_b.tenant, Role.ADMIN)

    assert sales.get(page(tenant_a)).status_code == 403
    assert sales.post(page(tenant_a, f"{connection.pk}/delete/")).status_code == 403
    assert other_admin.get(page(tenant_a)).status_code == 404
    assert other_admin.post(page(tenant_b, f"{connection.pk}/test/")).status_code == 404
    assert other_admin.post(page(tenant_b, f"{connection.pk}/delete/")).status_code == 404
    assert "secret" not in other_admin.get(f"/t/{tenant_b.slug}/outbox/").content.decode()
    assert Connection.objects.for_tenant(tenant_a.tenant).filter(pk=connection.pk).exists()


@pytest.mark.django_db
def test_an_admin_removes_a_connection(tenant_a: TenantWorld, member_client: Callable[..., Client]) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    connection = connection_create(tenant=tenant_a.tenant, provider="hubspot", name="CRM", mode="sandbox",
                                   credentials={}, settings={}, now=timezone.now())  # fmt: skip

    gone = admin.post(page(tenant_a, f"{connection.pk}/delete/"), follow=True)

    assert "Removed “CRM”" in gone.content.decode()
    assert not Connection.objects.for_tenant(tenant_a.tenant).exists()
