"""Downstream processing of changed entities (DESIGN §2): hints after commit, plus a sweep for lost hints."""

from __future__ import annotations

import logging

from celery import shared_task

from signals.processing import dirty_entities_process, tenants_with_dirty_entities

logger = logging.getLogger(__name__)


@shared_task(name="signals.tasks.dirty_entities_process")
def dirty_entities_process_task(tenant_id: int) -> int:
    return dirty_entities_process(tenant_id=tenant_id)


@shared_task(name="signals.tasks.dirty_entities_sweep")
def dirty_entities_sweep() -> None:
    """Recover hints lost with Redis or a worker: every tenant with pending marks gets one."""
    for tenant_id in tenants_with_dirty_entities():
        dirty_entities_process_task.apply_async(args=(tenant_id,))
