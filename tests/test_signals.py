"""Tenant-defined signals: the /api/v1/signals/ CRUD (validation, roles, isolation), their point-in-time
features, and their weight in the rule-based scores (with reasons that name them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from accounts.models import Account
from plgapp.roles import Role
from scoring.datasets import features
from scoring.models import Score, ScoreKind
from scoring.services import scores_refresh, working_settings
from signals.calls import AccountRef, AddUsers, MemberChange, Track, UpsertAccount, UserRef, parse_properties
from signals.features import load_history
from signals.models import Signal
from signals.processing import dirty_entities_process
from signals.services import calls_ingest
from tests.conftest import TenantWorld

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
URL = "/api/v1/signals/"

REPORTS = {"key": "reports_30d", "name": "Reports in 30 days", "kind": "event_count", "event": "report_created",
           "window_days": 30, "weights": {"conversion": 0.6}}  # fmt: skip
STORAGE = {"key": "storage_use", "name": "Storage used", "kind": "ratio", "numerator": "storage_used",
           "denominator": "storage_limit"}  # fmt: skip
ENTERPRISE = {"key": "enterprise_plan", "name": "On the enterprise plan", "kind": "property", "property": "plan",
              "equals": "Enterprise"}  # fmt: skip


def ingest(world: TenantWorld, calls: list[Any]) -> None:
    result = calls_ingest(tenant=world.tenant, calls=list(enumerate(calls)), now=NOW)
    assert result.rejected == []
    dirty_entities_process(tenant_id=world.tenant.pk)


def trial(external_id: str, at: datetime, **properties: Any) -> UpsertAccount:
    raw = {"stage": "Trial", "name": external_id, **properties}
    return UpsertAccount(account=AccountRef(external_id=external_id), at=at,
                         properties=parse_properties(raw, "properties"))  # fmt: skip


def reports(external_id: str, days_ago: list[float]) -> list[Track]:
    user = UserRef(external_id=f"{external_id}-owner")
    return [
        Track(name="report_created", at=NOW - timedelta(days=d), user=user, account=AccountRef(external_id=external_id))
        for d in days_ago
    ]


# --- the API -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_signals_are_created_listed_read_updated_and_deleted(tenant_a: TenantWorld, secret_client: Any) -> None:
    client = secret_client(tenant_a)

    created = client.post(URL, REPORTS, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert {key: body[key] for key in REPORTS} == REPORTS
    assert (body["entity_type"], body["property"], body["equals"]) == ("account", "", None)
    assert isinstance(body["id"], str)
    assert client.post(URL, ENTERPRISE, format="json").status_code == 201

    listed = client.get(URL).json()
    assert [item["key"] for item in listed["results"]] == ["enterprise_plan", "reports_30d"]
    assert client.get(f"{URL}?kind=property").json()["results"][0]["key"] == "enterprise_plan"

    changed = client.patch(f"{URL}{body['id']}/", {"window_days": 7, "name": "Reports this week"}, format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["window_days"] == 7
    assert client.get(f"{URL}{body['id']}/").json()["name"] == "Reports this week"

    assert client.delete(f"{URL}{body['id']}/").status_code == 204
    assert client.get(f"{URL}{body['id']}/").status_code == 404
    assert [s.key for s in Signal.objects.for_tenant(tenant_a.tenant)] == ["enterprise_plan"]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({**REPORTS, "event": ""}, {"event"}),
        ({**REPORTS, "window_days": 0}, {"window_days"}),
        ({**REPORTS, "window_days": 91}, {"window_days"}),
        ({**REPORTS, "window_days": None}, {"window_days"}),
        ({**REPORTS, "numerator": "storage_used"}, {"numerator"}),
        ({**REPORTS, "weights": {"conversion": 1.5}}, {"weights"}),
        ({**REPORTS, "weights": {"health": 0.5}}, {"weights"}),
        ({**REPORTS, "entity_type": "user"}, {"weights"}),
        ({**REPORTS, "key": "Reports 30d"}, {"key"}),
        ({**REPORTS, "kind": "sum"}, {"kind"}),
        ({**STORAGE, "denominator": "storage_used"}, {"denominator"}),
        ({**STORAGE, "numerator": ""}, {"numerator"}),
        ({**ENTERPRISE, "property": "stage"}, {"property"}),
        ({**ENTERPRISE, "equals": {"a": 1}}, {"equals"}),
        ({**ENTERPRISE, "equals": None}, {"property"}),  # plan is a text property: it needs equals
        ({"name": "No key"}, {"key", "kind"}),
    ],
)
@pytest.mark.django_db
def test_invalid_signals_are_refused_field_by_field_and_nothing_is_stored(
    tenant_a: TenantWorld, secret_client: Any, body: dict[str, Any], errors: set[str]
) -> None:
    ingest(tenant_a, [trial("acme", NOW - timedelta(days=5), plan="Pro", storage_used=3, storage_limit=10)])

    response = secret_client(tenant_a).post(URL, body, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == errors, response.json()
    assert not Signal.objects.for_tenant(tenant_a.tenant).exists()


@pytest.mark.django_db
def test_a_key_is_unique_per_tenant_and_cannot_change(
    tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: Any
) -> None:
    client = secret_client(tenant_a)
    signal_id = client.post(URL, REPORTS, format="json").json()["id"]

    duplicate = client.post(URL, REPORTS, format="json")
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.json()["error"]["fields"]["key"]
    renamed = client.patch(f"{URL}{signal_id}/", {"key": "other"}, format="json")
    assert renamed.status_code == 400
    assert "cannot change" in renamed.json()["error"]["fields"]["key"]
    # Another tenant may use the same key.
    assert secret_client(tenant_b).post(URL, REPORTS, format="json").status_code == 201


@pytest.mark.django_db
def test_another_tenants_signals_are_invisible(tenant_a: TenantWorld, tenant_b: TenantWorld, secret_client: Any,
                                               member_client: Any) -> None:  # fmt: skip
    signal_id = secret_client(tenant_a).post(URL, REPORTS, format="json").json()["id"]
    intruder = secret_client(tenant_b)

    assert intruder.get(URL).json()["results"] == []
    assert intruder.get(f"{URL}{signal_id}/").status_code == 404
    assert intruder.patch(f"{URL}{signal_id}/", {"name": "mine"}, format="json").status_code == 404
    assert intruder.put(f"{URL}{signal_id}/", REPORTS, format="json").status_code == 404
    assert intruder.delete(f"{URL}{signal_id}/").status_code == 404
    session = member_client(tenant_b.tenant, Role.ADMIN)
    assert session.get(f"/t/{tenant_b.slug}/api/v1/signals/{signal_id}/").status_code == 404
    assert session.get(f"/t/{tenant_a.slug}/api/v1/signals/{signal_id}/").status_code == 404
    assert Signal.objects.for_tenant(tenant_a.tenant).get().name == REPORTS["name"]


@pytest.mark.django_db
def test_marketers_edit_signals_viewers_and_sales_only_read_write_keys_nothing(
    tenant_a: TenantWorld, member_client: Any, api_client: Any
) -> None:
    url = f"/t/{tenant_a.slug}/api/v1/signals/"
    marketer = member_client(tenant_a.tenant, Role.MARKETER)
    assert marketer.post(url, REPORTS, content_type="application/json").status_code == 201
    for role in (Role.VIEWER, Role.SALES):
        reader = member_client(tenant_a.tenant, role)
        assert reader.get(url).status_code == 200
        assert reader.post(url, ENTERPRISE, content_type="application/json").status_code == 403
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant_a.write_key}")
    assert api_client.get(URL).status_code in (401, 403)


@pytest.mark.django_db(transaction=True)
def test_a_change_queues_a_rescore_of_the_tenant_after_it_commits(tenant_a: TenantWorld, secret_client: Any) -> None:
    queue = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    before = queue.llen("scoring")

    assert secret_client(tenant_a).post(URL, REPORTS, format="json").status_code == 201

    assert queue.llen("scoring") == before + 1
    message = queue.lindex("scoring", 0)
    assert message is not None
    assert b"scoring.tasks.scores_refresh_all" in message
    queue.lpop("scoring")  # nobody else consumes this test's message


# --- features and rule-based scores ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_signal_features_read_only_data_before_the_snapshot(tenant_a: TenantWorld) -> None:
    ingest(tenant_a, [
        trial("acme", NOW - timedelta(days=40), plan="Enterprise", storage_used=2, storage_limit=10),
        trial("beta", NOW - timedelta(days=40), plan="Pro", storage_used=9, storage_limit=0),
        *reports("acme", [0.5, 2.5, 3.5, 12.5, 45]),  # today's event is not visible yet: the day is not over
        # Later changes than the snapshot must not show.
        trial("acme", NOW + timedelta(hours=1), plan="Pro", storage_used=9, storage_limit=10),
    ])  # fmt: skip
    for body in (REPORTS, STORAGE, ENTERPRISE):
        Signal.objects.for_tenant(tenant_a.tenant).create(**body)
    ids = {a.external_id: a.pk for a in Account.objects.for_tenant(tenant_a.tenant)}
    settings = working_settings(tenant=tenant_a.tenant)
    history = load_history(tenant_a.tenant)

    raw = features(history, settings, ScoreKind.CONVERSION, NOW, [ids["acme"], ids["beta"]], [])

    assert raw.numbers["signal:reports_30d"].tolist() == [3.0, 0.0]  # 2.5, 3.5 and 12.5 days ago
    assert raw.numbers["signal:storage_use"][0] == pytest.approx(0.2)
    assert raw.numbers["signal:storage_use"][1] != raw.numbers["signal:storage_use"][1]  # limit 0: unknown (NaN)
    assert raw.numbers["signal:enterprise_plan"].tolist() == [1.0, 0.0]
    assert raw.describe["signal:reports_30d"]["label"] == "Reports in 30 days"


@pytest.mark.django_db
def test_a_weighted_signal_moves_the_rule_based_score_and_is_named_in_the_reasons(tenant_a: TenantWorld) -> None:
    # Identical trials but for how many reports they made.
    calls: list[Any] = []
    for n in range(6):
        external_id = f"trial-{n}"
        calls.append(trial(external_id, NOW - timedelta(days=20)))
        calls.append(AddUsers(account=AccountRef(external_id=external_id), at=NOW - timedelta(days=20),
                              users=(MemberChange(user=UserRef(external_id=f"{external_id}-owner")),)))  # fmt: skip
        calls.extend(reports(external_id, [1.4 + k * 0.01 for k in range(n)]))  # the day of the views
        owner, account = UserRef(external_id=f"{external_id}-owner"), AccountRef(external_id=external_id)
        views = [Track(name="page_viewed", at=NOW - timedelta(days=1.5), user=owner, account=account)] * (6 - n)
        calls.extend(views)
    ingest(tenant_a, calls)
    settings_key_events = {"key_events": ["page_viewed", "report_created"]}
    from scoring.services import settings_set

    settings_set(tenant=tenant_a.tenant, raw=settings_key_events, now=NOW)
    scores_refresh(tenant=tenant_a.tenant, kind=ScoreKind.CONVERSION, now=NOW)
    without = _values(tenant_a)

    Signal.objects.for_tenant(tenant_a.tenant).create(**REPORTS)
    scores_refresh(tenant=tenant_a.tenant, kind=ScoreKind.CONVERSION, now=NOW)
    with_signal = _values(tenant_a)

    assert len(set(without.values())) == 1  # without the signal the six trials look the same
    ranked = sorted(with_signal, key=lambda external_id: with_signal[external_id])
    assert ranked == [f"trial-{n}" for n in range(6)]
    top = Score.objects.for_tenant(tenant_a.tenant).get(kind=ScoreKind.CONVERSION, entity_id=_id(tenant_a, "trial-5"))
    assert top.rule_based
    reason = next(r for r in top.reasons if r["feature"] == "signal:reports_30d")
    assert reason["direction"] == "+"
    assert reason["text"].startswith("Reports in 30 days: 5")
    bottom = Score.objects.for_tenant(tenant_a.tenant).get(
        kind=ScoreKind.CONVERSION, entity_id=_id(tenant_a, "trial-0")
    )
    assert any(r["feature"] == "signal:reports_30d" and r["direction"] == "-" for r in bottom.reasons)


def _id(world: TenantWorld, external_id: str) -> int:
    return Account.objects.for_tenant(world.tenant).get(external_id=external_id).pk


def _values(world: TenantWorld) -> dict[str | None, float]:
    names = dict(Account.objects.for_tenant(world.tenant).values_list("pk", "external_id"))
    return {
        names[entity_id]: round(value, 6)
        for entity_id, value in Score.objects.for_tenant(world.tenant)
        .filter(kind=ScoreKind.CONVERSION)
        .values_list("entity_id", "value")
    }


@pytest.mark.django_db
def test_every_typed_property_is_a_candidate_feature_but_the_stage_and_excluded_keys_never_are(
    tenant_a: TenantWorld,
) -> None:
    from scoring.services import settings_set

    settings_set(tenant=tenant_a.tenant, raw={"excluded_properties": ["internal_note"]}, now=NOW)
    ingest(tenant_a, [trial("acme", NOW - timedelta(days=3), seats_paid=4, sso=True, industry="Retail",
                            renewal_at="2026-12-01T00:00:00Z", internal_note="likes us", tags=["a", "b"])])  # fmt: skip
    pk = Account.objects.for_tenant(tenant_a.tenant).get().pk
    settings = working_settings(tenant=tenant_a.tenant)

    raw = features(load_history(tenant_a.tenant), settings, ScoreKind.CONVERSION, NOW, [pk], [])

    assert raw.numbers["prop:seats_paid"].tolist() == [4.0]
    assert raw.numbers["prop:sso"].tolist() == [1.0]
    assert raw.numbers["prop:renewal_at"][0] == pytest.approx(-10.5)  # a date 10.5 days after the snapshot
    assert raw.categories["prop:industry"] == ["Retail"]
    names = set(raw.numbers) | set(raw.categories)
    assert not {"prop:stage", "prop:internal_note", "prop:name"} & names
