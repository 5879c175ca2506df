"""Downstream processing of changed entities (DESIGN §2): hints after commit, plus a sweep for lost hints."""

from __future__ import annotations

import logging

from celery import shared_task

from signals.processing import dirty_entities_process, tenants_with_dirty_entities
from signals.services import processing_hint, processing_hint_taken

PROCESSING_RECHECK_SECONDS = 0.5

logger = logging.getLogger(__name__)


@shared_task(name="signals.tasks.dirty_entities_process")
def dirty_entities_process_task(tenant_id: int) -> int:
    processing_hint_taken(tenant_id)
    cleared = dirty_entities_process(tenant_id=tenant_id, wait=False)
    if cleared is None:
        # Another run has the tenant and drains until no mark is left; look again shortly rather than hold this
        # worker process on its lock (a lock held by an ingestion merge ends in milliseconds).
        processing_hint(tenant_id, delay=PROCESSING_RECHECK_SECONDS)
        return 0
    return cleared


@shared_task(name="signals.tasks.dirty_entities_sweep")
def dirty_entities_sweep() -> None:
    """Recover hints lost with Redis or a worker: every tenant with pending marks gets one."""
    for tenant_id in tenants_with_dirty_entities():
        dirty_entities_process_task.apply_async(args=(tenant_id,))
