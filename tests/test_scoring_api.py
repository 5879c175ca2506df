"""Management API of scoring (DESIGN §7) through the real HTTP stack: scores in bulk, scores on account, user and
membership representations, the scoring settings, model versions and training, signal discovery, score filters
and ordering on the account list, tenant isolation of every route, and the OpenAPI description.

One generated tenant (80 accounts over 90 days, through the ingestion services) and a small second one are built
once for the module and rolled back at its end; each test runs in its own savepoint. The clock stands at the end
of the generated window, so the scores, the training and the discovery report all see the same "now".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from drf_spectacular.drainage import GENERATOR_STATS
from rest_framework.test import APIClient

from accounts.models import Account, EndUser, Membership
from plgapp.roles import Role
from scoring.generator import generate
from scoring.models import ENTITY_OF_KIND, ModelVersion, Score, ScoreKind
from scoring.services import model_version_start, settings_get
from scoring.tasks import model_train_task
from signals.processing import dirty_entities_process
from tests.conftest import TenantWorld, make_world

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday
SCORE_FIELDS = {"value", "percentile", "grade", "reasons", "model_version", "rule_based", "computed_at"}
REASON_FIELDS = {"feature", "text", "direction", "weight"}
METRICS = {"auc", "pr_auc", "brier", "ece", "lift_top_decile", "recall_top_20", "baseline_auc", "n_train",
           "n_positive"}  # fmt: skip

SecretClient = Callable[[TenantWorld], APIClient]
MemberClient = Callable[..., Client]


@dataclass(frozen=True)
class Worlds:
    a: TenantWorld  # the generated tenant
    b: TenantWorld  # a small generated tenant beside it


@pytest.fixture(scope="module")
def worlds(django_db_setup: None, django_db_blocker: Any) -> Iterator[Worlds]:
    with django_db_blocker.unblock(), time_machine.travel(END, tick=True), transaction.atomic():
        a, b = make_world("scores-a"), make_world("scores-b")
        generate(a.tenant, accounts=80, seed=8, days=90, end=END, now=END)
        generate(b.tenant, accounts=6, seed=5, days=30, end=END, now=END)
        for world in (a, b):
            dirty_entities_process(tenant_id=world.tenant.pk)  # rollups, then rule-based scores of every kind
        yield Worlds(a=a, b=b)
        transaction.set_rollback(True)


@pytest.fixture
def a(worlds: Worlds, db: None) -> TenantWorld:
    return worlds.a


@pytest.fixture
def b(worlds: Worlds, db: None) -> TenantWorld:
    return worlds.b


def walk(client: Client, url: str) -> list[dict[str, Any]]:
    """Every item of a cursor-paged list, following `next`; checks the page shape on the way."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    for _ in range(1000):
        if next_url is None:
            return items
        response = client.get(next_url)
        assert response.status_code == 200, (next_url, response.content)
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        items.extend(body["results"])
        next_url = body["next"]
    raise AssertionError("the cursor never ends")


def assert_invalid(response: Any, field: str) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"]
    assert field in error["fields"], error
    return dict(error)


def assert_score(score: dict[str, Any], *, rule_based: bool) -> None:
    """rule_based: no model version behind it (a rule baseline before a model is trained, and a champion score,
    a transparent weighted formula by design)."""
    assert set(score) >= SCORE_FIELDS
    assert 0 <= score["value"] <= 1
    assert 1 <= score["percentile"] <= 100
    assert 1 <= score["grade"] <= 5
    assert score["rule_based"] is rule_based
    assert (score["model_version"] is None) is rule_based
    assert datetime.fromisoformat(score["computed_at"]).tzinfo is not None
    assert score["reasons"], "every score is explained"
    for reason in score["reasons"]:
        assert set(reason) == REASON_FIELDS
        assert reason["direction"] in ("+", "-")
        assert isinstance(reason["text"], str)
        assert reason["text"]
        assert isinstance(reason["weight"], int | float)


def scores_of(tenant: Any, kind: str) -> dict[int, float]:
    return dict(Score.objects.for_tenant(tenant).filter(kind=kind).values_list("entity_id", "value"))


# --- GET /api/v1/scores/ -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [kind.value for kind in ScoreKind])
def test_the_bulk_pull_pages_through_every_current_score_of_a_kind(
    a: TenantWorld, secret_client: SecretClient, kind: str
) -> None:
    expected = scores_of(a.tenant, kind)
    assert expected, f"the generated tenant has {kind} scores"

    items = walk(secret_client(a), f"/api/v1/scores/?kind={kind}&limit=40")

    assert sorted(int(item["entity_id"]) for item in items) == sorted(expected)  # no duplicates, none skipped
    for item in items:
        assert item["entity_type"] == ENTITY_OF_KIND[ScoreKind(kind)]
        assert isinstance(item["entity_id"], str)
        assert item["value"] == pytest.approx(expected[int(item["entity_id"])], abs=1e-4)
        assert_score(item, rule_based=True)


def test_bulk_scores_name_their_entities_by_the_tenants_own_ids(a: TenantWorld, secret_client: SecretClient) -> None:
    client = secret_client(a)
    accounts = dict(Account.objects.for_tenant(a.tenant).values_list("pk", "external_id"))
    users = dict(EndUser.objects.for_tenant(a.tenant).values_list("pk", "external_id"))
    memberships = {
        pk: (user, account)
        for pk, user, account in Membership.objects.for_tenant(a.tenant).values_list(
            "pk", "end_user__external_id", "account__external_id"
        )
    }

    conversion = walk(client, "/api/v1/scores/?kind=conversion&limit=500")
    health = walk(client, "/api/v1/scores/?kind=health&limit=500")
    champion = walk(client, "/api/v1/scores/?kind=champion&limit=500")

    assert {(i["external_id"], i["account_external_id"]) for i in conversion} == {
        (accounts[int(i["entity_id"])], None) for i in conversion
    }
    assert {(i["external_id"], i["account_external_id"]) for i in health} == {
        (users[int(i["entity_id"])], None) for i in health
    }
    assert {(i["external_id"], i["account_external_id"]) for i in champion} == {
        memberships[int(i["entity_id"])] for i in champion
    }
    assert all(i["external_id"] and i["account_external_id"] for i in champion)


@pytest.mark.parametrize("query", ["", "?kind=", "?kind=happiness", "?kind=health&kind=nope", "?limit=10"])
def test_the_bulk_pull_needs_a_known_kind(a: TenantWorld, secret_client: SecretClient, query: str) -> None:
    assert_invalid(secret_client(a).get(f"/api/v1/scores/{query}"), "kind")


@pytest.mark.parametrize("query", ["?kind=health&limit=0", "?kind=health&limit=501", "?kind=health&cursor=zzz"])
def test_bad_paging_of_the_bulk_pull_is_a_client_error(a: TenantWorld, secret_client: SecretClient, query: str) -> None:
    response = secret_client(a).get(f"/api/v1/scores/{query}")

    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def test_the_bulk_pull_takes_the_same_queries_for_a_small_and_a_large_page(
    a: TenantWorld, secret_client: SecretClient
) -> None:
    client = secret_client(a)
    client.get("/api/v1/scores/?kind=champion&limit=1")  # warm up (key lookup, content types)

    counts = []
    for limit in (5, 200):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/api/v1/scores/?kind=champion&limit={limit}").status_code == 200
        counts.append(len(queries))

    assert counts[0] == counts[1], counts


# --- scores on accounts, users and memberships --------------------------------------------------------------------


def test_accounts_users_and_memberships_carry_their_rule_based_scores(
    a: TenantWorld, secret_client: SecretClient
) -> None:
    client = secret_client(a)
    conversion, churn = scores_of(a.tenant, "conversion"), scores_of(a.tenant, "churn")
    health, champion = scores_of(a.tenant, "health"), scores_of(a.tenant, "champion")
    trial = Account.objects.for_tenant(a.tenant).filter(pk__in=conversion, memberships__isnull=False).first()
    assert trial is not None

    account = client.get(f"/api/v1/accounts/{trial.pk}/").json()
    listed = walk(client, "/api/v1/accounts/?limit=500")
    user_pk = int(account["memberships"][0]["user"]["id"])
    user = client.get(f"/api/v1/users/{user_pk}/").json()
    users = walk(client, "/api/v1/users/?limit=500")

    assert set(account["scores"]) == {"conversion"}
    assert_score(account["scores"]["conversion"], rule_based=True)
    assert account["scores"]["conversion"]["value"] == pytest.approx(conversion[trial.pk], abs=1e-4)
    members = {m.pk: m.end_user_id for m in Membership.objects.for_tenant(a.tenant).filter(account=trial)}
    for member in account["memberships"]:
        pk = next(pk for pk, user_id in members.items() if str(user_id) == member["user"]["id"])
        if member["left_at"] is None:
            assert_score(member["scores"]["champion"], rule_based=True)
            assert member["scores"]["champion"]["value"] == pytest.approx(champion[pk], abs=1e-4)
        else:
            assert member["scores"] == {}
    assert set(user["scores"]) == {"health"}
    assert_score(user["scores"]["health"], rule_based=True)
    assert user["scores"]["health"]["value"] == pytest.approx(health[user_pk], abs=1e-4)
    assert any(m["scores"].get("champion") for m in user["memberships"])
    # Lists carry the same scores: conversion on trials, churn on paying accounts, nothing on the others.
    for item in listed:
        pk = int(item["id"])
        assert set(item["scores"]) == {kind for kind, found in (("conversion", conversion), ("churn", churn))
                                       if pk in found}  # fmt: skip
    assert {int(item["id"]) for item in listed if "churn" in item["scores"]} == set(churn)
    assert all(set(item["scores"]) == ({"health"} if int(item["id"]) in health else set()) for item in users)


def test_an_account_detail_takes_the_same_queries_for_one_member_and_many(
    a: TenantWorld, secret_client: SecretClient
) -> None:
    client = secret_client(a)
    by_size = sorted(
        Account.objects.for_tenant(a.tenant).filter(memberships__isnull=False).distinct(),
        key=lambda account: account.memberships.count(),
    )
    small, large = by_size[0], by_size[-1]
    assert large.memberships.count() >= 3 * small.memberships.count()
    client.get(f"/api/v1/accounts/{small.pk}/")  # warm up

    counts = []
    for account in (small, large):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/api/v1/accounts/{account.pk}/").status_code == 200
        counts.append(len(queries))

    assert counts[0] == counts[1], counts


# --- GET|PUT /api/v1/scoring/config/ ---------------------------------------------------------------------------------

CUSTOM = {
    "stages": {"trial": ["Trialing", "POC"], "paying": ["Paid"], "churned": ["Cancelled"]},
    "key_events": ["report_built"],
    "models": {"conversion": {"horizon_days": 45}, "churn": {"horizon_days": 60},
               "health": {"horizon_days": 7, "activity_events": ["login"]}},
}  # fmt: skip


def test_the_settings_start_from_documented_defaults(a: TenantWorld, secret_client: SecretClient) -> None:
    body = secret_client(a).get("/api/v1/scoring/config/").json()

    assert body["stages"] == {"trial": ["Trial"], "paying": ["Customer", "Standard", "Pro", "Enterprise"],
                              "churned": ["Churned"]}  # fmt: skip
    assert body["key_events"] == []
    assert body["models"] == {"conversion": {"horizon_days": 30}, "churn": {"horizon_days": 30},
                              "health": {"horizon_days": 14, "activity_events": []}}  # fmt: skip


def test_settings_put_are_what_get_and_scoring_read_back(a: TenantWorld, secret_client: SecretClient) -> None:
    client = secret_client(a)

    put = client.put("/api/v1/scoring/config/", CUSTOM, format="json")
    got = client.get("/api/v1/scoring/config/")

    assert put.status_code == 200, put.content
    assert got.json() == put.json()
    for key, value in CUSTOM.items():
        assert got.json()[key] == value
    assert settings_get(tenant=a.tenant)["models"]["health"]["activity_events"] == ["login"]
    assert set(got.json()) >= {"milestones", "size_segments", "champion"}  # the other sections keep defaults


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"stages": {"trial": ["Trial"], "paying": ["Trial", "Pro"], "churned": ["Churned"]}}, "stages.paying"),
        ({"stages": {"trial": ["Trial"], "paying": ["trial"], "churned": ["Churned"]}}, "stages.paying"),
        ({"stages": {"trial": [], "paying": ["Pro"], "churned": ["Churned"]}}, "stages.trial"),
        ({"stages": {"trial": "Trial", "paying": ["Pro"], "churned": ["Churned"]}}, "stages.trial"),
        ({"stages": {"trial": ["Trial"], "paying": ["Pro"], "churned": ["Churned"], "lost": ["X"]}}, "stages"),
        ({"stages": ["Trial"]}, "stages"),
        ({"models": {"conversion": {"horizon_days": 0}}}, "models.conversion.horizon_days"),
        ({"models": {"churn": {"horizon_days": 366}}}, "models.churn.horizon_days"),
        ({"models": {"health": {"horizon_days": "14"}}}, "models.health.horizon_days"),
        ({"models": {"health": {"horizon_days": True}}}, "models.health.horizon_days"),
        ({"models": {"conversion": {"horizon_days": 7.5}}}, "models.conversion.horizon_days"),
        ({"models": {"conversion": {"horizon_days": 30, "window": 3}}}, "models.conversion"),
        ({"models": {"conversion": {"horizon_days": 30, "activity_events": ["x"]}}}, "models.conversion"),
        ({"models": {"conversion": 30}}, "models.conversion"),
        ({"models": {"conversion": ["horizon_days"]}}, "models.conversion"),
        ({"models": {"upsell": {"horizon_days": 30}}}, "models"),
        ({"models": {"upsell": 3}}, "models"),
        ({"models": "fast"}, "models"),
        ({"models": {"health": {"horizon_days": 14, "activity_events": "login"}}}, "models.health.activity_events"),
        ({"key_events": "login"}, "key_events"),
        ({"key_events": ["login", ""]}, "key_events"),
        ({"key_events": [1]}, "key_events"),
        ({"milestones": {"name": "x"}}, "milestones"),
        ({"champion": {"weights": {"share": 2, "role": 0, "health": 0}}}, "champion.weights.share"),
        ([], "body"),
        ("settings", "body"),
    ],
)
def test_bad_settings_are_refused_field_by_field_and_change_nothing(
    a: TenantWorld, secret_client: SecretClient, document: Any, field: str
) -> None:
    client = secret_client(a)
    before = client.get("/api/v1/scoring/config/").json()

    response = client.put("/api/v1/scoring/config/", json.dumps(document), content_type="application/json")

    assert_invalid(response, field)
    assert client.get("/api/v1/scoring/config/").json() == before


def test_settings_that_are_not_json_are_a_client_error(a: TenantWorld, secret_client: SecretClient) -> None:
    response = secret_client(a).put("/api/v1/scoring/config/", "{stages", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SALES, Role.MARKETER])
def test_only_admins_change_the_settings_but_everyone_reads_them(
    a: TenantWorld, member_client: MemberClient, role: Role
) -> None:
    client = member_client(a.tenant, role)
    url = f"/t/{a.slug}/api/v1/scoring/config/"

    read = client.get(url)
    write = client.put(url, json.dumps(CUSTOM), content_type="application/json")

    assert read.status_code == 200
    assert write.status_code == 403
    assert write.json()["error"]["code"] == "permission_denied"
    assert settings_get(tenant=a.tenant)["key_events"] == []


def test_an_admin_session_changes_the_settings(a: TenantWorld, member_client: MemberClient) -> None:
    client = member_client(a.tenant, Role.ADMIN)

    response = client.put(f"/t/{a.slug}/api/v1/scoring/config/", json.dumps(CUSTOM), content_type="application/json")

    assert response.status_code == 200, response.content
    assert settings_get(tenant=a.tenant)["stages"] == CUSTOM["stages"]


# --- /api/v1/scoring/models/ --------------------------------------------------------------------------------------


@pytest.mark.integration
def test_training_through_the_api_activates_a_version_whose_scores_then_appear_everywhere(
    a: TenantWorld, secret_client: SecretClient, django_capture_on_commit_callbacks: Any
) -> None:
    client = secret_client(a)
    trial = Account.objects.for_tenant(a.tenant).filter(pk__in=scores_of(a.tenant, "conversion")).first()
    assert trial is not None

    with django_capture_on_commit_callbacks() as queued:
        started = client.post("/api/v1/scoring/models/train", {"kind": "conversion"}, format="json")
    assert started.status_code == 202, started.content
    assert set(started.json()) >= {"id", "status"}
    assert started.json()["status"] == "training"
    assert len(queued) == 1, "the training is handed to a worker after the commit"
    version_id = started.json()["id"]
    pending = client.get(f"/api/v1/scoring/models/{version_id}/").json()
    assert (pending["status"], pending["kind"], pending["scored_at"]) == ("training", "conversion", None)

    model_train_task(a.tenant.pk, int(version_id))  # what the worker does with the message

    trained = client.get(f"/api/v1/scoring/models/{version_id}/").json()
    assert trained["status"] == "active", trained["error"]
    assert trained["trained_at"] is not None
    assert trained["scored_at"] is not None
    assert set(trained["metrics"]) >= METRICS
    assert trained["metrics"]["auc"] > trained["metrics"]["baseline_auc"]
    assert 0 < trained["metrics"]["n_positive"] < trained["metrics"]["n_train"]
    version = trained["version"]
    bulk = walk(client, "/api/v1/scores/?kind=conversion&limit=500")
    assert len(bulk) == len(scores_of(a.tenant, "conversion"))
    for item in bulk:
        assert (item["model_version"], item["rule_based"]) == (version, False)
        assert_score(item, rule_based=False)
        assert datetime.fromisoformat(item["computed_at"]) >= datetime.fromisoformat(trained["trained_at"])
    detail = client.get(f"/api/v1/accounts/{trial.pk}/").json()["scores"]["conversion"]
    assert (detail["model_version"], detail["rule_based"]) == (version, False)
    listed = {item["id"]: item for item in walk(client, "/api/v1/accounts/?limit=500")}
    assert listed[str(trial.pk)]["scores"]["conversion"] == detail
    # The other kinds stay rule-based until a model of theirs is active.
    assert all(item["rule_based"] for item in walk(client, "/api/v1/scores/?kind=churn&limit=500"))


def test_a_version_that_cannot_train_is_rejected_with_the_reason_and_scores_nothing(
    a: TenantWorld, secret_client: SecretClient, django_capture_on_commit_callbacks: Any
) -> None:
    client = secret_client(a)
    with django_capture_on_commit_callbacks():
        started = client.post("/api/v1/scoring/models/train/", {"kind": "churn"}, format="json").json()

    model_train_task(a.tenant.pk, int(started["id"]))  # six churned accounts: too few labels
    version = client.get(f"/api/v1/scoring/models/{started['id']}/").json()

    assert version["status"] == "rejected"
    assert version["error"]
    assert version["scored_at"] is None
    assert all(item["rule_based"] for item in walk(client, "/api/v1/scores/?kind=churn&limit=500"))


def test_versions_are_listed_newest_first_and_filtered_by_kind(a: TenantWorld, secret_client: SecretClient) -> None:
    client = secret_client(a)
    made = [model_version_start(tenant=a.tenant, kind=kind, now=END)  # one instant, as the nightly retrain does
            for kind in ("health", "conversion", "health")]  # fmt: skip

    everything = walk(client, "/api/v1/scoring/models/?limit=1")
    backwards = walk_back(client, "/api/v1/scoring/models/?limit=1")
    health = walk(client, "/api/v1/scoring/models/?kind=health")

    assert [v["id"] for v in everything] == [str(v.pk) for v in reversed(made)]
    assert backwards == [v.pk for v in reversed(made)]
    assert [(v["kind"], v["version"]) for v in health] == [("health", 2), ("health", 1)]
    for item in everything:
        assert set(item) >= {"id", "kind", "version", "status", "trained_at", "scored_at", "metrics"}
        assert (item["status"], item["trained_at"], item["scored_at"], item["metrics"]) == ("training", None, None, {})
    assert_invalid(client.get("/api/v1/scoring/models/?kind=happiness"), "kind")


@pytest.mark.parametrize(
    "body",
    [{"kind": "champion"}, {"kind": "happiness"}, {"kind": ["health"]}, {"kind": None}, {}, ["health"], "health"],
)
def test_training_needs_a_learned_kind(a: TenantWorld, secret_client: SecretClient, body: Any) -> None:
    response = secret_client(a).post("/api/v1/scoring/models/train", json.dumps(body), content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert not ModelVersion.objects.for_tenant(a.tenant).exists()


@pytest.mark.parametrize("version_id", ["999999999", "abc", "99999999999999999999999", "1.5"])
def test_a_missing_version_is_404(a: TenantWorld, secret_client: SecretClient, version_id: str) -> None:
    response = secret_client(a).get(f"/api/v1/scoring/models/{version_id}/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("role", "allowed"), [(Role.VIEWER, False), (Role.SALES, False), (Role.ADMIN, True)])
def test_only_admins_start_training(
    a: TenantWorld, member_client: MemberClient, role: Role, allowed: bool, django_capture_on_commit_callbacks: Any
) -> None:
    client = member_client(a.tenant, role)
    with django_capture_on_commit_callbacks():
        response = client.post(f"/t/{a.slug}/api/v1/scoring/models/train", json.dumps({"kind": "health"}),
                               content_type="application/json")  # fmt: skip

    assert response.status_code == (202 if allowed else 403)
    assert ModelVersion.objects.for_tenant(a.tenant).exists() is allowed
    assert client.get(f"/t/{a.slug}/api/v1/scoring/models/").status_code == 200


# --- /api/v1/scoring/discovery/ -------------------------------------------------------------------------------------


def test_discovery_ranks_candidate_features_by_how_well_they_separate_converted_trials(
    a: TenantWorld, secret_client: SecretClient
) -> None:
    body = secret_client(a).get("/api/v1/scoring/discovery/?kind=conversion").json()

    assert body["kind"] == "conversion"
    assert 0 < body["positives"] < body["rows"]
    features = body["features"]
    assert len(features) >= 5
    strength = [round(abs(feature["auc"] - 0.5), 6) for feature in features]
    assert strength == sorted(strength, reverse=True)
    assert strength[0] > 0.1, "the generator makes busy trials convert: some feature must separate them"
    for feature in features:
        assert set(feature) >= {"feature", "positive", "negative", "p_value", "auc", "direction", "lift_above_median"}
        assert set(feature["positive"]) >= {"mean", "median", "std"}
        assert 0 <= feature["p_value"] <= 1
        assert feature["direction"] == ("+" if feature["auc"] >= 0.5 else "-")
    assert len({feature["feature"] for feature in features}) == len(features)


@pytest.mark.parametrize("query", ["?kind=champion", "?kind=happiness", "?kind="])
def test_discovery_needs_a_learned_kind(a: TenantWorld, secret_client: SecretClient, query: str) -> None:
    assert_invalid(secret_client(a).get(f"/api/v1/scoring/discovery/{query}"), "kind")


# --- min_score and ordering by a score on GET /api/v1/accounts/ -------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "kind", "floor"),
    [("min_score=0.2", "conversion", 0.2), ("min_score=0.05&score_kind=churn", "churn", 0.05),
     ("min_score=0&score_kind=conversion", "conversion", 0.0)],
)  # fmt: skip
def test_min_score_keeps_exactly_the_accounts_scored_at_least_that(
    a: TenantWorld, secret_client: SecretClient, query: str, kind: str, floor: float
) -> None:
    expected = {pk for pk, value in scores_of(a.tenant, kind).items() if value >= floor}
    assert expected

    found = walk(secret_client(a), f"/api/v1/accounts/?{query}&limit=10")

    assert sorted(int(item["id"]) for item in found) == sorted(expected)
    assert expected != set(Account.objects.for_tenant(a.tenant).values_list("pk", flat=True))


@pytest.mark.parametrize(
    ("query", "field"),
    [("min_score=-0.1", "min_score"), ("min_score=1.01", "min_score"), ("min_score=high", "min_score"),
     ("min_score=NaN", "min_score"), ("min_score=Infinity", "min_score"), ("min_score=1e400", "min_score"),
     ("min_score=0.5&score_kind=health", "score_kind"), ("ordering=-health", "ordering"),
     ("ordering=name", "ordering"), ("ordering=", "ordering")],
)  # fmt: skip
def test_bad_score_filters_are_400(a: TenantWorld, secret_client: SecretClient, query: str, field: str) -> None:
    assert_invalid(secret_client(a).get(f"/api/v1/accounts/?{query}"), field)


@pytest.mark.parametrize("ordering", ["-conversion", "conversion", "-churn", "churn"])
def test_ordering_by_a_score_pages_through_every_account_once_in_order(
    a: TenantWorld, secret_client: SecretClient, ordering: str
) -> None:
    kind = ordering.removeprefix("-")
    descending = ordering.startswith("-")
    scores = scores_of(a.tenant, kind)
    client = secret_client(a)

    items = walk(client, f"/api/v1/accounts/?ordering={ordering}&limit=7")
    backwards = walk_back(client, f"/api/v1/accounts/?ordering={ordering}&limit=7")

    ids = [int(item["id"]) for item in items]
    assert sorted(ids) == sorted(Account.objects.for_tenant(a.tenant).values_list("pk", flat=True))
    values = [scores.get(pk) for pk in ids]
    scored = [value for value in values if value is not None]
    assert scored == sorted(scored, reverse=descending)
    unscored = [value is None for value in values]
    assert unscored == sorted(unscored, reverse=not descending), "unscored accounts come last when descending"
    assert [item["scores"].get(kind, {}).get("value") for item in items] == [
        None if value is None else round(value, 4) for value in values
    ]
    assert backwards == ids


def walk_back(client: Client, url: str) -> list[int]:
    """The ids of a cursor-paged list read from its last page back to its first, through `previous`."""
    pages: list[list[int]] = []
    next_url: str | None = url
    last: dict[str, Any] = {}
    while next_url is not None:
        last = client.get(next_url).json()
        next_url = last["next"]
    pages.append([int(item["id"]) for item in last["results"]])
    previous = last["previous"]
    for _ in range(1000):
        if previous is None:
            return [pk for page in reversed(pages) for pk in page]
        body = client.get(previous).json()
        pages.append([int(item["id"]) for item in body["results"]])
        previous = body["previous"]
    raise AssertionError("the cursor never ends")


def test_ordering_and_min_score_combine(a: TenantWorld, secret_client: SecretClient) -> None:
    scores = scores_of(a.tenant, "conversion")
    expected = sorted((pk for pk, value in scores.items() if value >= 0.1), key=lambda pk: (-scores[pk], -pk))

    items = walk(secret_client(a), "/api/v1/accounts/?ordering=-conversion&min_score=0.1&stage=Trial&limit=5")

    trials = set(Account.objects.for_tenant(a.tenant).filter(stage="Trial").values_list("pk", flat=True))
    assert [int(item["id"]) for item in items] == [pk for pk in expected if pk in trials]


# --- tenant isolation ---------------------------------------------------------------------------------------------


def a_ids(a: TenantWorld) -> dict[str, Any]:
    account = Account.objects.for_tenant(a.tenant).filter(pk__in=scores_of(a.tenant, "conversion")).first()
    user = EndUser.objects.for_tenant(a.tenant).filter(pk__in=scores_of(a.tenant, "health")).first()
    assert account is not None
    assert user is not None
    with time_machine.travel(END, tick=True):
        version = model_version_start(tenant=a.tenant, kind="health", now=datetime.now(UTC))
    return {"account": account.pk, "user": user.pk, "version": version.pk}


def detail_urls(ids: dict[str, Any]) -> list[str]:
    return [f"accounts/{ids['account']}/", f"users/{ids['user']}/", f"scoring/models/{ids['version']}/"]


LIST_URLS = [f"scores/?kind={kind.value}&limit=500" for kind in ScoreKind] + [
    "accounts/?limit=500", "accounts/?ordering=-conversion&limit=500", "accounts/?min_score=0&limit=500",
    "accounts/?min_score=0&score_kind=churn&ordering=churn&limit=500", "users/?limit=500", "scoring/models/?limit=500",
]  # fmt: skip


def b_entity_ids(b: TenantWorld) -> set[str]:
    ids = set()
    for model in (Account, EndUser, Membership, ModelVersion):
        ids |= {str(pk) for pk in model.objects.for_tenant(b.tenant).values_list("pk", flat=True)}
    return ids


@pytest.mark.parametrize("door", ["secret key", "session"])
def test_tenant_b_sees_nothing_of_tenant_a_through_any_scoring_route(
    a: TenantWorld, b: TenantWorld, secret_client: SecretClient, member_client: MemberClient, door: str
) -> None:
    ids = a_ids(a)
    with time_machine.travel(END, tick=True):
        model_version_start(tenant=b.tenant, kind="health", now=datetime.now(UTC))
    client: Client = secret_client(b) if door == "secret key" else member_client(b.tenant, Role.ADMIN)
    prefix = "/api/v1/" if door == "secret key" else f"/t/{b.slug}/api/v1/"
    mine = b_entity_ids(b)

    for url in detail_urls(ids):
        assert client.get(prefix + url).status_code == 404, url
    for url in LIST_URLS:
        items = walk(client, prefix + url)
        assert {item.get("entity_id", item.get("id")) for item in items} <= mine, url
    for kind in ScoreKind:
        assert len(walk(client, f"{prefix}scores/?kind={kind.value}&limit=500")) == len(scores_of(b.tenant, kind))
    a_report = secret_client(a).get("/api/v1/scoring/discovery/?kind=conversion").json()
    b_report = client.get(prefix + "scoring/discovery/?kind=conversion").json()
    assert b_report["rows"] != a_report["rows"]


def test_tenant_bs_writes_never_reach_tenant_a(
    a: TenantWorld, b: TenantWorld, secret_client: SecretClient, django_capture_on_commit_callbacks: Any
) -> None:
    client = secret_client(b)

    with django_capture_on_commit_callbacks():
        trained = client.post("/api/v1/scoring/models/train", {"kind": "health"}, format="json")
    configured = client.put("/api/v1/scoring/config/", CUSTOM, format="json")

    assert (trained.status_code, configured.status_code) == (202, 200)
    assert not ModelVersion.objects.for_tenant(a.tenant).exists()
    assert ModelVersion.objects.for_tenant(b.tenant).get().pk == int(trained.json()["id"])
    assert secret_client(a).get("/api/v1/scoring/config/").json()["stages"]["trial"] == ["Trial"]
    assert settings_get(tenant=b.tenant)["stages"]["trial"] == ["Trialing", "POC"]


def test_a_session_of_another_tenant_gets_404_on_every_scoring_route(
    a: TenantWorld, b: TenantWorld, member_client: MemberClient
) -> None:
    ids = a_ids(a)
    client = member_client(b.tenant, Role.ADMIN)
    prefix = f"/t/{a.slug}/api/v1/"

    for url in [*detail_urls(ids), *LIST_URLS, "scoring/config/", "scoring/discovery/?kind=conversion"]:
        assert client.get(prefix + url).status_code == 404, url
    assert (
        client.put(prefix + "scoring/config/", json.dumps(CUSTOM), content_type="application/json").status_code == 404
    )
    train = client.post(
        prefix + "scoring/models/train", json.dumps({"kind": "health"}), content_type="application/json"
    )
    assert train.status_code == 404
    assert settings_get(tenant=a.tenant)["key_events"] == []


def test_a_write_key_opens_no_scoring_route(a: TenantWorld, api_client: APIClient) -> None:
    ids = a_ids(a)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {a.write_key}")

    answers = [
        api_client.get(f"/api/v1/{url}").status_code
        for url in [*detail_urls(ids), *LIST_URLS, "scoring/config/", "scoring/discovery/?kind=conversion"]
    ]
    answers.append(api_client.put("/api/v1/scoring/config/", CUSTOM, format="json").status_code)
    answers.append(api_client.post("/api/v1/scoring/models/train", {"kind": "health"}, format="json").status_code)

    assert set(answers) <= {401, 403}, answers
    assert ModelVersion.objects.for_tenant(a.tenant).count() == 1  # only the one a_ids made
    assert settings_get(tenant=a.tenant)["key_events"] == []


# --- OpenAPI ----------------------------------------------------------------------------------------------------------


def test_the_schema_describes_the_scoring_routes_and_their_shapes(db: None) -> None:
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[-1]]
        if "allOf" in node and len(node["allOf"]) == 1:
            return resolve(node["allOf"][0])
        return node

    def body(operation: dict[str, Any], status: str) -> dict[str, Any]:
        return resolve(operation["responses"][status]["content"]["application/json"]["schema"])

    def item_of(page: dict[str, Any]) -> dict[str, Any]:
        return resolve(page["properties"]["results"]["items"])

    scores = paths["/api/v1/scores/"]["get"]
    assert {p["name"] for p in scores["parameters"]} >= {"kind", "cursor", "limit"}
    kind = next(p for p in scores["parameters"] if p["name"] == "kind")
    assert kind["required"] is True
    assert set(resolve(kind["schema"])["enum"]) == {"conversion", "churn", "health", "champion"}
    score = item_of(body(scores, "200"))
    assert set(score["properties"]) >= {"entity_type", "entity_id", "external_id", "account_external_id"} | SCORE_FIELDS
    assert set(resolve(score["properties"]["reasons"]["items"])["properties"]) == REASON_FIELDS

    account = body(paths["/api/v1/accounts/{id}/"]["get"], "200")
    account_score = resolve(account["properties"]["scores"]["additionalProperties"])
    assert set(account_score["properties"]) >= SCORE_FIELDS
    listing = paths["/api/v1/accounts/"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"min_score", "score_kind", "ordering", "stage", "q"}

    config = paths["/api/v1/scoring/config/"]
    assert set(body(config["get"], "200")["properties"]) >= {"stages", "key_events", "models"}
    put = resolve(config["put"]["requestBody"]["content"]["application/json"]["schema"])
    assert set(put["properties"]) >= {"stages", "key_events", "models"}
    assert "400" in config["put"]["responses"]

    versions = item_of(body(paths["/api/v1/scoring/models/"]["get"], "200"))
    assert set(versions["properties"]) >= {"id", "kind", "version", "status", "trained_at", "scored_at", "metrics"}
    assert set(resolve(versions["properties"]["metrics"])["properties"]) >= METRICS
    assert "/api/v1/scoring/models/{id}/" in paths
    train = paths["/api/v1/scoring/models/train/"]["post"]
    request = resolve(train["requestBody"]["content"]["application/json"]["schema"])
    assert set(resolve(request["properties"]["kind"])["enum"]) == {"conversion", "churn", "health"}
    assert set(body(train, "202")["properties"]) >= {"id", "status"}

    discovery = paths["/api/v1/scoring/discovery/"]["get"]
    assert set(body(discovery, "200")["properties"]) >= {"kind", "rows", "positives", "features"}


def test_generating_the_schema_raises_no_warnings(tmp_path: Path) -> None:
    GENERATOR_STATS.reset()  # the counts are per process; other tests may have generated a schema already

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))

    assert not GENERATOR_STATS, dict(GENERATOR_STATS._warn_cache)
