"""The Scoring page: each model's version, metrics, calibration, importance and distribution; retrain; discovery;
the settings form with inline errors; admins only for changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from plgapp.roles import Role
from scoring.models import ModelVersion, Score
from scoring.services import settings_get
from tests.conftest import TenantWorld


def trained_conversion(world: TenantWorld) -> ModelVersion:
    report = {"calibration_curve": [{"predicted": 0.1, "observed": 0.12}, {"predicted": 0.8, "observed": 0.74}],
              "feature_importances": {"widgets_created_7d": 0.08, "seats": 0.03}}  # fmt: skip
    metrics = {"auc": 0.861, "baseline_auc": 0.71, "lift_top_decile": 4.2, "recall_top_20": 0.55, "ece": 0.012,
               "n_train": 900, "n_positive": 120}  # fmt: skip
    scores = Score.objects.for_tenant(world.tenant)
    for n, value in enumerate((0.05, 0.15, 0.95, 0.97)):
        scores.create(
            kind="conversion",
            entity_type="account",
            entity_id=n + 1,
            value=value,
            percentile=50,
            grade=3,
            computed_at=timezone.now(),
        )
    return ModelVersion.objects.for_tenant(world.tenant).create(
        kind="conversion", version=2, status="active", metrics=metrics, report=report, trained_at=timezone.now()
    )


@pytest.mark.django_db
def test_the_page_shows_each_models_metrics_and_charts(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    trained_conversion(tenant_a)
    html = member_client(tenant_a.tenant, Role.VIEWER).get(f"/t/{tenant_a.slug}/scoring/").content.decode()

    assert "v2 active" in html
    assert "0.861" in html
    assert "4.20&times;" in html
    assert "widgets_created_7d" in html  # feature importance
    assert 'class="chart calibration"' in html
    assert "90-100%" in html  # the distribution's buckets
    assert "rule-based" in html  # churn and health have no model yet
    assert "Retrain now" not in html  # viewers cannot retrain
    assert "Save settings" not in html


@pytest.mark.django_db
def test_an_admin_retrains_a_model_in_the_background(
    tenant_a: TenantWorld, member_client: Callable[..., Client], django_capture_on_commit_callbacks: Any
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    with mock.patch("scoring.scoring_views.model_train_task.apply_async") as queued, \
            django_capture_on_commit_callbacks(execute=True):  # fmt: skip
        answer = admin.post(f"/t/{tenant_a.slug}/scoring/retrain/", {"kind": "churn"}, follow=True)

    version = ModelVersion.objects.for_tenant(tenant_a.tenant).get(kind="churn")
    assert version.status == "training"
    queued.assert_called_once_with(args=(tenant_a.tenant.pk, version.pk))
    assert "Training churn version 1" in answer.content.decode()
    assert member_client(tenant_a.tenant, Role.MARKETER).post(f"/t/{tenant_a.slug}/scoring/retrain/",
                                                              {"kind": "churn"}).status_code == 403  # fmt: skip


@pytest.mark.django_db
def test_settings_save_and_bad_ones_are_explained_inline_and_not_saved(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    admin = member_client(tenant_a.tenant, Role.ADMIN)
    good = {"stages_trial": "Trial, POC", "stages_paying": "Customer", "stages_churned": "Churned",
            "key_events": "widget_created", "segment_property": "employees",
            "segments": "small, 50, 0.8\nlarge, , 0.5", "milestones": "[]"}  # fmt: skip

    assert admin.post(f"/t/{tenant_a.slug}/scoring/settings/", good).status_code == 302
    saved = settings_get(tenant=tenant_a.tenant)
    assert saved["stages"]["trial"] == ["Trial", "POC"]
    assert [s["name"] for s in saved["size_segments"]["segments"]] == ["small", "large"]

    bad = admin.post(f"/t/{tenant_a.slug}/scoring/settings/", good | {"segments": "small 50", "milestones": "[{"})
    assert bad.status_code == 400
    text = bad.content.decode()
    assert "line 1: write" in text
    assert "not valid JSON" in text
    assert 'value="Trial, POC"' in text  # what was typed is kept
    assert settings_get(tenant=tenant_a.tenant) == saved


@pytest.mark.django_db
def test_discovery_answers_even_without_history(tenant_a: TenantWorld, member_client: Callable[..., Client]) -> None:
    answer = member_client(tenant_a.tenant, Role.VIEWER).get(f"/t/{tenant_a.slug}/scoring/discovery/?kind=churn")

    assert answer.status_code == 200
    assert "<html" not in answer.content.decode()


@pytest.mark.django_db
def test_another_tenant_sees_none_of_its_models(
    tenant_a: TenantWorld, tenant_b: TenantWorld, member_client: Callable[..., Client]
) -> None:
    trained_conversion(tenant_a)
    other = member_client(tenant_b.tenant, Role.ADMIN)

    assert "0.861" not in other.get(f"/t/{tenant_b.slug}/scoring/").content.decode()
    assert other.get(f"/t/{tenant_a.slug}/scoring/").status_code == 404


@pytest.mark.django_db
def test_a_marketer_adds_and_removes_a_signal_with_the_apis_rules(
    tenant_a: TenantWorld, member_client: Callable[..., Client]
) -> None:
    from signals.models import Signal

    marketer = member_client(tenant_a.tenant, Role.MARKETER)
    url = f"/t/{tenant_a.slug}/scoring/signals/"

    bad = marketer.post(url, {"key": "widgets_7d", "name": "Widgets", "entity_type": "account", "kind": "event_count"})
    assert bad.status_code == 400
    assert "window" in bad.content.decode()
    assert 'value="widgets_7d"' in bad.content.decode()  # what was typed is kept
    good = marketer.post(url, {"key": "widgets_7d", "name": "Widgets in a week", "entity_type": "account",
                               "kind": "event_count", "event": "widget_created", "window_days": "7",
                               "weight_kind": "conversion", "weight": "0.4"})  # fmt: skip
    assert good.status_code == 302
    signal = Signal.objects.for_tenant(tenant_a.tenant).get(key="widgets_7d")
    assert (signal.window_days, signal.weights) == (7, {"conversion": 0.4})
    page = marketer.get(f"/t/{tenant_a.slug}/scoring/").content.decode()
    assert "widget_created in 7 days" in page
    assert member_client(tenant_a.tenant, Role.SALES).post(url, {"key": "x"}).status_code == 403

    marketer.post(f"/t/{tenant_a.slug}/scoring/signals/{signal.pk}/delete/")
    assert not Signal.objects.for_tenant(tenant_a.tenant).exists()
