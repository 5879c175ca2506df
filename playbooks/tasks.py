"""Celery tasks of the playbook engine: evaluation on queue `playbooks`, the executor on `actions`.
Thin wrappers taking ids; each is safe to run twice (the services decide by compare-and-set)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from playbooks.dispatch import evaluation_take, release_tick, runs_schedule_and_release
from playbooks.services import (
    due_runs,
    enrollment_due_runs,
    playbook_evaluate,
    run_execute,
    sweep,
)
from plgapp.models import Tenant


def _tenant(tenant_id: int) -> Tenant | None:
    return Tenant.objects.filter(pk=tenant_id).first()


@shared_task(name="playbooks.tasks.playbook_evaluate")
def playbook_evaluate_task(tenant_id: int, playbook_id: int, entity_ids: list[int] | None = None) -> None:
    tenant = _tenant(tenant_id)
    if tenant is not None:
        playbook_evaluate(tenant=tenant, playbook_id=playbook_id, now=timezone.now(), entity_ids=entity_ids)


@shared_task(name="playbooks.tasks.playbook_evaluate_waiting")
def playbook_evaluate_waiting_task(tenant_id: int, playbook_id: int) -> None:
    """Evaluate the entities whose changes gathered while this task waited (playbooks/dispatch.py)."""
    entity_ids = evaluation_take(tenant_id, playbook_id)
    tenant = _tenant(tenant_id)
    if tenant is not None and entity_ids:
        playbook_evaluate(tenant=tenant, playbook_id=playbook_id, now=timezone.now(), entity_ids=entity_ids,
                          schedule_here=True)  # fmt: skip


@shared_task(name="playbooks.tasks.run_execute")
def run_execute_task(tenant_id: int, run_id: int) -> None:
    tenant = _tenant(tenant_id)
    if tenant is not None:
        run_execute(tenant=tenant, run_id=run_id, now=timezone.now())
    release_tick()  # the queue has room again: the next due run (of whichever tenant's turn it is) goes in


@shared_task(name="playbooks.tasks.enrollment_runs_execute")
def enrollment_runs_execute_task(tenant_id: int, enrollment_ids: list[int]) -> None:
    tenant = _tenant(tenant_id)
    if tenant is None:
        return
    runs_schedule_and_release(tenant_id, enrollment_due_runs(tenant=tenant, enrollment_ids=enrollment_ids,
                                                             now=timezone.now()))  # fmt: skip


@shared_task(name="playbooks.tasks.sweep")
def sweep_task(tenant_id: int) -> None:
    tenant = _tenant(tenant_id)
    if tenant is None:
        return
    now = timezone.now()
    sweep(tenant=tenant, now=now)
    runs_schedule_and_release(tenant_id, due_runs(tenant=tenant, now=now))  # what Redis lost is scheduled again


@shared_task(name="playbooks.tasks.sweep_dispatch")
def sweep_dispatch() -> None:
    """Every minute: one sweep per tenant with an active playbook or outstanding runs."""
    from playbooks.models import Playbook, PlaybookStatus

    tenants = Playbook.objects.unscoped().filter(status=PlaybookStatus.ACTIVE).values_list("tenant_id", flat=True)
    for tenant_id in sorted(set(tenants)):
        sweep_task.apply_async(args=(tenant_id,), expires=55)
