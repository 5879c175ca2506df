"""Account 360 and the user page: properties, stage history, users ↔ accounts with their relationship properties,
scores with history and reasons, the event timeline (paged) and playbook enrollments with their action runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Account, EndUser, Membership, StageChange
from playbooks.models import ActionRun, Enrollment, Playbook, PlaybookVersion
from plgapp.charts import Series, bar_chart, line_chart
from plgapp.roles import Role
from scoring.models import Score, ScoreHistory
from scoring.panels import HISTORY_DAYS, held, score_panel
from signals.models import Event
from tests.conftest import TenantWorld


def account_with_everything(world: TenantWorld) -> tuple[Account, EndUser]:
    tenant, now = world.tenant, timezone.now()
    account = Account.objects.for_tenant(tenant).create(
        external_id="acme", name="Acme Corp", domain="acme.test", stage="Trial",
        properties={"plan": "trial", "employees": 40},
    )  # fmt: skip
    StageChange.objects.for_tenant(tenant).create(entity_type="account", entity_id=account.pk, from_stage=None,
                                                  to_stage="Trial", changed_at=now - timedelta(days=9))  # fmt: skip
    ann = EndUser.objects.for_tenant(tenant).create(external_id="ann", email="ann@acme.test")
    bob = EndUser.objects.for_tenant(tenant).create(external_id="bob", email="bob@acme.test")
    Membership.objects.for_tenant(tenant).create(account=account, end_user=ann, joined_at=now, state_changed_at=now,
                                                 properties={"role": "Owner", "department": "Ops"})  # fmt: skip
    Membership.objects.for_tenant(tenant).create(account=account, end_user=bob, joined_at=now, state_changed_at=now,
                                                 properties={"role": "Member"})  # fmt: skip
    reasons = [{"feature": "widgets", "text": "widgets 4.1x peers", "direction": "+", "weight": 0.5},
               {"feature": "seats", "text": "only 2 seats used", "direction": "-", "weight": 0.2}]  # fmt: skip
    details = {"activation": 0.8, "size_segment": "small", "activation_threshold": 0.75, "product_qualified": True}
    Score.objects.for_tenant(tenant).create(
        kind="conversion",
        entity_type="account",
        entity_id=account.pk,
        value=0.83,
        percentile=95,
        grade=5,
        reasons=reasons,
        model_version=3,
        computed_at=now,
        details=details,
    )
    for days, value in ((20, 0.4), (10, 0.6), (0, 0.83)):
        ScoreHistory.objects.for_tenant(tenant).create(
            kind="conversion",
            entity_type="account",
            entity_id=account.pk,
            value=value,
            grade=3,
            computed_at=now - timedelta(days=days),
        )
    Score.objects.for_tenant(tenant).create(kind="health", entity_type="user", entity_id=ann.pk, value=0.7,
                                            percentile=70, grade=4, computed_at=now)  # fmt: skip
    for n in range(30):
        Event.objects.for_tenant(tenant).create(name=f"widget_created_{n:02d}", account=account, end_user=ann,
                                                occurred_at=now - timedelta(hours=n), properties={"n": n})  # fmt: skip
    playbook = Playbook.objects.for_tenant(tenant).create(name="Trial PQA", object="account", status="active")
    version = PlaybookVersion.objects.for_tenant(tenant).create(playbook=playbook, number=1, definition={})
    enrollment = Enrollment.objects.for_tenant(tenant).create(
        playbook=playbook, version=version, entity_id=account.pk, group="treatment", entered_at=now
    )
    runs = ActionRun.objects.for_tenant(tenant)
    runs.create(
        enrollment=enrollment,
        playbook=playbook,
        phase="main",
        action_id="notify",
        action_type="slack.send_message",
        idempotency_key="k1",
        status="dead",
        error="channel_not_found",
    )
    runs.create(
        enrollment=enrollment,
        playbook=playbook,
        phase="main",
        action_id="add-pqls",
        action_type="hubspot.add_to_list",
        end_user_id=ann.pk,
        idempotency_key="k2",
        status="succeeded",
    )
    return account, ann


@pytest.mark.django_db
def test_account_360_shows_properties_stages_users_with_roles_scores_timeline_and_playbooks(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    account, _ann = account_with_everything(tenant_a)
    rep = member_client(tenant_a.tenant, Role.SALES)

    html = rep.get(f"/t/{tenant_a.slug}/accounts/{account.pk}/").content.decode()

    assert "Acme Corp" in html
    assert "employees" in html  # properties
    assert "→ <strong>Trial</strong>" in html  # stage history
    assert html.index("ann@acme.test") < html.index("bob@acme.test")  # users, ranked
    assert '<span class="badge role">Owner</span>' in html
    assert "department: Ops" in html  # the relationship's other properties
    assert "83%" in html
    assert "widgets 4.1x peers" in html
    assert "only 2 seats used" in html
    assert "<svg" in html
    assert "<polyline" in html
    assert "Product-qualified" in html
    assert "widget_created_00" in html
    assert "widget_created_24" in html
    assert "widget_created_25" not in html  # paged: 25 per page
    assert "Trial PQA" in html
    assert "channel_not_found" in html


@pytest.mark.django_db
def test_the_timeline_pages_to_older_events(tenant_a: TenantWorld, member_client: Callable[..., Client]) -> None:
    account, _ann = account_with_everything(tenant_a)
    rep = member_client(tenant_a.tenant, Role.SALES)
    first = rep.get(f"/t/{tenant_a.slug}/accounts/{account.pk}/").content.decode()
    older = first.split('data-testid="older-events"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")

    second = rep.get(f"/t/{tenant_a.slug}/accounts/{account.pk}/{older}").content.decode()

    assert "widget_created_25" in second
    assert "widget_created_29" in second
    assert "widget_created_24" not in second
    assert 'data-testid="older-events"' not in second
    assert rep.get(f"/t/{tenant_a.slug}/accounts/{account.pk}/?events_before=junk").status_code == 200


@pytest.mark.django_db
def test_the_user_page_shows_their_accounts_with_their_role_there_and_what_playbooks_did_to_them(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    _account, ann = account_with_everything(tenant_a)
    viewer = member_client(tenant_a.tenant, Role.VIEWER)

    html = viewer.get(f"/t/{tenant_a.slug}/users/{ann.pk}/").content.decode()

    assert "ann@acme.test" in html
    assert "Acme Corp" in html
    assert '<span class="badge role">Owner</span>' in html
    assert "70%" in html  # health
    assert "add-pqls" in html  # the account playbook's action that targeted her
    assert "widget_created_00" in html


@pytest.mark.django_db
def test_another_tenants_account_and_user_pages_are_404(
    tenant_a: TenantWorld, tenant_b: TenantWorld, member_client: Callable[..., Client]
) -> None:
    account, ann = account_with_everything(tenant_a)
    other = member_client(tenant_b.tenant, Role.ADMIN)

    assert other.get(f"/t/{tenant_b.slug}/accounts/{account.pk}/").status_code == 404
    assert other.get(f"/t/{tenant_b.slug}/users/{ann.pk}/").status_code == 404
    assert other.get(f"/t/{tenant_a.slug}/accounts/{account.pk}/").status_code == 404


@pytest.mark.django_db
def test_an_empty_account_says_what_will_appear(tenant_a: TenantWorld, member_client: Callable[..., Client]) -> None:
    account = Account.objects.for_tenant(tenant_a.tenant).create(external_id="new")
    html = member_client(tenant_a.tenant, Role.SALES).get(f"/t/{tenant_a.slug}/accounts/{account.pk}/").content
    text = html.decode()

    assert "Not scored yet" in text
    assert "No events yet" in text
    assert "Not in any playbook yet" in text
    assert "No users in this account yet" in text


def test_charts_escape_labels_and_say_when_there_is_nothing() -> None:
    now = timezone.now()
    chart = line_chart([Series("<b>x</b>", [(now - timedelta(days=1), 0.2), (now, 0.9)])], title="<script>")

    assert "<script>" not in chart
    assert "&lt;b&gt;x&lt;/b&gt;: 90% now" in chart
    assert "nothing recorded yet" in line_chart([Series("a", [])], title="History")
    bars = bar_chart([("widgets", 0.5), ("seats", 0.25)], percent=True, title="Importance")
    assert bars.count("<rect") == 2
    assert "50%" in bars


def test_a_score_chart_holds_each_recorded_value_until_the_next() -> None:
    now = timezone.now()
    days = [now - timedelta(days=n) for n in (30, 20, 10, 0)]
    assert held([(days[0], 0.4), (days[1], 0.6), (days[2], 0.6), (days[3], 0.5)]) == [
        (days[0], 0.4), (days[1], 0.4), (days[1], 0.6), (days[2], 0.6), (days[3], 0.6), (days[3], 0.5)
    ]  # fmt: skip
    assert held([]) == []


@pytest.mark.django_db
def test_the_score_chart_opens_with_the_value_held_when_its_window_began(tenant_a: TenantWorld, rf: Any) -> None:
    """History rows are recorded when a score moves: one that has not moved for months has no row in the window,
    yet its line spans it, from its latest row before the window to its current value."""
    tenant, now = tenant_a.tenant, timezone.now()
    account = Account.objects.for_tenant(tenant).create(external_id="still", name="Still", stage="Trial")
    recorded = {"kind": "conversion", "entity_type": "account", "entity_id": account.pk, "grade": 3}
    ScoreHistory.objects.for_tenant(tenant).create(**recorded, value=0.2, computed_at=now - timedelta(days=200))
    ScoreHistory.objects.for_tenant(tenant).create(**recorded, value=0.45, computed_at=now - timedelta(days=120))
    Score.objects.for_tenant(tenant).create(**recorded, value=0.45, percentile=50, computed_at=now)

    panel = score_panel(rf.get("/"), tenant, "account", account)

    assert panel is not None
    chart = str(panel.context["chart"])
    assert "Conversion: 45% now" in chart
    points = chart.split('points="')[1].split('"')[0].split()
    assert len(points) == 2  # the window's start and now, both at 45%
    assert points[0].split(",")[1] == points[1].split(",")[1]
    assert f"over {HISTORY_DAYS} days" in chart
