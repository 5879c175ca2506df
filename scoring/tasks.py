"""Celery tasks of scoring (queue `scoring`): thin wrappers taking ids, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from plgapp.models import Tenant
from scoring.models import ModelStatus, ModelVersion
from scoring.services import LEARNED_KINDS, model_train, model_version_start, scores_refresh_all


@shared_task(name="scoring.tasks.model_train")
def model_train_task(tenant_id: int, version_id: int) -> None:
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return
    version = ModelVersion.objects.for_tenant(tenant).filter(pk=version_id).defer("artifact").first()
    if version is None or version.status != ModelStatus.TRAINING:
        return  # already trained (a redelivered message) or gone
    model_train(tenant=tenant, version_id=version_id, now=timezone.now())


@shared_task(name="scoring.tasks.scores_refresh_all")
def scores_refresh_all_task(tenant_id: int) -> None:
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is not None:
        scores_refresh_all(tenant=tenant, now=timezone.now())


@shared_task(name="scoring.tasks.rescore_dispatch")
def rescore_dispatch() -> None:
    """Hourly: every tenant's scores, in full (incremental rescoring keeps them fresh in between)."""
    for tenant_id in Tenant.objects.values_list("pk", flat=True):
        scores_refresh_all_task.apply_async(args=(tenant_id,), expires=3000)


@shared_task(name="scoring.tasks.retrain_dispatch")
def retrain_dispatch() -> None:
    """Nightly: a new version of every learned kind for every tenant (promoted only if it beats the rules)."""
    now = timezone.now()
    for tenant in Tenant.objects.all():
        for kind in LEARNED_KINDS:
            version = model_version_start(tenant=tenant, kind=kind, now=now)
            model_train_task.apply_async(args=(tenant.pk, version.pk))
